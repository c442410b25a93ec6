//! Configuration: one TOML file (`--config`) plus flags for the common fields, validated once at
//! start-up into typed values that are passed down explicitly. No globals.
//!
//! Every field is optional: with no file and no flags the daemon starts on `127.0.0.1:8080`
//! with `./data`. Secrets (tokens) come from files or environment variables, never from the
//! config file itself, and are never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use storage::Verify;

use crate::auth::{S3Key, Scope, Token};

/// Flags; each names a config field (`--data-dir` ↔ `data_dir`) and wins over the file.
#[derive(Debug, Default, clap::Parser)]
#[command(name = "dataserver", version, about = "The dataserver daemon")]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the native HTTP listener (default 127.0.0.1:8080; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Site name (default "local").
    #[arg(long, value_name = "NAME")]
    pub site_name: Option<String>,
    /// Site number, the top 16 bits of object IDs (default 0).
    #[arg(long, value_name = "N")]
    pub site_number: Option<u16>,
    /// Address of the S3 listener (default: none, no S3 API; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub s3_listen: Option<SocketAddr>,
    /// Write the bound addresses as JSON to FILE once listening (atomically).
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
}

/// The configuration file. Unknown fields are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Data directory. Default: `./data`.
    pub data_dir: Option<PathBuf>,
    /// Address of the native HTTP listener. Default: `127.0.0.1:8080`.
    pub http_listen: Option<SocketAddr>,
    /// Name of this node in status output. Default: the site name.
    pub node_name: Option<String>,
    /// Name of this node's site. Default: `local`.
    pub site_name: Option<String>,
    /// Site number: the top 16 bits of the object IDs this node assigns. Default: 0.
    pub site_number: Option<u16>,
    /// Check every byte range against the BLAKE3 tree before sending it: `always` or `never`.
    /// Default: `always`.
    pub verify_reads: Option<VerifyReads>,
    /// Whether reads (GET, HEAD, listing, status) need no token. Default: true.
    pub public_reads: Option<bool>,
    /// Bearer tokens. Default: none, in which case an admin token is created on first start in
    /// `<data_dir>/admin-token`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Days an unreferenced blob stays in the trash. Default: 7.
    pub trash_retention_days: Option<u64>,
    /// TLS for the native listener. Default: none (plain HTTP).
    pub tls: Option<TlsConfig>,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Address of the S3 listener. Default: none (the S3 API is off).
    pub s3_listen: Option<SocketAddr>,
    /// S3 access keys. Default: none, in which case an admin key pair is created on the first
    /// start with an S3 listener in `<data_dir>/s3-credentials`.
    #[serde(default)]
    pub s3_keys: Vec<S3KeyConfig>,
    /// Days an unfinished S3 multipart upload is kept before its parts are removed. Default: 7.
    pub s3_upload_expiry_days: Option<u64>,
}

/// One S3 access key: an access key ID and its secret, with the same scopes and prefix as a
/// bearer token (a prefix applies to `bucket/key`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3KeyConfig {
    /// The access key ID (public; appears in logs).
    pub access_key_id: String,
    /// File holding the secret access key (first line). One of `secret_file` and
    /// `secret_env` is required.
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the secret access key.
    pub secret_env: Option<String>,
    /// What the key may do: any of `read`, `write`, `admin` (admin implies the others).
    pub scopes: Vec<Scope>,
    /// Only keys (`bucket/key`) starting with this prefix. Default: all keys.
    pub prefix: Option<String>,
}

/// Certificate and key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Whether reads are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyReads {
    /// Every range is checked against the hash tree.
    Always,
    /// Bytes are sent as read from disk.
    Never,
}

/// One bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Name for logs (the secret is never logged).
    pub name: String,
    /// File holding the secret (first line). One of `token_file` and `token_env` is required.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the secret.
    pub token_env: Option<String>,
    /// What the token may do: any of `read`, `write`, `admin` (admin implies the others).
    pub scopes: Vec<Scope>,
    /// Only keys starting with this prefix. Default: all keys.
    pub prefix: Option<String>,
}

