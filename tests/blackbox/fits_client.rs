//! FITS views through the `client` library and the `ds` command against the real binary: the
//! index, HDUs by number and by name (percent-encoded), standalone HDUs, header text and
//! cut-outs, with the checksum verdicts of what arrives; refusals (no such HDU, not FITS, a
//! box outside the image, a missing key) with their errors and exit codes; and damage on the
//! way caught by the FITS checksum and reported as a digest mismatch.

use std::path::Path;

use client::{ChecksumVerdict, Client, Error, FitsPart, HduSelector, Section};

use crate::client_lib::runtime;
use crate::fits_writer::{card, hdu, image_cards, ones_sum, pixels16};
use crate::harness::{TestDaemon, start, start_with_config};

/// A card with a string value.
fn text_card(keyword: &str, value: &str) -> String {
    format!("{:<80}", format!("{keyword:<8}= '{value:<8}'"))
}

/// An IMAGE extension of 16-bit pixels named `extname`, version `extver`.
fn extension(extname: &str, extver: i64, (width, height): (u64, u64), checksum: bool) -> Vec<u8> {
    let mut cards = image_cards(false, 16, width, height);
    cards[0] = text_card("XTENSION", "IMAGE");
    cards.push(text_card("EXTNAME", extname));
    cards.push(card("EXTVER", &extver.to_string()));
    cards.push(card("CRPIX1", "15.5"));
    cards.push(card("CRPIX2", "10.0"));
    hdu(&cards, &pixels16(width, height), checksum)
}

/// A multi-extension file and its HDUs: 0 primary without data; 1 `SCI`,1 (30 × 20); 2
/// `SCI`,2 without checksum cards; 3 `CCD 7` (a name with a space); 4 `BAD`, whose checksum
/// cards were made before a data byte changed.
fn mef() -> (Vec<u8>, Vec<Vec<u8>>) {
    let primary = hdu(
        &[
            card("SIMPLE", "T"),
            card("BITPIX", "8"),
            card("NAXIS", "0"),
            card("EXTEND", "T"),
        ],
        &[],
        true,
    );
    let mut bad = extension("BAD", 1, (6, 6), true);
    bad[2880 + 7] ^= 0x40;
    let hdus = vec![
        primary,
        extension("SCI", 1, (30, 20), true),
        extension("SCI", 2, (12, 9), false),
        extension("CCD 7", 1, (5, 4), true),
        bad,
    ];
    (hdus.concat(), hdus)
}

/// The header of a one-HDU FITS answer as cards, and its data.
fn split_fits(bytes: &[u8]) -> (Vec<String>, &[u8]) {
    let cards: Vec<String> = bytes
        .chunks(80)
        .map(|card| String::from_utf8_lossy(card).into_owned())
        .take_while(|card| card.trim_end() != "END")
        .collect();
    let header_len = ((cards.len() + 1) * 80).div_ceil(2880) * 2880;
    (cards, &bytes[header_len..])
}

fn value_of(cards: &[String], keyword: &str) -> String {
    cards
        .iter()
        .find(|card| card[..8].trim_end() == keyword)
        .map(|card| card[10..].split('/').next().unwrap_or("").trim().to_owned())
        .unwrap_or_else(|| panic!("no {keyword} card"))
}

/// Checks a cut-out of rows 3..5, columns 2..6 of `SCI`,1.
fn check_cutout(bytes: &[u8]) {
    assert_eq!(bytes.len() % 2880, 0);
    assert_eq!(ones_sum(bytes), u32::MAX, "the cut-out's checksum verifies");
    let (cards, data) = split_fits(bytes);
    assert_eq!(value_of(&cards, "NAXIS1"), "5");
    assert_eq!(value_of(&cards, "NAXIS2"), "3");
    assert_eq!(value_of(&cards, "CRPIX1").parse::<f64>(), Ok(14.5));
    assert_eq!(value_of(&cards, "CRPIX2").parse::<f64>(), Ok(8.0));
    let expected: Vec<u8> = (3..=5u64)
        .flat_map(|y| (2..=6u64).map(move |x| (y * 1000 + x) as i16))
        .flat_map(i16::to_be_bytes)
        .collect();
    assert_eq!(&data[..expected.len()], expected.as_slice());
}

