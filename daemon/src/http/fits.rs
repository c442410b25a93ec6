//! FITS views of an object, served from the index built at ingest: `?fitsindex` (the index as
//! JSON), `?header[&hdu=…]` (header cards as text), and `?hdu=N` or `?hdu=EXTNAME[,EXTVER]`
//! (one HDU's bytes as stored, a ranged read; `&standalone=1` puts a minimal primary header in
//! front of an extension so the result is a FITS file of its own).
//!
//! HDUs are numbered from 0 (the primary), as astropy numbers them. Every byte served comes
//! through the store's (verified) reads; nothing here reads a file.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use storage::fits::{self, Hdu, IndexStatus};
use storage::{ByteStream, FitsIndex, ObjectKey, ObjectRecord};

use super::error::ApiError;
use super::handlers::{body_of, form_pairs};
use super::wire::{self, FitsIndexInfo};
use super::{App, Body, full};

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// An HDU named in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HduSelector {
    /// By position, 0 = primary.
    Number(usize),
    /// By `EXTNAME` (case-insensitive, as astropy matches it) and optionally `EXTVER`.
    Name(String, Option<i64>),
}

/// A FITS view asked for in the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FitsView {
    /// `?fitsindex`.
    Index,
    /// `?header`, all HDUs or one.
    Header(Option<HduSelector>),
    /// `?hdu=…`, optionally as a standalone file.
    Hdu {
        /// Which HDU.
        hdu: HduSelector,
        /// `standalone=1`.
        standalone: bool,
    },
}

/// The FITS view a query asks for; `None` for a plain object read.
pub fn parse_view(query: &str) -> Result<Option<FitsView>> {
    let mut index = false;
    let mut header = false;
    let mut hdu = None;
    let mut standalone = false;
    for (name, value) in form_pairs(query) {
        match name.as_str() {
            "fitsindex" => index = true,
            "header" => header = true,
            "hdu" => hdu = Some(parse_hdu(&value)?),
            "standalone" => {
                standalone = match value.as_str() {
                    "" | "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad("standalone must be 1 or 0")),
                }
            }
            _ => {}
        }
    }
    let view = match (index, header, hdu) {
        (true, false, None) => FitsView::Index,
        (true, _, _) => return Err(bad("fitsindex takes no other FITS parameter")),
        (false, true, hdu) => FitsView::Header(hdu),
        (false, false, Some(hdu)) => FitsView::Hdu { hdu, standalone },
        (false, false, None) if standalone => return Err(bad("standalone needs hdu=")),
        (false, false, None) => return Ok(None),
    };
    Ok(Some(view))
}

fn parse_hdu(value: &str) -> Result<HduSelector> {
    if value.is_empty() {
        return Err(bad("hdu needs a number or an EXTNAME"));
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse()
            .map(HduSelector::Number)
            .map_err(|_| bad("hdu number is too large"));
    }
    let (name, version) = match value.rsplit_once(',') {
        Some((name, version)) => {
            let version = version
                .trim()
                .parse()
                .map_err(|_| bad("hdu=EXTNAME,EXTVER needs a whole number after the comma"))?;
            (name, Some(version))
        }
        None => (value, None),
    };
    Ok(HduSelector::Name(name.trim().to_owned(), version))
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_owned())
}

/// The index of the object at `key`, or a 400 saying why there is none to use.
async fn index_of(app: &App, record: &ObjectRecord) -> Result<FitsIndex> {
    app.store.fits_index(record).await?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{} is not a FITS file (it does not start with a SIMPLE card)",
            record.key
        ))
    })
}

/// Finds the HDU a selector names.
fn find<'a>(index: &'a FitsIndex, selector: &HduSelector) -> Result<(usize, &'a Hdu)> {
    let found = match selector {
        HduSelector::Number(number) => index.hdus.get(*number).map(|hdu| (*number, hdu)),
        HduSelector::Name(name, version) => index.hdus.iter().enumerate().find(|(_, hdu)| {
            hdu.extname
                .as_deref()
                .is_some_and(|extname| extname.eq_ignore_ascii_case(name))
                && version.is_none_or(|version| hdu.extver.unwrap_or(1) == version)
        }),
    };
    found.ok_or_else(|| {
        let broken = match &index.status {
            IndexStatus::Invalid(reason) => format!(" (the file is not valid FITS: {reason})"),
            IndexStatus::Valid => String::new(),
        };
        ApiError::BadRequest(format!(
            "no such HDU: the file has {} HDUs, numbered from 0{broken}",
            index.hdus.len()
        ))
    })
}

