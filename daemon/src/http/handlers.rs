//! One function per route. Each checks access first, then acts on the store; none of them
//! buffers an object body.

use std::io;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};
use storage::{
    Blake3Digest, ByteStream, Expected, Md5Digest, ObjectKey, ObjectRecord, PutOptions,
    StorageError, StoredObject, TrailingDigest,
};

use super::error::ApiError;
use super::range::{self, RangeDecision};
use super::route::Route;
use super::wire;
use super::{App, Body, full};
use super::{fits, members};
use crate::auth::Scope;
use storage::fits::{Check, FitsFilter};

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Objects listed per catalogue read while streaming a listing.
const LIST_PAGE: usize = 1000;
/// Default and largest `limit` of a listing.
const LIST_DEFAULT_LIMIT: usize = 1000;
const LIST_MAX_LIMIT: usize = 1_000_000;

pub(super) async fn handle(
    app: &App,
    route: Route,
    request: Request<Incoming>,
) -> Result<Response<Body>> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let check = |scope, key: Option<&ObjectKey>| app.access.check(authorization, scope, key);
    match route {
        Route::Health => Ok(text(StatusCode::OK, "ok\n")),
        Route::Metrics => metrics(app).await,
        Route::Ready => ready(app).await,
        Route::Status => {
            check(Scope::Read, None)?;
            let status = status(app).await?;
            Ok(json(StatusCode::OK, &status))
        }
        Route::StatusPage => {
            check(Scope::Read, None)?;
            status_page(app).await
        }
        Route::List => {
            check(Scope::Read, None)?;
            list(app, request.uri().query().unwrap_or("")).await
        }
        Route::GetObject(key) | Route::HeadObject(key) => {
            check(Scope::Read, Some(&key))?;
            let query = request.uri().query().unwrap_or("");
            let head = request.method() == Method::HEAD;
            if let Some(view) = fits::parse_view(query)? {
                return fits::respond(app, &key, view, head).await;
            }
            if let Some(view) = members::parse_view(query)? {
                return members::respond(app, &key, view, head, request.headers()).await;
            }
            get(app, &key, request.method(), request.headers()).await
        }
        Route::PutObject(key) => {
            check(Scope::Write, Some(&key))?;
            put(app, &key, request).await
        }
        Route::DeleteObject(key) => {
            check(Scope::Admin, Some(&key))?;
            let record = app.store.delete(&key).await?;
            tracing::info!(key = %record.key, object_id = record.object_id.0, "deleted");
            Ok(json(StatusCode::OK, &wire::object_info(&record)))
        }
        Route::VerifyObject(key) => {
            // Read scope: a full GET with verified reads costs the server the same re-hash.
            check(Scope::Read, Some(&key))?;
            verify(app, &key).await
        }
    }
}

/// Re-hashes the stored copy of `key` through the storage crate's scrub code.
async fn verify(app: &App, key: &ObjectKey) -> Result<Response<Body>> {
    let (record, verified) = app.store.verify(key).await?;
    if verified == storage::Verified::Quarantined {
        app.metrics.verification_failures.inc();
    }
    tracing::info!(key = %record.key, ?verified, "verified on request");
    Ok(json(
        StatusCode::OK,
        &wire::Verification {
            key: record.key.to_string(),
            blake3: record.blake3.to_hex(),
            size: record.size,
            intact: verified != storage::Verified::Quarantined,
            tree_rebuilt: verified == storage::Verified::TreeRebuilt,
        },
    ))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(body))
        .expect("static response parts are valid")
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("wire types serialise");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

// ---- PUT ----------------------------------------------------------------------------------

