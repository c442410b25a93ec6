//! `Client`: one connection pool, a base URL, an optional token and a retry policy, cheap to
//! clone. Sending, retrying and turning answers into `Error`s happen here; transfers to and from
//! files are in `transfer`, the seekable reader in `reader`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::api::{self, ErrorBody, ListPage, ObjectInfo, Status, Verification};
use crate::error::{Error, Result, io_error};
use crate::retry::{RetryPolicy, parse_retry_after};

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bearer token sent with every request. Default: none (public reads only).
    pub token: Option<String>,
    /// Longest wait to open a connection. Default: 10 s.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for an answer or the next bytes of one. Default: 60 s.
    /// There is no limit on a whole transfer, which may take hours.
    pub read_timeout: Duration,
    /// PEM file of the certificate authorities to trust for `https://` instead of the system's
    /// (like curl's `--cacert`). Default: none (the operating system's trust store).
    pub ca_file: Option<PathBuf>,
    /// Retries of idempotent requests.
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            token: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ca_file: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// A client of one dataserver node. Clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    /// Scheme, host and port, without a trailing `/`.
    base: String,
    token: Option<HeaderValue>,
    pub(crate) retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        formatter
            .debug_struct("Client")
            .field("url", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// What `HEAD /<key>` tells about an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectHead {
    /// Bytes.
    pub size: u64,
    /// BLAKE3-256, hex.
    pub blake3: String,
    /// MD5, hex, once the server knows it.
    pub md5: Option<String>,
    /// Entity tag, quoted.
    pub etag: String,
    /// MIME type.
    pub content_type: String,
    /// Federation-wide ID.
    pub object_id: Option<u64>,
    /// Creation time, HTTP date.
    pub last_modified: Option<String>,
}

/// What [`Client::put_file_if_changed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The file was sent and stored (or found stored while settling a retry).
    Stored(ObjectInfo),
    /// The key already held exactly this content; nothing was sent.
    Unchanged(ObjectHead),
}

/// How to store an object.
#[derive(Clone, Default)]
pub struct PutOptions {
    /// Also compute the MD5 and send it as `Content-MD5`, so the server checks it inline and
    /// knows it at once (for catalogues that speak MD5).
    pub md5: bool,
    /// Content type; default: the server detects it (FITS) or uses `application/octet-stream`.
    pub content_type: Option<String>,
    /// BLAKE3 of the body, hex, when the caller already knows it (for `put_stream`, whose body
    /// cannot be hashed in advance; the server then refuses a body that does not match).
    pub blake3: Option<String>,
    /// Told the number of bytes each time a piece of a file has been handed to the connection
    /// (`put_file`, `put_file_if_changed`; a retried upload counts again).
    pub progress: Option<crate::Progress>,
}

