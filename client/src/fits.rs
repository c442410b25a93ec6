//! FITS views through the client: the server's HDU index, one HDU's bytes, header cards as
//! text and cut-outs of 2-D images (the `?fitsindex`, `?hdu=`, `?header` and `?section=`
//! views of the native API).
//!
//! A view is not the whole object, so the object's BLAKE3 cannot be checked against it and an
//! interrupted view is not resumed. What is checked instead: the server verifies every read
//! against the object's BLAKE3 tree before sending it, and here the FITS checksum cards of
//! every HDU in an answer are summed as the bytes arrive (a cut-out always carries correct
//! cards, made by the server; an HDU carries the cards it was stored with, if any).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::api::{self, FitsIndexInfo};
use crate::client::{Client, parse_json};
use crate::error::{Error, Result, io_error};

/// An HDU, by position or by name, as the `hdu=` parameter takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HduSelector {
    /// By position: 0 is the primary HDU (as astropy numbers them).
    Number(usize),
    /// By `EXTNAME` (matched without regard to case) and, optionally, `EXTVER`. A name made only
    /// of digits would be read as a position, and a name holding a comma needs its `EXTVER`.
    Name {
        /// `EXTNAME`.
        extname: String,
        /// `EXTVER` (the server takes an HDU without one as version 1).
        extver: Option<i64>,
    },
}

impl std::fmt::Display for HduSelector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HduSelector::Number(number) => write!(formatter, "{number}"),
            HduSelector::Name {
                extname,
                extver: Some(extver),
            } => write!(formatter, "{extname},{extver}"),
            HduSelector::Name { extname, .. } => formatter.write_str(extname),
        }
    }
}

impl std::str::FromStr for HduSelector {
    type Err = String;

    /// `3`, `SCI` or `SCI,2`.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an HDU is a number (0 = primary), EXTNAME or EXTNAME,EXTVER".into());
        }
        if text.bytes().all(|byte| byte.is_ascii_digit()) {
            return text
                .parse()
                .map(HduSelector::Number)
                .map_err(|_| format!("HDU number {text} is too large"));
        }
        let (extname, extver) = match text.rsplit_once(',') {
            Some((name, version)) => {
                let version = version.trim().parse().map_err(|_| {
                    format!("{text}: EXTNAME,EXTVER needs a whole number after the comma")
                })?;
                (name.trim(), Some(version))
            }
            None => (text, None),
        };
        if extname.is_empty() {
            return Err(format!("{text}: the EXTNAME is empty"));
        }
        Ok(HduSelector::Name {
            extname: extname.to_owned(),
            extver,
        })
    }
}

impl HduSelector {
    /// `hdu=…`, percent-encoded.
    fn query(&self) -> String {
        format!(
            "hdu={}",
            utf8_percent_encode(&self.to_string(), NON_ALPHANUMERIC)
        )
    }
}

/// A box of pixels of a 2-D image, FITS-style: 1-based, both ends included, rows (axis 2)
/// first as numpy and astropy's `section` index them. Written `y1:y2,x1:x2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// First and last row.
    pub rows: (u64, u64),
    /// First and last column.
    pub columns: (u64, u64),
}

impl std::fmt::Display for Section {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Section {
            rows: (y1, y2),
            columns: (x1, x2),
        } = self;
        write!(formatter, "{y1}:{y2},{x1}:{x2}")
    }
}

impl std::str::FromStr for Section {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let refuse = || {
            format!("{text}: a section is y1:y2,x1:x2 (1-based, both ends included, rows first)")
        };
        let span = |part: &str| -> std::result::Result<(u64, u64), String> {
            let (first, last) = part.split_once(':').ok_or_else(refuse)?;
            let number = |value: &str| value.trim().parse::<u64>().map_err(|_| refuse());
            let (first, last) = (number(first)?, number(last)?);
            if first == 0 || last < first {
                return Err(refuse());
            }
            Ok((first, last))
        };
        let (rows, columns) = text.split_once(',').ok_or_else(refuse)?;
        Ok(Section {
            rows: span(rows)?,
            columns: span(columns)?,
        })
    }
}

