//! Client of the dataserver's native HTTP API.
//!
//! [`api`] holds the wire types (header names, JSON bodies) that the daemon also uses, so a
//! wire change breaks both builds; it is plain serde data and is all that is built without the
//! default features. With the `http` feature, [`Client`] is the async library pipeline workers
//! link against: streaming verified uploads and downloads, resumable downloads, ranged reads,
//! an [`ObjectReader`] implementing `AsyncRead + AsyncSeek`, listing, retries, and FITS views
//! (the HDU index, one HDU, header text, cut-outs; their checksum cards checked). The `ds`
//! command (feature `cli`) is built on it. Knows nothing of the daemon's or storage's types.
//!
//! ```no_run
//! # async fn example() -> client::Result<()> {
//! use client::{Client, ClientOptions, GetOptions, PutOptions};
//! use tokio::io::{AsyncReadExt, AsyncSeekExt};
//!
//! let options = ClientOptions {
//!     token: std::env::var("DS_TOKEN").ok(),
//!     ..ClientOptions::default()
//! };
//! let node = Client::with_options("http://127.0.0.1:8080", options)?;
//! // Read once, hashed as it streams; the server checks the BLAKE3 that follows the bytes.
//! let stored = node
//!     .put_file("kids/DR5/frame.fits", "frame.fits".as_ref(), &PutOptions::default())
//!     .await?;
//! // Written to copy.fits.part, resumed if interrupted, verified, then renamed.
//! node.get_to_file(&stored.key, "copy.fits".as_ref(), &GetOptions::default())
//!     .await?;
//! // The second FITS block, read like a file.
//! let mut object = node.open(&stored.key).await?;
//! object.seek(std::io::SeekFrom::Start(2880)).await.expect("seek");
//! let mut block = vec![0u8; 2880];
//! object.read_exact(&mut block).await.expect("read");
//! // One CCD of a multi-extension file as a FITS file of its own, and a box of its pixels.
//! let ccd: client::HduSelector = "CCD_12".parse().expect("an HDU");
//! let single = node.get_hdu(&stored.key, &ccd, true).await?;
//! let section: client::Section = "1:100,1:200".parse().expect("rows 1-100, columns 1-200");
//! let cutout = node.cutout(&stored.key, Some(&ccd), section).await?;
//! # Ok(())
//! # }
//! ```

pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod error;
#[cfg(feature = "http")]
mod fits;
#[cfg(feature = "http")]
mod reader;
#[cfg(feature = "http")]
mod retry;
#[cfg(feature = "http")]
mod transfer;
#[cfg(feature = "http")]
mod upload;

#[cfg(feature = "http")]
pub use client::{Client, ClientOptions, ObjectHead, PutOptions, PutOutcome, local_digest};
#[cfg(feature = "http")]
pub use error::{Error, Result};
#[cfg(feature = "http")]
pub use fits::{ChecksumVerdict, FitsAnswer, FitsPart, HduSelector, Section};
#[cfg(feature = "http")]
pub use reader::ObjectReader;
#[cfg(feature = "http")]
pub use retry::RetryPolicy;
#[cfg(feature = "http")]
pub use transfer::{Downloaded, GetOptions, PARALLEL_PIECE_BYTES, Progress, part_path};
