//! The `Range` header (RFC 9110 §14): parsing, resolving against an object size, coalescing,
//! and the abuse guards nginx and Apache apply.
//!
//! Pure: no I/O. A syntactically invalid header, or a unit other than `bytes`, is ignored (the
//! whole object is sent), as RFC 9110 says. Requests that look like an attack on the server
//! (too many ranges, many overlaps, ranges adding up to more than the object) also get the
//! whole object rather than a multipart body many times its size.

use std::ops::Range;

/// Most ranges honoured in one request (Apache's `MaxRanges` default is 200).
pub const MAX_RANGES: usize = 100;
/// Most overlapping or out-of-order ranges tolerated (Apache: `MaxRangeOverlaps`,
/// `MaxRangeReversals`, both 20).
pub const MAX_OVERLAPS: usize = 20;
/// Ranges closer than this are merged: a multipart part header costs about this much.
const COALESCE_GAP: u64 = 80;

/// What to send for a request with this `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// The whole object, 200.
    Full,
    /// These byte ranges (end exclusive, non-empty, in order, not overlapping), 206.
    Partial(Vec<Range<u64>>),
    /// None of the ranges overlaps the object: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` (inclusive) or `first-` (`last` = None).
    From { first: u64, last: Option<u64> },
    /// `-length`: the last `length` bytes.
    Suffix { length: u64 },
}

