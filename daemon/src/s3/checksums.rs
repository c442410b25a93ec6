//! The `x-amz-checksum-*` checks of request bodies (CRC32, CRC32C, SHA-1, SHA-256, CRC64NVME):
//! computed while the body streams, compared with the values the client sent in headers or in
//! `aws-chunked` trailers once the body has ended. s3s decodes `aws-chunked` and checks the
//! chunk and trailer signatures, but leaves the checksums to us.
//!
//! A mismatch ends the body stream with [`ChecksumMismatch`] instead of its end, so the store
//! never commits the object: nothing is stored.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use http::HeaderMap;
use s3s::TrailingHeaders;
use s3s::checksum::ChecksumHasher;
use s3s::dto::Checksum;

/// The algorithms S3 defines, by header name.
const ALGORITHMS: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-checksum-crc64nvme",
];

/// A body whose announced checksum does not match its bytes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the body does not match its {header}: sent {expected}, computed {actual}")]
pub struct ChecksumMismatch {
    /// The header (or trailer) that carried the value.
    pub header: &'static str,
    /// What the client sent.
    pub expected: String,
    /// What the bytes give.
    pub actual: String,
}

/// What a request announced: checksum values sent in headers, and algorithms whose values
/// follow in trailers.
#[derive(Debug, Default, Clone)]
pub struct Announced {
    values: [Option<String>; 5],
    wanted: [bool; 5],
}

impl Announced {
    /// Reads `x-amz-checksum-*` values, `x-amz-sdk-checksum-algorithm` and `x-amz-trailer`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut announced = Self::default();
        for (index, name) in ALGORITHMS.iter().enumerate() {
            if let Some(value) = headers.get(*name).and_then(|v| v.to_str().ok()) {
                announced.values[index] = Some(value.to_owned());
                announced.wanted[index] = true;
            }
        }
        let algorithm = headers
            .get("x-amz-sdk-checksum-algorithm")
            .and_then(|v| v.to_str().ok())
            .map(|name| format!("x-amz-checksum-{}", name.to_ascii_lowercase()));
        let trailers = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase());
        for name in algorithm.into_iter().chain(trailers) {
            if let Some(index) = ALGORITHMS.iter().position(|known| *known == name) {
                announced.wanted[index] = true;
            }
        }
        announced
    }

    fn hasher(&self) -> ChecksumHasher {
        let mut hasher = ChecksumHasher::default();
        let [crc32, crc32c, sha1, sha256, crc64nvme] = self.wanted;
        if crc32 {
            hasher.crc32 = Some(Default::default());
        }
        if crc32c {
            hasher.crc32c = Some(Default::default());
        }
        if sha1 {
            hasher.sha1 = Some(Default::default());
        }
        if sha256 {
            hasher.sha256 = Some(Default::default());
        }
        if crc64nvme {
            hasher.crc64nvme = Some(Default::default());
        }
        hasher
    }

    fn any(&self) -> bool {
        self.wanted.iter().any(|wanted| *wanted)
    }
}

/// The checksums of a body that passed, for the response (what the client asked for).
pub type Computed = Arc<Mutex<Checksum>>;

/// Wraps `body`: hashes it with the announced algorithms and, at its end, compares the values
/// from headers or (for `aws-chunked` uploads) from `trailers`. A mismatch or a trailer
/// value that does not decode is the stream's last item, an error.
pub fn verify<S, E>(
    body: S,
    announced: Announced,
    trailers: Option<TrailingHeaders>,
) -> (
    impl Stream<Item = Result<Bytes, std::io::Error>> + Send,
    Computed,
)
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let computed: Computed = Arc::default();
    let result = computed.clone();
    let hasher = announced.any().then(|| announced.hasher());
    let state = (body, hasher, announced, trailers, false);
    let stream = stream::unfold(
        state,
        move |(mut body, mut hasher, announced, trailers, done)| {
            let result = result.clone();
            async move {
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(bytes)) => {
                        if let Some(hasher) = &mut hasher {
                            hasher.update(&bytes);
                        }
                        Some((Ok(bytes), (body, hasher, announced, trailers, false)))
                    }
                    Some(Err(error)) => Some((
                        Err(std::io::Error::other(error)),
                        (body, hasher, announced, trailers, true),
                    )),
                    None => {
                        let hasher = hasher.take()?;
                        let checksum = hasher.finalize();
                        match compare(&announced, trailers.as_ref(), &checksum) {
                            Ok(()) => {
                                *result.lock().expect("checksum lock") = checksum;
                                None
                            }
                            Err(mismatch) => Some((
                                Err(std::io::Error::other(mismatch)),
                                (body, None, announced, trailers, true),
                            )),
                        }
                    }
                }
            }
        },
    );
    (stream, computed)
}

