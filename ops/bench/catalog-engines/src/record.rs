//! The synthetic catalogue workload: record number `i` → (key, value, object id).
//!
//! Everything here is a pure function of `i` (plus a fixed salt), so a checker
//! in another process — or after a crash — can recompute exactly what a record
//! must look like and tell "missing" apart from "damaged".

/// Values are this long. The fields the brief lists take 87 bytes; the rest
/// stands for what a real entry also carries (see [`value`]), so the engines
/// see the ~120-byte values the catalogue is sized for.
pub const VALUE_LEN: usize = 120;

/// Marks the value layout, as the real catalogue would, so a format change is
/// detectable; here it simply becomes part of the expected bytes.
const VALUE_VERSION: u8 = 1;

/// Tiny xorshift64 generator. Used instead of the `rand` crate to keep the
/// tool's dependencies to the two engines under test; statistical quality is
/// irrelevant here, reproducibility from a seed is what matters.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A zero state would make xorshift emit zeros forever, so it is remapped.
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The generator for record `i`: seeded through a splitmix64 step so that
    /// neighbouring record numbers give unrelated streams.
    pub fn for_record(i: u64) -> Self {
        Self::new(splitmix64(i ^ 0x6361_7461_6c6f_6775)) // "catalogu"
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-enough value in `0..n` (modulo bias is negligible for the
    /// small `n` used here). `n` must be non-zero.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Object id of record `i`, as stored: big-endian, so ids sort numerically in
/// both engines (both compare keys as bytes).
pub fn id_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// Survey file name of record `i`, e.g.
/// `kids/DR5/KiDS_DR5.0_123.4_-27.1_r_sci_0000004711.fits`.
///
/// RA/Dec are pseudo-random per record, so keys arrive in random order, as
/// uploads from a survey do; this is the B-tree-unfriendly case. The record
/// number at the end keeps every key unique.
pub fn key(i: u64) -> String {
    let mut rng = XorShift64::for_record(i);
    // Tenths of a degree: RA over the full circle, Dec over the KiDS strip.
    let ra = rng.below(3600) as f64 / 10.0;
    let dec = -35.0 + rng.below(381) as f64 / 10.0;
    format!("kids/DR5/KiDS_DR5.0_{ra:.1}_{dec:.1}_r_sci_{i:010}.fits")
}

/// Catalogue entry of record `i`. Layout (all integers big-endian):
///
/// | bytes | field |
/// |---|---|
/// | 1  | layout version |
/// | 8  | object id (= i) |
/// | 8  | size in bytes |
/// | 32 | BLAKE3 of the content (pseudo-random here) |
/// | 16 | MD5 of the content (pseudo-random here) |
/// | 8  | created, µs since the Unix epoch |
/// | 2  | site |
/// | 1  | state |
/// | 1+10 | content type, length-prefixed: `image/fits` |
/// | 8  | modified, µs since the Unix epoch |
/// | 8  | retention deadline, µs since the Unix epoch |
/// | 16 | ingest batch id |
/// | 1  | flags |
///
/// The last four fields (33 bytes) are not in the brief's list; they model
/// the rest of a real entry so the value is 120 bytes as specified.
pub fn value(i: u64) -> [u8; VALUE_LEN] {
    // A stream distinct from the key's, so the value is not a function of RA/Dec.
    let mut rng = XorShift64::for_record(!i);
    let mut v = [0u8; VALUE_LEN];
    let mut at = 0usize;
    let mut put = |bytes: &[u8]| {
        v[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };

    let created_us: u64 = 1_600_000_000_000_000 + i * 1_000 + rng.below(1_000);
    let size: u64 = 50_000_000 + rng.below(450_000_000);
    let mut blake3 = [0u8; 32];
    rng.fill(&mut blake3);
    let mut md5 = [0u8; 16];
    rng.fill(&mut md5);
    let site = u16::try_from(rng.below(8)).expect("below(8) fits in u16");
    let state: u8 = 2; // "committed"
    let content_type = b"image/fits";
    let modified_us = created_us + rng.below(86_400_000_000);
    let retention_us = created_us + 10 * 365 * 86_400_000_000;
    let mut batch_id = [0u8; 16];
    rng.fill(&mut batch_id);
    let flags: u8 = 0;

    put(&[VALUE_VERSION]);
    put(&i.to_be_bytes());
    put(&size.to_be_bytes());
    put(&blake3);
    put(&md5);
    put(&created_us.to_be_bytes());
    put(&site.to_be_bytes());
    put(&[state]);
    put(&[u8::try_from(content_type.len()).expect("content type is 10 bytes")]);
    put(content_type);
    put(&modified_us.to_be_bytes());
    put(&retention_us.to_be_bytes());
    put(&batch_id);
    put(&[flags]);
    debug_assert_eq!(at, VALUE_LEN, "value layout must fill VALUE_LEN exactly");
    v
}

/// One record as handed to an engine: both mappings' bytes.
pub struct Record {
    pub key: Vec<u8>,
    pub value: [u8; VALUE_LEN],
    pub id: [u8; 8],
}

impl Record {
    pub fn new(i: u64) -> Self {
        Self {
            key: key(i).into_bytes(),
            value: value(i),
            id: id_key(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        assert_eq!(key(7), key(7));
        assert_eq!(value(7), value(7));
        assert_ne!(value(7), value(8));
        let k = key(1_234_567);
        assert!(k.starts_with("kids/DR5/KiDS_DR5.0_") && k.ends_with("_r_sci_0001234567.fits"));
        assert!((48..=60).contains(&k.len()), "{k}");
    }
}