async fn put(app: &App, key: &ObjectKey, request: Request<Incoming>) -> Result<Response<Body>> {
    let headers = request.headers();
    let limit = app.config.limits.max_body_bytes;
    let declared = content_length(headers)?;
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let expected = Expected {
        size: declared,
        blake3: header_text(headers, wire::BLAKE3_HEADER)
            .map(parse_blake3)
            .transpose()?,
        md5: requested_md5(headers)?,
    };
    let trailing_blake3 = announces_blake3_trailer(headers).then(TrailingDigest::new);
    if trailing_blake3.is_some() && expected.blake3.is_some() {
        return Err(ApiError::BadRequest(format!(
            "send {} as a header or as a trailer, not both",
            wire::BLAKE3_HEADER
        )));
    }
    let content_type = header_text(headers, header::CONTENT_TYPE.as_str())
        // Generic types say nothing (curl sends the form type for any `--data-binary`): detect.
        .filter(|value| !value.is_empty() && !GENERIC_CONTENT_TYPES.contains(value))
        .map(str::to_owned);
    let options = PutOptions {
        expected,
        content_type,
        trailing_blake3: trailing_blake3.clone(),
        ..PutOptions::default()
    };
    let idle = app.config.limits.body_idle_timeout;
    let body = body_stream(request.into_body(), idle, limit, trailing_blake3);
    let received = body.received.clone();
    let stored = app.store.put(key, body.stream, options).await;
    app.metrics
        .bytes_in
        .inc_by(received.load(std::sync::atomic::Ordering::Relaxed));
    let stored = stored.map_err(|error| match error {
        StorageError::Body(source) if source.to_string() == BODY_TOO_LARGE => {
            ApiError::PayloadTooLarge { limit }
        }
        // A trailer that is missing or malformed: the client's fault, told why.
        StorageError::Body(source) if source.kind() == io::ErrorKind::InvalidData => {
            ApiError::BadRequest(source.to_string())
        }
        other => ApiError::Storage(other),
    })?;
    if stored.created {
        tracing::info!(key = %stored.record.key, object_id = stored.record.object_id.0, size = stored.record.size, "stored");
    }
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json(status, &wire::object_info(&stored.record));
    object_headers(response.headers_mut(), &stored.record);
    Ok(response)
}

fn parse_blake3(hex: &str) -> Result<Blake3Digest> {
    Blake3Digest::from_hex(hex)
        .map_err(|_| ApiError::BadRequest(format!("{} must be 64 hex digits", wire::BLAKE3_HEADER)))
}

/// Whether the client announced (`Trailer: x-blake3`) that the BLAKE3 follows the body, as a
/// chunked upload can send it: hashed while sending, the file is read once.
fn announces_blake3_trailer(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case(wire::BLAKE3_HEADER))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    header_text(headers, header::CONTENT_LENGTH.as_str())
        .map(|value| {
            value
                .parse::<u64>()
                .map_err(|_| ApiError::BadRequest("invalid Content-Length".into()))
        })
        .transpose()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

/// The MD5 the client asks us to check: `Content-MD5` (base64) or an `md5` member of
/// `Content-Digest`/`Repr-Digest` (RFC 9530; other algorithms are ignored, as it allows).
fn requested_md5(headers: &HeaderMap) -> Result<Option<Md5Digest>> {
    let decode = |base64: &str| -> Result<Md5Digest> {
        let bytes = BASE64
            .decode(base64)
            .map_err(|_| ApiError::BadRequest("MD5 digest is not valid base64".into()))?;
        let bytes: [u8; 16] = bytes
            .try_into()
            .map_err(|_| ApiError::BadRequest("MD5 digest must be 16 bytes".into()))?;
        Ok(Md5Digest(bytes))
    };
    if let Some(value) = header_text(headers, "content-md5") {
        return decode(value).map(Some);
    }
    for name in ["content-digest", "repr-digest"] {
        let Some(value) = header_text(headers, name) else {
            continue;
        };
        for member in value.split(',') {
            if let Some((algorithm, digest)) = member.trim().split_once('=')
                && algorithm.trim().eq_ignore_ascii_case("md5")
            {
                let digest = digest.trim().trim_matches(':');
                return decode(digest).map(Some);
            }
        }
    }
    Ok(None)
}

/// Content types that say nothing about a file's content; the store detects it instead.
const GENERIC_CONTENT_TYPES: [&str; 2] = [
    "application/octet-stream",
    "application/x-www-form-urlencoded",
];

const BODY_TOO_LARGE: &str = "request body is larger than the limit";