/// Compares header values, else trailer values, with what the bytes give.
fn compare(
    announced: &Announced,
    trailers: Option<&TrailingHeaders>,
    checksum: &Checksum,
) -> Result<(), ChecksumMismatch> {
    let trailer_map = trailers.and_then(TrailingHeaders::take);
    let actual = [
        &checksum.checksum_crc32,
        &checksum.checksum_crc32c,
        &checksum.checksum_sha1,
        &checksum.checksum_sha256,
        &checksum.checksum_crc64nvme,
    ];
    for (index, header) in ALGORITHMS.iter().enumerate() {
        let from_trailer = trailer_map
            .as_ref()
            .and_then(|map| map.get(*header))
            .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
        let Some(expected) = announced.values[index].clone().or(from_trailer) else {
            continue;
        };
        let actual = actual[index].clone().unwrap_or_default();
        if expected.trim() != actual {
            return Err(ChecksumMismatch {
                header,
                expected,
                actual,
            });
        }
    }
    Ok(())
}

/// The mismatch behind a body error, if that is what it was.
pub fn mismatch_of(error: &std::io::Error) -> Option<&ChecksumMismatch> {
    cause::<ChecksumMismatch>(error)
}

/// The first error of type `T` in `error`'s chain. Body errors arrive wrapped in
/// `io::Error`s, sometimes twice; `io::Error::source` skips the error it wraps, so each
/// wrapper is opened with `get_ref`.
pub fn cause<T: std::error::Error + 'static>(error: &std::io::Error) -> Option<&T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    async fn run(announced: Announced, data: &[u8]) -> Result<Vec<u8>, std::io::Error> {
        let chunks = vec![
            Ok::<_, std::io::Error>(Bytes::copy_from_slice(&data[..3])),
            Ok(Bytes::copy_from_slice(&data[3..])),
        ];
        let (stream, _) = verify(stream::iter(chunks), announced, None);
        let pieces: Vec<Bytes> = futures_util::TryStreamExt::try_collect(stream).await?;
        Ok(pieces.concat())
    }

    #[tokio::test]
    async fn header_values_are_checked() {
        // Reference values: `crc32("hello world")` = 0x0d4a1185, SHA-256 of the same.
        let good = Announced::from_headers(&headers(&[
            ("x-amz-checksum-crc32", "DUoRhQ=="),
            (
                "x-amz-checksum-sha256",
                "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
            ),
        ]));
        assert_eq!(
            run(good, b"hello world").await.expect("passes"),
            b"hello world"
        );
        // CRC32C and CRC64NVME of the same bytes, from a bitwise reference implementation
        // (CRC-64/NVME: reflected 0x9a6c9329ac4bc9b5, check value 0xae8b14860a799888).
        let castagnoli = Announced::from_headers(&headers(&[
            ("x-amz-checksum-crc32c", "yZRlqg=="),
            ("x-amz-checksum-crc64nvme", "jSnVw/bqjr4="),
        ]));
        assert_eq!(
            run(castagnoli, b"hello world").await.expect("passes"),
            b"hello world"
        );
        let bad = Announced::from_headers(&headers(&[("x-amz-checksum-crc32", "AAAAAA==")]));
        let error = run(bad, b"hello world").await.expect_err("mismatch");
        let mismatch = mismatch_of(&error).expect("a checksum mismatch");
        assert_eq!(mismatch.header, "x-amz-checksum-crc32");
        let none = Announced::from_headers(&headers(&[("content-type", "x")]));
        assert!(!none.any());
        assert_eq!(
            run(none, b"hello world").await.expect("passes"),
            b"hello world"
        );
    }

    #[test]
    fn trailer_and_sdk_announcements_choose_algorithms() {
        let announced = Announced::from_headers(&headers(&[
            ("x-amz-trailer", "x-amz-checksum-crc64nvme"),
            ("x-amz-sdk-checksum-algorithm", "CRC32C"),
        ]));
        assert_eq!(announced.wanted, [false, true, false, false, true]);
        assert!(announced.values.iter().all(Option::is_none));
    }
}
