//! Accepting connections: TCP_NODELAY, HTTP/1.1 and HTTP/2 on one port, the connection limit,
//! header size and time limits, and graceful shutdown. Shared by the native and the S3
//! listener: each brings a [`Handler`]. Connections are accepted here and served on the
//! [`ConnectionThreads`] and closed by lingering ([`LingeringClose`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode, header};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use hyper::body::Incoming;

use super::linger::LingeringClose;
use super::threads::ConnectionThreads;
use super::{App, Body, full};
use crate::config::Limits;

/// What a listener serves: one answer per request, and the answer on a connection beyond the
/// limit (in the API's own error format).
pub trait Handler: Send + Sync + 'static {
    /// Serves one request.
    fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send;
    /// The answer on a connection beyond the limit: 503.
    fn overloaded(&self) -> Response<Body>;
}

impl Handler for App {
    fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send {
        App::handle(self, request)
    }

    fn overloaded(&self) -> Response<Body> {
        overloaded_response()
    }
}

/// Serves `listener` with `handler` on `threads` until `shutdown` resolves, then lets
/// in-flight requests finish for up to the configured grace period.
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    limits: Limits,
    threads: Arc<ConnectionThreads>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!("set TCP_NODELAY for {peer}: {error}");
        }
        let permit = connections.clone().try_acquire_owned().ok();
        let overloaded = permit.is_none();
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move {
                Ok::<_, Infallible>(if overloaded {
                    handler.overloaded()
                } else {
                    handler.handle(request).await
                })
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_timeout;
        let serve = move |stream| async move {
            // Below TLS, so that the half-close follows TLS's close_notify.
            let stream = LingeringClose::new(stream);
            let served = match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    // The handshake runs in the connection's task, so a slow or silent client
                    // never holds up the accept loop; it gets the header timeout to finish.
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(connection.into_owned()).await
                        }
                        Ok(Err(error)) => Err(format!("TLS handshake failed: {error}").into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!("connection from {peer} ended: {error}");
            }
            drop(permit);
        };
        if let Err(error) = threads.serve(stream, serve) {
            tracing::warn!("could not hand over the connection from {peer}: {error}");
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, waiting for requests in flight");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period passed with requests still in flight");
    }
}

/// The answer on a connection beyond the limit.
fn overloaded_response() -> Response<Body> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::RETRY_AFTER, "1")
        .header(header::CONNECTION, "close")
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(
            &b"{\"error\":\"too many connections, retry later\"}"[..],
        ))
        .expect("static response parts are valid")
}
