//! The native HTTP API: `App` turns a request into a `Route` (no I/O), checks access, runs the
//! handler and writes the access log line and metrics.

pub mod error;
mod fits;
mod handlers;
pub mod linger;
mod members;
pub mod range;
pub mod route;
pub mod server;
pub mod threads;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use storage::Store;
use tokio::sync::Semaphore;

use crate::auth::Access;
use crate::config::Config;
use crate::metrics::Metrics;
use error::ApiError;
use route::{NoRoute, Route};

/// Response bodies: a whole buffer or a stream of the store.
pub type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A body from a buffer.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Everything the handlers share.
pub struct App {
    /// The store.
    pub store: Store,
    /// Configuration.
    pub config: Config,
    /// Who may do what (shared with the S3 API).
    pub access: Arc<Access>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Requests being served, bounded by `limits.max_requests`.
    pub in_flight: Semaphore,
    /// Start time, for uptime.
    pub started: Instant,
    next_request_id: AtomicU64,
}

impl App {
    /// The shared state of a node.
    pub fn new(store: Store, config: Config, access: Access, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            in_flight: Semaphore::new(config.limits.max_requests),
            store,
            config,
            access: Arc::new(access),
            metrics,
            started: Instant::now(),
            next_request_id: AtomicU64::new(1),
        })
    }

    /// A new request ID, unique in this process across both APIs.
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Serves one request: route, admission, handler, error mapping, access log.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let request_id = self.next_request_id();
        let method = request.method().clone();
        let announces_close = carries_body(&request) && request.version() <= http::Version::HTTP_11;
        let route = Route::decide(&method, request.uri().path());
        let route_name = route.as_ref().map_or("none", Route::name);
        let result = match route {
            Ok(route) => match self.in_flight.try_acquire() {
                Ok(_permit) => {
                    self.metrics.in_flight.inc();
                    let result = handlers::handle(&self, route, request).await;
                    self.metrics.in_flight.dec();
                    result
                }
                Err(_) => Err(ApiError::Overloaded),
            },
            Err(NoRoute::UnknownApi) => Err(ApiError::UnknownApi),
            Err(NoRoute::MethodNotAllowed { allow }) => Err(ApiError::MethodNotAllowed { allow }),
            Err(NoRoute::BadKey(error)) => {
                Err(ApiError::BadRequest(format!("invalid key: {error}")))
            }
        };
        let mut response = result.unwrap_or_else(|error| {
            let mut response = self.error_response(&error, request_id, route_name);
            if announces_close {
                // The body may be unread; hyper then closes the connection after this response,
                // so say so, or a keep-alive client sends its next request into a closed socket.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        });
        if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
            response
                .headers_mut()
                .insert(wire::REQUEST_ID_HEADER, value);
        }
        let status = response.status();
        let bytes_out = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| http_body::Body::size_hint(response.body()).exact())
            .unwrap_or(0);
        self.metrics
            .observe("native", route_name, status, started.elapsed());
        crate::log::access(&crate::log::AccessLine {
            request_id,
            method: method.as_str(),
            route: route_name,
            status: status.as_u16(),
            bytes_out,
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
        response
    }

    fn error_response(&self, error: &ApiError, request_id: u64, route: &str) -> Response<Body> {
        let status = error.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(request_id, route, "{}", chain(error));
        } else {
            tracing::debug!(request_id, route, "refused: {error}");
        }
        let message = error.public_message();
        let body = serde_json::to_vec(&wire::ErrorBody {
            error: message,
            request_id,
        })
        .unwrap_or_default();
        let mut response = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(body))
            .expect("static response parts are valid");
        let headers = response.headers_mut();
        match error {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Refused(crate::auth::Refusal::Unauthenticated) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Storage(storage::StorageError::RangeNotSatisfiable { size, .. }) => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// Whether a request has a body (which a refusal may leave unread).
pub(crate) fn carries_body<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

/// An error and all its sources, joined as one sentence.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
