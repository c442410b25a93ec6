//! `ApiError`: the one place that chooses statuses and log levels.
//!
//! On a 5xx the full error chain is logged at `error!` and the client gets only "internal
//! error"; on a 4xx the client gets the message and the log a `debug!` line.

use http::StatusCode;
use storage::StorageError;

use crate::auth::Refusal;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown API path.
    #[error("no such API path")]
    UnknownApi,
    /// Method not supported on the path.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// For the `Allow` header.
        allow: &'static str,
    },
    /// Missing or insufficient credentials.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Body larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Too many requests at once.
    #[error("server is busy, retry later")]
    Overloaded,
    /// `If-Match` or `If-Unmodified-Since` failed.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A storage error.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownApi => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Refused(Refusal::Unauthenticated) => StatusCode::UNAUTHORIZED,
            ApiError::Refused(Refusal::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::Storage(error) => storage_status(error),
        }
    }

    /// What the client is told: the message for its own mistakes, nothing of ours.
    pub fn public_message(&self) -> String {
        if self.status().is_server_error() && !matches!(self, ApiError::Overloaded) {
            "internal error".to_owned()
        } else {
            self.to_string()
        }
    }
}

fn storage_status(error: &StorageError) -> StatusCode {
    match error {
        StorageError::InvalidKey(_)
        | StorageError::DigestMismatch { .. }
        | StorageError::SizeMismatch { .. }
        | StorageError::Body(_)
        | StorageError::InvalidContentType => StatusCode::BAD_REQUEST,
        StorageError::NotFound { .. } => StatusCode::NOT_FOUND,
        StorageError::Conflict { .. } | StorageError::ObjectIdTaken { .. } => StatusCode::CONFLICT,
        StorageError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        StorageError::Io { source, .. }
            if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) =>
        {
            StatusCode::INSUFFICIENT_STORAGE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::{Blake3Digest, ObjectKey};

    #[test]
    fn statuses() {
        let key = ObjectKey::parse("k").expect("valid");
        let check = |error: ApiError, status: StatusCode, public: &str| {
            assert_eq!(error.status(), status);
            assert_eq!(error.public_message(), public);
        };
        check(
            StorageError::NotFound { key: key.clone() }.into(),
            StatusCode::NOT_FOUND,
            "object k not found",
        );
        check(
            StorageError::Conflict {
                key,
                existing: Blake3Digest::of(b""),
            }
            .into(),
            StatusCode::CONFLICT,
            "key k already holds different content (af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262)",
        );
        let io = StorageError::Io {
            op: "write",
            path: "/secret/path".into(),
            source: std::io::Error::other("disk on fire"),
        };
        check(
            io.into(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
        );
        let full = StorageError::Io {
            op: "write",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        };
        check(
            full.into(),
            StatusCode::INSUFFICIENT_STORAGE,
            "internal error",
        );
        check(
            ApiError::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE,
            "server is busy, retry later",
        );
        check(
            Refusal::Unauthenticated.into(),
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        );
    }
}
