//! FITS views of an object, served from the index built at ingest: `?fitsindex` (the index as
//! JSON), `?header[&hdu=…]` (header cards as text), and `?hdu=N` or `?hdu=EXTNAME[,EXTVER]`
//! (one HDU's bytes as stored, a ranged read; `&standalone=1` puts a minimal primary header in
//! front of an extension so the result is a FITS file of its own), and cut-outs of 2-D images:
//! `?hdu=N&section=y1:y2,x1:x2` (1-based, inclusive, in numpy axis order: rows first) or the
//! legacy `?FLO=x1,y1&FHI=x2,y2`, answered as a FITS image of the box whose header keeps the
//! source's cards, with CRPIXn shifted and checksum cards recomputed. Only the rows of the box
//! are read.
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
use super::wire;
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
    /// `?hdu=…&section=…` or `?FLO=…&FHI=…` (the first HDU with an image when none is named).
    Cutout {
        /// Which HDU.
        hdu: Option<HduSelector>,
        /// The box.
        cut: PixelBox,
    },
}

/// A box of pixels, 1-based and inclusive on both ends, as FITS counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelBox {
    /// First and last column (axis 1).
    pub x: (u64, u64),
    /// First and last row (axis 2).
    pub y: (u64, u64),
}

/// Largest cut-out served: the box is gathered in memory to sum it for its checksum cards.
const MAX_CUTOUT_BYTES: u64 = 64 << 20;

