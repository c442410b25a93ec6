//! The S3 API (DESIGN.md §4.2) on its own listener, over the same store as the native API:
//! bucket `B`, object `K` is the key `B/K`.
//!
//! s3s parses requests, checks SigV4 signatures (header and presigned forms, `aws-chunked`
//! bodies with their trailers) and writes XML; `api::Dataserver` implements the operations.
//! This module puts them on the network the way the native listener is: the same connection,
//! request, header, body-size and body-stall limits (`http::server`), request IDs (also in
//! every error document), the access log and the metrics with `api="s3"`.

mod api;
pub mod buckets;
pub mod checksums;
pub mod uploads;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Error, S3Result, s3_error};

use crate::auth::S3Key;
use crate::http::server::Handler;
use crate::http::{App, Body, carries_body, full};

pub use api::{Dataserver, s3_error};

/// How often expired multipart uploads are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// The S3 listener's handler.
pub struct S3Frontend {
    app: Arc<App>,
    service: S3Service,
    uploads: uploads::Uploads,
}

impl S3Frontend {
    /// The S3 API over `app`'s store, with access keys `keys`.
    pub fn new(app: Arc<App>, keys: Vec<S3Key>) -> std::io::Result<Arc<Self>> {
        let keys = Arc::new(keys);
        let access = app.access.clone();
        // Opened once, at start: opening clears interrupted part files, which must never
        // happen while parts are being written.
        let uploads = uploads::Uploads::open(&app.config.data_dir)?;
        let dataserver = Dataserver::new(
            app.store.clone(),
            &app.config,
            access,
            keys.clone(),
            uploads.clone(),
        )?;
        let mut builder = S3ServiceBuilder::new(dataserver);
        builder.set_auth(KeyAuth { keys });
        builder.set_access(NameTheOperation);
        Ok(Arc::new(Self {
            service: builder.build(),
            app,
            uploads,
        }))
    }

    /// Removes multipart uploads older than `expiry`, now and every hour.
    pub async fn expire_uploads_forever(self: Arc<Self>, expiry: Duration) {
        loop {
            let uploads = self.uploads.clone();
            let expired = tokio::task::spawn_blocking(move || uploads.expire(expiry)).await;
            match expired {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => tracing::info!(removed, "removed expired multipart uploads"),
                Ok(Err(error)) => tracing::error!("expiring multipart uploads failed: {error}"),
                Err(_) => return,
            }
            tokio::time::sleep(EXPIRY_INTERVAL).await;
        }
    }

    async fn serve(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let request_id = self.app.next_request_id();
        let method = request.method().clone();
        let announces_close = carries_body(&request) && request.version() <= http::Version::HTTP_11;
        let operation = Operation::default();
        let limits = self.app.config.limits;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        let mut response = if declared.is_some_and(|length| length > limits.max_body_bytes) {
            error_response(s3_error!(
                EntityTooLarge,
                "request bodies are limited to {} bytes",
                limits.max_body_bytes
            ))
        } else {
            match self.app.in_flight.try_acquire() {
                Err(_) => overloaded(),
                Ok(_permit) => {
                    self.app.metrics.in_flight.inc();
                    let received = Arc::new(AtomicU64::new(0));
                    let mut request = request.map(|body| {
                        s3s::Body::http_body(LimitedBody::new(
                            body,
                            limits.max_body_bytes,
                            limits.body_idle_timeout,
                            received.clone(),
                        ))
                    });
                    request.extensions_mut().insert(operation.clone());
                    let response = match self.service.call(request).await {
                        Ok(response) => {
                            response.map(|body| body.map_err(Into::into).boxed_unsync())
                        }
                        Err(error) => {
                            tracing::error!(request_id, "S3 service failed: {error:?}");
                            error_response(s3_error!(InternalError, "internal error"))
                        }
                    };
                    self.app.metrics.in_flight.dec();
                    // Bodies are read by the operation, before its response.
                    self.app
                        .metrics
                        .bytes_in
                        .inc_by(received.load(Ordering::Relaxed));
                    response
                }
            }
        };
        let status = response.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(
                request_id,
                route = operation.name(),
                status = status.as_u16(),
                "S3 request failed"
            );
        }
        if status.is_client_error() || status.is_server_error() {
            response = with_request_id_in_document(response, request_id).await;
            if announces_close {
                // The body may be unread; hyper then closes the connection after this response.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
            response.headers_mut().insert("x-amz-request-id", value);
        }
        let route = operation.name();
        let bytes_out = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        if status.is_success() {
            self.app.metrics.bytes_out.inc_by(bytes_out);
        }
        self.app
            .metrics
            .observe("s3", &route, status, started.elapsed());
        // The access-log target, so the line is batched like the native API's.
        tracing::info!(
            target: crate::log::ACCESS_TARGET,
            request_id,
            %method,
            api = "s3",
            route,
            status = status.as_u16(),
            bytes_out,
            duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
        response
    }
}

impl Handler for S3Frontend {
    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.serve(request)
    }