struct RequestBody<S> {
    stream: S,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The request body as a stream of data pieces: each piece must arrive within `idle` of the
/// previous one, and the total must stay within `limit` (bodies without `Content-Length` too).
/// With `trailing_blake3`, the BLAKE3 trailer is recorded there before the stream ends; a
/// malformed one ends the stream with an `InvalidData` error, so nothing is stored.
fn body_stream(
    body: Incoming,
    idle: Duration,
    limit: u64,
    trailing_blake3: Option<TrailingDigest>,
) -> RequestBody<impl futures_util::Stream<Item = io::Result<Bytes>> + Send> {
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let frames = BodyStream::new(body);
    let stream = stream::unfold((frames, 0u64), move |(mut frames, total)| {
        let counter = counter.clone();
        let trailing_blake3 = trailing_blake3.clone();
        async move {
            loop {
                let next = match tokio::time::timeout(idle, frames.next()).await {
                    Err(_) => {
                        let error = io::Error::new(io::ErrorKind::TimedOut, "request body stalled");
                        return Some((Err(error), (frames, total)));
                    }
                    Ok(next) => next?,
                };
                let frame = match next {
                    Ok(frame) => frame,
                    Err(error) => return Some((Err(io::Error::other(error)), (frames, total))),
                };
                let data = match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => {
                        if let (Ok(trailers), Some(slot)) =
                            (frame.into_trailers(), &trailing_blake3)
                            && let Err(error) = record_blake3_trailer(&trailers, slot)
                        {
                            return Some((Err(error), (frames, total)));
                        }
                        continue;
                    }
                };
                let total = total + data.len() as u64;
                counter.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if total > limit {
                    return Some((Err(io::Error::other(BODY_TOO_LARGE)), (frames, total)));
                }
                return Some((Ok(data), (frames, total)));
            }
        }
    });
    RequestBody { stream, received }
}

/// Records the `x-blake3` trailer in `slot`: an absent one is left for the store to refuse,
/// a malformed one is an error.
fn record_blake3_trailer(trailers: &HeaderMap, slot: &TrailingDigest) -> io::Result<()> {
    let Some(value) = trailers.get(wire::BLAKE3_HEADER) else {
        return Ok(());
    };
    let digest = value
        .to_str()
        .ok()
        .and_then(|hex| Blake3Digest::from_hex(hex.trim()).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the {} trailer must be 64 hex digits", wire::BLAKE3_HEADER),
            )
        })?;
    slot.set(digest);
    Ok(())
}

// ---- GET and HEAD -------------------------------------------------------------------------

/// Headers every object response carries.
pub(super) fn object_headers(headers: &mut HeaderMap, record: &ObjectRecord) {
    // Names as constants: parsing a name from a string on every response shows in profiles.
    const BLAKE3: HeaderName = HeaderName::from_static(wire::BLAKE3_HEADER);
    const OBJECT_ID: HeaderName = HeaderName::from_static(wire::OBJECT_ID_HEADER);
    const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");
    const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");
    let mut set = |name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, wire::etag(record));
    set(BLAKE3, record.blake3.to_hex());
    set(OBJECT_ID, record.object_id.0.to_string());
    set(
        header::LAST_MODIFIED,
        httpdate::fmt_http_date(record.created),
    );
    if let Some(md5) = record.md5 {
        let base64 = BASE64.encode(md5.0);
        set(REPR_DIGEST, format!("md5=:{base64}:"));
        set(CONTENT_MD5, base64);
    }
}

