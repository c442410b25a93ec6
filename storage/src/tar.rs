//! Tar awareness: Measurement Sets (radio data, which are directories) travel as tar archives;
//! the index of their members, built while the bytes stream past, lets one table file be read
//! by range without unpacking anything.
//!
//! Pure: [`TarIndexer`] is fed the archive's bytes in order, in chunks of any size, and never
//! fails or panics; an archive it cannot follow gets an index marked invalid with the reason.
//! It reads the POSIX ustar format with its GNU (`L` long names, base-256 sizes) and pax
//! (`path`, `size` records) extensions; member data is only skipped, never copied.

/// Bytes per tar block.
const BLOCK: usize = 512;
/// Longest pax or GNU long-name record read (a path is far shorter; the rest is skipped).
const MAX_EXTENDED_HEADER: u64 = 64 * 1024;

/// The index of a tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarIndex {
    /// Regular files, in archive order.
    pub members: Vec<TarMember>,
    /// `None` when the whole archive was followed to its end; otherwise why not.
    pub problem: Option<String>,
}

/// One regular file in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    /// Its path inside the archive, as stored (`./` prefixes removed).
    pub path: String,
    /// Offset of its first data byte in the archive.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

impl TarIndex {
    /// The member at `path` (a leading `./` or `/` is ignored).
    pub fn member(&self, path: &str) -> Option<&TarMember> {
        let path = normalised(path);
        self.members.iter().find(|member| member.path == path)
    }
}

fn normalised(path: &str) -> &str {
    let mut path = path;
    loop {
        if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else {
            return path;
        }
    }
}

/// Whether an object's first bytes are a ustar header (`ustar` at offset 257).
pub fn looks_like_tar(leading_bytes: &[u8]) -> bool {
    leading_bytes.get(257..262) == Some(b"ustar")
}

/// What the next bytes of the archive are.
enum Expect {
    /// A member header.
    Header,
    /// Data to skip: bytes left, including the padding to a whole block.
    Skip(u64),
    /// The payload of a GNU long name or a pax header: collected up to `len` bytes, then the
    /// padding is skipped. `pax` tells which.
    Extended {
        len: u64,
        pax: bool,
        collected: Vec<u8>,
    },
    /// The end-of-archive marker was seen, or the archive could not be followed.
    Done,
}

/// Builds a [`TarIndex`] from bytes fed in order.
pub struct TarIndexer {
    expect: Expect,
    /// Bytes of an incomplete header block carried between chunks.
    block: Vec<u8>,
    offset: u64,
    members: Vec<TarMember>,
    problem: Option<String>,
    ended: bool,
    /// A long name or pax `path`/`size` for the next member.
    next_path: Option<String>,
    next_size: Option<u64>,
}

impl Default for TarIndexer {
    fn default() -> Self {
        Self::new()
    }
}

impl TarIndexer {
    /// An indexer at the start of an archive.
    pub fn new() -> Self {
        Self {
            expect: Expect::Header,
            block: Vec::with_capacity(BLOCK),
            offset: 0,
            members: Vec::new(),
            problem: None,
            ended: false,
            next_path: None,
            next_size: None,
        }
    }

