//! `ObjectKey`: the global, write-once filename of an object, validated once.
//!
//! Pure: no I/O. A key that exists as an `ObjectKey` obeys every rule of DESIGN.md §3, so code
//! downstream never checks again. The percent-encoding here is the one URLs use (per segment,
//! `/` kept); the daemon decodes request paths with `ObjectKey::from_url_path`.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Longest key in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Characters escaped when a key is written into a URL path segment. Everything that would
/// end, split or confuse a path (`?`, `#`, `%`, `/` inside a segment is never produced because
/// keys are split on it) plus what RFC 3986 does not allow in a segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Why a string is not a valid key; each variant names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key has no bytes at all.
    #[error("key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("key is {len} bytes long, more than the limit of {MAX_KEY_BYTES}")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The bytes are not UTF-8 (only from [`ObjectKey::from_url_path`]).
    #[error("key is not valid UTF-8")]
    NotUtf8,
    /// A control character (Unicode category Cc) appears in the key.
    #[error("key contains control character U+{code:04X} at byte {position}")]
    ControlCharacter {
        /// The code point.
        code: u32,
        /// Byte offset in the key.
        position: usize,
    },
    /// The key starts or ends with `/` or contains `//`.
    #[error("key has an empty path segment (leading, trailing or doubled '/')")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("key has a '.' or '..' path segment")]
    DotSegment,
    /// Keys under `_/` are reserved for the API.
    #[error("keys starting with '_/' are reserved")]
    Reserved,
}

/// A validated object key (DESIGN.md §3).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key`.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        validate(key)?;
        Ok(Self(key.to_owned()))
    }

    /// Decodes a URL path (without query; a leading `/` is ignored) into a key. Percent-encoded
    /// bytes are decoded before validation, so `%2E%2E` is refused like `..`.
    pub fn from_url_path(path: &str) -> Result<Self, KeyError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let decoded = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| KeyError::NotUtf8)?;
        Self::parse(&decoded)
    }

    /// The key as written into a URL path: each segment percent-encoded, no leading `/`.
    pub fn to_url_path(&self) -> String {
        self.0
            .split('/')
            .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if let Some((position, character)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return Err(KeyError::ControlCharacter {
            code: u32::from(character),
            position,
        });
    }
    if key.starts_with("_/") {
        return Err(KeyError::Reserved);
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(KeyError::EmptySegment),
            "." | ".." => return Err(KeyError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for ObjectKey {
    type Err = KeyError;
    fn from_str(key: &str) -> Result<Self, KeyError> {
        Self::parse(key)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(key: &str, expected: Result<(), KeyError>) {
        assert_eq!(ObjectKey::parse(key).map(|_| ()), expected, "key {key:?}");
    }

    #[test]
    fn rules() {
        check("kids/DR5/KiDS_DR5.0_129.0_-0.5_r_sci.fits", Ok(()));
        check(
            "Sci-USER-OMEGACAM-------OCAM_r_SDSS-ESO_CCD_#65-Red---Sci-56981.2866678-892f5e7e.fits",
            Ok(()),
        );
        check("a", Ok(()));
        check("_", Ok(()));
        check("_x/y", Ok(()));
        check("a/_/b", Ok(()));
        check("...", Ok(()));
        check("a/.hidden", Ok(()));
        check("ünïcødé/ファイル.fits", Ok(()));
        check(&"x".repeat(MAX_KEY_BYTES), Ok(()));
        check("", Err(KeyError::Empty));
        check(
            &"x".repeat(MAX_KEY_BYTES + 1),
            Err(KeyError::TooLong { len: 1025 }),
        );
        check("/a", Err(KeyError::EmptySegment));
        check("a/", Err(KeyError::EmptySegment));
        check("a//b", Err(KeyError::EmptySegment));
        check("/", Err(KeyError::EmptySegment));
        check(".", Err(KeyError::DotSegment));
        check("..", Err(KeyError::DotSegment));
        check("../etc/passwd", Err(KeyError::DotSegment));
        check("a/./b", Err(KeyError::DotSegment));
        check("a/b/..", Err(KeyError::DotSegment));
        check("_/status", Err(KeyError::Reserved));
        check(
            "a\0b",
            Err(KeyError::ControlCharacter {
                code: 0,
                position: 1,
            }),
        );
        check(
            "a\nb",
            Err(KeyError::ControlCharacter {
                code: 10,
                position: 1,
            }),
        );
        check(
            "ab\u{7f}",
            Err(KeyError::ControlCharacter {
                code: 0x7f,
                position: 2,
            }),
        );
        check(
            "\u{85}",
            Err(KeyError::ControlCharacter {
                code: 0x85,
                position: 0,
            }),
        );
    }

    #[test]
    fn url_paths() {
        let decode = |path: &str| ObjectKey::from_url_path(path).map(|k| k.0);
        assert_eq!(decode("/kids/a%23b.fits"), Ok("kids/a#b.fits".into()));
        assert_eq!(decode("/a%20b"), Ok("a b".into()));
        assert_eq!(decode("/%2E%2E/x"), Err(KeyError::DotSegment));
        assert_eq!(decode("/a/%2e/x"), Err(KeyError::DotSegment));
        assert_eq!(decode("/a%2F..%2Fb"), Err(KeyError::DotSegment));
        assert_eq!(
            decode("/a%00"),
            Err(KeyError::ControlCharacter {
                code: 0,
                position: 1
            })
        );
        assert_eq!(decode("/%FF"), Err(KeyError::NotUtf8));
        assert_eq!(decode("/_/list"), Err(KeyError::Reserved));
        assert_eq!(decode("/"), Err(KeyError::Empty));
        let key = ObjectKey::parse("kids/a#b?c%d e.fits").expect("valid key");
        assert_eq!(key.to_url_path(), "kids/a%23b%3Fc%25d%20e.fits");
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = ObjectKey::parse(&text);
            let _ = ObjectKey::from_url_path(&text);
        }

        #[test]
        fn url_round_trip(text in "[^\\p{Cc}]{1,300}") {
            if let Ok(key) = ObjectKey::parse(&text) {
                let path = format!("/{}", key.to_url_path());
                prop_assert_eq!(ObjectKey::from_url_path(&path), Ok(key));
            }
        }

        #[test]
        fn segments_round_trip(segments in proptest::collection::vec("[^/\\p{Cc}]{1,20}", 1..6)) {
            let text = segments.join("/");
            if let Ok(key) = ObjectKey::parse(&text) {
                let path = key.to_url_path();
                prop_assert!(!path.contains(['?', '#', ' ']));
                prop_assert_eq!(path.split('/').count(), segments.len());
                prop_assert_eq!(ObjectKey::from_url_path(&path), Ok(key));
            }
        }
    }
}
