//! Wire types of the native HTTP API: header names, reserved paths and JSON bodies, defined
//! once for both sides.
//!
//! The daemon serialises these and the client deserialises them, so a change here breaks both
//! builds. Plain serde data only: no HTTP client, no conversions from storage types (those stay
//! in the daemon), so the daemon can depend on this module without the client's HTTP stack.

use serde::{Deserialize, Serialize};

/// BLAKE3-256 of the object, hex (request: checked; response: always present).
pub const BLAKE3_HEADER: &str = "x-blake3";
/// The object's federation-wide ID (response).
pub const OBJECT_ID_HEADER: &str = "x-object-id";
/// A per-request ID, also in the access log (response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Path of the listing: `GET /_/list?prefix=&after=&limit=` answers a [`ListPage`].
pub const LIST_PATH: &str = "/_/list";
/// Path of the node's facts: `GET /_/status` answers a [`Status`].
pub const STATUS_PATH: &str = "/_/status";
/// Prefix of the re-verification route: `POST /_/verify/<key>` answers a [`Verification`].
pub const VERIFY_PREFIX: &str = "/_/verify/";

/// One object, as the API shows it (PUT and DELETE answers, listing entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Key.
    pub key: String,
    /// Federation-wide ID.
    pub object_id: u64,
    /// Bytes.
    pub size: u64,
    /// BLAKE3-256, hex.
    pub blake3: String,
    /// MD5, hex, once known.
    pub md5: Option<String>,
    /// Entity tag, quoted.
    pub etag: String,
    /// Creation time, HTTP date.
    pub created: String,
    /// MIME type.
    pub content_type: String,
    /// `primary`, `replica` or `cached`.
    pub state: String,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, as a sentence.
    pub error: String,
    /// The request ID, to find it in the log.
    pub request_id: u64,
}

/// One page of `GET /_/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// Objects in key order.
    pub objects: Vec<ObjectInfo>,
    /// Pass as `after` to read the next page; `null` when the listing is complete.
    pub next_after: Option<String>,
}

/// `GET /_/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// Site name.
    pub site: String,
    /// Site number.
    pub site_number: u16,
    /// Daemon version.
    pub version: String,
    /// Live objects.
    pub objects: u64,
    /// Bytes of live objects.
    pub bytes: u64,
    /// Free bytes on the data directory's filesystem.
    pub free_bytes: u64,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Whether reads are verified against the BLAKE3 tree.
    pub verify_reads: bool,
}

/// `POST /_/verify/<key>`: the outcome of re-hashing the stored copy of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Key.
    pub key: String,
    /// The BLAKE3-256 the object is bound to, hex.
    pub blake3: String,
    /// Bytes re-hashed.
    pub size: u64,
    /// True when the stored bytes still hash to `blake3`. When false the copy has been
    /// quarantined and is no longer served.
    pub intact: bool,
    /// True when the bytes were whole but the hash tree was damaged and has been rebuilt.
    pub tree_rebuilt: bool,
}

/// Number of HDUs of a FITS object (response to GET and HEAD).
pub const FITS_HDUS_HEADER: &str = "x-fits-hdus";
/// `valid`, `invalid` or `absent`: the CHECKSUM and DATASUM cards of a FITS object's HDUs,
/// together: `invalid` if any fails, else `valid` if any is present (response to GET and HEAD).
pub const FITS_CHECKSUM_HEADER: &str = "x-fits-checksum";

/// One HDU in `GET /<key>?fitsindex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HduInfo {
    /// Position, 0 = primary (as astropy numbers HDUs).
    pub index: usize,
    /// `XTENSION`, absent for the primary HDU.
    pub xtension: Option<String>,
    /// `EXTNAME`.
    pub extname: Option<String>,
    /// `EXTVER`.
    pub extver: Option<i64>,
    /// Offset of the header.
    pub header_offset: u64,
    /// Header bytes (whole 2880-byte blocks).
    pub header_length: u64,
    /// Offset of the data.
    pub data_offset: u64,
    /// Data bytes, without padding.
    pub data_length: u64,
    /// Data bytes with the padding to whole blocks (the HDU ends at data_offset + this).
    pub data_span: u64,
    /// `BITPIX`.
    pub bitpix: i64,
    /// `NAXIS1` … `NAXISn`.
    pub naxis: Vec<u64>,
    /// `PCOUNT`.
    pub pcount: u64,
    /// `GCOUNT`.
    pub gcount: u64,
    /// A tile-compressed image (`ZIMAGE = T`).
    pub zimage: bool,
    /// `valid`, `invalid` or `absent`.
    pub checksum: String,
    /// `valid`, `invalid` or `absent`.
    pub datasum: String,
}

