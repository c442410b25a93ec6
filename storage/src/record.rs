//! What the catalogue remembers, and its byte encoding.
//!
//! Pure: types and a small versioned binary format (first byte = format version), so a record
//! written today can be read by every later release. Decoding never panics on damaged bytes; it
//! answers `None` and the catalogue reports the record as damaged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::checksum::{Blake3Digest, Md5Digest};
use crate::fits::{Check, FitsIndex, Hdu, IndexStatus};
use crate::key::ObjectKey;
use crate::tar::{TarIndex, TarMember};

/// Version of the record encodings written by this build.
pub const RECORD_FORMAT: u8 = 1;

/// Version of an object value that also carries a [`PartsDigest`]: format 1 followed by the
/// digest. Written only for objects assembled from parts, so every other record stays readable
/// by builds that know only format 1; this build reads both.
pub const RECORD_FORMAT_WITH_PARTS: u8 = 2;

/// A 64-bit object identifier unique across the federation: 16 bits of site number, then 48
/// bits of a per-site sequence that is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub u64);

/// Largest per-site sequence number.
pub const MAX_SEQUENCE: u64 = (1 << 48) - 1;

impl ObjectId {
    /// The identifier of sequence number `sequence` at `site`; `None` past [`MAX_SEQUENCE`].
    pub fn new(site: u16, sequence: u64) -> Option<Self> {
        (sequence <= MAX_SEQUENCE).then(|| Self(u64::from(site) << 48 | sequence))
    }

    /// The site that assigned it.
    pub fn site(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// The per-site sequence number.
    pub fn sequence(self) -> u64 {
        self.0 & MAX_SEQUENCE
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why this node holds an object (DESIGN.md §3). Primary and replica copies are never evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectState {
    /// Stored here by a client.
    Primary,
    /// Placed here by a replication rule.
    Replica,
    /// Fetched on demand from a peer; may be evicted.
    Cached,
}

impl ObjectState {
    fn code(self) -> u8 {
        match self {
            ObjectState::Primary => 0,
            ObjectState::Replica => 1,
            ObjectState::Cached => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ObjectState::Primary),
            1 => Some(ObjectState::Replica),
            2 => Some(ObjectState::Cached),
            _ => None,
        }
    }

    /// Lower-case name, for logs and wire formats.
    pub fn name(self) -> &'static str {
        match self {
            ObjectState::Primary => "primary",
            ObjectState::Replica => "replica",
            ObjectState::Cached => "cached",
        }
    }
}

/// The digest of an object assembled from separately uploaded parts: the MD5 of the
/// concatenated binary MD5s of its parts, and how many parts there were. S3 clients know it as
/// the multipart ETag `<hex>-<parts>`; the storage core only keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartsDigest {
    /// MD5 over the parts' MD5s, in part order.
    pub md5_of_part_md5s: Md5Digest,
    /// Number of parts.
    pub parts: u32,
}

/// One object as callers see it: the key's record joined with its blob's MD5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    /// The key.
    pub key: ObjectKey,
    /// Federation-wide identifier.
    pub object_id: ObjectId,
    /// Bytes.
    pub size: u64,
    /// Content address.
    pub blake3: Blake3Digest,
    /// MD5, once known (computed inline or soon after ingest).
    pub md5: Option<Md5Digest>,
    /// When the object was first stored at its origin.
    pub created: SystemTime,
    /// Site number of the node that first stored it.
    pub origin_site: u16,
    /// Why this node holds it.
    pub state: ObjectState,
    /// MIME type.
    pub content_type: String,
    /// When the object was assembled from parts: their digest.
    pub parts: Option<PartsDigest>,
}

/// The stored value of a key. A deleted key keeps its value with `deleted` set (a tombstone), so
/// the name stays bound to its content: keys are write-once even across deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectValue {
    pub object_id: ObjectId,
    pub size: u64,
    pub blake3: Blake3Digest,
    pub created: SystemTime,
    pub origin_site: u16,
    pub state: ObjectState,
    pub content_type: String,
    pub deleted: Option<SystemTime>,
    pub parts: Option<PartsDigest>,
}

/// What the catalogue knows of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord {
    /// Bytes.
    pub size: u64,
    /// Live keys that name this content.
    pub references: u64,
    /// MD5, once computed.
    pub md5: Option<Md5Digest>,
    /// Last time a scrub or fsck re-hashed it and found it whole.
    pub last_verified: Option<SystemTime>,
    /// Where its bytes are.
    pub state: BlobState,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// In the blob directory, served.
    Live,
    /// No key references it; in the trash since then, purged after the retention period.
    Trashed {
        /// When the last reference went.
        since: SystemTime,
    },
    /// Failed verification; moved aside and never served until repaired.
    Quarantined {
        /// When it was found.
        since: SystemTime,
    },
}