async fn get(
    app: &App,
    key: &ObjectKey,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Body>> {
    // A single explicit range (the common pipeline read) is read in the same blocking hop
    // as the open.
    let range_header = header_text(headers, header::RANGE.as_str());
    let object = match range::explicit_single(range_header).filter(|_| method != Method::HEAD) {
        Some(likely) => {
            app.store
                .get_prefetching(key, likely, app.config.verify_reads)
                .await?
        }
        None => app.store.get(key).await?,
    };
    let record = object.record().clone();
    let mut response = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, record.content_type.as_str())
        .body(full(Bytes::new()))
        .expect("static response parts are valid");
    object_headers(response.headers_mut(), &record);
    if record.content_type == "image/fits" {
        fits::add_summary(app, &record, response.headers_mut()).await?;
    }
    match preconditions(headers, &record) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response.headers_mut().remove(header::CONTENT_TYPE);
            return Ok(response);
        }
        Precondition::Failed => return Err(ApiError::PreconditionFailed),
    }
    let range_header =
        header_text(headers, header::RANGE.as_str()).filter(|_| if_range_holds(headers, &record));
    let size = record.size;
    let decision = range::decide(range_header, size);
    let head = method == Method::HEAD;
    let (status, length, body) = match decision {
        RangeDecision::Full => (
            StatusCode::OK,
            size,
            stream_body(app, &object, std::slice::from_ref(&(0..size)), head)?,
        ),
        RangeDecision::Unsatisfiable => {
            return Err(StorageError::RangeNotSatisfiable {
                start: size,
                end: size,
                size,
            }
            .into());
        }
        RangeDecision::Partial(ranges) if ranges.len() == 1 => {
            let range = ranges[0].clone();
            let value = format!("bytes {}-{}/{size}", range.start, range.end - 1);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).expect("digits are a valid header"),
            );
            app.metrics.ranges_served.inc();
            let body = stream_body(app, &object, std::slice::from_ref(&range), head)?;
            (StatusCode::PARTIAL_CONTENT, range.end - range.start, body)
        }
        RangeDecision::Partial(ranges) => {
            app.metrics.ranges_served.inc_by(ranges.len() as u64);
            let (content_type, length, body) = multipart(app, &object, &ranges, head)?;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            (StatusCode::PARTIAL_CONTENT, length, body)
        }
    };
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    *response.body_mut() = body;
    if !head {
        app.metrics.bytes_out.inc_by(length);
    }
    Ok(response)
}

enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// RFC 9110 §13.2.2: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, in
/// that order (our entity tags are strong: they are the content address).
fn preconditions(headers: &HeaderMap, record: &ObjectRecord) -> Precondition {
    let etag = wire::etag(record);
    let matches = |list: &str| {
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag == etag)
    };
    // Seconds are the resolution of HTTP dates.
    let modified = record
        .created
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let date = |name| {
        header_text(headers, name)
            .and_then(|value| httpdate::parse_http_date(value).ok())
            .map(|time| {
                time.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
            })
    };
    if let Some(list) = header_text(headers, "if-match") {
        if !matches(list) {
            return Precondition::Failed;
        }
    } else if date("if-unmodified-since").is_some_and(|since| modified > since) {
        return Precondition::Failed;
    }
    if let Some(list) = header_text(headers, "if-none-match") {
        if matches(list) {
            return Precondition::NotModified;
        }
    } else if date("if-modified-since").is_some_and(|since| modified <= since) {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// `If-Range`: the range applies only if the object is still the one the client has.
fn if_range_holds(headers: &HeaderMap, record: &ObjectRecord) -> bool {
    let Some(value) = header_text(headers, "if-range") else {
        return true;
    };
    if value.starts_with('"') {
        return value == wire::etag(record);
    }
    // A date validator must match exactly (RFC 9110 §13.1.5).
    httpdate::parse_http_date(value)
        .is_ok_and(|date| httpdate::fmt_http_date(date) == httpdate::fmt_http_date(record.created))
}

/// The bytes of `ranges`, one after the other, as a response body; empty for HEAD.
fn stream_body(
    app: &App,
    object: &StoredObject,
    ranges: &[Range<u64>],
    head: bool,
) -> Result<Body> {
    if head {
        return Ok(full(Bytes::new()));
    }
    let streams = object.read_ranges(ranges, app.config.verify_reads)?;
    Ok(body_of(app, stream::iter(streams).flatten().boxed()))
}

pub(super) fn body_of(app: &App, stream: ByteStream) -> Body {
    let failures = app.metrics.verification_failures.clone();
    let stream = stream.map_err(move |error| {
        if matches!(error, StorageError::Corrupt { .. }) {
            failures.inc();
        }
        // Logged here: the response is already under way, so hyper only aborts it.
        tracing::error!("response aborted: {error:#}");
        Box::new(error) as Box<dyn std::error::Error + Send + Sync>
    });
    BodyExt::boxed_unsync(StreamBody::new(stream.map_ok(Frame::data)))
}

/// A `multipart/byteranges` body (RFC 9110 §14.6) and its exact length.
fn multipart(
    app: &App,
    object: &StoredObject,
    ranges: &[Range<u64>],
    head: bool,
) -> Result<(HeaderValue, u64, Body)> {
    let record = object.record();
    // The content address cannot occur in the body by accident often enough to matter, and it
    // is different for every object.
    let boundary = format!("dataserver-{}", &record.blake3.to_hex()[..32]);
    let size = record.size;
    let mut pieces: Vec<ByteStream> = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut length = 0u64;
    for range in ranges {
        let part_header = format!(
            "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
            record.content_type,
            range.start,
            range.end - 1
        );
        length += part_header.len() as u64 + (range.end - range.start);
        pieces.push(stream::once(async move { Ok(Bytes::from(part_header)) }).boxed());
        if !head {
            pieces.push(object.read(range.clone(), app.config.verify_reads)?);
        }
    }
    let closing = format!("\r\n--{boundary}--\r\n");
    length += closing.len() as u64;
    pieces.push(stream::once(async move { Ok(Bytes::from(closing)) }).boxed());
    let content_type = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
        .expect("hex boundary is a valid header");
    let body = if head {
        full(Bytes::new())
    } else {
        body_of(app, stream::iter(pieces).flatten().boxed())
    };
    Ok((content_type, length, body))
}

// ---- listing, status, metrics -------------------------------------------------------------

/// Streams `{"objects":[…],"next_after":…}` page by page from the catalogue, so a prefix with
/// millions of keys is never held in memory.
async fn list(app: &App, query: &str) -> Result<Response<Body>> {
    let mut prefix = String::new();
    let mut after = None;
    let mut limit = LIST_DEFAULT_LIMIT;
    let mut filter = None;
    for (name, value) in form_pairs(query) {
        match name.as_str() {
            "prefix" => prefix = value,
            "fits" | "checksum" => {
                let parsed = list_filter(&name, &value)?;
                if filter.replace(parsed).is_some() {
                    return Err(ApiError::BadRequest(
                        "give one of fits= and checksum=, once".into(),
                    ));
                }
            }
            "after" => {
                after =
                    Some(ObjectKey::parse(&value).map_err(|error| {
                        ApiError::BadRequest(format!("invalid after: {error}"))
                    })?);
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=LIST_MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "limit must be between 1 and {LIST_MAX_LIMIT}"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    // The first page is read before answering, so errors still get a proper status.
    let first = list_page(
        &app.store,
        &prefix,
        after.as_ref(),
        LIST_PAGE.min(limit),
        filter,
    )
    .await?;
    let store = app.store.clone();
    struct Cursor {
        store: storage::Store,
        prefix: String,
        filter: Option<FitsFilter>,
        page: Vec<ObjectRecord>,
        sent: usize,
        limit: usize,
        last: Option<ObjectKey>,
        finished: bool,
    }
    let cursor = Cursor {
        store,
        prefix,
        filter,
        page: first,
        sent: 0,
        limit,
        last: None,
        finished: false,
    };
    let pieces = stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        if cursor.finished {
            return None;
        }
        let mut chunk = Vec::new();
        if cursor.sent == 0 && cursor.last.is_none() {
            chunk.extend_from_slice(b"{\"objects\":[");
        }
        let full_page = cursor.page.len();
        for record in std::mem::take(&mut cursor.page) {
            if cursor.sent > 0 {
                chunk.push(b',');
            }
            chunk.extend(
                serde_json::to_vec(&wire::object_info(&record)).expect("wire types serialise"),
            );
            cursor.sent += 1;
            cursor.last = Some(record.key);
        }
        let want = (cursor.limit - cursor.sent).min(LIST_PAGE);
        let more = full_page > 0 && want > 0;
        if more {
            let page = list_page(
                &cursor.store,
                &cursor.prefix,
                cursor.last.as_ref(),
                want,
                cursor.filter,
            );
            match page.await {
                Ok(page) if !page.is_empty() => {
                    cursor.page = page;
                    return Some((Ok(Bytes::from(chunk)), Some(cursor)));
                }
                Ok(_) => {}
                Err(error) => return Some((Err(error), None)),
            }
        }
        // More may follow exactly when the limit, not the prefix, ended the listing.
        let next = if cursor.sent == cursor.limit {
            cursor.last.as_ref().map(ToString::to_string)
        } else {
            None
        };
        chunk.extend(b"],\"next_after\":");
        chunk.extend(serde_json::to_vec(&next).expect("strings serialise"));
        chunk.extend(b"}\n");
        cursor.finished = true;
        Some((Ok(Bytes::from(chunk)), Some(cursor)))
    });
    let mut response = Response::new(body_of(app, pieces.boxed()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// One page of a listing, filtered on the FITS index when asked.
async fn list_page(
    store: &storage::Store,
    prefix: &str,
    after: Option<&ObjectKey>,
    limit: usize,
    filter: Option<FitsFilter>,
) -> std::result::Result<Vec<ObjectRecord>, StorageError> {
    match filter {
        Some(filter) => store.list_fits(prefix, after, limit, filter).await,
        None => store.list(prefix, after, limit).await,
    }
}

/// `fits=yes|no|invalid` or `checksum=valid|invalid|absent` of a listing.
fn list_filter(name: &str, value: &str) -> Result<FitsFilter> {
    let filter = match (name, value) {
        ("fits", "yes") => FitsFilter::Fits,
        ("fits", "no") => FitsFilter::NotFits,
        ("fits", "invalid") => FitsFilter::InvalidIndex,
        ("checksum", "valid") => FitsFilter::Checksum(Check::Valid),
        ("checksum", "invalid") => FitsFilter::Checksum(Check::Invalid),
        ("checksum", "absent") => FitsFilter::Checksum(Check::Absent),
        ("fits", _) => {
            return Err(ApiError::BadRequest(
                "fits must be yes, no or invalid".into(),
            ));
        }
        _ => {
            return Err(ApiError::BadRequest(
                "checksum must be valid, invalid or absent".into(),
            ));
        }
    };
    Ok(filter)
}

/// `application/x-www-form-urlencoded` pairs of a query string.
pub(super) fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
}

async fn status(app: &App) -> Result<wire::Status> {
    let stats = app.store.stats().await?;
    let data_dir = app.config.data_dir.clone();
    let free_bytes = tokio::task::spawn_blocking(move || {
        rustix::fs::statvfs(&data_dir)
            .map(|stat| stat.f_bavail.saturating_mul(stat.f_frsize))
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    Ok(wire::Status {
        node: app.config.node_name.clone(),
        site: app.config.site_name.clone(),
        site_number: app.config.site_number,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        objects: stats.objects,
        bytes: stats.bytes,
        free_bytes,
        uptime_seconds: app.started.elapsed().as_secs(),
        verify_reads: app.config.verify_reads == storage::Verify::Yes,
    })
}

async fn ready(app: &App) -> Result<Response<Body>> {
    // Ready means: the catalogue answers and the data directory takes a durable write.
    app.store.stats().await?;
    let probe = app
        .config
        .data_dir
        .join(format!(".ready-{}", std::process::id()));
    let written = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let result =
            std::fs::write(&probe, b"ready").and_then(|()| std::fs::File::open(&probe)?.sync_all());
        let _ = std::fs::remove_file(&probe);
        result
    })
    .await
    .map_err(io::Error::other)
    .and_then(|result| result);
    match written {
        Ok(()) => Ok(text(StatusCode::OK, "ready\n")),
        Err(error) => {
            tracing::error!("readiness probe could not write: {error}");
            Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "data directory is not writable\n",
            ))
        }
    }
}

async fn metrics(app: &App) -> Result<Response<Body>> {
    let stats = app.store.stats().await?;
    app.metrics
        .store_objects
        .set(i64::try_from(stats.objects).unwrap_or(i64::MAX));
    app.metrics
        .store_bytes
        .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
    let text = app.metrics.render();
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(full(text))
        .expect("static response parts are valid"))
}

async fn status_page(app: &App) -> Result<Response<Body>> {
    let status = status(app).await?;
    let html = crate::status_page::render(&status);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(full(html))
        .expect("static response parts are valid"))
}