/// Resource limits; each bounds what one client can take from the node.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections at once; more are answered 503. Default: 1024.
    pub max_connections: Option<usize>,
    /// Requests being served at once; more are answered 503 with `Retry-After`. Default: 256.
    pub max_requests: Option<usize>,
    /// Bytes of request line and headers (also the largest read from a connection at once,
    /// which is why the default is not smaller). Default: 65536.
    pub max_header_bytes: Option<usize>,
    /// Seconds to receive a request's headers. Default: 10.
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may stall between two pieces. Default: 60.
    pub body_idle_timeout_secs: Option<u64>,
    /// Largest request body in bytes. Default: 1 TiB.
    pub max_body_bytes: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM. Default: 30.
    pub shutdown_grace_secs: Option<u64>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Native HTTP listener.
    pub http_listen: SocketAddr,
    /// Where to write the bound addresses.
    pub addr_file: Option<PathBuf>,
    /// Node name.
    pub node_name: String,
    /// Site name.
    pub site_name: String,
    /// Site number.
    pub site_number: u16,
    /// Read verification.
    pub verify_reads: Verify,
    /// Reads without a token.
    pub public_reads: bool,
    /// Tokens (with secrets).
    pub tokens: Vec<Token>,
    /// Trash retention.
    pub trash_retention: Duration,
    /// TLS, when configured.
    pub tls: Option<TlsConfig>,
    /// Limits.
    pub limits: Limits,
    /// S3 listener, when the S3 API is on.
    pub s3_listen: Option<SocketAddr>,
    /// S3 access keys (with secrets).
    pub s3_keys: Vec<S3Key>,
    /// How long an unfinished multipart upload is kept.
    pub s3_upload_expiry: Duration,
}

/// Validated limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`LimitsConfig::max_connections`].
    pub max_connections: usize,
    /// See [`LimitsConfig::max_requests`].
    pub max_requests: usize,
    /// See [`LimitsConfig::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`LimitsConfig::header_timeout_secs`].
    pub header_timeout: Duration,
    /// See [`LimitsConfig::body_idle_timeout_secs`].
    pub body_idle_timeout: Duration,
    /// See [`LimitsConfig::max_body_bytes`].
    pub max_body_bytes: u64,
    /// See [`LimitsConfig::shutdown_grace_secs`].
    pub shutdown_grace: Duration,
}

impl Config {
    /// Reads the file named by `--config` (if any) and applies the flags over it.
    pub fn load(flags: Flags) -> anyhow::Result<Self> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read config file {}", path.display()))?;
                toml::from_str::<ConfigFile>(&text)
                    .with_context(|| format!("parse config file {}", path.display()))?
            }
            None => ConfigFile::default(),
        };
        Self::validate(file, flags)
    }

    /// Merges flags over the file and checks every value.
    pub fn validate(file: ConfigFile, flags: Flags) -> anyhow::Result<Self> {
        let site_name = flags
            .site_name
            .or(file.site_name)
            .unwrap_or_else(|| "local".into());
        if site_name.is_empty() || site_name.chars().any(|c| c.is_control()) {
            bail!("site_name must be a non-empty name without control characters");
        }
        let limits = file.limits;
        let limits = Limits {
            max_connections: limits.max_connections.unwrap_or(1024),
            max_requests: limits.max_requests.unwrap_or(256),
            max_header_bytes: limits.max_header_bytes.unwrap_or(64 * 1024),
            header_timeout: Duration::from_secs(limits.header_timeout_secs.unwrap_or(10)),
            body_idle_timeout: Duration::from_secs(limits.body_idle_timeout_secs.unwrap_or(60)),
            max_body_bytes: limits.max_body_bytes.unwrap_or(1 << 40),
            shutdown_grace: Duration::from_secs(limits.shutdown_grace_secs.unwrap_or(30)),
        };
        if limits.max_connections == 0 || limits.max_requests == 0 {
            bail!("limits.max_connections and limits.max_requests must be at least 1");
        }
        if limits.max_header_bytes < 8192 {
            bail!("limits.max_header_bytes must be at least 8192");
        }
        let tokens = file
            .tokens
            .into_iter()
            .map(load_token)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let s3_keys = file
            .s3_keys
            .into_iter()
            .map(load_s3_key)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let s3_upload_expiry_days = file.s3_upload_expiry_days.unwrap_or(7);
        if s3_upload_expiry_days == 0 {
            bail!("s3_upload_expiry_days must be at least 1");
        }
        Ok(Config {
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "data".into()),
            http_listen: flags
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            addr_file: flags.addr_file,
            node_name: file.node_name.unwrap_or_else(|| site_name.clone()),
            site_name,
            site_number: flags.site_number.or(file.site_number).unwrap_or(0),
            verify_reads: match file.verify_reads.unwrap_or(VerifyReads::Always) {
                VerifyReads::Always => Verify::Yes,
                VerifyReads::Never => Verify::No,
            },
            public_reads: file.public_reads.unwrap_or(true),
            tokens,
            trash_retention: Duration::from_secs(
                24 * 3600 * file.trash_retention_days.unwrap_or(7),
            ),
            tls: file.tls,
            limits,
            s3_listen: flags.s3_listen.or(file.s3_listen),
            s3_keys,
            s3_upload_expiry: Duration::from_secs(24 * 3600 * s3_upload_expiry_days),
        })
    }
}