fn store_samples(daemon: &TestDaemon) -> Vec<Vec<u8>> {
    let (file, hdus) = mef();
    assert_eq!(daemon.put("/fits/mef.fits", &file).status, 201);
    assert_eq!(
        daemon.put("/fits/notes.txt", b"not FITS at all").status,
        201
    );
    hdus
}

fn selector(text: &str) -> HduSelector {
    text.parse().expect("selector")
}

fn rejected_with(error: Error, words: &str) {
    match error {
        Error::Rejected {
            status: 400,
            message,
        } => {
            assert!(message.contains(words), "{message:?} says {words:?}");
        }
        other => panic!("expected a 400 saying {words:?}, got {other:?}"),
    }
}

#[test]
fn library_reads_the_index_hdus_headers_and_cutouts() {
    let daemon = start();
    let hdus = store_samples(&daemon);
    let client = Client::new(&daemon.url("")).expect("client");
    let dir = tempfile::TempDir::new().expect("temp");
    runtime().block_on(async {
        let index = client.fits_index("fits/mef.fits").await.expect("index");
        assert!(index.valid);
        assert_eq!(index.hdus.len(), 5);
        assert_eq!(index.checksum, "invalid");
        let names: Vec<_> = index.hdus.iter().map(|hdu| hdu.extname.clone()).collect();
        assert_eq!(
            names,
            [None, Some("SCI"), Some("SCI"), Some("CCD 7"), Some("BAD")]
                .map(|name| name.map(str::to_owned))
        );
        let checksums: Vec<&str> = index.hdus.iter().map(|hdu| hdu.checksum.as_str()).collect();
        assert_eq!(checksums, ["valid", "valid", "absent", "valid", "invalid"]);
        assert_eq!(index.hdus[1].naxis, [30, 20]);
        assert_eq!(index.hdus[1].bitpix, 16);

        // By number, by name and version, by a name with a space (case does not matter).
        let one = client.get_hdu("fits/mef.fits", &selector("1"), false).await;
        assert_eq!(one.expect("hdu 1"), hdus[1]);
        let sci2 = client
            .get_hdu("fits/mef.fits", &selector("SCI,2"), false)
            .await;
        assert_eq!(sci2.expect("SCI,2"), hdus[2]);
        let ccd = client
            .get_hdu("fits/mef.fits", &selector("ccd 7"), false)
            .await;
        assert_eq!(ccd.expect("ccd 7"), hdus[3]);
        // Delivered as stored, though its checksum is wrong: the server's index says so too.
        let bad = client
            .get_hdu("fits/mef.fits", &selector("BAD"), false)
            .await;
        assert_eq!(bad.expect("BAD"), hdus[4]);

        // Standalone: a minimal primary header, then the extension; streamed to a file.
        let path = dir.path().join("sci2.fits");
        let part = FitsPart::Hdu {
            hdu: selector("SCI,2"),
            standalone: true,
        };
        let answer = client
            .fits_to_file("fits/mef.fits", &part, &path)
            .await
            .expect("standalone");
        assert_eq!(
            answer.checksums,
            [ChecksumVerdict::Valid, ChecksumVerdict::Absent]
        );
        assert_eq!(answer.checksum(), ChecksumVerdict::Absent);
        let written = std::fs::read(&path).expect("read");
        assert_eq!(answer.size, written.len() as u64);
        assert!(written.starts_with(b"SIMPLE  ="));
        assert_eq!(&written[2880..], hdus[2].as_slice());
        let bad_part = FitsPart::Hdu {
            hdu: selector("4"),
            standalone: false,
        };
        let mut sink = Vec::new();
        let answer = client
            .fits_to_writer("fits/mef.fits", &bad_part, &mut sink)
            .await
            .expect("bad hdu");
        assert_eq!(answer.checksum(), ChecksumVerdict::Invalid);
        assert_eq!(sink, hdus[4]);

        // Header text: 80-character cards, one per line.
        let all = client
            .header_text("fits/mef.fits", None)
            .await
            .expect("headers");
        assert!(all.contains("EXTNAME = 'CCD 7   '"), "{all}");
        let sci = client
            .header_text("fits/mef.fits", Some(&selector("SCI,1")))
            .await
            .expect("header");
        let lines: Vec<&str> = sci.lines().collect();
        assert!(lines.iter().all(|line| line.len() == 80), "{sci}");
        assert!(lines[0].starts_with("XTENSION= 'IMAGE"));
        assert!(sci.contains("CRPIX1  ="));
        assert!(!sci.contains("CCD 7"));

        // Cut-outs, of a named HDU and of the first 2-D image.
        let section: Section = "3:5,2:6".parse().expect("section");
        let named = client
            .cutout("fits/mef.fits", Some(&selector("SCI")), section)
            .await
            .expect("cutout");
        check_cutout(&named);
        let first = client
            .cutout("fits/mef.fits", None, section)
            .await
            .expect("cutout of the first image");
        assert_eq!(first, named);

        // Refusals, with the server's sentences.
        let no_hdu = client.get_hdu("fits/mef.fits", &selector("9"), false).await;
        rejected_with(no_hdu.expect_err("no HDU 9"), "no such HDU");
        let no_name = client
            .header_text("fits/mef.fits", Some(&selector("DARK")))
            .await;
        rejected_with(no_name.expect_err("no DARK"), "no such HDU");
        let not_fits = client.fits_index("fits/notes.txt").await;
        rejected_with(not_fits.expect_err("not FITS"), "not a FITS file");
        let outside: Section = "18:25,1:2".parse().expect("section");
        let outside = client
            .cutout("fits/mef.fits", Some(&selector("1")), outside)
            .await;
        rejected_with(outside.expect_err("outside"), "leaves the 30 × 20 image");
        let table = client
            .cutout("fits/mef.fits", Some(&selector("0")), section)
            .await;
        rejected_with(table.expect_err("no image"), "2-D image");
        let missing = client.fits_index("fits/none.fits").await;
        assert!(
            matches!(missing, Err(Error::NotFound { .. })),
            "{missing:?}"
        );
        // A refused view leaves no file behind.
        let refused = dir.path().join("refused.fits");
        let part = FitsPart::Hdu {
            hdu: selector("9"),
            standalone: false,
        };
        assert!(
            client
                .fits_to_file("fits/mef.fits", &part, &refused)
                .await
                .is_err()
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    });
}

/// With verified reads off, bytes rotted on disk reach the client: the FITS checksum catches
/// them where the server's index says the stored HDU verified.
#[test]
fn damage_on_the_way_is_caught_by_the_checksum() {
    let daemon = start_with_config(Some("verify_reads = \"never\"\n"));
    let (_, hdus) = mef();
    // Only checksummed, valid HDUs, so the index's verdict for the whole file is "valid".
    let mut file = [hdus[0].clone(), hdus[1].clone(), hdus[3].clone()].concat();
    // More than 64 KiB, so that it is stored as a file, which the test can damage.
    while file.len() <= 64 * 1024 {
        file.extend_from_slice(&hdus[3]);
    }
    assert_eq!(daemon.put("/fits/rot.fits", &file).status, 201);
    daemon.damage_blob(&file, 2880 * 2 + 100, 0x04);
    let client = Client::new(&daemon.url("")).expect("client");
    let dir = tempfile::TempDir::new().expect("temp");
    let runtime = runtime();
    let damaged = runtime.block_on(client.get_hdu("fits/rot.fits", &selector("1"), false));
    assert!(
        matches!(&damaged, Err(Error::DigestMismatch { message }) if message.contains("damaged on the way")),
        "{damaged:?}"
    );
    let intact = runtime.block_on(client.get_hdu("fits/rot.fits", &selector("2"), false));
    assert_eq!(intact.expect("the other HDU"), hdus[3]);

    let run = daemon.ds(
        dir.path(),
        None,
        &["get", "fits/rot.fits", "--hdu", "SCI", "-o", "sci.fits"],
    );
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("damaged on the way"), "{run:?}");
    assert!(!dir.path().join("sci.fits").exists());
    assert!(!dir.path().join("sci.fits.view-part").exists());
}

