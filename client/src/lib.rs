//! Client of the dataserver's native HTTP API.
//!
//! [`api`] holds the wire types (header names, JSON bodies) that the daemon also uses, so a
//! wire change breaks both builds; it is plain serde data and is all that is built without the
//! default features. With the `http` feature, [`Client`] is the async library pipeline workers
//! link against: streaming verified uploads and downloads, resumable downloads, ranged reads,
//! an [`ObjectReader`] implementing `AsyncRead + AsyncSeek`, listing, and retries. The `ds`
//! command (feature `cli`) is built on it. Knows nothing of the daemon's or storage's types.

pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod error;
#[cfg(feature = "http")]
mod reader;
#[cfg(feature = "http")]
mod retry;
#[cfg(feature = "http")]
mod transfer;

#[cfg(feature = "http")]
pub use client::{Client, ClientOptions, ObjectHead, PutOptions, PutOutcome, local_digest};
#[cfg(feature = "http")]
pub use error::{Error, Result};
#[cfg(feature = "http")]
pub use reader::ObjectReader;
#[cfg(feature = "http")]
pub use retry::RetryPolicy;
#[cfg(feature = "http")]
pub use transfer::{Downloaded, GetOptions, PARALLEL_PIECE_BYTES, Progress, part_path};
