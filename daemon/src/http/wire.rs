//! Wire types of the native API: header names and JSON bodies, defined once.
//!
//! When the client crate arrives these move to `client::api`, so a wire change breaks both
//! builds.

use serde::Serialize;
use storage::ObjectRecord;

/// BLAKE3-256 of the object, hex (request: checked; response: always present).
pub const BLAKE3_HEADER: &str = "x-blake3";
/// The object's federation-wide ID (response).
pub const OBJECT_ID_HEADER: &str = "x-object-id";
/// A per-request ID, also in the access log (response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One object, as the API shows it.
#[derive(Debug, Serialize)]
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
    /// Creation time, RFC 3339 / HTTP date.
    pub created: String,
    /// MIME type.
    pub content_type: String,
    /// primary, replica or cached.
    pub state: &'static str,
}

impl From<&ObjectRecord> for ObjectInfo {
    fn from(record: &ObjectRecord) -> Self {
        Self {
            key: record.key.to_string(),
            object_id: record.object_id.0,
            size: record.size,
            blake3: record.blake3.to_hex(),
            md5: record.md5.map(|md5| md5.to_hex()),
            etag: etag(record),
            created: httpdate::fmt_http_date(record.created),
            content_type: record.content_type.clone(),
            state: record.state.name(),
        }
    }
}

/// The strong entity tag of an object: its content address.
pub fn etag(record: &ObjectRecord) -> String {
    format!("\"{}\"", record.blake3.to_hex())
}

/// The body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// What went wrong, as a sentence.
    pub error: &'a str,
    /// The request ID, to find it in the log.
    pub request_id: u64,
}

/// `GET /_/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// Site name.
    pub site: String,
    /// Site number.
    pub site_number: u16,
    /// Daemon version.
    pub version: &'static str,
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
