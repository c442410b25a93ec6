//! Wire types of the native API. They are defined once, in `client::api`, so a wire change
//! breaks the client's build and the daemon's; this module adds only the conversions from the
//! storage crate's types, which the client crate must not know.

pub use client::api::{
    BLAKE3_HEADER, ErrorBody, OBJECT_ID_HEADER, ObjectInfo, REQUEST_ID_HEADER, Status, Verification,
};
use storage::ObjectRecord;

/// One object, as the API shows it.
pub fn object_info(record: &ObjectRecord) -> ObjectInfo {
    ObjectInfo {
        key: record.key.to_string(),
        object_id: record.object_id.0,
        size: record.size,
        blake3: record.blake3.to_hex(),
        md5: record.md5.map(|md5| md5.to_hex()),
        etag: etag(record),
        created: httpdate::fmt_http_date(record.created),
        content_type: record.content_type.clone(),
        state: record.state.name().to_owned(),
    }
}

/// The strong entity tag of an object: its content address.
pub fn etag(record: &ObjectRecord) -> String {
    client::api::etag(&record.blake3.to_hex())
}
