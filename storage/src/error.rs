//! `StorageError`: what callers of the store branch on.
//!
//! Knows nothing of HTTP; the daemon maps each variant to a status. Client faults
//! (`DigestMismatch`, `SizeMismatch`, `Conflict`, …) and our faults (`Corrupt`, `Io`, `Catalog`)
//! are separate variants because they get different statuses and different alerts.

use std::io;
use std::path::PathBuf;

use crate::checksum::Blake3Digest;
use crate::key::{KeyError, ObjectKey};

/// Which digest a client-supplied value was compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// BLAKE3-256.
    Blake3,
    /// MD5.
    Md5,
}

impl std::fmt::Display for DigestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DigestKind::Blake3 => "BLAKE3",
            DigestKind::Md5 => "MD5",
        })
    }
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key breaks a rule of DESIGN.md §3.
    #[error("invalid key: {0}")]
    InvalidKey(#[from] KeyError),
    /// No live object under this key.
    #[error("object {key} not found")]
    NotFound {
        /// The key asked for.
        key: ObjectKey,
    },
    /// The key is bound to other content (keys are write-once, also after deletion).
    #[error("key {key} already holds different content ({existing})")]
    Conflict {
        /// The key.
        key: ObjectKey,
        /// The content it is bound to.
        existing: Blake3Digest,
    },
    /// The body does not match the digest the client sent; nothing was stored.
    #[error(
        "body does not match the {kind} digest the client sent (expected {expected}, got {actual})"
    )]
    DigestMismatch {
        /// Which digest.
        kind: DigestKind,
        /// Hex the client sent.
        expected: String,
        /// Hex of what arrived.
        actual: String,
    },
    /// The body is shorter or longer than announced; nothing was stored.
    #[error("body has {actual} bytes, {expected} were announced")]
    SizeMismatch {
        /// Announced length.
        expected: u64,
        /// Bytes received (for a long body: the announced length plus what overflowed).
        actual: u64,
    },
    /// Reading the body failed (the client went away); nothing was stored.
    #[error("reading the body failed")]
    Body(#[source] io::Error),
    /// A content type that cannot be stored (control characters, or longer than 255 bytes).
    #[error("invalid content type")]
    InvalidContentType,
    /// A byte range outside the object.
    #[error("range {start}..{end} is outside the object of {size} bytes")]
    RangeNotSatisfiable {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Object size.
        size: u64,
    },
    /// An object ID handed in by a replica is already bound to another key.
    #[error("object id {object_id} already names {key}")]
    ObjectIdTaken {
        /// The identifier.
        object_id: u64,
        /// The key it names.
        key: ObjectKey,
    },
    /// The stored bytes no longer match their digest; the blob is quarantined.
    #[error("stored bytes of blob {blob} no longer match their checksum ({detail})")]
    Corrupt {
        /// The damaged blob.
        blob: Blake3Digest,
        /// Where the mismatch is.
        detail: String,
    },
    /// This site has used all 2^48 object identifiers.
    #[error("object identifiers of this site are exhausted")]
    ObjectIdsExhausted,
    /// The runtime is shutting down and cancelled the work.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// Another process holds the data directory.
    #[error("data directory {path} is in use by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done, as a verb.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The catalogue engine failed.
    #[error("catalogue: {op}")]
    Catalog {
        /// What was being done, as a verb.
        op: &'static str,
        /// The engine's error.
        #[source]
        source: CatalogFailure,
    },
}

/// An error of the catalogue engine, as text (the engine's types stay inside `catalog`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CatalogFailure(pub(crate) String);

/// A closure for `map_err` that wraps an `io::Error` with its operation and path.
pub(crate) fn io_error(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { op, path, source }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