/// What a change-log entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The key became readable here.
    Put,
    /// The key was deleted (tombstoned) here.
    Delete,
}

/// One entry of the append-only change log that peers follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position in the log, from 1, without gaps.
    pub sequence: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// To which key.
    pub key: ObjectKey,
    /// The object's identifier.
    pub object_id: ObjectId,
    /// Its content.
    pub blake3: Blake3Digest,
    /// Its size.
    pub size: u64,
    /// When it happened.
    pub time: SystemTime,
}

/// Appends fixed-width big-endian fields; the decoder mirrors it.
struct Encoder(Vec<u8>);

impl Encoder {
    fn new() -> Self {
        Self::with_format(RECORD_FORMAT)
    }
    fn with_format(format: u8) -> Self {
        Self(vec![format])
    }
    fn u8(mut self, value: u8) -> Self {
        self.0.push(value);
        self
    }
    fn u16(mut self, value: u16) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn bytes(mut self, value: &[u8]) -> Self {
        self.0.extend_from_slice(value);
        self
    }
    fn time(self, value: SystemTime) -> Self {
        self.u64(micros(value))
    }
    fn optional_time(self, value: Option<SystemTime>) -> Self {
        match value {
            Some(time) => self.u8(1).time(time),
            None => self.u8(0),
        }
    }
    fn text(self, value: &str) -> Self {
        let len = u16::try_from(value.len()).expect("texts in records are short");
        self.u16(len).bytes(value.as_bytes())
    }
    fn optional_text(self, value: Option<&str>) -> Self {
        match value {
            Some(text) => self.u8(1).text(text),
            None => self.u8(0),
        }
    }
    fn i64(self, value: i64) -> Self {
        self.u64(value as u64)
    }
}

struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        let (version, decoder) = Self::versioned(bytes)?;
        (version == RECORD_FORMAT).then_some(decoder)
    }
    fn versioned(bytes: &'a [u8]) -> Option<(u8, Self)> {
        let (&version, rest) = bytes.split_first()?;
        Some((version, Self(rest)))
    }
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
    fn time(&mut self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_micros(self.u64()?))
    }
    fn optional_time(&mut self) -> Option<Option<SystemTime>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.time()?)),
            _ => None,
        }
    }
    fn text(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn optional_text(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.text()?)),
            _ => None,
        }
    }
    fn i64(&mut self) -> Option<i64> {
        Some(self.u64()? as i64)
    }
    /// Succeeds only when every byte was used, so trailing garbage is damage too.
    fn finish<T>(self, value: T) -> Option<T> {
        self.0.is_empty().then_some(value)
    }
}