/// Serves `view` of the object at `key`.
pub async fn respond(
    app: &App,
    key: &ObjectKey,
    view: FitsView,
    head: bool,
) -> Result<Response<Body>> {
    let object = app.store.get(key).await?;
    let record = object.record().clone();
    let index = index_of(app, &record).await?;
    let verify = app.config.verify_reads;
    let read = |range: Range<u64>| object.read(range, verify);
    let (content_type, length, body): (&str, u64, Body) = match view {
        FitsView::Index => {
            let json =
                serde_json::to_vec(&FitsIndexInfo::from(&index)).expect("wire types serialise");
            ("application/json", json.len() as u64, full(json))
        }
        FitsView::Hdu { hdu, standalone } => {
            let (number, hdu) = find(&index, &hdu)?;
            let range = hdu.header_offset..hdu.end();
            let mut length = range.end - range.start;
            let mut pieces: Vec<ByteStream> = Vec::new();
            if standalone && number > 0 {
                let primary = minimal_primary_header();
                length += primary.len() as u64;
                pieces.push(stream::once(async move { Ok(primary) }).boxed());
            }
            if !head {
                pieces.push(read(range)?);
            }
            let body = body_of(app, stream::iter(pieces).flatten().boxed());
            ("application/fits", length, body)
        }
        FitsView::Header(selector) => {
            let chosen: Vec<&Hdu> = match &selector {
                Some(selector) => vec![find(&index, selector)?.1],
                None => index.hdus.iter().collect(),
            };
            let mut streams: Vec<ByteStream> = Vec::new();
            let mut length = 0;
            for (position, hdu) in chosen.into_iter().enumerate() {
                let cards = cards_before_end(app, &object, hdu).await?;
                length += cards * (fits::CARD_BYTES as u64 + 1) + u64::from(position > 0);
                if position > 0 {
                    streams.push(stream::once(async { Ok(Bytes::from_static(b"\n")) }).boxed());
                }
                let header = read(hdu.header_offset..hdu.header_offset + cards * 80)?;
                streams.push(card_lines(header));
            }
            let body = if head {
                full(Bytes::new())
            } else {
                body_of(app, stream::iter(streams).flatten().boxed())
            };
            ("text/plain; charset=us-ascii", length, body)
        }
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, length)
        .body(if head { full(Bytes::new()) } else { body })
        .expect("static response parts are valid");
    super::handlers::object_headers(response.headers_mut(), &record);
    summary_headers(response.headers_mut(), &index);
    if !head {
        app.metrics.bytes_out.inc_by(length);
    }
    Ok(response)
}

/// The number of cards of an HDU's header up to and including `END`: the length of its text
/// view is known before the body is sent. Reads the header once (headers are small next to
/// data: 36 cards per 2880 bytes).
async fn cards_before_end(app: &App, object: &storage::StoredObject, hdu: &Hdu) -> Result<u64> {
    let range = hdu.header_offset..hdu.header_offset + hdu.header_len;
    let mut pieces = object.read(range, app.config.verify_reads)?;
    let mut cards = 0;
    let mut carry = BytesMut::new();
    while let Some(piece) = pieces.next().await {
        carry.extend_from_slice(&piece?);
        while carry.len() >= fits::CARD_BYTES {
            let card = carry.split_to(fits::CARD_BYTES);
            cards += 1;
            if card.trim_ascii_end() == b"END" {
                return Ok(cards);
            }
        }
    }
    // The index says this header ends with END; a store read saying otherwise is damage the
    // verified read would have caught, or an index bug.
    Err(ApiError::BadRequest(
        "the header has no END card where the index says it ends".into(),
    ))
}