#[test]
fn ds_reads_the_index_hdus_headers_and_cutouts() {
    let daemon = start();
    let hdus = store_samples(&daemon);
    let dir = tempfile::TempDir::new().expect("temp");
    let ds = |args: &[&str]| daemon.ds(dir.path(), None, args);
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("read");

    let table = ds(&["fits-index", "fits/mef.fits"]);
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "fits/mef.fits: 5 HDUs, valid FITS, checksums invalid"
    );
    assert!(lines[1].contains("XTENSION") && lines[1].contains("EXTNAME"));
    assert!(lines.iter().all(|line| !line.ends_with(' ')), "{table:?}");
    let columns = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        columns(lines[2]),
        ["0", "-", "-", "-", "8", "-", "valid", "valid"]
    );
    assert_eq!(
        columns(lines[3]),
        ["1", "IMAGE", "SCI", "1", "16", "30x20", "valid", "valid"]
    );
    assert_eq!(columns(lines[4])[6..], ["absent", "absent"]);
    assert!(lines[5].contains("CCD 7"));
    assert_eq!(columns(lines[6])[6], "invalid");
    let json = ds(&["fits-index", "fits/mef.fits", "--json"]);
    let index: client::api::FitsIndexInfo =
        serde_json::from_str(&json.stdout).expect("fits-index --json");
    assert_eq!(index.hdus.len(), 5);
    assert_eq!(index.hdus[3].extname.as_deref(), Some("CCD 7"));

    // --hdu to a named file, to the default name, to stdout.
    let one = ds(&["get", "fits/mef.fits", "--hdu", "1", "-o", "one.fits"]);
    assert_eq!(one.code, 0, "{one:?}");
    assert_eq!(
        one.stdout.trim(),
        format!("one.fits: {} bytes, FITS checksum verified", hdus[1].len())
    );
    assert_eq!(read("one.fits"), hdus[1]);
    let standalone = ds(&[
        "get",
        "fits/mef.fits",
        "--hdu",
        "SCI,2",
        "--standalone",
        "--json",
    ]);
    assert_eq!(standalone.code, 0, "{standalone:?}");
    let line = &standalone.json_lines()[0];
    assert_eq!(line["file"], "mef_hduSCI_2.fits");
    assert_eq!(line["checksum"], "absent");
    assert_eq!(line["checksums"], serde_json::json!(["valid", "absent"]));
    assert_eq!(&read("mef_hduSCI_2.fits")[2880..], hdus[2].as_slice());
    let named = ds(&[
        "get",
        "fits/mef.fits",
        "--hdu",
        "CCD 7",
        "-o",
        "-",
        "--json",
    ]);
    assert_eq!(
        (named.code, &named.stdout_bytes),
        (0, &hdus[3]),
        "{}",
        named.stderr
    );
    let bad = ds(&["get", "fits/mef.fits", "--hdu", "BAD", "-o", "bad.fits"]);
    assert_eq!(bad.code, 0, "{bad:?}");
    assert!(
        bad.stdout.contains("FITS checksum INVALID as stored"),
        "{bad:?}"
    );
    assert!(bad.stderr.contains("warning"), "{bad:?}");
    assert_eq!(read("bad.fits"), hdus[4]);

    // --header, of all HDUs and of one, as text and JSON.
    let headers = ds(&["get", "fits/mef.fits", "--header"]);
    assert_eq!(headers.code, 0, "{headers:?}");
    assert_eq!(headers.stdout.matches("XTENSION= 'IMAGE").count(), 4);
    let header = ds(&["get", "fits/mef.fits", "--header", "--hdu", "SCI,2"]);
    assert!(
        header.stdout.contains(card("NAXIS1", "12").trim_end()),
        "{header:?}"
    );
    assert_eq!(header.stdout.matches("EXTNAME").count(), 1);
    let to_file = ds(&[
        "get",
        "fits/mef.fits",
        "--header",
        "--hdu",
        "2",
        "-o",
        "h.txt",
    ]);
    assert_eq!(
        (to_file.code, to_file.stdout.as_str()),
        (0, ""),
        "{to_file:?}"
    );
    assert_eq!(read("h.txt"), header.stdout.as_bytes());
    let header_json = ds(&["get", "fits/mef.fits", "--header", "--hdu", "3", "--json"]);
    let value = &header_json.json_lines()[0];
    assert_eq!(value["hdu"], "3");
    assert!(value["header"].as_str().expect("text").contains("CCD 7"));

    // --section, of a named HDU and of the first 2-D image.
    let cut = ds(&[
        "get",
        "fits/mef.fits",
        "--section",
        "3:5,2:6",
        "--hdu",
        "SCI,1",
        "-o",
        "cut.fits",
    ]);
    assert_eq!(cut.code, 0, "{cut:?}");
    assert!(cut.stdout.contains("FITS checksum verified"), "{cut:?}");
    check_cutout(&read("cut.fits"));
    let first = ds(&["get", "fits/mef.fits", "--section", "3:5,2:6"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(read("mef_cutout.fits"), read("cut.fits"));
    std::fs::create_dir(dir.path().join("into")).expect("mkdir");
    let into_dir = ds(&["get", "fits/mef.fits", "--hdu", "1", "-o", "into"]);
    assert_eq!(into_dir.code, 0, "{into_dir:?}");
    assert_eq!(read("into/mef_hdu1.fits"), hdus[1]);

    // Refusals: the server's sentence and an exit code.
    let refusals: [(&[&str], i32, &str); 9] = [
        (&["get", "fits/mef.fits", "--hdu", "9"], 1, "no such HDU"),
        (
            &["get", "fits/notes.txt", "--header"],
            1,
            "is not a FITS file",
        ),
        (&["fits-index", "fits/notes.txt"], 1, "is not a FITS file"),
        (
            &[
                "get",
                "fits/mef.fits",
                "--hdu",
                "1",
                "--section",
                "1:2,29:31",
            ],
            1,
            "leaves the 30 × 20 image",
        ),
        (&["fits-index", "fits/none.fits"], 3, "not found"),
        (
            &["get", "fits/mef.fits", "--section", "0:2,1:2"],
            2,
            "rows first",
        ),
        (&["get", "fits/mef.fits", "--standalone"], 2, "--hdu"),
        (
            &["get", "fits/mef.fits", "--hdu", "1", "--range", "0-9"],
            2,
            "--range",
        ),
        (
            &["get", "fits/mef.fits", "fits/mef.fits", "--hdu", "1"],
            2,
            "reads from one KEY",
        ),
    ];
    for (args, code, words) in refusals {
        let run = ds(args);
        assert_eq!(run.code, code, "{args:?}: {run:?}");
        assert!(run.stderr.contains(words), "{args:?}: {run:?}");
    }
    assert!(!dir.path().join("mef_hdu9.fits").exists());
    assert!(!Path::new(&dir.path().join("mef_hdu9.fits.view-part")).exists());
}