/// Microseconds since the epoch; times before it are clamped to it.
pub(crate) fn micros(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

impl ObjectValue {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let format = match self.parts {
            None => RECORD_FORMAT,
            Some(_) => RECORD_FORMAT_WITH_PARTS,
        };
        let encoder = Encoder::with_format(format)
            .u64(self.object_id.0)
            .u64(self.size)
            .bytes(&self.blake3.0)
            .time(self.created)
            .u16(self.origin_site)
            .u8(self.state.code())
            .text(&self.content_type)
            .optional_time(self.deleted);
        match self.parts {
            None => encoder.0,
            Some(parts) => {
                encoder
                    .bytes(&parts.md5_of_part_md5s.0)
                    .u64(u64::from(parts.parts))
                    .0
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (format, mut decoder) = Decoder::versioned(bytes)?;
        if format != RECORD_FORMAT && format != RECORD_FORMAT_WITH_PARTS {
            return None;
        }
        let mut value = ObjectValue {
            object_id: ObjectId(decoder.u64()?),
            size: decoder.u64()?,
            blake3: Blake3Digest(decoder.array()?),
            created: decoder.time()?,
            origin_site: decoder.u16()?,
            state: ObjectState::from_code(decoder.u8()?)?,
            content_type: decoder.text()?,
            deleted: decoder.optional_time()?,
            parts: None,
        };
        if format == RECORD_FORMAT_WITH_PARTS {
            value.parts = Some(PartsDigest {
                md5_of_part_md5s: Md5Digest(decoder.array()?),
                parts: u32::try_from(decoder.u64()?).ok()?,
            });
        }
        decoder.finish(value)
    }

    pub(crate) fn to_record(&self, key: ObjectKey, md5: Option<Md5Digest>) -> ObjectRecord {
        ObjectRecord {
            key,
            object_id: self.object_id,
            size: self.size,
            blake3: self.blake3,
            md5,
            created: self.created,
            origin_site: self.origin_site,
            state: self.state,
            content_type: self.content_type.clone(),
            parts: self.parts,
        }
    }
}

impl BlobRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let encoder = Encoder::new().u64(self.size).u64(self.references);
        let encoder = match self.md5 {
            Some(md5) => encoder.u8(1).bytes(&md5.0),
            None => encoder.u8(0),
        };
        let encoder = encoder.optional_time(self.last_verified);
        match self.state {
            BlobState::Live => encoder.u8(0),
            BlobState::Trashed { since } => encoder.u8(1).time(since),
            BlobState::Quarantined { since } => encoder.u8(2).time(since),
        }
        .0
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut decoder = Decoder::new(bytes)?;
        let size = decoder.u64()?;
        let references = decoder.u64()?;
        let md5 = match decoder.u8()? {
            0 => None,
            1 => Some(Md5Digest(decoder.array()?)),
            _ => return None,
        };
        let last_verified = decoder.optional_time()?;
        let state = match decoder.u8()? {
            0 => BlobState::Live,
            1 => BlobState::Trashed {
                since: decoder.time()?,
            },
            2 => BlobState::Quarantined {
                since: decoder.time()?,
            },
            _ => return None,
        };
        let record = BlobRecord {
            size,
            references,
            md5,
            last_verified,
            state,
        };
        decoder.finish(record)
    }
}

impl Change {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let kind = match self.kind {
            ChangeKind::Put => 0,
            ChangeKind::Delete => 1,
        };
        Encoder::new()
            .u8(kind)
            .u64(self.object_id.0)
            .bytes(&self.blake3.0)
            .u64(self.size)
            .time(self.time)
            .text(self.key.as_str())
            .0
    }

    pub(crate) fn decode(sequence: u64, bytes: &[u8]) -> Option<Self> {
        let mut decoder = Decoder::new(bytes)?;
        let kind = match decoder.u8()? {
            0 => ChangeKind::Put,
            1 => ChangeKind::Delete,
            _ => return None,
        };
        let change = Change {
            sequence,
            kind,
            object_id: ObjectId(decoder.u64()?),
            blake3: Blake3Digest(decoder.array()?),
            size: decoder.u64()?,
            time: decoder.time()?,
            key: ObjectKey::parse(&decoder.text()?).ok()?,
        };
        decoder.finish(change)
    }
}

/// The byte encoding of a FITS index (one per blob: the index describes bytes).
impl FitsIndex {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut encoder = match &self.status {
            IndexStatus::Valid => Encoder::new().u8(0),
            IndexStatus::Invalid(reason) => Encoder::new().u8(1).text(truncated(reason)),
        };
        encoder = encoder.u64(self.hdus.len() as u64);
        for hdu in &self.hdus {
            encoder = encoder
                .u64(hdu.header_offset)
                .u64(hdu.header_len)
                .u64(hdu.data_offset)
                .u64(hdu.data_len)
                .optional_text(hdu.xtension.as_deref().map(truncated))
                .optional_text(hdu.extname.as_deref().map(truncated))
                .u8(u8::from(hdu.extver.is_some()))
                .i64(hdu.extver.unwrap_or(0))
                .i64(hdu.bitpix)
                .u16(u16::try_from(hdu.naxis.len()).expect("at most 999 axes"));
            for &axis in &hdu.naxis {
                encoder = encoder.u64(axis);
            }
            encoder = encoder
                .u64(hdu.pcount)
                .u64(hdu.gcount)
                .u8(u8::from(hdu.zimage))
                .u8(check_code(hdu.checksum))
                .u8(check_code(hdu.datasum));
        }
        encoder.0
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut decoder = Decoder::new(bytes)?;
        let status = match decoder.u8()? {
            0 => IndexStatus::Valid,
            1 => IndexStatus::Invalid(decoder.text()?),
            _ => return None,
        };
        let count = decoder.u64()?;
        // Each HDU takes at least 60 bytes: a count beyond what is left is damage.
        if count > decoder.0.len() as u64 / 60 {
            return None;
        }
        let mut hdus = Vec::with_capacity(usize::try_from(count).ok()?);
        for _ in 0..count {
            let header_offset = decoder.u64()?;
            let header_len = decoder.u64()?;
            let data_offset = decoder.u64()?;
            let data_len = decoder.u64()?;
            let xtension = decoder.optional_text()?;
            let extname = decoder.optional_text()?;
            let has_extver = decoder.u8()?;
            let extver = decoder.i64()?;
            let bitpix = decoder.i64()?;
            let axes = decoder.u16()?;
            let naxis = (0..axes)
                .map(|_| decoder.u64())
                .collect::<Option<Vec<u64>>>()?;
            hdus.push(Hdu {
                header_offset,
                header_len,
                data_offset,
                data_len,
                xtension,
                extname,
                extver: match has_extver {
                    0 => None,
                    1 => Some(extver),
                    _ => return None,
                },
                bitpix,
                naxis,
                pcount: decoder.u64()?,
                gcount: decoder.u64()?,
                zimage: decoder.u8()? != 0,
                checksum: check_from_code(decoder.u8()?)?,
                datasum: check_from_code(decoder.u8()?)?,
            });
        }
        decoder.finish(FitsIndex { hdus, status })
    }
}