    fn overloaded(&self) -> Response<Body> {
        overloaded()
    }
}

/// 503 with `Retry-After`, as an S3 `SlowDown` document.
fn overloaded() -> Response<Body> {
    let mut response = error_response(s3_error!(SlowDown, "too many requests, retry later"));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An S3 error document for errors found before s3s sees the request.
fn error_response(error: S3Error) -> Response<Body> {
    let status = error
        .status_code()
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match error.to_http_response() {
        Ok(response) => response.map(|body| body.map_err(Into::into).boxed_unsync()),
        Err(_) => Response::builder()
            .status(status)
            .body(full(Bytes::new()))
            .expect("static response parts are valid"),
    }
}

/// Adds `<RequestId>` to an error document that lacks it (s3s writes the documents of the
/// errors it finds itself, such as bad signatures, without one). Error documents are small and
/// already in memory; a streamed body is left as it is.
async fn with_request_id_in_document(response: Response<Body>, request_id: u64) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if body.size_hint().exact().is_none_or(|size| size > 64 * 1024) {
        return Response::from_parts(parts, body);
    }
    let Ok(collected) = body.collect().await else {
        return Response::from_parts(parts, full(Bytes::new()));
    };
    let bytes = collected.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let bytes = match text.rfind("</Error>") {
        Some(at) if !text.contains("<RequestId>") => {
            let mut with_id = text[..at].to_owned();
            with_id.push_str(&format!("<RequestId>{request_id}</RequestId>"));
            with_id.push_str(&text[at..]);
            Bytes::from(with_id)
        }
        _ => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, full(bytes))
}

/// Looks up secrets for s3s's SigV4 check.
struct KeyAuth {
    keys: Arc<Vec<S3Key>>,
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.keys
            .iter()
            .find(|key| key.access_key_id == access_key)
            .map(|key| SecretKey::from(key.secret().to_owned()))
            .ok_or_else(|| s3_error!(InvalidAccessKeyId, "unknown access key"))
    }
}

/// The name of the S3 operation, for the access log and metrics; filled in by s3s's access
/// hook, which runs once the operation is known.
#[derive(Debug, Clone, Default)]
struct Operation(Arc<Mutex<Option<String>>>);

impl Operation {
    fn name(&self) -> String {
        self.0
            .lock()
            .expect("operation lock")
            .clone()
            .unwrap_or_else(|| "none".into())
    }
}

/// s3s's access hook: records the operation and lets every request through, signed or not;
/// `Dataserver` decides per operation (anonymous reads only where reads are public).
struct NameTheOperation;

#[async_trait::async_trait]
impl S3Access for NameTheOperation {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let name = cx.s3_op().name().to_owned();
        if let Some(operation) = cx.extensions_mut().get::<Operation>() {
            *operation.0.lock().expect("operation lock") = Some(name);
        }
        Ok(())
    }
}

/// Why a request body was cut off by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// Past the body size limit.
    TooLarge,
    /// No data within the body idle timeout.
    Stalled,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?}")]
struct BodyCut(BodyFailure);

/// The listener's reason behind a body error, if any.
pub fn body_failure(error: &std::io::Error) -> Option<BodyFailure> {
    checksums::cause::<BodyCut>(error).map(|cut| cut.0)
}

/// A request body held to the size limit and the idle timeout.
struct LimitedBody {
    inner: Incoming,
    received: u64,
    /// Also counted here, for the metrics.
    counted: Arc<AtomicU64>,
    limit: u64,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl LimitedBody {
    fn new(inner: Incoming, limit: u64, idle: Duration, counted: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            received: 0,
            counted,
            limit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if this.received > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyCut(BodyFailure::TooLarge)))));
                    }
                }
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyCut(BodyFailure::Stalled))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