impl Section {
    /// The query of a cut-out of this box: `hdu=…&section=…`, or without an HDU the legacy
    /// `FLO=x1,y1&FHI=x2,y2`, with which the server cuts the first 2-D image of the file.
    fn query(&self, hdu: Option<&HduSelector>) -> String {
        match hdu {
            Some(hdu) => format!("{}&section={self}", hdu.query()),
            None => format!(
                "FLO={},{}&FHI={},{}",
                self.columns.0, self.rows.0, self.columns.1, self.rows.1
            ),
        }
    }
}

/// What the `CHECKSUM` card of one HDU of an answer says about the bytes received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumVerdict {
    /// The HDU sums to negative zero, as its `CHECKSUM` card promises.
    Valid,
    /// The HDU has a `CHECKSUM` card and does not sum to negative zero.
    Invalid,
    /// The HDU has no `CHECKSUM` card: nothing to check.
    Absent,
}

/// A FITS answer received: its size and the verdict of each HDU's checksum, in order (a
/// standalone extension has two HDUs: the minimal primary header, then the extension).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FitsAnswer {
    /// Bytes received.
    pub size: u64,
    /// One verdict per HDU.
    pub checksums: Vec<ChecksumVerdict>,
}

impl FitsAnswer {
    /// The verdict of the answer as a whole: invalid if any HDU's is, valid if every HDU has
    /// a correct card, absent otherwise.
    pub fn checksum(&self) -> ChecksumVerdict {
        if self.checksums.contains(&ChecksumVerdict::Invalid) {
            ChecksumVerdict::Invalid
        } else if self.checksums.contains(&ChecksumVerdict::Absent) {
            ChecksumVerdict::Absent
        } else {
            ChecksumVerdict::Valid
        }
    }
}

/// A FITS answer to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FitsPart {
    /// One HDU's bytes as stored; `standalone` puts a minimal primary header in front of an
    /// extension, making it a FITS file of its own.
    Hdu {
        /// Which HDU.
        hdu: HduSelector,
        /// A FITS file of its own.
        standalone: bool,
    },
    /// A cut-out of a 2-D image as a FITS file (without `hdu`, of the file's first 2-D image).
    Cutout {
        /// Which HDU.
        hdu: Option<HduSelector>,
        /// The box.
        section: Section,
    },
}

impl FitsPart {
    fn query(&self) -> String {
        match self {
            FitsPart::Hdu {
                hdu,
                standalone: true,
            } => format!("{}&standalone=1", hdu.query()),
            FitsPart::Hdu { hdu, .. } => hdu.query(),
            FitsPart::Cutout { hdu, section } => section.query(hdu.as_ref()),
        }
    }
}

impl Client {
    /// `GET /<key>?fitsindex`: the HDUs the server found when the object was stored. A file
    /// that is not FITS is refused (400, as [`Error::Rejected`]).
    pub async fn fits_index(&self, key: &str) -> Result<FitsIndexInfo> {
        let response = self.view_response(key, "fitsindex").await?;
        parse_json(response).await
    }

    /// `GET /<key>?header[&hdu=…]`: the header cards of every HDU (or of one) as text, one
    /// 80-character card per line, HDUs separated by an empty line.
    pub async fn header_text(&self, key: &str, hdu: Option<&HduSelector>) -> Result<String> {
        let query = match hdu {
            Some(hdu) => format!("header&{}", hdu.query()),
            None => "header".to_owned(),
        };
        let body = self.view_response(key, &query).await?.bytes().await?;
        String::from_utf8(body.to_vec())
            .map_err(|_| Error::Protocol("the header text is not ASCII".into()))
    }