fn load_token(config: TokenConfig) -> anyhow::Result<Token> {
    let what = format!("token {}", config.name);
    let secret = load_secret(&what, &config.token_file, &config.token_env, "token")?;
    check_scopes(&what, &config.scopes)?;
    Ok(Token::new(
        config.name,
        secret,
        &config.scopes,
        config.prefix,
    ))
}

fn load_s3_key(config: S3KeyConfig) -> anyhow::Result<S3Key> {
    let id = config.access_key_id;
    let what = format!("S3 key {id}");
    if id.len() < 3 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{what}: access_key_id must be 3 to 128 ASCII letters and digits");
    }
    let secret = load_secret(&what, &config.secret_file, &config.secret_env, "secret")?;
    check_scopes(&what, &config.scopes)?;
    let token = Token::new(id.clone(), secret.clone(), &config.scopes, config.prefix);
    Ok(S3Key::new(id, secret, token))
}

/// A secret from exactly one of a file and an environment variable, at least 16 characters.
fn load_secret(
    what: &str,
    file: &Option<PathBuf>,
    env: &Option<String>,
    field: &str,
) -> anyhow::Result<String> {
    let secret = match (file, env) {
        (Some(path), None) => read_secret(path).with_context(|| what.to_owned())?,
        (None, Some(variable)) => std::env::var(variable)
            .with_context(|| format!("{what}: environment variable {variable}"))?
            .trim()
            .to_owned(),
        _ => bail!("{what}: give exactly one of {field}_file and {field}_env"),
    };
    if secret.len() < 16 {
        bail!("{what}: secret must be at least 16 characters");
    }
    Ok(secret)
}

fn check_scopes(what: &str, scopes: &[Scope]) -> anyhow::Result<()> {
    if scopes.is_empty() {
        bail!("{what}: scopes must name at least one of read, write, admin");
    }
    Ok(())
}

/// The first line of a secret file.
pub fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::validate(toml::from_str(text)?, Flags::default())
    }

    #[test]
    fn defaults_need_nothing() {
        let config = parse("").expect("empty config");
        assert_eq!(config.http_listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.verify_reads, Verify::Yes);
        assert!(config.public_reads);
        assert!(config.tokens.is_empty());
        assert_eq!(config.limits.max_requests, 256);
        assert_eq!(config.s3_listen, None);
        assert!(config.s3_keys.is_empty());
    }

    #[test]
    fn the_example_config_is_valid_and_states_the_defaults() {
        let text = include_str!("../../ops/dataserver.toml");
        let example = parse(text).expect("ops/dataserver.toml is valid");
        let defaults = parse("").expect("empty config");
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: ConfigFile = toml::from_str("site_name = \"a\"\nsite_number = 3").expect("toml");
        let flags = Flags {
            site_name: Some("b".into()),
            ..Flags::default()
        };
        let config = Config::validate(file, flags).expect("valid");
        assert_eq!((config.site_name.as_str(), config.site_number), ("b", 3));
    }

    #[test]
    fn mistakes_are_refused() {
        for text in [
            "unknown_field = 1",
            "verify_reads = \"sometimes\"",
            "site_number = 70000",
            "site_name = \"\"",
            "http_listen = \"nowhere\"",
            "[limits]\nmax_requests = 0",
            "[limits]\nmax_header_bytes = 100",
            "[[tokens]]\nname = \"x\"\nscopes = [\"read\"]",
            "[[tokens]]\nname = \"x\"\ntoken_env = \"DATASERVER_TEST_UNSET_VARIABLE\"\nscopes = [\"read\"]",
            "[[tokens]]\nname = \"x\"\ntoken_env = \"PATH\"\nscopes = [\"fly\"]",
            "s3_listen = \"nowhere\"",
            "s3_upload_expiry_days = 0",
            "[[s3_keys]]\naccess_key_id = \"AK1\"\nscopes = [\"read\"]",
            "[[s3_keys]]\naccess_key_id = \"a b\"\nsecret_env = \"PATH\"\nscopes = [\"read\"]",
            "[[s3_keys]]\naccess_key_id = \"AK1\"\nsecret_env = \"PATH\"\nscopes = []",
        ] {
            assert!(parse(text).is_err(), "accepted {text:?}");
        }
    }
}