impl std::fmt::Debug for PutOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PutOptions")
            .field("md5", &self.md5)
            .field("content_type", &self.content_type)
            .field("blake3", &self.blake3)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Client {
    /// A client of the node at `url` (`http://host:port` or `https://…`) with default options.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_options(url, ClientOptions::default())
    }

    /// A client of the node at `url` with `options`.
    pub fn with_options(url: &str, options: ClientOptions) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|error| Error::Config(format!("invalid server URL {url:?}: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(Error::Config(format!(
                "invalid server URL {url:?}: expected http://host:port or https://host:port"
            )));
        }
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(Error::Config(format!(
                "invalid server URL {url:?}: give only scheme, host and port"
            )));
        }
        let token = options
            .token
            .as_deref()
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| Error::Config("the token contains invalid characters".into()))?;
                value.set_sensitive(true);
                Ok::<_, Error>(value)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(
                options.ca_file.as_deref(),
                parsed.scheme() == "https",
            )?)
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .tcp_nodelay(true)
            // The server's answers are final: a redirect would be a misconfiguration.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ds/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Config(format!("cannot build the HTTP client: {error}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                token,
                retry: options.retry,
            }),
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// A request to `path` (already encoded), with the token.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .inner
            .http
            .request(method, format!("{}{path}", self.inner.base));
        match &self.inner.token {
            Some(token) => builder.header(header::AUTHORIZATION, token.clone()),
            None => builder,
        }
    }

    /// Sends an idempotent request, repeating it on transport failures and 5xx answers (503
    /// after the server's `Retry-After`), and turns a refusal into an `Error`. `build` makes the
    /// request afresh for each attempt.
    pub(crate) async fn send_idempotent(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        let policy = self.inner.retry;
        let mut attempt = 1;
        loop {
            let (error, retry_after) = match attempt_once(build()).await {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            };
            if !error.is_transient() || attempt >= policy.attempts.max(1) {
                return Err(error);
            }
            tokio::time::sleep(policy.delay(attempt, retry_after)).await;
            attempt += 1;
        }
    }

    /// `HEAD /<key>`: size, digests and type.
    pub async fn head(&self, key: &str) -> Result<ObjectHead> {
        let path = api::key_path(key);
        let response = self
            .send_idempotent(|| self.request(Method::HEAD, &path))
            .await;
        let response = match response {
            // A HEAD answer has no body, so the server's message cannot arrive: say it here.
            Err(Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    message: format!("object {key} not found"),
                });
            }
            other => other?,
        };
        object_head(response.headers())
    }

    /// The object's record as the listing shows it (`None` when the key is not stored).
    pub async fn info(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let page = self.list_page(key, None, 1).await?;
        Ok(page.objects.into_iter().find(|object| object.key == key))
    }

    /// Stores `bytes` under `key`, sending their BLAKE3 (and MD5 when asked) so the server
    /// refuses a damaged upload. Identical content already stored under `key` is success.
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: impl Into<Bytes>,
        options: &PutOptions,
    ) -> Result<ObjectInfo> {
        let bytes: Bytes = bytes.into();
        let digests = {
            let bytes = bytes.clone();
            let md5 = options.md5;
            spawn_blocking(move || Ok(Digests::of_slice(&bytes, md5))).await?
        };
        let body = || reqwest::Body::from(bytes.clone());
        self.put_with_retries(key, &digests, bytes.len() as u64, options, body, 1)
            .await
    }

    /// Stores the file at `path` under `key`, never holding it in memory whole. The file is
    /// read once: hashed as it streams, its BLAKE3 sent as a trailer after the bytes, which the
    /// server checks before it stores anything. With `options.md5` the file is hashed first
    /// instead and both digests go in the headers (the server must know to compute MD5 before
    /// the body arrives). A retry after an unknown outcome is settled with a HEAD first and
    /// sends the digests in headers.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        options: &PutOptions,
    ) -> Result<ObjectInfo> {
        if options.md5 {
            let digests = Digests::of_file(path, true).await?;
            return self.put_hashed_file(key, path, &digests, options, 1).await;
        }
        let (body, reader) = crate::upload::file_body(path, options.progress.clone());
        let request = self
            .put_request(key, None, None, None, options)
            .header(header::TRAILER, api::BLAKE3_HEADER)
            .body(body);
        let outcome = attempt_once(request).await;
        let read = reader
            .await
            .map_err(|error| Error::Protocol(format!("the file reader failed: {error}")))?;
        let (error, retry_after) = match outcome {
            Ok(response) => {
                let info: ObjectInfo = parse_json(response).await?;
                let (digest, _) = read?;
                // A server that ignored the trailer would have stored whatever arrived.
                if !info.blake3.eq_ignore_ascii_case(digest.to_hex().as_str()) {
                    return Err(Error::DigestMismatch {
                        message: format!(
                            "the server stored {key} with BLAKE3 {}, but the file sent has BLAKE3 {}",
                            info.blake3,
                            digest.to_hex()
                        ),
                    });
                }
                return Ok(info);
            }
            Err(failed) => failed,
        };
        // The file's own failure (unreadable) explains more than the aborted request.
        if let Err(error @ Error::Io { .. }) = read {
            return Err(error);
        }
        if !error.is_transient() || self.inner.retry.attempts <= 1 {
            return Err(error);
        }
        let digests = match read {
            Ok((digest, size)) => Digests {
                size,
                blake3: digest.to_hex().to_string(),
                md5: None,
            },
            Err(_) => Digests::of_file(path, false).await?,
        };
        // 503 from admission control: nothing was read or stored, no need to ask.
        if !matches!(error, Error::Server { status: 503, .. })
            && let Some(info) = self.settle(key, &digests.blake3).await?
        {
            return Ok(info);
        }
        tokio::time::sleep(self.inner.retry.delay(1, retry_after)).await;
        self.put_hashed_file(key, path, &digests, options, 2).await
    }

    /// Stores the file at `path` under `key` unless the server already holds exactly its
    /// content there: one HEAD decides. An absent key gets the file as `put_file` sends it; a
    /// present one has the file hashed and compared, and a key bound to other content is a
    /// conflict, reported without sending the file.
    pub async fn put_file_if_changed(
        &self,
        key: &str,
        path: &Path,
        options: &PutOptions,
    ) -> Result<PutOutcome> {
        let head = match self.head(key).await {
            Ok(head) => head,
            Err(Error::NotFound { .. }) => {
                return self
                    .put_file(key, path, options)
                    .await
                    .map(PutOutcome::Stored);
            }
            Err(error) => return Err(error),
        };
        let digests = Digests::of_file(path, false).await?;
        if head.blake3.eq_ignore_ascii_case(&digests.blake3) {
            return Ok(PutOutcome::Unchanged(head));
        }
        Err(Error::Conflict {
            message: format!(
                "key {key} already holds different content ({})",
                head.blake3
            ),
        })
    }

    /// `put_file` with the digests already computed, in headers, from attempt `first_attempt`
    /// of the retry policy on.
    async fn put_hashed_file(
        &self,
        key: &str,
        path: &Path,
        digests: &Digests,
        options: &PutOptions,
        first_attempt: u32,
    ) -> Result<ObjectInfo> {
        let size = digests.size;
        let body = || {
            let path = path.to_path_buf();
            let progress = options.progress.clone();
            // Opened lazily inside the stream, so each attempt reads the file from its start.
            let stream = stream::once(async move {
                tokio::fs::File::open(&path)
                    .await
                    .map(|file| tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024))
            })
            .try_flatten()
            .inspect_ok(move |piece| {
                if let Some(progress) = &progress {
                    progress(piece.len() as u64);
                }
            });
            reqwest::Body::wrap_stream(stream)
        };
        self.put_with_retries(key, digests, size, options, body, first_attempt)
            .await
    }

    /// Stores a stream of `size` bytes under `key`. The body can be sent only once, so a
    /// failure whose outcome is unknown is settled with a HEAD when `options.blake3` is given,
    /// and otherwise reported.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        size: u64,
        body: S,
        options: &PutOptions,
    ) -> Result<ObjectInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let request = self.put_request(key, Some(size), options.blake3.as_deref(), None, options);
        let outcome = send_and_check(request.body(reqwest::Body::wrap_stream(body))).await;
        match (outcome, &options.blake3) {
            (Ok(response), _) => parse_json(response).await,
            (Err(error), Some(blake3)) if error.is_transient() => {
                match self.settle(key, blake3).await? {
                    Some(info) => Ok(info),
                    None => Err(error),
                }
            }
            (Err(error), _) => Err(error),
        }
    }

    /// A PUT of `key`; without a `size` the body goes chunked.
    fn put_request(
        &self,
        key: &str,
        size: Option<u64>,
        blake3: Option<&str>,
        md5: Option<&[u8; 16]>,
        options: &PutOptions,
    ) -> RequestBuilder {
        let mut request = self.request(Method::PUT, &api::key_path(key));
        if let Some(size) = size {
            request = request.header(header::CONTENT_LENGTH, size);
        }
        if let Some(blake3) = blake3 {
            request = request.header(api::BLAKE3_HEADER, blake3);
        }
        if let Some(md5) = md5 {
            request = request.header(
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(md5),
            );
        }
        if let Some(content_type) = &options.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request
    }

    /// A PUT with a body that can be made again: a failure with an unknown outcome (connection
    /// lost, 5xx) is first settled with a HEAD — stored with our digest means done, stored with
    /// another is a conflict — and only a PUT that certainly did not happen is sent again.
    async fn put_with_retries(
        &self,
        key: &str,
        digests: &Digests,
        size: u64,
        options: &PutOptions,
        body: impl Fn() -> reqwest::Body,
        first_attempt: u32,
    ) -> Result<ObjectInfo> {
        let policy = self.inner.retry;
        let mut attempt = first_attempt;
        loop {
            let request = self
                .put_request(
                    key,
                    Some(size),
                    Some(&digests.blake3),
                    digests.md5.as_ref(),
                    options,
                )
                .body(body());
            let (error, retry_after) = match attempt_once(request).await {
                Ok(response) => return parse_json(response).await,
                Err(failed) => failed,
            };
            if !error.is_transient() || attempt >= policy.attempts.max(1) {
                return Err(error);
            }
            // 503 from admission control: nothing was read or stored, no need to ask.
            let refused_unread = matches!(error, Error::Server { status: 503, .. });
            if !refused_unread && let Some(info) = self.settle(key, &digests.blake3).await? {
                return Ok(info);
            }
            tokio::time::sleep(policy.delay(attempt, retry_after)).await;
            attempt += 1;
        }
    }

    /// After a PUT with an unknown outcome: the stored record when `key` holds `blake3`, `None`
    /// when the key is not stored, a conflict when it holds other content.
    async fn settle(&self, key: &str, blake3: &str) -> Result<Option<ObjectInfo>> {
        match self.head(key).await {
            Ok(head) if head.blake3.eq_ignore_ascii_case(blake3) => self.info(key).await,
            Ok(head) => Err(Error::Conflict {
                message: format!(
                    "key {key} already holds different content ({})",
                    head.blake3
                ),
            }),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Deletes `key` (needs an admin token). The key stays bound to its content.
    pub async fn delete(&self, key: &str) -> Result<ObjectInfo> {
        let path = api::key_path(key);
        let response = self
            .send_idempotent(|| self.request(Method::DELETE, &path))
            .await?;
        parse_json(response).await
    }

    /// `GET /_/status`.
    pub async fn status(&self) -> Result<Status> {
        let response = self
            .send_idempotent(|| self.request(Method::GET, api::STATUS_PATH))
            .await?;
        parse_json(response).await
    }

    /// Asks the server to re-hash its stored copy of `key` against its BLAKE3 digest. A copy
    /// found damaged is quarantined by the server and no longer served.
    pub async fn verify_stored(&self, key: &str) -> Result<Verification> {
        let path = format!("{}{}", api::VERIFY_PREFIX, &api::key_path(key)[1..]);
        let response = self
            .send_idempotent(|| self.request(Method::POST, &path))
            .await?;
        parse_json(response).await
    }

    /// One page of the listing: at most `limit` objects under `prefix`, after key `after`.
    pub async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let mut url = reqwest::Url::parse(&format!("{}{}", self.inner.base, api::LIST_PATH))
            .map_err(|error| Error::Config(format!("invalid listing URL: {error}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("prefix", prefix);
            query.append_pair("limit", &limit.to_string());
            if let Some(after) = after {
                query.append_pair("after", after);
            }
        }
        let path = format!("{}?{}", api::LIST_PATH, url.query().unwrap_or_default());
        let response = self
            .send_idempotent(|| self.request(Method::GET, &path))
            .await?;
        parse_json(response).await
    }

    /// Every object under `prefix`, in key order, read page by page as the stream is polled.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        const PAGE: usize = 1000;
        let client = self.clone();
        let prefix = prefix.to_owned();
        let pages = stream::try_unfold(Some(None::<String>), move |cursor| {
            let client = client.clone();
            let prefix = prefix.clone();
            async move {
                let Some(after) = cursor else {
                    return Ok::<_, Error>(None);
                };
                let page = client.list_page(&prefix, after.as_deref(), PAGE).await?;
                let next = page.next_after.clone().map(Some);
                Ok(Some((stream::iter(page.objects.into_iter().map(Ok)), next)))
            }
        });
        pages.try_flatten().boxed()
    }

    /// Bytes `range` of `key` (an empty range gives no bytes, without asking).
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let response = self.range_response(key, range.clone(), None).await?;
        let bytes = response.bytes().await?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::Protocol(format!(
                "asked for {} bytes, got {}",
                range.end - range.start,
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Bytes `range` of `key` as a stream of pieces.
    pub async fn get_range_stream(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        if range.is_empty() {
            return Ok(stream::empty().boxed());
        }
        let response = self.range_response(key, range, None).await?;
        Ok(response.bytes_stream().map_err(Error::from).boxed())
    }

    /// Several ranges of `key`, in the order asked; fetched over up to eight connections of the
    /// pool at once.
    pub async fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        stream::iter(ranges.iter().cloned())
            .map(|range| self.get_range(key, range))
            .buffered(8)
            .try_collect()
            .await
    }

    /// The 206 answer for `range` (end exclusive), checked to be exactly that range; with
    /// `if_range`, the server answers 200 with the whole object if it no longer matches.
    pub(crate) async fn range_response(
        &self,
        key: &str,
        range: Range<u64>,
        if_range: Option<&str>,
    ) -> Result<Response> {
        let path = api::key_path(key);
        let value = format!("bytes={}-{}", range.start, range.end - 1);
        let response = self
            .send_idempotent(|| {
                let request = self
                    .request(Method::GET, &path)
                    .header(header::RANGE, &value);
                match if_range {
                    Some(etag) => request.header(header::IF_RANGE, etag),
                    None => request,
                }
            })
            .await?;
        if response.status() == StatusCode::PARTIAL_CONTENT {
            let served = response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_content_range);
            if served.as_ref().map(|(start, end, _)| *start..*end) != Some(range.clone()) {
                return Err(Error::Protocol(format!(
                    "asked for bytes {}-{}, the server sent {served:?}",
                    range.start,
                    range.end - 1
                )));
            }
        } else if if_range.is_none() {
            return Err(Error::Protocol(format!(
                "asked for a range, the server answered {}",
                response.status()
            )));
        }
        Ok(response)
    }
}

/// The BLAKE3 (and optionally MD5) of a body, and its size.
#[derive(Debug, Clone)]
pub(crate) struct Digests {
    pub(crate) size: u64,
    pub(crate) blake3: String,
    pub(crate) md5: Option<[u8; 16]>,
}

/// Bytes hashed per read of a local file.
const HASH_PIECE_BYTES: usize = 1 << 20;

impl Digests {
    fn of_slice(bytes: &[u8], md5: bool) -> Self {
        use md5::Digest as _;
        Self {
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            md5: md5.then(|| md5::Md5::digest(bytes).into()),
        }
    }

    /// Hashes the file at `path` in one streaming pass on the blocking pool.
    pub(crate) async fn of_file(path: &Path, with_md5: bool) -> Result<Self> {
        let path = path.to_path_buf();
        spawn_blocking(move || {
            use md5::Digest as _;
            use std::io::Read as _;
            let mut file = std::fs::File::open(&path).map_err(io_error("open", &path))?;
            let mut blake3 = blake3::Hasher::new();
            let mut md5 = with_md5.then(md5::Md5::new);
            let mut buffer = vec![0u8; HASH_PIECE_BYTES];
            let mut size = 0u64;
            loop {
                let read = file.read(&mut buffer).map_err(io_error("read", &path))?;
                if read == 0 {
                    break;
                }
                blake3.update(&buffer[..read]);
                if let Some(md5) = &mut md5 {
                    md5.update(&buffer[..read]);
                }
                size += read as u64;
            }
            Ok(Self {
                size,
                blake3: blake3.finalize().to_hex().to_string(),
                md5: md5.map(|md5| md5.finalize().into()),
            })
        })
        .await
    }
}

/// The BLAKE3 of a local file, hex (as `b3sum` prints it), hashed in one streaming pass on the
/// blocking pool.
pub async fn local_digest(path: &Path) -> Result<String> {
    Ok(Digests::of_file(path, false).await?.blake3)
}

/// Runs blocking work (file I/O, hashing) on Tokio's blocking pool.
pub(crate) async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Protocol(format!("a blocking task failed: {error}")))?
}

