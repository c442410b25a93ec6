//! Wire types of the native API: header names and JSON bodies, defined once.
//!
//! When the client crate arrives these move to `client::api`, so a wire change breaks both
//! builds.

use serde::Serialize;
use storage::ObjectRecord;
use storage::fits::{Check, FitsIndex, IndexStatus};

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

/// Number of HDUs of a FITS object (response to GET and HEAD).
pub const FITS_HDUS_HEADER: &str = "x-fits-hdus";
/// `valid`, `invalid` or `absent`: the CHECKSUM cards of a FITS object's HDUs, together
/// (response to GET and HEAD).
pub const FITS_CHECKSUM_HEADER: &str = "x-fits-checksum";

/// One HDU in `GET /<key>?fitsindex`.
#[derive(Debug, Serialize)]
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
    pub checksum: &'static str,
    /// `valid`, `invalid` or `absent`.
    pub datasum: &'static str,
}

/// `GET /<key>?fitsindex`.
#[derive(Debug, Serialize)]
pub struct FitsIndexInfo {
    /// Whether the whole file parsed as FITS.
    pub valid: bool,
    /// Why not, when it did not.
    pub reason: Option<String>,
    /// `valid`, `invalid` or `absent`, over all HDUs.
    pub checksum: &'static str,
    /// The HDUs parsed, in file order.
    pub hdus: Vec<HduInfo>,
}

impl From<&FitsIndex> for FitsIndexInfo {
    fn from(index: &FitsIndex) -> Self {
        let (valid, reason) = match &index.status {
            IndexStatus::Valid => (true, None),
            IndexStatus::Invalid(reason) => (false, Some(reason.clone())),
        };
        let hdus = index
            .hdus
            .iter()
            .enumerate()
            .map(|(position, hdu)| HduInfo {
                index: position,
                xtension: hdu.xtension.clone(),
                extname: hdu.extname.clone(),
                extver: hdu.extver,
                header_offset: hdu.header_offset,
                header_length: hdu.header_len,
                data_offset: hdu.data_offset,
                data_length: hdu.data_len,
                data_span: hdu.data_padded_len(),
                bitpix: hdu.bitpix,
                naxis: hdu.naxis.clone(),
                pcount: hdu.pcount,
                gcount: hdu.gcount,
                zimage: hdu.zimage,
                checksum: check_name(hdu.checksum),
                datasum: check_name(hdu.datasum),
            })
            .collect();
        Self {
            valid,
            reason,
            checksum: checksum_summary(index),
            hdus,
        }
    }
}

/// The CHECKSUM cards of all HDUs together: `invalid` if any fails, else `valid` if any is
/// present, else `absent`.
pub fn checksum_summary(index: &FitsIndex) -> &'static str {
    let checks = || index.hdus.iter().map(|hdu| hdu.checksum);
    if checks().any(|check| check == Check::Invalid) {
        "invalid"
    } else if checks().any(|check| check == Check::Valid) {
        "valid"
    } else {
        "absent"
    }
}

fn check_name(check: Check) -> &'static str {
    match check {
        Check::Absent => "absent",
        Check::Valid => "valid",
        Check::Invalid => "invalid",
    }
}