/// The byte encoding of a tar index (one per blob).
impl TarIndex {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut encoder = Encoder::new()
            .optional_text(self.problem.as_deref().map(truncated))
            .u64(self.members.len() as u64);
        for member in &self.members {
            encoder = encoder
                .text(truncated_path(&member.path))
                .u64(member.offset)
                .u64(member.size);
        }
        encoder.0
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut decoder = Decoder::new(bytes)?;
        let problem = decoder.optional_text()?;
        let count = decoder.u64()?;
        // Each member takes at least 18 bytes: a count beyond what is left is damage.
        if count > decoder.0.len() as u64 / 18 {
            return None;
        }
        let members = (0..count)
            .map(|_| {
                Some(TarMember {
                    path: decoder.text()?,
                    offset: decoder.u64()?,
                    size: decoder.u64()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        decoder.finish(TarIndex { members, problem })
    }
}

/// A member path within the 16-bit length of a record text (tar paths are far shorter; a
/// longer one could not be asked for in a URL anyway).
fn truncated_path(path: &str) -> &str {
    let mut end = path.len().min(u16::MAX as usize);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// At most 1000 bytes of a text, cut at a character boundary: header strings are short, and a
/// record field must stay within its 16-bit length.
fn truncated(text: &str) -> &str {
    let mut end = text.len().min(1000);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn check_code(check: Check) -> u8 {
    match check {
        Check::Absent => 0,
        Check::Valid => 1,
        Check::Invalid => 2,
    }
}

fn check_from_code(code: u8) -> Option<Check> {
    match code {
        0 => Some(Check::Absent),
        1 => Some(Check::Valid),
        2 => Some(Check::Invalid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn time(micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(micros)
    }

    #[test]
    fn object_ids() {
        let id = ObjectId::new(7, 42).expect("in range");
        assert_eq!((id.site(), id.sequence()), (7, 42));
        assert_eq!(id.0, 7 << 48 | 42);
        assert_eq!(
            ObjectId::new(u16::MAX, MAX_SEQUENCE).map(|id| id.0),
            Some(u64::MAX)
        );
        assert_eq!(ObjectId::new(1, MAX_SEQUENCE + 1), None);
    }

    fn state() -> impl Strategy<Value = ObjectState> {
        prop_oneof![
            Just(ObjectState::Primary),
            Just(ObjectState::Replica),
            Just(ObjectState::Cached)
        ]
    }

    proptest! {
        #[test]
        fn object_value_round_trip(
            id in any::<u64>(), size in any::<u64>(), digest in any::<[u8; 32]>(),
            created in any::<u64>(), site in any::<u16>(), state in state(),
            content_type in ".{0,40}", deleted in proptest::option::of(any::<u64>()),
            parts in proptest::option::of((any::<[u8; 16]>(), any::<u32>())),
        ) {
            let value = ObjectValue {
                object_id: ObjectId(id), size, blake3: Blake3Digest(digest), created: time(created),
                origin_site: site, state, content_type, deleted: deleted.map(time),
                parts: parts.map(|(md5, parts)| PartsDigest { md5_of_part_md5s: Md5Digest(md5), parts }),
            };
            let bytes = value.encode();
            // Records without parts keep format 1, readable by builds that know only it.
            prop_assert_eq!(bytes[0], if value.parts.is_none() { RECORD_FORMAT } else { RECORD_FORMAT_WITH_PARTS });
            prop_assert_eq!(ObjectValue::decode(&bytes), Some(value));
        }

        #[test]
        fn blob_record_round_trip(
            size in any::<u64>(), references in any::<u64>(), md5 in proptest::option::of(any::<[u8; 16]>()),
            verified in proptest::option::of(any::<u64>()), state_code in 0u8..3, since in any::<u64>(),
        ) {
            let state = match state_code {
                0 => BlobState::Live,
                1 => BlobState::Trashed { since: time(since) },
                _ => BlobState::Quarantined { since: time(since) },
            };
            let record = BlobRecord { size, references, md5: md5.map(Md5Digest), last_verified: verified.map(time), state };
            prop_assert_eq!(BlobRecord::decode(&record.encode()), Some(record));
        }

        #[test]
        fn change_round_trip(sequence in any::<u64>(), delete in any::<bool>(), id in any::<u64>(), size in any::<u64>(), at in any::<u64>()) {
            let change = Change {
                sequence, kind: if delete { ChangeKind::Delete } else { ChangeKind::Put },
                key: ObjectKey::parse("kids/a.fits").expect("valid"), object_id: ObjectId(id),
                blake3: Blake3Digest::of(b"x"), size, time: time(at),
            };
            prop_assert_eq!(Change::decode(sequence, &change.encode()), Some(change));
        }

        #[test]
        fn fits_index_round_trip(
            hdus in proptest::collection::vec((
                any::<[u64; 4]>(),
                proptest::option::of("[ -~]{0,68}"),
                proptest::option::of(any::<i64>()),
                proptest::collection::vec(any::<u64>(), 0..5),
                any::<(i64, u64, u64, bool, u8, u8)>(),
            ), 0..6),
            invalid in proptest::option::of("[ -~]{0,100}"),
        ) {
            use crate::fits::{Check, Hdu, IndexStatus};
            let check = |code: u8| [Check::Absent, Check::Valid, Check::Invalid][usize::from(code % 3)];
            let index = FitsIndex {
                hdus: hdus.into_iter().map(|(offsets, extname, extver, naxis, (bitpix, pcount, gcount, zimage, checksum, datasum))| Hdu {
                    header_offset: offsets[0],
                    header_len: offsets[1],
                    data_offset: offsets[2],
                    data_len: offsets[3],
                    xtension: extname.as_ref().map(|_| "IMAGE".to_string()),
                    extname,
                    extver,
                    bitpix,
                    naxis,
                    pcount,
                    gcount,
                    zimage,
                    checksum: check(checksum),
                    datasum: check(datasum),
                }).collect(),
                status: invalid.map_or(IndexStatus::Valid, IndexStatus::Invalid),
            };
            prop_assert_eq!(FitsIndex::decode(&index.encode()), Some(index.clone()));
            let encoded = index.encode();
            for cut in 0..encoded.len() {
                prop_assert_eq!(FitsIndex::decode(&encoded[..cut]), None);
            }
        }

        #[test]
        fn tar_index_round_trip(
            members in proptest::collection::vec(("[ -~]{0,120}", any::<u64>(), any::<u64>()), 0..8),
            problem in proptest::option::of("[ -~]{0,60}"),
        ) {
            let index = TarIndex {
                members: members
                    .into_iter()
                    .map(|(path, offset, size)| TarMember { path, offset, size })
                    .collect(),
                problem,
            };
            let encoded = index.encode();
            prop_assert_eq!(TarIndex::decode(&encoded), Some(index));
            for cut in 0..encoded.len() {
                prop_assert_eq!(TarIndex::decode(&encoded[..cut]), None);
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ObjectValue::decode(&bytes);
            let _ = BlobRecord::decode(&bytes);
            let _ = Change::decode(1, &bytes);
            let _ = FitsIndex::decode(&bytes);
            let _ = TarIndex::decode(&bytes);
        }

        #[test]
        fn truncation_is_detected(cut in 0usize..90) {
            let value = ObjectValue {
                object_id: ObjectId(1), size: 2, blake3: Blake3Digest::of(b""), created: time(3),
                origin_site: 4, state: ObjectState::Cached, content_type: "image/fits".into(), deleted: None,
                parts: Some(PartsDigest { md5_of_part_md5s: Md5Digest([5; 16]), parts: 6 }),
            };
            let bytes = value.encode();
            prop_assert_eq!(ObjectValue::decode(&bytes[..cut.min(bytes.len() - 1)]), None);
        }
    }
}