/// `GET /<key>?fitsindex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitsIndexInfo {
    /// Whether the whole file parsed as FITS.
    pub valid: bool,
    /// Why not, when it did not.
    pub reason: Option<String>,
    /// `valid`, `invalid` or `absent`, over all HDUs.
    pub checksum: String,
    /// The HDUs parsed, in file order.
    pub hdus: Vec<HduInfo>,
}

/// One file of a tar archive in `GET /<key>?tarindex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarMemberInfo {
    /// Its path inside the archive.
    pub path: String,
    /// Offset of its first byte in the archive.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// `GET /<key>?tarindex`: the regular files of a tar archive (a Measurement Set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarIndexInfo {
    /// Whether the archive was read to its end-of-archive marker.
    pub valid: bool,
    /// Why not, when it was not.
    pub reason: Option<String>,
    /// The files, in archive order.
    pub members: Vec<TarMemberInfo>,
}

/// The strong entity tag of an object with this BLAKE3 digest (hex): its content address,
/// quoted.
pub fn etag(blake3_hex: &str) -> String {
    format!("\"{blake3_hex}\"")
}

/// The URL path of `key`: each `/`-separated segment percent-encoded, as the server expects
/// (DESIGN.md §3: `#` travels as `%23`).
pub fn key_path(key: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    // Everything that is not unreserved in a path segment (RFC 3986) is encoded.
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'[')
        .add(b']')
        .add(b'\\')
        .add(b'^')
        .add(b'|')
        .add(b'+')
        .add(b';')
        .add(b'=')
        .add(b'&');
    let mut path = String::with_capacity(key.len() + 1);
    for segment in key.split('/') {
        path.push('/');
        path.extend(utf8_percent_encode(segment, SEGMENT));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths() {
        let check = |key: &str, path: &str| assert_eq!(key_path(key), path, "{key}");
        check("kids/a.fits", "/kids/a.fits");
        check("a#b", "/a%23b");
        check("a b/c", "/a%20b/c");
        check("x?y=1&z", "/x%3Fy%3D1%26z");
        check("100%", "/100%25");
        check("ü", "/%C3%BC");
    }

    proptest::proptest! {
        /// Encoded paths decode back to the key, and keep `/` only between segments.
        #[test]
        fn key_paths_decode_to_the_key(segments in proptest::collection::vec("[^/]{1,12}", 1..5)) {
            let key = segments.join("/");
            let path = key_path(&key);
            proptest::prop_assert_eq!(path.matches('/').count(), segments.len());
            for encoded in path[1..].split('/') {
                proptest::prop_assert!(!encoded.contains(['?', '#', ' ']));
            }
            let decoded = percent_encoding::percent_decode_str(&path[1..]).decode_utf8().expect("utf-8");
            proptest::prop_assert_eq!(decoded, key);
        }
    }

    #[test]
    fn bodies_round_trip() {
        let page = ListPage {
            objects: vec![ObjectInfo {
                key: "k".into(),
                object_id: 7,
                size: 3,
                blake3: "ab".into(),
                md5: None,
                etag: etag("ab"),
                created: "Thu, 01 Jan 1970 00:00:00 GMT".into(),
                content_type: "image/fits".into(),
                state: "primary".into(),
            }],
            next_after: Some("k".into()),
        };
        let text = serde_json::to_string(&page).expect("serialise");
        assert_eq!(
            serde_json::from_str::<ListPage>(&text).expect("parse"),
            page
        );
        assert!(text.contains("\"etag\":\"\\\"ab\\\"\""), "{text}");
    }
}