/// The FITS view a query asks for; `None` for a plain object read.
pub fn parse_view(query: &str) -> Result<Option<FitsView>> {
    let mut index = false;
    let mut header = false;
    let mut hdu = None;
    let mut standalone = false;
    let mut section = None;
    let (mut low, mut high) = (None, None);
    for (name, value) in form_pairs(query) {
        match name.as_str() {
            "fitsindex" => index = true,
            "header" => header = true,
            "hdu" => hdu = Some(parse_hdu(&value)?),
            "section" => section = Some(parse_section(&value)?),
            "FLO" => low = Some(parse_corner(&value, "FLO")?),
            "FHI" => high = Some(parse_corner(&value, "FHI")?),
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
    let legacy = match (low, high) {
        (Some((x1, y1)), Some((x2, y2))) => Some(ordered(x1, x2, y1, y2)?),
        (None, None) => None,
        _ => return Err(bad("FLO and FHI go together: FLO=x1,y1&FHI=x2,y2")),
    };
    if let Some(cut) = section.or(legacy) {
        if index || header || standalone || (section.is_some() && legacy.is_some()) {
            return Err(bad(
                "a cut-out takes hdu= and one box (section= or FLO/FHI) only",
            ));
        }
        if section.is_some() && hdu.is_none() {
            return Err(bad("section= needs hdu= (0 is the primary HDU)"));
        }
        return Ok(Some(FitsView::Cutout { hdu, cut }));
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

/// `y1:y2,x1:x2`.
fn parse_section(value: &str) -> Result<PixelBox> {
    let refuse = || bad("section must be y1:y2,x1:x2 (1-based, inclusive, rows first)");
    let (rows, columns) = value.split_once(',').ok_or_else(refuse)?;
    let span = |text: &str| -> Result<(u64, u64)> {
        let (first, last) = text.split_once(':').ok_or_else(refuse)?;
        let number = |text: &str| text.trim().parse::<u64>().map_err(|_| refuse());
        Ok((number(first)?, number(last)?))
    };
    let (y1, y2) = span(rows)?;
    let (x1, x2) = span(columns)?;
    ordered(x1, x2, y1, y2)
}

/// `x,y` of the legacy FLO/FHI parameters.
fn parse_corner(value: &str, name: &str) -> Result<(u64, u64)> {
    let refuse = || ApiError::BadRequest(format!("{name} must be x,y (1-based pixel numbers)"));
    let (x, y) = value.split_once(',').ok_or_else(refuse)?;
    let number = |text: &str| text.trim().parse::<u64>().map_err(|_| refuse());
    Ok((number(x)?, number(y)?))
}

fn ordered(x1: u64, x2: u64, y1: u64, y2: u64) -> Result<PixelBox> {
    if x1 == 0 || y1 == 0 {
        return Err(bad("pixel numbers start at 1"));
    }
    if x2 < x1 || y2 < y1 {
        return Err(bad("a box ends at or after where it starts"));
    }
    Ok(PixelBox {
        x: (x1, x2),
        y: (y1, y2),
    })
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
                serde_json::to_vec(&wire::fits_index_info(&index)).expect("wire types serialise");
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
        FitsView::Cutout { hdu, cut } => {
            let (_, hdu) = match &hdu {
                Some(selector) => find(&index, selector)?,
                None => index
                    .hdus
                    .iter()
                    .enumerate()
                    .find(|(_, hdu)| hdu.naxis.len() == 2 && !hdu.zimage && hdu.data_len > 0)
                    .ok_or_else(|| bad("the file has no 2-D image to cut"))?,
            };
            let cutout = cutout(app, &object, hdu, cut).await?;
            ("application/fits", cutout.len() as u64, full(cutout))
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

/// The header cards of an HDU up to (not including) `END`.
async fn header_cards(app: &App, object: &storage::StoredObject, hdu: &Hdu) -> Result<Vec<Bytes>> {
    let cards = cards_before_end(app, object, hdu).await?;
    let range = hdu.header_offset..hdu.header_offset + (cards - 1) * fits::CARD_BYTES as u64;
    let mut pieces = object.read(range, app.config.verify_reads)?;
    let mut header = BytesMut::new();
    while let Some(piece) = pieces.next().await {
        header.extend_from_slice(&piece?);
    }
    let header = header.freeze();
    Ok((0..header.len() / fits::CARD_BYTES)
        .map(|card| header.slice(card * fits::CARD_BYTES..(card + 1) * fits::CARD_BYTES))
        .collect())
}

/// A FITS file holding the pixels of `cut` of the 2-D image `hdu`.
async fn cutout(
    app: &App,
    object: &storage::StoredObject,
    hdu: &Hdu,
    cut: PixelBox,
) -> Result<Bytes> {
    if hdu.zimage {
        return Err(bad(
            "the HDU is a tile-compressed image: cut-outs need an uncompressed one",
        ));
    }
    let [width, height] = hdu.naxis[..] else {
        return Err(ApiError::BadRequest(format!(
            "cut-outs need a 2-D image; the HDU has {} axes",
            hdu.naxis.len()
        )));
    };
    if hdu
        .xtension
        .as_deref()
        .is_some_and(|xtension| xtension != "IMAGE")
    {
        return Err(bad("cut-outs need an image HDU, not a table"));
    }
    if cut.x.1 > width || cut.y.1 > height {
        return Err(ApiError::BadRequest(format!(
            "the box x {}..{}, y {}..{} leaves the {width} × {height} image",
            cut.x.0, cut.x.1, cut.y.0, cut.y.1
        )));
    }
    let pixel = hdu.bitpix.unsigned_abs() / 8;
    let row_bytes = (cut.x.1 - cut.x.0 + 1) * pixel;
    let rows = cut.y.1 - cut.y.0 + 1;
    let data_len = row_bytes * rows;
    if data_len > MAX_CUTOUT_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the cut-out would be {data_len} bytes, more than the {MAX_CUTOUT_BYTES} served at once: ask for a smaller box"
        )));
    }
    // Only the rows of the box are read, each its own range.
    let ranges: Vec<Range<u64>> = (cut.y.0..=cut.y.1)
        .map(|row| {
            let start = hdu.data_offset + ((row - 1) * width + (cut.x.0 - 1)) * pixel;
            start..start + row_bytes
        })
        .collect();
    let padded_len =
        usize::try_from(data_len.div_ceil(fits::BLOCK_BYTES as u64) * fits::BLOCK_BYTES as u64)
            .expect("bounded by MAX_CUTOUT_BYTES");
    let mut data = BytesMut::with_capacity(padded_len);
    for range in ranges {
        let mut pieces = object.read(range, app.config.verify_reads)?;
        while let Some(piece) = pieces.next().await {
            data.extend_from_slice(&piece?);
        }
    }
    data.resize(padded_len, 0);
    let source_cards = header_cards(app, object, hdu).await?;
    let mut cards = vec![
        fixed_card("SIMPLE", "T"),
        fixed_card("BITPIX", &hdu.bitpix.to_string()),
        fixed_card("NAXIS", "2"),
        fixed_card("NAXIS1", &(cut.x.1 - cut.x.0 + 1).to_string()),
        fixed_card("NAXIS2", &rows.to_string()),
    ];
    for card in &source_cards {
        let keyword = card[..8].trim_ascii_end();
        let structural = matches!(
            keyword,
            b"SIMPLE"
                | b"XTENSION"
                | b"BITPIX"
                | b"NAXIS"
                | b"PCOUNT"
                | b"GCOUNT"
                | b"EXTEND"
                | b"CHECKSUM"
                | b"DATASUM"
        ) || (keyword.starts_with(b"NAXIS")
            && keyword[5..].iter().all(u8::is_ascii_digit));
        if structural {
            continue;
        }
        let shift = match keyword {
            b"CRPIX1" => Some(cut.x.0 - 1),
            b"CRPIX2" => Some(cut.y.0 - 1),
            _ => None,
        };
        match shift.and_then(|shift| shifted_crpix(card, shift)) {
            Some(shifted) => cards.push(shifted),
            None => cards.push(card.to_vec()),
        }
    }
    let mut data_sum = fits::OnesSum::default();
    data_sum.add(&data);
    cards.push(text_card("DATASUM", &data_sum.value().to_string()));
    cards.push(text_card("CHECKSUM", "0000000000000000"));
    cards.push(format!("{:<80}", "END").into_bytes());
    let mut file: Vec<u8> = cards.concat();
    file.resize(
        file.len().div_ceil(fits::BLOCK_BYTES) * fits::BLOCK_BYTES,
        b' ',
    );
    let mut sum = fits::OnesSum::default();
    sum.add(&file);
    sum.add_sum(data_sum);
    let at = (cards.len() - 2) * fits::CARD_BYTES + 11;
    file[at..at + 16].copy_from_slice(&fits::encode_checksum(!sum.value()));
    file.extend_from_slice(&data);
    Ok(Bytes::from(file))
}

/// A card with a fixed-format value (right-justified to column 30).
fn fixed_card(keyword: &str, value: &str) -> Vec<u8> {
    format!("{:<80}", format!("{keyword:<8}= {value:>20}")).into_bytes()
}

/// A card with a string value.
fn text_card(keyword: &str, value: &str) -> Vec<u8> {
    format!("{:<80}", format!("{keyword:<8}= '{value}'")).into_bytes()
}

/// A `CRPIXn` card with its value less `shift`, keeping its comment; `None` when the value is
/// not a number (the card is then kept as it is).
fn shifted_crpix(card: &[u8], shift: u64) -> Option<Vec<u8>> {
    let keyword = std::str::from_utf8(card[..8].trim_ascii_end()).ok()?;
    let field = std::str::from_utf8(&card[10..]).ok()?;
    let (value, comment) = match field.split_once('/') {
        Some((value, comment)) => (value, Some(comment.trim())),
        None => (field, None),
    };
    let value: f64 = value.trim().replace(['D', 'd'], "E").parse().ok()?;
    let shifted = format!("{:?}", value - shift as f64);
    let mut text = format!("{keyword:<8}= {shifted:>20}");
    if let Some(comment) = comment.filter(|comment| !comment.is_empty()) {
        text.push_str(" / ");
        text.push_str(comment);
    }
    text.truncate(fits::CARD_BYTES);
    Some(format!("{text:<80}").into_bytes())
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
        assert_eq!(
            view("hdu=1&section=10:20,5:7"),
            Ok(Some(FitsView::Cutout {
                hdu: Some(HduSelector::Number(1)),
                cut: PixelBox {
                    x: (5, 7),
                    y: (10, 20)
                }
            }))
        );
        assert_eq!(
            view("FLO=5,10&FHI=7,20"),
            Ok(Some(FitsView::Cutout {
                hdu: None,
                cut: PixelBox {
                    x: (5, 7),
                    y: (10, 20)
                }
            }))
        );
        for refused in [
            "section=1:2,1:2",
            "hdu=1&section=0:2,1:2",
            "hdu=1&section=3:2,1:2",
            "hdu=1&section=1:2",
            "hdu=1&section=a:b,1:2",
            "FLO=1,1",
            "FLO=1,1&FHI=2",
            "hdu=1&section=1:2,1:2&FLO=1,1&FHI=2,2",
            "hdu=1&section=1:2,1:2&header",
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
    fn crpix_cards_shift_and_keep_their_comment() {
        let card = format!(
            "{:<80}",
            "CRPIX1  =               1024.5 / Pixel coordinate of reference point"
        );
        let shifted = shifted_crpix(card.as_bytes(), 100).expect("a number");
        assert_eq!(shifted.len(), 80);
        assert!(
            String::from_utf8(shifted).expect("ascii").starts_with(
                "CRPIX1  =                924.5 / Pixel coordinate of reference point"
            ),
        );
        let exponent = format!("{:<80}", "CRPIX2  =  1.0000000000000D+01");
        let shifted = shifted_crpix(exponent.as_bytes(), 4).expect("a number");
        assert!(
            String::from_utf8(shifted)
                .expect("ascii")
                .starts_with("CRPIX2  =                  6.0")
        );
        assert_eq!(
            shifted_crpix(format!("{:<80}", "CRPIX1  = 'x'").as_bytes(), 1),
            None
        );
    }

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
