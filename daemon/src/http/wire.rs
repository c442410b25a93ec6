//! Wire types of the native API. They are defined once, in `client::api`, so a wire change
//! breaks the client's build and the daemon's; this module adds only the conversions from the
//! storage crate's types, which the client crate must not know.

pub use client::api::{
    BLAKE3_HEADER, ErrorBody, FITS_CHECKSUM_HEADER, FITS_HDUS_HEADER, FitsIndexInfo, HduInfo,
    OBJECT_ID_HEADER, ObjectInfo, REQUEST_ID_HEADER, Status, TarIndexInfo, TarMemberInfo,
    Verification,
};
use storage::ObjectRecord;
use storage::fits::{Check, FitsIndex, IndexStatus};

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

/// The index of a FITS object, as the API shows it.
pub fn fits_index_info(index: &FitsIndex) -> FitsIndexInfo {
    {
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
                checksum: check_name(hdu.checksum).to_owned(),
                datasum: check_name(hdu.datasum).to_owned(),
            })
            .collect();
        FitsIndexInfo {
            valid,
            reason,
            checksum: checksum_summary(index).to_owned(),
            hdus,
        }
    }
}

/// The CHECKSUM and DATASUM cards of all HDUs together, as the wire names the verdict.
pub fn checksum_summary(index: &FitsIndex) -> &'static str {
    check_name(storage::fits::checksum_verdict(index))
}

fn check_name(check: Check) -> &'static str {
    match check {
        Check::Absent => "absent",
        Check::Valid => "valid",
        Check::Invalid => "invalid",
    }
}
