//! The dataserver daemon: puts the storage core on the network with the native HTTP API
//! (DESIGN.md §4.1). The only crate that knows HTTP, status codes, configuration files and
//! Prometheus.
//!
//! `main` parses flags, loads the configuration, sets up logging, binds and calls `serve`;
//! `serve` takes an already-bound listener and a shutdown future, so tests can run it too.

pub mod auth;
pub mod config;
pub mod http;
pub mod log;
pub mod metrics;
mod status_page;
mod tls;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

/// Opens the store, binds the listener and serves until SIGTERM or SIGINT.
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
    let listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("listen on {}", config.http_listen))?;
    let shutdown = shutdown_signal()?;
    serve(config, listener, shutdown).await
}

/// Serves the native API on `listener` until `shutdown`, then drains and closes the store.
pub async fn serve(
    mut config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut store_config = StoreConfig::new(&config.data_dir);
    store_config.site = config.site_number;
    store_config.trash_retention = config.trash_retention;
    let store = Store::open(store_config)
        .await
        .with_context(|| format!("open the store in {}", config.data_dir.display()))?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()
        .context("set up TLS")?;
    let address = listener.local_addr().context("read the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(path) = &config.addr_file {
        let text = format!("{{\"http\": \"{address}\", \"scheme\": \"{scheme}\"}}\n");
        write_addr_file(path, &text).context("write the address file")?;
    }
    tracing::info!(%address, scheme, data_dir = %config.data_dir.display(), site = config.site_name, "listening");
    let access = Access::new(std::mem::take(&mut config.tokens), config.public_reads);
    let purge = tokio::spawn(purge_trash_forever(store.clone()));
    let app = http::App::new(store, config, access, Metrics::new());
    http::server::serve(app, listener, tls, shutdown).await;
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