/// Header bytes (whole cards) as text lines of 80 characters.
fn card_lines(header: ByteStream) -> ByteStream {
    let mut carry = BytesMut::new();
    header
        .map(move |piece| {
            let piece = piece?;
            carry.extend_from_slice(&piece);
            let whole = carry.len() - carry.len() % fits::CARD_BYTES;
            let cards = carry.split_to(whole);
            let mut text = BytesMut::with_capacity(whole + whole / fits::CARD_BYTES);
            for card in cards.chunks_exact(fits::CARD_BYTES) {
                text.extend_from_slice(card);
                text.extend_from_slice(b"\n");
            }
            Ok(text.freeze())
        })
        .boxed()
}

/// A primary header with no data (`SIMPLE`, `BITPIX = 8`, `NAXIS = 0`, `EXTEND`) and correct
/// `CHECKSUM`/`DATASUM` cards, to put in front of an extension served on its own.
fn minimal_primary_header() -> Bytes {
    let cards = [
        "SIMPLE  =                    T / conforms to FITS standard",
        "BITPIX  =                    8 / array data type",
        "NAXIS   =                    0 / number of array dimensions",
        "EXTEND  =                    T",
        "CHECKSUM= '0000000000000000'   / HDU checksum",
        "DATASUM = '0       '           / data unit checksum",
        "END",
    ];
    let mut header: Vec<u8> = cards
        .iter()
        .flat_map(|card| format!("{card:<80}").into_bytes())
        .collect();
    header.resize(fits::BLOCK_BYTES, b' ');
    let mut sum = fits::OnesSum::default();
    sum.add(&header);
    let checksum = fits::encode_checksum(!sum.value());
    let at = 4 * fits::CARD_BYTES + 11;
    header[at..at + 16].copy_from_slice(&checksum);
    Bytes::from(header)
}

/// `x-fits-hdus` and `x-fits-checksum` for a FITS object.
pub fn summary_headers(headers: &mut HeaderMap, index: &FitsIndex) {
    const HDUS: HeaderName = HeaderName::from_static(wire::FITS_HDUS_HEADER);
    const CHECKSUM: HeaderName = HeaderName::from_static(wire::FITS_CHECKSUM_HEADER);
    headers.insert(HDUS, HeaderValue::from(index.hdus.len()));
    headers.insert(
        CHECKSUM,
        HeaderValue::from_static(wire::checksum_summary(index)),
    );
}

/// Adds the FITS summary headers to a plain GET or HEAD of a FITS object.
pub async fn add_summary(app: &App, record: &ObjectRecord, headers: &mut HeaderMap) -> Result<()> {
    if let Some(index) = app.store.fits_index(record).await? {
        summary_headers(headers, &index);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_from_queries() {
        let view = |query: &str| parse_view(query).map_err(|error| error.to_string());
        assert_eq!(view(""), Ok(None));
        assert_eq!(view("x=1"), Ok(None));
        assert_eq!(view("fitsindex"), Ok(Some(FitsView::Index)));
        assert_eq!(view("header"), Ok(Some(FitsView::Header(None))));
        assert_eq!(
            view("header&hdu=2"),
            Ok(Some(FitsView::Header(Some(HduSelector::Number(2)))))
        );
        assert_eq!(
            view("hdu=3"),
            Ok(Some(FitsView::Hdu {
                hdu: HduSelector::Number(3),
                standalone: false
            }))
        );
        assert_eq!(
            view("hdu=SCI,2&standalone=1"),
            Ok(Some(FitsView::Hdu {
                hdu: HduSelector::Name("SCI".into(), Some(2)),
                standalone: true
            }))
        );
        assert_eq!(
            view("hdu=CCD%2012"),
            Ok(Some(FitsView::Hdu {
                hdu: HduSelector::Name("CCD 12".into(), None),
                standalone: false
            }))
        );
        for refused in [
            "hdu=",
            "hdu=SCI,x",
            "standalone=1",
            "fitsindex&hdu=1",
            "hdu=99999999999999999999999",
            "hdu=1&standalone=yes",
        ] {
            assert!(view(refused).is_err(), "{refused}");
        }
    }

    use storage::fits::Check;

    #[test]
    fn the_minimal_primary_header_verifies() {
        let header = minimal_primary_header();
        let mut indexer = fits::Indexer::new();
        indexer.update(&header);
        let index = indexer.finish();
        assert_eq!(index.status, IndexStatus::Valid);
        assert_eq!(index.hdus[0].checksum, Check::Valid);
        assert_eq!(index.hdus[0].datasum, Check::Valid);
    }
}