    /// Takes the next bytes of the archive.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.expect {
                Expect::Done => return,
                Expect::Skip(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    self.offset += take;
                    bytes = &bytes[usize::try_from(take).expect("at most the slice")..];
                    if *left == 0 {
                        self.expect = Expect::Header;
                    }
                }
                Expect::Extended {
                    len,
                    pax,
                    collected,
                } => {
                    let want = usize::try_from(*len - collected.len() as u64)
                        .expect("bounded by MAX_EXTENDED_HEADER");
                    let take = want.min(bytes.len());
                    collected.extend_from_slice(&bytes[..take]);
                    self.offset += take as u64;
                    bytes = &bytes[take..];
                    if collected.len() as u64 == *len {
                        let (pax, payload) = (*pax, std::mem::take(collected));
                        let padding = (*len).next_multiple_of(BLOCK as u64) - *len;
                        self.extended(pax, &payload);
                        self.expect = if padding > 0 {
                            Expect::Skip(padding)
                        } else {
                            Expect::Header
                        };
                    }
                }
                Expect::Header => {
                    let take = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..take]);
                    self.offset += take as u64;
                    bytes = &bytes[take..];
                    if self.block.len() == BLOCK {
                        let block = std::mem::take(&mut self.block);
                        self.header(&block);
                        self.block = block;
                        self.block.clear();
                    }
                }
            }
        }
    }

    fn fail(&mut self, reason: String) {
        self.problem.get_or_insert(reason);
        self.expect = Expect::Done;
    }

    /// One header block; `self.offset` is just past it.
    fn header(&mut self, block: &[u8]) {
        if block.iter().all(|&b| b == 0) {
            // Two zero blocks end the archive; one is accepted as the end too (some writers).
            self.ended = true;
            self.expect = Expect::Done;
            return;
        }
        // The checksum field counts as eight spaces in its own sum.
        let computed: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        let recorded = octal(&block[148..156]);
        if recorded != Some(computed) {
            let at = self.offset - BLOCK as u64;
            self.fail(format!("the header at byte {at} has a wrong checksum"));
            return;
        }
        let Some(size) = self
            .next_size
            .take()
            .or_else(|| size_field(&block[124..136]))
        else {
            let at = self.offset - BLOCK as u64;
            self.fail(format!("the header at byte {at} has an unreadable size"));
            return;
        };
        let kind = block[156];
        let padded = size.next_multiple_of(BLOCK as u64);
        match kind {
            b'L' | b'x' => {
                if size > MAX_EXTENDED_HEADER {
                    self.expect = Expect::Skip(padded);
                } else if size > 0 {
                    self.expect = Expect::Extended {
                        len: size,
                        pax: kind == b'x',
                        collected: Vec::new(),
                    };
                }
                return;
            }
            b'0' | 0 | b'7' => {
                let path = self.next_path.take().unwrap_or_else(|| header_path(block));
                self.members.push(TarMember {
                    path: normalised(&path).to_owned(),
                    offset: self.offset,
                    size,
                });
            }
            // Directories, links, devices, global pax headers: no data of a member to serve.
            _ => {
                self.next_path = None;
            }
        }
        if padded > 0 {
            self.expect = Expect::Skip(padded);
        }
    }

    /// A GNU long name or pax records for the next member.
    fn extended(&mut self, pax: bool, payload: &[u8]) {
        if !pax {
            let name = payload.split(|&b| b == 0).next().unwrap_or_default();
            self.next_path = Some(String::from_utf8_lossy(name).into_owned());
            return;
        }
        // Records: "<length> <key>=<value>\n".
        let mut rest = payload;
        while !rest.is_empty() {
            let Some(space) = rest.iter().position(|&b| b == b' ') else {
                break;
            };
            let Some(len) = std::str::from_utf8(&rest[..space])
                .ok()
                .and_then(|len| len.parse::<usize>().ok())
                .filter(|&len| len > space && len <= rest.len())
            else {
                break;
            };
            let record = &rest[space + 1..len];
            let record = record.strip_suffix(b"\n").unwrap_or(record);
            if let Some(eq) = record.iter().position(|&b| b == b'=') {
                let (key, value) = (&record[..eq], &record[eq + 1..]);
                match key {
                    b"path" => self.next_path = Some(String::from_utf8_lossy(value).into_owned()),
                    b"size" => {
                        self.next_size = std::str::from_utf8(value)
                            .ok()
                            .and_then(|size| size.parse().ok());
                    }
                    _ => {}
                }
            }
            rest = &rest[len..];
        }
    }

    /// The index of everything fed.
    pub fn finish(mut self) -> TarIndex {
        if self.problem.is_none() && !self.ended {
            let reason = match self.expect {
                Expect::Header if self.block.is_empty() => {
                    "the archive has no end-of-archive marker".to_owned()
                }
                _ => "the archive ends inside a member".to_owned(),
            };
            self.problem = Some(reason);
        }
        // A member cut short by the end of the archive cannot be served.
        let end = self.offset;
        self.members
            .retain(|member| member.offset.saturating_add(member.size) <= end);
        TarIndex {
            members: self.members,
            problem: self.problem,
        }
    }
}