/// The TLS settings: rustls with the ring provider (as the daemon), HTTP/1.1, and either the
/// operating system's trust store or only the authorities in `ca_file`. For a plain `http://`
/// server no request ever uses TLS (redirects are not followed), so the system's certificates
/// are not loaded at all: an empty trust store refuses everything.
fn tls_config(ca_file: Option<&Path>, https: bool) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Config(format!("TLS versions: {error}")))?;
    let mut config = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| {
                    Error::Config(format!(
                        "cannot read certificates from {}: {error}",
                        path.display()
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(Error::Config(format!(
                    "{} holds no usable certificate",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None if !https => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|error| {
                Error::Config(format!("cannot load the system's certificates: {error}"))
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Sends once; a failure comes with the server's `Retry-After`, if it sent one.
async fn attempt_once(
    request: RequestBuilder,
) -> std::result::Result<Response, (Error, Option<Duration>)> {
    let response = request
        .send()
        .await
        .map_err(|error| (Error::from(error), None))?;
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    check(response).await.map_err(|error| (error, retry_after))
}

/// Sends once and turns a refusal into an `Error`.
async fn send_and_check(request: RequestBuilder) -> Result<Response> {
    check(request.send().await?).await
}

/// A success answer as is; an error answer as the `Error` its status and body say.
pub(crate) async fn check(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let fallback = status
        .canonical_reason()
        .unwrap_or("unexpected status")
        .to_lowercase();
    // Error bodies are small JSON; a proxy's HTML page is not, so read at most a little.
    let body = response.bytes().await.unwrap_or_default();
    let (message, request_id) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(body) => (body.error, body.request_id),
        Err(_) => (fallback, 0),
    };
    Err(Error::from_status(status.as_u16(), message, request_id))
}

pub(crate) async fn parse_json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T> {
    let body = response.bytes().await?;
    serde_json::from_slice(&body).map_err(|error| Error::Protocol(format!("invalid JSON: {error}")))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The object facts in the headers of a GET or HEAD answer.
pub(crate) fn object_head(headers: &HeaderMap) -> Result<ObjectHead> {
    let blake3 = header_text(headers, api::BLAKE3_HEADER)
        .ok_or_else(|| Error::Protocol(format!("no {} header", api::BLAKE3_HEADER)))?
        .to_owned();
    let size = header_text(headers, header::CONTENT_LENGTH.as_str())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| Error::Protocol("no Content-Length".into()))?;
    let md5 = header_text(headers, "content-md5")
        .and_then(|value| base64::engine::general_purpose::STANDARD.decode(value).ok())
        .map(|bytes| bytes.iter().map(|byte| format!("{byte:02x}")).collect());
    Ok(ObjectHead {
        size,
        etag: header_text(headers, header::ETAG.as_str())
            .map_or_else(|| api::etag(&blake3), str::to_owned),
        blake3,
        md5,
        content_type: header_text(headers, header::CONTENT_TYPE.as_str())
            .unwrap_or("application/octet-stream")
            .to_owned(),
        object_id: header_text(headers, api::OBJECT_ID_HEADER).and_then(|value| value.parse().ok()),
        last_modified: header_text(headers, header::LAST_MODIFIED.as_str()).map(str::to_owned),
    })
}

/// `Content-Range: bytes A-B/N` as `(A, B + 1, N)`.
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, last) = range.split_once('-')?;
    let (start, last): (u64, u64) = (start.parse().ok()?, last.parse().ok()?);
    (start <= last).then_some((start, last + 1, size.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 10, 100)));
        assert_eq!(parse_content_range("bytes 5-4/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    proptest::proptest! {
        #[test]
        fn content_ranges_round_trip(start in 0u64..1 << 50, length in 1u64..1 << 40, extra in 0u64..1 << 40) {
            let end = start + length;
            let text = format!("bytes {start}-{}/{}", end - 1, end + extra);
            proptest::prop_assert_eq!(parse_content_range(&text), Some((start, end, end + extra)));
        }

        #[test]
        fn content_range_parsing_never_panics(text in "\\PC{0,40}") {
            let _ = parse_content_range(&text);
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(Client::new("http://127.0.0.1:8080").is_ok());
        assert!(Client::new("http://127.0.0.1:8080/").is_ok());
        for bad in ["127.0.0.1:8080", "ftp://x", "http://x/path", "http://"] {
            assert!(
                matches!(Client::new(bad), Err(Error::Config(_))),
                "{bad} is refused"
            );
        }
    }
}