    /// One HDU of `key` in memory, its checksum cards checked (see [`Client::fits_to_writer`]).
    pub async fn get_hdu(&self, key: &str, hdu: &HduSelector, standalone: bool) -> Result<Bytes> {
        let part = FitsPart::Hdu {
            hdu: hdu.clone(),
            standalone,
        };
        self.fits_to_memory(key, &part).await
    }

    /// A cut-out of `section` of the image `hdu` (default: the file's first 2-D image) as a
    /// FITS file in memory (the server limits cut-outs to a few tens of MiB), its checksum
    /// checked.
    pub async fn cutout(
        &self,
        key: &str,
        hdu: Option<&HduSelector>,
        section: Section,
    ) -> Result<Bytes> {
        let part = FitsPart::Cutout {
            hdu: hdu.cloned(),
            section,
        };
        self.fits_to_memory(key, &part).await
    }

    async fn fits_to_memory(&self, key: &str, part: &FitsPart) -> Result<Bytes> {
        let mut bytes = Vec::new();
        self.fits_to_writer(key, part, &mut bytes).await?;
        Ok(Bytes::from(bytes))
    }

    /// Streams `part` of `key` into `writer`, summing each HDU as it passes. Fails with
    /// [`Error::DigestMismatch`] when a checksum that must hold does not: always for a cut-out
    /// (the server made its cards), and for an HDU when the server's index says the stored
    /// object's checksums all verify. An HDU stored with a wrong card is delivered as stored,
    /// with [`ChecksumVerdict::Invalid`] in the answer. The bytes already written are then not
    /// to be used; [`Client::fits_to_file`] deletes them.
    pub async fn fits_to_writer<W>(
        &self,
        key: &str,
        part: &FitsPart,
        writer: &mut W,
    ) -> Result<FitsAnswer>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        self.fits_into(key, part, writer, Path::new("the output"))
            .await
    }

    /// `fits_to_writer`, naming `output` in write errors.
    async fn fits_into<W>(
        &self,
        key: &str,
        part: &FitsPart,
        writer: &mut W,
        output: &Path,
    ) -> Result<FitsAnswer>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let response = self.view_response(key, &part.query()).await?;
        let mut body = response.bytes_stream();
        let mut summer = HduSummer::default();
        let mut size = 0u64;
        while let Some(piece) = body.try_next().await? {
            summer.update(&piece);
            size += piece.len() as u64;
            writer
                .write_all(&piece)
                .await
                .map_err(io_error("write", output))?;
        }
        writer.flush().await.map_err(io_error("write", output))?;
        let checksums = summer
            .finish()
            .map_err(|reason| Error::Protocol(format!("the answer is not whole FITS: {reason}")))?;
        let answer = FitsAnswer { size, checksums };
        if answer.checksum() == ChecksumVerdict::Invalid {
            let must_hold = match part {
                FitsPart::Cutout { .. } => true,
                FitsPart::Hdu { .. } => self.fits_index(key).await?.checksum == "valid",
            };
            if must_hold {
                return Err(Error::DigestMismatch {
                    message: format!(
                        "the FITS checksum of the answer for {key} does not verify, though the stored bytes do: damaged on the way"
                    ),
                });
            }
        }
        Ok(answer)
    }

    /// Streams `part` of `key` to the file at `path` (through `<path>.view-part`, renamed once
    /// whole and checked, deleted on failure; never resumed, never held in memory).
    pub async fn fits_to_file(
        &self,
        key: &str,
        part: &FitsPart,
        path: &Path,
    ) -> Result<FitsAnswer> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".view-part");
        let partial = PathBuf::from(partial);
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(io_error("create", &partial))?;
        let outcome = self.fits_into(key, part, &mut file, path).await;
        drop(file);
        let outcome = match outcome {
            Ok(answer) => tokio::fs::rename(&partial, path)
                .await
                .map(|()| answer)
                .map_err(io_error("rename", &partial)),
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        outcome
    }

    /// A GET of `key` with a FITS view's query, retried like every idempotent request.
    async fn view_response(&self, key: &str, query: &str) -> Result<reqwest::Response> {
        let path = format!("{}?{query}", api::key_path(key));
        self.send_idempotent(|| self.request(Method::GET, &path))
            .await
    }
}