/// The path of a ustar header: `prefix/name`.
fn header_path(block: &[u8]) -> String {
    let field = |bytes: &[u8]| {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    };
    let name = field(&block[..100]);
    let prefix = if &block[257..262] == b"ustar" {
        field(&block[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// A size field: octal digits, or GNU base-256 (first byte's high bit set).
fn size_field(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &byte in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(byte))?;
        }
        return Some(value);
    }
    octal(field)
}

/// An octal number padded with spaces or NULs.
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ustar header for a regular file (or `kind`) of `size` bytes.
    fn header(name: &str, size: u64, kind: u8) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        block[100..107].copy_from_slice(b"0000644");
        block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        block[136..147].copy_from_slice(b"00000000000");
        block[156] = kind;
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        block
    }

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = header(name, data.len() as u64, b'0');
        bytes.extend_from_slice(data);
        bytes.resize(bytes.len().next_multiple_of(BLOCK), 0);
        bytes
    }

    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            payload.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let mut bytes = header("PaxHeader", payload.len() as u64, b'x');
        bytes.extend_from_slice(&payload);
        bytes.resize(bytes.len().next_multiple_of(BLOCK), 0);
        bytes
    }

    /// An archive shaped like a Measurement Set: a directory, table files, a long pax path.
    fn archive() -> Vec<u8> {
        let mut bytes = header("obs.ms/", 0, b'5');
        bytes.extend(member("obs.ms/table.dat", b"casacore table"));
        bytes.extend(member("./obs.ms/table.f0", &vec![7u8; 1300]));
        let long = format!("obs.ms/{}/table.f1", "SPECTRAL_WINDOW".repeat(8));
        bytes.extend(pax(&[("path", &long), ("mtime", "1700000000.5")]));
        bytes.extend(member("placeholder", &[1, 2, 3]));
        bytes.extend(member("obs.ms/empty", b""));
        bytes.extend(vec![0u8; 2 * BLOCK]);
        bytes
    }

    fn index(bytes: &[u8]) -> TarIndex {
        let mut indexer = TarIndexer::new();
        indexer.update(bytes);
        indexer.finish()
    }

    #[test]
    fn members_have_their_offsets_and_sizes() {
        let bytes = archive();
        assert!(looks_like_tar(&bytes));
        let index = index(&bytes);
        assert_eq!(index.problem, None);
        let paths: Vec<&str> = index.members.iter().map(|m| m.path.as_str()).collect();
        let long = format!("obs.ms/{}/table.f1", "SPECTRAL_WINDOW".repeat(8));
        assert_eq!(
            paths,
            [
                "obs.ms/table.dat",
                "obs.ms/table.f0",
                long.as_str(),
                "obs.ms/empty"
            ]
        );
        for member in &index.members {
            let data = &bytes[member.offset as usize..(member.offset + member.size) as usize];
            match member.path.as_str() {
                "obs.ms/table.dat" => assert_eq!(data, b"casacore table"),
                "obs.ms/table.f0" => assert_eq!(data, vec![7u8; 1300]),
                "obs.ms/empty" => assert!(data.is_empty()),
                _ => assert_eq!(data, [1, 2, 3]),
            }
        }
        assert_eq!(
            index.member("./obs.ms/table.f0").map(|m| m.size),
            Some(1300)
        );
        assert_eq!(index.member("obs.ms/nothing"), None);
    }

    #[test]
    fn broken_archives_say_why() {
        let bytes = archive();
        let cut = index(&bytes[..BLOCK * 3 + 100]);
        assert_eq!(
            cut.problem.as_deref(),
            Some("the archive ends inside a member")
        );
        let mut damaged = bytes.clone();
        damaged[BLOCK + 10] ^= 1;
        assert!(index(&damaged).problem.unwrap().contains("checksum"));
        let unterminated = index(&bytes[..bytes.len() - 2 * BLOCK]);
        assert_eq!(
            unterminated.problem.as_deref(),
            Some("the archive has no end-of-archive marker")
        );
        assert_eq!(unterminated.members.len(), 4);
    }

    #[test]
    fn sizes_in_base_256() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 0x01;
        field[10] = 0x02;
        assert_eq!(size_field(&field), Some(0x0201));
        assert_eq!(size_field(b"00000001750\0"), Some(0o1750));
        assert_eq!(size_field(b"12345678xyz\0"), None);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_index(cuts in proptest::collection::vec(0usize..6000, 0..10)) {
            let bytes = archive();
            let whole = index(&bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % bytes.len()).collect();
            cuts.sort_unstable();
            let mut indexer = TarIndexer::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                indexer.update(&bytes[from..cut]);
                from = cut;
            }
            prop_assert_eq!(indexer.finish(), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let _ = index(&bytes);
            let mut with_header = archive();
            with_header.truncate(BLOCK);
            with_header.extend(bytes);
            let _ = index(&with_header);
        }
    }
}
