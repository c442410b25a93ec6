//! TLS for the native listener (rustls): loading the certificate and key once at start-up.
//! The handshake itself runs per connection in `http::server`, bounded by the header timeout.

use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::config::TlsConfig;

/// An acceptor for `config`, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certificates = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("read certificates from {}", config.cert_file.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "{} holds no certificate",
        config.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .with_context(|| format!("read the private key from {}", config.key_file.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .context("use the certificate and key")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