fn parse(header: &str) -> Option<Vec<Spec>> {
    let (unit, set) = header.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
    for element in set
        .split(',')
        .map(str::trim)
        .filter(|element| !element.is_empty())
    {
        let (first, last) = element.split_once('-')?;
        let number = |text: &str| -> Option<u64> {
            if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            // Absurdly large numbers are clamped: they still mean "to the end".
            Some(text.parse::<u64>().unwrap_or(u64::MAX))
        };
        let spec = if first.is_empty() {
            Spec::Suffix {
                length: number(last)?,
            }
        } else {
            let first = number(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(number(last)?)
            };
            if last.is_some_and(|last| last < first) {
                return None;
            }
            Spec::From { first, last }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Decides what to send for `header` (the raw `Range` value, if any) on an object of `size`
/// bytes.
pub fn decide(header: Option<&str>, size: u64) -> RangeDecision {
    let Some(specs) = header.and_then(parse) else {
        return RangeDecision::Full;
    };
    if specs.len() > MAX_RANGES {
        return RangeDecision::Full;
    }
    let ranges: Vec<Range<u64>> = specs
        .iter()
        .filter_map(|spec| match *spec {
            Spec::From { first, last } if first < size => {
                let end = last.map_or(size, |last| last.saturating_add(1).min(size));
                Some(first..end)
            }
            Spec::Suffix { length } if length > 0 && size > 0 => {
                Some(size.saturating_sub(length)..size)
            }
            _ => None,
        })
        .collect();
    if ranges.is_empty() {
        return RangeDecision::Unsatisfiable;
    }
    let overlaps = ranges
        .windows(2)
        .filter(|pair| pair[1].start < pair[0].end)
        .count();
    let requested: u64 = ranges.iter().map(|range| range.end - range.start).sum();
    if overlaps > MAX_OVERLAPS || (ranges.len() > 1 && requested > size) {
        return RangeDecision::Full;
    }
    RangeDecision::Partial(coalesce(ranges))
}

/// The range of a header asking for exactly one explicit span `bytes=first-last` (end
/// exclusive), which is the range `decide` answers whenever the span lies inside the object:
/// lets the caller read it ahead, before the object's size is known.
pub fn explicit_single(header: Option<&str>) -> Option<Range<u64>> {
    match parse(header?)?.as_slice() {
        [
            Spec::From {
                first,
                last: Some(last),
            },
        ] => Some(*first..last.checked_add(1)?),
        _ => None,
    }
}

/// Sorts and merges ranges that overlap or lie closer than a part header.
fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(COALESCE_GAP) => {
                last.end = last.end.max(range.end);
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(header: &str, size: u64, expected: RangeDecision) {
        assert_eq!(
            decide(Some(header), size),
            expected,
            "{header:?} on {size} bytes"
        );
    }

    /// Expected ranges as (start, end) pairs, end exclusive.
    fn partial(ranges: &[(u64, u64)]) -> RangeDecision {
        RangeDecision::Partial(ranges.iter().map(|&(start, end)| start..end).collect())
    }

    #[test]
    fn forms() {
        use RangeDecision::{Full, Unsatisfiable};
        check("bytes=0-0", 10, partial(&[(0, 1)]));
        check("bytes=0-9", 10, partial(&[(0, 10)]));
        check("bytes=2-", 10, partial(&[(2, 10)]));
        check("bytes=-3", 10, partial(&[(7, 10)]));
        check("bytes=-30", 10, partial(&[(0, 10)]));
        check("bytes=5-100", 10, partial(&[(5, 10)]));
        check("BYTES = 1-2", 10, partial(&[(1, 3)]));
        // Ranges closer than a part header are merged.
        check("bytes=0-1, 5-6", 10_000, partial(&[(0, 7)]));
        check("bytes=0-1,500-600", 10_000, partial(&[(0, 2), (500, 601)]));
        check("bytes=500-600,0-1", 10_000, partial(&[(0, 2), (500, 601)]));
        check(
            "bytes=0-1,,500-600,",
            10_000,
            partial(&[(0, 2), (500, 601)]),
        );
        check("bytes=1-2,10-", 5, partial(&[(1, 3)]));
        check("bytes=99999999999999999999999-", 10, Unsatisfiable);
        check("bytes=0-99999999999999999999999", 10, partial(&[(0, 10)]));
        check("bytes=10-", 10, Unsatisfiable);
        check("bytes=10-20,30-40", 10, Unsatisfiable);
        check("bytes=-0", 10, Unsatisfiable);
        check("bytes=0-", 0, Unsatisfiable);
        check("bytes=-5", 0, Unsatisfiable);
        // Syntactically invalid: ignored.
        check("bytes=5-2", 10, Full);
        check("bytes=a-b", 10, Full);
        check("bytes=", 10, Full);
        check("bytes=1", 10, Full);
        check("bytes=-", 10, Full);
        check("bytes=+1-2", 10, Full);
        check("bytes=1-2;x", 10, Full);
        check("items=0-1", 10, Full);
        check("0-1", 10, Full);
        check("", 10, Full);
        assert_eq!(decide(None, 10), Full);
    }

    #[test]
    fn abuse_gets_the_whole_object() {
        let many = format!(
            "bytes={}",
            (0..=MAX_RANGES)
                .map(|i| format!("{}-{}", i * 1000, i * 1000))
                .collect::<Vec<_>>()
                .join(",")
        );
        check(&many, 1 << 30, RangeDecision::Full);
        let overlapping = format!("bytes={}", vec!["0-100"; MAX_OVERLAPS + 2].join(","));
        check(&overlapping, 1 << 30, RangeDecision::Full);
        check("bytes=0-6,0-6", 10, RangeDecision::Full);
        check("bytes=0-,0-", 1000, RangeDecision::Full);
        // Overlapping but small: merged.
        check("bytes=0-100,50-150", 10_000, partial(&[(0, 151)]));
    }

    #[test]
    fn explicit_single_ranges() {
        assert_eq!(explicit_single(Some("bytes=10-19")), Some(10..20));
        assert_eq!(explicit_single(Some("bytes=10-")), None);
        assert_eq!(explicit_single(Some("bytes=-10")), None);
        assert_eq!(explicit_single(Some("bytes=0-1,5-6")), None);
        assert_eq!(explicit_single(Some("bytes=9-1")), None);
        assert_eq!(explicit_single(None), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_inside(header in "\\PC{0,80}", size in 0u64..1_000_000) {
            let _ = decide(Some(&header), size);
            let header = format!("bytes={header}");
            if let RangeDecision::Partial(ranges) = decide(Some(&header), size) {
                prop_assert!(!ranges.is_empty());
                for pair in ranges.windows(2) {
                    prop_assert!(pair[0].end < pair[1].start);
                }
                for range in ranges {
                    prop_assert!(range.start < range.end && range.end <= size);
                }
            }
        }

        #[test]
        fn numeric_ranges_resolve(first in 0u64..2000, length in 1u64..2000, size in 1u64..3000) {
            let header = format!("bytes={first}-{}", first + length - 1);
            let expected = if first < size {
                partial(&[(first, (first + length).min(size))])
            } else {
                RangeDecision::Unsatisfiable
            };
            prop_assert_eq!(decide(Some(&header), size), expected);
        }
    }
}
