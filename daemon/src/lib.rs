//! The dataserver daemon: puts the storage core on the network with the native HTTP API
//! (DESIGN.md §4.1) and the S3 API (§4.2). The only crate that knows HTTP, S3, status codes,
//! configuration files and Prometheus.
//!
//! `main` parses flags, loads the configuration, sets up logging, binds and calls `serve`;
//! `serve` takes already-bound listeners and a shutdown future, so tests can run it too.

pub mod auth;
pub mod config;
pub mod http;
pub mod log;
pub mod metrics;
pub mod s3;
mod status_page;
mod tls;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use storage::{Store, StoreConfig};
use tokio::net::TcpListener;

use crate::auth::{Access, Scope, Token};
use crate::config::{Config, Flags};
use crate::metrics::Metrics;

/// How often unreferenced blobs past their retention are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// The `dataserver` command.
pub fn main() -> ExitCode {
    let flags = Flags::parse();
    // Log lines go to stderr from a writer thread (see `log`): a request never waits on it.
    let (log_writer, _log_guard) = match log::writer(std::io::stderr()) {
        Ok(started) => started,
        Err(error) => {
            eprintln!("dataserver: start the log writer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !colours {
        log::format_access_lines(log_writer.clone());
    }
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(log_writer)
        .with_ansi(colours)
        .init();
    let config = match Config::load(flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("dataserver: invalid configuration: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dataserver: start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("dataserver: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The bound listeners: the native API's, and the S3 API's when it is on.
pub struct Listeners {
    /// Native HTTP API.
    pub http: TcpListener,
    /// S3 API.
    pub s3: Option<TcpListener>,
}

/// `RUST_LOG`, or `info`. s3s logs every refused request (a bad signature, a missing key) at
/// ERROR; the S3 frontend logs requests itself, as the native API does (4xx at debug, 5xx at
/// error), so s3s stays silent unless `RUST_LOG` names it.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let text = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let text = if text.contains("s3s") {
        text
    } else {
        format!("{text},s3s=off")
    };
    tracing_subscriber::EnvFilter::try_new(&text)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s=off"))
}

/// Opens the store, binds the listeners and serves until SIGTERM or SIGINT.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    if config.tokens.is_empty() {
        let secret =
            auth::first_start_admin_token(&config.data_dir).context("create the admin token")?;
        tracing::info!(
            "no tokens configured: the admin token is in {}",
            config.data_dir.join("admin-token").display()
        );
        config
            .tokens
            .push(Token::new("admin".into(), secret, &[Scope::Admin], None));
    }
    if config.s3_listen.is_some() && config.s3_keys.is_empty() {
        let key = auth::first_start_s3_key(&config.data_dir).context("create the S3 key")?;
        tracing::info!(
            access_key_id = key.access_key_id,
            "no S3 keys configured: the admin key pair is in {}",
            config.data_dir.join("s3-credentials").display()
        );
        config.s3_keys.push(key);
    }
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("listen on {}", config.http_listen))?;
    let s3 = match config.s3_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("listen on {address} (S3)"))?,
        ),
        None => None,
    };
    let shutdown = shutdown_signal()?;
    serve(config, Listeners { http, s3 }, shutdown).await
}

/// How many blobs the store may keep open: raises the soft limit on open files to the hard
/// one (as nginx's `worker_rlimit_nofile` and Go's runtime do), then keeps room for every
/// connection of both listeners and a margin for the catalogue, logs and uploads; two file
/// descriptors per blob, at most 4096 blobs, at least 16.
fn open_blobs(max_connections: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("could not raise the open-file limit: {error}");
        }
    }
    let open_files = getrlimit(Resource::Nofile)
        .current
        .map_or(usize::MAX, |current| {
            usize::try_from(current).unwrap_or(usize::MAX)
        });
    let spare = open_files.saturating_sub(2 * max_connections + 256);
    (spare / 2).clamp(16, 4096)
}

/// Serves the native API (and the S3 API, when it has a listener) until `shutdown`, then
/// drains and closes the store.
pub async fn serve(
    mut config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut store_config = StoreConfig::new(&config.data_dir);
    store_config.site = config.site_number;
    store_config.trash_retention = config.trash_retention;
    store_config.open_blobs = open_blobs(config.limits.max_connections);
    let store = Store::open(store_config)
        .await
        .with_context(|| format!("open the store in {}", config.data_dir.display()))?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()
        .context("set up TLS")?;
    let address = listeners
        .http
        .local_addr()
        .context("read the bound address")?;
    let s3_address = listeners
        .s3
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("read the bound S3 address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let access = Access::new(std::mem::take(&mut config.tokens), config.public_reads);
    let s3_keys = std::mem::take(&mut config.s3_keys);
    let upload_expiry = config.s3_upload_expiry;
    let limits = config.limits;
    let data_dir = config.data_dir.clone();
    let site = config.site_name.clone();
    let app = http::App::new(store.clone(), config, access, Metrics::new());
    let s3 = match listeners.s3 {
        Some(listener) => Some((
            s3::S3Frontend::new(app.clone(), s3_keys).context("open the S3 staging area")?,
            listener,
        )),
        None => None,
    };
    // Written once every listener is bound, so a reader finds all addresses at once.
    if let Some(path) = &app.config.addr_file {
        let s3_field = s3_address
            .map(|address| format!(", \"s3\": \"{address}\""))
            .unwrap_or_default();
        let text = format!("{{\"http\": \"{address}\", \"scheme\": \"{scheme}\"{s3_field}}}\n");
        write_addr_file(path, &text).context("write the address file")?;
    }
    tracing::info!(%address, s3 = ?s3_address, scheme, data_dir = %data_dir.display(), site, "listening");
    let purge = tokio::spawn(purge_trash_forever(store));
    let threads = Arc::new(
        http::threads::ConnectionThreads::per_core(limits.shutdown_grace)
            .context("start the connection threads")?,
    );
    // One shutdown signal for both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let native = http::server::serve(
        app,
        limits,
        threads.clone(),
        listeners.http,
        tls.clone(),
        until_stopped(stopped.clone()),
    );
    let s3_api = async {
        if let Some((frontend, listener)) = s3 {
            let expiry = tokio::spawn(frontend.clone().expire_uploads_forever(upload_expiry));
            http::server::serve(
                frontend,
                limits,
                threads.clone(),
                listener,
                tls.clone(),
                until_stopped(stopped),
            )
            .await;
            expiry.abort();
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(native, s3_api, signal);
    if let Ok(threads) = Arc::try_unwrap(threads) {
        threads.stop().await;
    }
    purge.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn purge_trash_forever(store: Store) {
    loop {
        tokio::time::sleep(PURGE_INTERVAL).await;
        match store.purge_trash().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged blobs past their trash retention"),
            Err(error) => tracing::error!("purging the trash failed: {error:#}"),
        }
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader never sees a
/// partial line.
fn write_addr_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("rename to {}", path.display()))
}

/// Resolves on SIGTERM or SIGINT. The handlers are registered at once, before the daemon
/// announces its address, so a signal sent as soon as it listens is never missed.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}