/// Bytes of a FITS block and of a card.
const BLOCK: u64 = 2880;
const CARD: usize = 80;

/// The 32-bit ones'-complement sum of the FITS checksum convention. The storage crate has the
/// same sum, but the client depends on no workspace crate (it is built and shipped alone), and
/// the sum is a dozen lines.
#[derive(Debug, Default, Clone, Copy)]
struct OnesSum {
    sum: u64,
    /// Bytes of an unfinished 32-bit word carried to the next piece.
    carry: [u8; 4],
    carried: usize,
}

impl OnesSum {
    fn add(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (4 - self.carried).min(bytes.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&bytes[..take]);
            self.carried += take;
            bytes = &bytes[take..];
            if self.carried == 4 {
                self.sum += u64::from(u32::from_be_bytes(self.carry));
                self.carried = 0;
                // Folding often keeps the 64-bit sum far from overflow.
                self.sum = (self.sum & 0xFFFF_FFFF) + (self.sum >> 32);
            }
        }
    }

    fn value(&self) -> u32 {
        let mut sum = self.sum;
        while sum >> 32 != 0 {
            sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
        }
        sum as u32
    }
}

/// Walks an answer HDU by HDU as its bytes arrive: reads each header's cards for the sizes and
/// the `CHECKSUM` card, sums the HDU, and gives one verdict per HDU at the end. Holds one card
/// at a time.
#[derive(Debug, Default)]
struct HduSummer {
    sum: OnesSum,
    verdicts: Vec<ChecksumVerdict>,
    /// Bytes of the current HDU seen so far.
    position: u64,
    /// The current header, once its `END` card has been read: where the HDU ends.
    end: Option<u64>,
    card: Vec<u8>,
    cards: Cards,
}

/// The cards of a header that matter here.
#[derive(Debug, Default)]
struct Cards {
    bitpix: Option<i64>,
    naxis: Vec<u64>,
    pcount: u64,
    gcount: u64,
    checksum: bool,
}

impl HduSummer {
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = match self.end {
                Some(end) => usize::try_from(end - self.position)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len()),
                None => (CARD - self.card.len()).min(bytes.len()),
            };
            self.sum.add(&bytes[..take]);
            if self.end.is_none() {
                self.card.extend_from_slice(&bytes[..take]);
                if self.card.len() == CARD {
                    self.read_card(self.position + take as u64);
                }
            }
            self.position += take as u64;
            bytes = &bytes[take..];
            if self.end == Some(self.position) {
                self.finish_hdu();
            }
        }
    }

    /// Reads the card just completed, which ends at byte `card_end` of the HDU.
    fn read_card(&mut self, card_end: u64) {
        let card = std::mem::take(&mut self.card);
        let keyword = card[..8].trim_ascii_end();
        let value = || {
            let text = std::str::from_utf8(&card[10..]).unwrap_or_default();
            text.split('/').next().unwrap_or_default().trim().to_owned()
        };
        let number = || value().parse::<i64>().ok();
        match keyword {
            b"END" => {
                let header = card_end.div_ceil(BLOCK) * BLOCK;
                self.end = Some(header + self.cards.data_span());
            }
            b"BITPIX" => self.cards.bitpix = number(),
            b"PCOUNT" => self.cards.pcount = number().unwrap_or(0).max(0) as u64,
            b"GCOUNT" => self.cards.gcount = number().unwrap_or(1).max(1) as u64,
            b"CHECKSUM" => self.cards.checksum = true,
            b"NAXIS" => {}
            _ if keyword.starts_with(b"NAXIS") && keyword[5..].iter().all(u8::is_ascii_digit) => {
                self.cards.naxis.push(number().unwrap_or(0).max(0) as u64);
            }
            _ => {}
        }
    }

    fn finish_hdu(&mut self) {
        let verdict = if !self.cards.checksum {
            ChecksumVerdict::Absent
        } else if self.sum.value() == u32::MAX {
            ChecksumVerdict::Valid
        } else {
            ChecksumVerdict::Invalid
        };
        self.verdicts.push(verdict);
        *self = Self {
            verdicts: std::mem::take(&mut self.verdicts),
            ..Self::default()
        };
    }

    /// The verdicts, or why the answer stopped inside an HDU.
    fn finish(self) -> std::result::Result<Vec<ChecksumVerdict>, String> {
        if self.position != 0 || self.verdicts.is_empty() {
            return Err(format!(
                "it ends {} bytes into HDU {}",
                self.position,
                self.verdicts.len()
            ));
        }
        Ok(self.verdicts)
    }
}

