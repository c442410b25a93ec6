//! `Error`: what a call can fail with, as variants callers branch on. Each carries the server's
//! message (a sentence) when the server gave one.

use std::path::PathBuf;

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key is not stored (404).
    #[error("{message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// The key is already bound to other content (409); nothing was changed.
    #[error("{message}")]
    Conflict {
        /// The server's message.
        message: String,
    },
    /// No token, or a token the server does not know (401).
    #[error("{message}")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// The token is known but may not do this (403).
    #[error("{message}")]
    Forbidden {
        /// The server's message.
        message: String,
    },
    /// Bytes do not match their BLAKE3 or MD5 digest: the server refused an upload whose body
    /// did not match what we sent, or a download did not hash to the server's digest (the
    /// partial file is then deleted).
    #[error("{message}")]
    DigestMismatch {
        /// What did not match.
        message: String,
    },
    /// Any other refusal of the request (4xx): a malformed key, an unsatisfiable range, a body
    /// over the server's limit.
    #[error("{message} (HTTP {status})")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server failed (5xx), or stayed busy (503) beyond the retries.
    #[error("the server failed: {message} (HTTP {status}, request {request_id})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// The request ID, to find the request in the server's log (0 when not given).
        request_id: u64,
    },
    /// The connection failed, timed out or was cut.
    #[error("{message}")]
    Transport {
        /// What failed, with its causes.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The TLS handshake failed: the server's certificate was refused (not signed by a trusted
    /// authority, or not for this host). Never retried.
    #[error("{message}")]
    Tls {
        /// What failed, with its causes.
        message: String,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// A local file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "write", …).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client was configured wrongly (a bad URL, an unreadable certificate).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The error for an HTTP status and the server's message (from its JSON error body).
    pub(crate) fn from_status(status: u16, message: String, request_id: u64) -> Self {
        match status {
            404 => Error::NotFound { message },
            409 => Error::Conflict { message },
            401 => Error::Unauthorized { message },
            403 => Error::Forbidden { message },
            // The server says so in words: "body does not match the … digest the client sent".
            400 if message.contains("does not match the") => Error::DigestMismatch { message },
            400..=499 => Error::Rejected { status, message },
            _ => Error::Server {
                status,
                message,
                request_id,
            },
        }
    }

    /// Whether repeating the same idempotent request may succeed: transport failures and
    /// server-side failures, never refusals.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Error::Transport { .. } | Error::Server { .. })
    }

    /// The HTTP status the server answered with, when the error is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::NotFound { .. } => Some(404),
            Error::Conflict { .. } => Some(409),
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::Rejected { status, .. } | Error::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(error: reqwest::Error) -> Self {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if refused_by_tls(&error) {
            return Error::Tls { message };
        }
        Error::Transport {
            message,
            source: Some(error),
        }
    }
}

/// Whether rustls refused the connection (a certificate or protocol error, which a retry
/// cannot mend).
fn refused_by_tls(error: &reqwest::Error) -> bool {
    std::error::Error::source(error).is_some_and(is_tls_error)
}

/// rustls reports through `io::Error`s (possibly nested) whose inner error is a
/// `rustls::Error`; `io::Error::source` skips the inner error itself, so look inside.
fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && is_tls_error(inner)
    {
        return true;
    }
    error.source().is_some_and(is_tls_error)
}

/// An `Io` error maker for `map_err`.
pub(crate) fn io_error(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}
