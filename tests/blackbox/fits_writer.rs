//! A small FITS writer for tests: HDUs from cards and data, with CHECKSUM and DATASUM computed
//! by the HEASARC convention (independently of the server's and the client's code, and checked
//! against the convention's published test vectors below). The Python tests use astropy as
//! the oracle; these files are for the Rust tests, which cannot.

/// One 80-character card `KEYWORD = value`, the value as given (quote strings yourself).
pub fn card(keyword: &str, value: &str) -> String {
    format!("{:<80}", format!("{keyword:<8}= {value:>20}"))
}

/// The 32-bit ones'-complement sum of big-endian words, carries folded back.
pub fn ones_sum(bytes: &[u8]) -> u32 {
    let mut sum: u64 = bytes
        .chunks(4)
        .map(|word| {
            let mut padded = [0u8; 4];
            padded[..word.len()].copy_from_slice(word);
            u64::from(u32::from_be_bytes(padded))
        })
        .sum();
    while sum >> 32 != 0 {
        sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    }
    sum as u32
}

/// The 16-character ASCII encoding of a checksum value.
pub fn encode_checksum(value: u32) -> String {
    let excluded = |c: u8| (0x3A..=0x40).contains(&c) || (0x5B..=0x60).contains(&c);
    let mut ascii = [0u8; 16];
    for (i, byte) in value.to_be_bytes().into_iter().enumerate() {
        let (q, r) = (byte / 4 + 0x30, byte % 4);
        let mut chars = [q + r, q, q, q];
        loop {
            let mut changed = false;
            for j in [0, 2] {
                if excluded(chars[j]) || excluded(chars[j + 1]) {
                    chars[j] += 1;
                    chars[j + 1] -= 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (k, char) in chars.into_iter().enumerate() {
            ascii[4 * k + i] = char;
        }
    }
    ascii.rotate_right(1);
    String::from_utf8(ascii.to_vec()).expect("ascii")
}

/// An HDU: `cards`, then (with `checksum`) correct CHECKSUM and DATASUM cards, END, padding,
/// and `data` padded with zeros to whole 2880-byte blocks.
pub fn hdu(cards: &[String], data: &[u8], checksum: bool) -> Vec<u8> {
    let mut header: String = cards.concat();
    let mut padded = data.to_vec();
    padded.resize(data.len().div_ceil(2880) * 2880, 0);
    let datasum = ones_sum(&padded);
    let checksum_at = header.len() + 11;
    if checksum {
        header += &format!("{:<80}", "CHECKSUM= '0000000000000000'");
        header += &format!("{:<80}", format!("DATASUM = '{datasum}'"));
    }
    header += &format!("{:<80}", "END");
    let mut header = header.into_bytes();
    header.resize(header.len().div_ceil(2880) * 2880, b' ');
    if checksum {
        let sum = ones_sum(&[header.as_slice(), &datasum.to_be_bytes()].concat());
        header[checksum_at..checksum_at + 16].copy_from_slice(encode_checksum(!sum).as_bytes());
    }
    header.extend_from_slice(&padded);
    header
}

/// The cards of a 2-D image (`SIMPLE` for the primary, else an `IMAGE` extension).
pub fn image_cards(primary: bool, bitpix: i64, width: u64, height: u64) -> Vec<String> {
    let mut cards = vec![if primary {
        card("SIMPLE", "T")
    } else {
        card("XTENSION", "'IMAGE   '")
    }];
    cards.push(card("BITPIX", &bitpix.to_string()));
    cards.push(card("NAXIS", "2"));
    cards.push(card("NAXIS1", &width.to_string()));
    cards.push(card("NAXIS2", &height.to_string()));
    if !primary {
        cards.push(card("PCOUNT", "0"));
        cards.push(card("GCOUNT", "1"));
    }
    cards
}

/// Big-endian 16-bit pixels of a `width` × `height` image, pixel (x, y) (1-based) being
/// `y × 1000 + x`.
pub fn pixels16(width: u64, height: u64) -> Vec<u8> {
    (1..=height)
        .flat_map(|y| (1..=width).map(move |x| (y * 1000 + x) as i16))
        .flat_map(i16::to_be_bytes)
        .collect()
}

#[test]
fn the_writer_meets_the_reference_vectors() {
    assert_eq!(encode_checksum(0xCC3F_DFE2), "hcHjjc9ghcEghc9g");
    let cards = [
        card("SIMPLE", "T"),
        card("BITPIX", "8"),
        card("NAXIS", "1"),
        card("NAXIS1", "4"),
    ];
    let written = hdu(&cards, &[1, 2, 3, 4], true);
    let header = String::from_utf8_lossy(&written[..2880]).into_owned();
    assert!(header.contains("CHECKSUM= '0HhS3EhP0EhP0EhP'"), "{header}");
    assert!(header.contains("DATASUM = '16909060'"), "{header}");
    assert_eq!(ones_sum(&written), u32::MAX);
}