impl Cards {
    /// Data bytes with their padding: `|BITPIX| × GCOUNT × (PCOUNT + NAXIS1 × … × NAXISn)` bits.
    fn data_span(&self) -> u64 {
        if self.naxis.is_empty() {
            return 0;
        }
        // Saturating: a nonsense header must not overflow; the answer then simply ends early.
        let bits = self.bitpix.unwrap_or(8).unsigned_abs();
        let elements = self
            .naxis
            .iter()
            .fold(1u64, |product, &axis| product.saturating_mul(axis));
        let gcount = self.gcount.max(1);
        let bytes = (bits / 8)
            .saturating_mul(gcount)
            .saturating_mul(self.pcount.saturating_add(elements));
        bytes.div_ceil(BLOCK).saturating_mul(BLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_encode() {
        let parse = |text: &str| text.parse::<HduSelector>();
        assert_eq!(parse("3"), Ok(HduSelector::Number(3)));
        assert_eq!(
            parse("SCI,2"),
            Ok(HduSelector::Name {
                extname: "SCI".into(),
                extver: Some(2)
            })
        );
        assert_eq!(
            parse("CCD 12").map(|hdu| hdu.query()),
            Ok("hdu=CCD%2012".into())
        );
        assert_eq!(
            parse("A&B=1,3").map(|hdu| hdu.query()),
            Ok("hdu=A%26B%3D1%2C3".into())
        );
        for refused in ["", "SCI,x", ",2", "99999999999999999999999"] {
            assert!(parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn sections_parse_and_format() {
        let section: Section = "10:20,5:7".parse().expect("section");
        assert_eq!(
            section,
            Section {
                rows: (10, 20),
                columns: (5, 7)
            }
        );
        assert_eq!(section.to_string(), "10:20,5:7");
        assert_eq!(
            section.query(Some(&HduSelector::Number(1))),
            "hdu=1&section=10:20,5:7"
        );
        assert_eq!(section.query(None), "FLO=5,10&FHI=7,20");
        for refused in ["1:2", "0:2,1:2", "3:2,1:2", "a:b,1:2", "1:2,1"] {
            assert!(refused.parse::<Section>().is_err(), "{refused}");
        }
    }

    proptest::proptest! {
        #[test]
        fn sections_round_trip(y1 in 1u64..1 << 40, dy in 0u64..1 << 20, x1 in 1u64..1 << 40, dx in 0u64..1 << 20) {
            let section = Section { rows: (y1, y1 + dy), columns: (x1, x1 + dx) };
            proptest::prop_assert_eq!(section.to_string().parse::<Section>(), Ok(section));
        }

        /// Any bytes in any pieces: no panic, and a verdict only for a whole answer.
        #[test]
        fn summing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400), cut in 0usize..400) {
            let mut summer = HduSummer::default();
            let cut = cut.min(bytes.len());
            summer.update(&bytes[..cut]);
            summer.update(&bytes[cut..]);
            let _ = summer.finish();
        }
    }

    /// The REFERENCE test vector: this HDU has `CHECKSUM = '0HhS3EhP0EhP0EhP'` and
    /// `DATASUM = '16909060'`.
    fn reference_hdu() -> Vec<u8> {
        let cards = [
            "SIMPLE  =                    T",
            "BITPIX  =                    8",
            "NAXIS   =                    1",
            "NAXIS1  =                    4",
            "CHECKSUM= '0HhS3EhP0EhP0EhP'",
            "DATASUM = '16909060'",
            "END",
        ];
        let mut hdu: Vec<u8> = cards
            .iter()
            .flat_map(|card| format!("{card:<80}").into_bytes())
            .collect();
        hdu.resize(2880, b' ');
        hdu.extend_from_slice(&[1, 2, 3, 4]);
        hdu.resize(5760, 0);
        hdu
    }

    #[test]
    fn the_reference_hdu_verifies_in_any_pieces() {
        let hdu = reference_hdu();
        for piece in [1, 3, 80, 1000, 5760] {
            let mut summer = HduSummer::default();
            for chunk in hdu.chunks(piece) {
                summer.update(chunk);
            }
            assert_eq!(summer.finish(), Ok(vec![ChecksumVerdict::Valid]), "{piece}");
        }
        let mut twice = hdu.clone();
        twice.extend_from_slice(&hdu);
        let mut summer = HduSummer::default();
        summer.update(&twice);
        assert_eq!(
            summer.finish(),
            Ok(vec![ChecksumVerdict::Valid, ChecksumVerdict::Valid])
        );
    }

    /// An HDU without checksum cards whose `END` card fills its header block.
    fn full_block_hdu() -> Vec<u8> {
        let mut cards = vec![
            "SIMPLE  =                    T".to_owned(),
            "BITPIX  =                    8".to_owned(),
            "NAXIS   =                    1".to_owned(),
            "NAXIS1  =                    4".to_owned(),
        ];
        cards.resize(35, "COMMENT".to_owned());
        cards.push("END".to_owned());
        let mut hdu: Vec<u8> = cards
            .iter()
            .flat_map(|card| format!("{card:<80}").into_bytes())
            .collect();
        assert_eq!(hdu.len(), 2880);
        hdu.resize(5760, 0);
        hdu
    }

    /// Arriving a byte at a time, the header still ends with the `END` card's block.
    #[test]
    fn a_header_ending_on_a_block_boundary() {
        let mut summer = HduSummer::default();
        for byte in full_block_hdu().chunks(1) {
            summer.update(byte);
        }
        assert_eq!(summer.finish(), Ok(vec![ChecksumVerdict::Absent]));
    }

    proptest::proptest! {
        /// However the answer is cut into pieces, the verdicts are the same.
        #[test]
        fn verdicts_do_not_depend_on_pieces(piece in 1usize..6000) {
            let answer = [reference_hdu(), full_block_hdu(), reference_hdu()].concat();
            let mut summer = HduSummer::default();
            for chunk in answer.chunks(piece) {
                summer.update(chunk);
            }
            proptest::prop_assert_eq!(
                summer.finish(),
                Ok(vec![ChecksumVerdict::Valid, ChecksumVerdict::Absent, ChecksumVerdict::Valid])
            );
        }
    }

    #[test]
    fn damage_and_truncation_are_seen() {
        let mut hdu = reference_hdu();
        hdu[2881] ^= 1;
        let mut summer = HduSummer::default();
        summer.update(&hdu);
        assert_eq!(summer.finish(), Ok(vec![ChecksumVerdict::Invalid]));

        let mut summer = HduSummer::default();
        summer.update(&reference_hdu()[..4000]);
        assert!(summer.finish().is_err());

        let mut without = reference_hdu();
        without[4 * 80..5 * 80].copy_from_slice(format!("{:<80}", "COMMENT").as_bytes());
        let mut summer = HduSummer::default();
        summer.update(&without);
        assert_eq!(summer.finish(), Ok(vec![ChecksumVerdict::Absent]));
    }
}
