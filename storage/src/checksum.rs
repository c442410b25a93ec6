//! Digests that name and check content: BLAKE3-256 (the content address, as `b3sum` prints it)
//! and MD5 (kept for the Astro-WISE/Euclid catalogues, ESO and S3 ETags).
//!
//! Pure: formatting and parsing only. Streaming hashing lives in `outboard` (BLAKE3 with its
//! tree) and `ingest` (MD5).

use std::fmt;

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest must be {expected} hex digits")]
pub struct DigestParseError {
    expected: usize,
}

macro_rules! hex_digest {
    ($(#[$doc:meta])* $name:ident, $bytes:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $bytes]);

        impl $name {
            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                let mut text = String::with_capacity($bytes * 2);
                for byte in self.0 {
                    text.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
                    text.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
                }
                text
            }

            /// Parses hex digits (either case).
            pub fn from_hex(text: &str) -> Result<Self, DigestParseError> {
                let error = DigestParseError { expected: $bytes * 2 };
                let text = text.as_bytes();
                if text.len() != $bytes * 2 {
                    return Err(error);
                }
                let mut bytes = [0u8; $bytes];
                for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
                    let high = hex_value(pair[0]).ok_or(error.clone())?;
                    let low = hex_value(pair[1]).ok_or(error.clone())?;
                    *byte = high << 4 | low;
                }
                Ok(Self(bytes))
            }

            /// The raw digest bytes.
            pub fn as_bytes(&self) -> &[u8; $bytes] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl std::str::FromStr for $name {
            type Err = DigestParseError;
            fn from_str(text: &str) -> Result<Self, DigestParseError> {
                Self::from_hex(text)
            }
        }
    };
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

hex_digest!(
    /// A BLAKE3-256 digest: the name of a blob.
    Blake3Digest,
    32
);

hex_digest!(
    /// An MD5 digest.
    Md5Digest,
    16
);

impl Blake3Digest {
    /// The digest of `data`, in one call (for small buffers and tests).
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl From<blake3::Hash> for Blake3Digest {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl Md5Digest {
    /// The digest of `data`, in one call (for small buffers and tests).
    pub fn of(data: &[u8]) -> Self {
        use md5::Digest as _;
        Self(md5::Md5::digest(data).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex() {
        // b3sum of the empty input.
        let empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert_eq!(Blake3Digest::of(b"").to_hex(), empty);
        assert_eq!(Blake3Digest::from_hex(empty), Ok(Blake3Digest::of(b"")));
        assert_eq!(
            Blake3Digest::from_hex(&empty.to_uppercase()),
            Ok(Blake3Digest::of(b""))
        );
        assert!(Blake3Digest::from_hex(&empty[1..]).is_err());
        assert!(Blake3Digest::from_hex(&empty.replace('a', "g")).is_err());
        // RFC 1321 test vector.
        assert_eq!(
            Md5Digest::of(b"abc").to_hex(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            Md5Digest::from_hex("900150983cd24fb0d6963f7d28e17f72"),
            Ok(Md5Digest::of(b"abc"))
        );
        assert!(Md5Digest::from_hex("é00150983cd24fb0d6963f7d28e17f7").is_err());
    }
}
