//! The storage core of the dataserver: turns a stream of bytes under a global, write-once key
//! into a durable, verified, content-addressed object, and back.
//!
//! [`Store`] is the whole public surface: `put`, `get` (then ranged, optionally verified
//! reads), `head`, `delete`, `list`, `changes`, and the upkeep that keeps the promises
//! (`sweep`, `fsck`, `scrub`, `purge_trash`, `backfill_md5`). Knows nothing of HTTP or S3; the
//! daemon maps [`StorageError`] to statuses.
//!
//! Write order (ARCHITECTURE.md, "Durability"): body streamed into `staging/` and hashed,
//! staging files fsynced, renamed into `blobs/`, directory fsynced, then the catalogue record
//! committed. Delete reverses it: record first (tombstone), then the blob moves to `trash/`.
//! A per-blob lock makes "place blob, record it" and "unrecord blob, move it" atomic with
//! respect to each other and to the orphan sweep.

mod blobs;
mod buffers;
mod catalog;
pub mod checksum;
mod error;
pub mod fits;
mod ingest;
pub mod key;
pub mod outboard;
mod packs;
mod read;
mod recent;
pub mod record;
mod scrub;
pub mod tar;

use std::fs::{File, OpenOptions};
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::blobs::{Area, BlobDir, OpenBlob};
use crate::catalog::{Catalog, Home, InsertOutcome, NewObject};
use crate::ingest::Ingest;

pub use crate::catalog::{CatalogStats, Origin};
pub use crate::checksum::{Blake3Digest, Md5Digest};
pub use crate::error::{CatalogFailure, DigestKind, Result, StorageError};
pub use crate::fits::FitsIndex;
pub use crate::key::{KeyError, ObjectKey};
use crate::read::Wait;
pub use crate::read::{ByteStream, StoredObject, Verify};
pub use crate::record::{
    BlobRecord, BlobState, Change, ChangeKind, ObjectId, ObjectRecord, ObjectState, PartsDigest,
};
pub use crate::scrub::{FsckReport, ScrubOptions, ScrubReport, SweepReport, Verified};

/// Objects up to this size are appended to pack files under the catalogue's group commit rather
/// than stored as files of their own, and are read whole when opened.
pub const SMALL_OBJECT_BYTES: u64 = 64 * 1024;

/// Lock stripes for per-blob critical sections.
const BLOB_LOCKS: usize = 256;

/// How long the MD5 backfill lets new work gather after being woken. Each pass commits its
/// MD5s durably, once per page; under a stream of small PUTs, a pass per PUT would add a
/// catalogue commit (an fsync) to nearly every PUT batch.
const MD5_SETTLE: Duration = Duration::from_millis(100);

/// Blobs whose MD5s one catalogue commit records.
const MD5_PAGE: usize = 256;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory (created when missing).
    pub data_dir: PathBuf,
    /// This node's site number: the top 16 bits of the object IDs it assigns. Default 0.
    pub site: u16,
    /// How long an unreferenced blob stays in the trash before `purge_trash` removes it.
    /// Default 7 days.
    pub trash_retention: Duration,
    /// Run upkeep in the background: the orphan sweep once after opening and MD5 backfill after
    /// deferred ingests. Default true; tests switch it off to call the same functions directly.
    pub background: bool,
    /// Served blobs kept open after a read (two file descriptors each at most), so hot objects
    /// are read without an `open`. Default 4096; a process with a low open-file limit sets it
    /// lower.
    pub open_blobs: usize,
}

impl StoreConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            site: 0,
            trash_retention: Duration::from_secs(7 * 24 * 3600),
            background: true,
            open_blobs: 4096,
        }
    }
}

/// When MD5 is computed (DESIGN.md §3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Md5Mode {
    /// Soon after ingest, by a background task, so ingest runs at BLAKE3 and disk speed.
    #[default]
    Deferred,
    /// During ingest, in parallel with BLAKE3 (S3 ETags need it at once).
    Inline,
}

/// What the client promised about the body; a body that breaks a promise is not stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    /// Exact length in bytes.
    pub size: Option<u64>,
    /// BLAKE3 digest.
    pub blake3: Option<Blake3Digest>,
    /// MD5 digest (computing it inline, whatever the [`Md5Mode`]).
    pub md5: Option<Md5Digest>,
}

/// A BLAKE3 digest the caller learns only once the body has ended (an HTTP trailer). Whoever
/// streams the body sets it before the stream ends; `put` compares it with the bytes before
/// anything is placed, and refuses a body whose stream ended with it unset.
#[derive(Debug, Clone, Default)]
pub struct TrailingDigest(Arc<std::sync::OnceLock<Blake3Digest>>);

impl TrailingDigest {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the digest; false when one was recorded already (which is kept).
    pub fn set(&self, digest: Blake3Digest) -> bool {
        self.0.set(digest).is_ok()
    }

    /// The digest, once recorded.
    pub fn get(&self) -> Option<Blake3Digest> {
        self.0.get().copied()
    }
}

/// Options of one `put`.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// When to compute MD5.
    pub md5: Md5Mode,
    /// The client's promises.
    pub expected: Expected,
    /// MIME type; detected from the first bytes when absent.
    pub content_type: Option<String>,
    /// Where the object comes from (a new local object unless a peer's copy).
    pub origin: Origin,
    /// The digest of the parts the body was assembled from, to keep with the object.
    pub parts: Option<PartsDigest>,
    /// A BLAKE3 that follows the body (see [`TrailingDigest`]), checked like `expected.blake3`.
    pub trailing_blake3: Option<TrailingDigest>,
}

/// The result of a successful `put`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The object as now recorded.
    pub record: ObjectRecord,
    /// True when the key is newly bound (or restored); false when it already held this content.
    pub created: bool,
}

impl From<InsertOutcome> for Stored {
    fn from(outcome: InsertOutcome) -> Self {
        match outcome {
            InsertOutcome::Created(record) => Stored {
                record,
                created: true,
            },
            InsertOutcome::Unchanged(record) => Stored {
                record,
                created: false,
            },
        }
    }
}

/// A content-addressed object store over one data directory. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    blobs: BlobDir,
    catalog: Catalog,
    blob_locks: Vec<tokio::sync::Mutex<()>>,
    md5_wanted: Notify,
    background: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Held (locked) for the life of the store: one process per data directory.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self
            .background
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for task in tasks {
            task.abort();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `config.data_dir`: takes the directory lock,
    /// removes staging leftovers and opens the catalogue. With `background`, the orphan sweep
    /// starts at once and MD5 backfill waits for work.
    pub async fn open(config: StoreConfig) -> Result<Self> {
        let dir = config.data_dir.clone();
        let site = config.site;
        let open_blobs = config.open_blobs;
        let (lock, blobs, catalog) = blocking(move || {
            std::fs::create_dir_all(&dir).map_err(error::io_error("create directory", &dir))?;
            let lock = lock_data_dir(&dir)?;
            let blobs = BlobDir::create(&dir, open_blobs)?;
            let removed = blobs.clear_staging()?;
            if removed > 0 {
                tracing::info!(removed, "removed staging leftovers of an interrupted run");
            }
            let catalog = Catalog::open(&dir.join("catalog.redb"), &dir.join("packs"), site)?;
            // The catalogue file may be new: make its directory entry durable too.
            blobs::sync_dir(&dir)?;
            Ok((lock, blobs, catalog))
        })
        .await?;
        let store = Store {
            inner: Arc::new(Inner {
                blob_locks: (0..BLOB_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                config,
                blobs,
                catalog,
                md5_wanted: Notify::new(),
                background: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        };
        if store.inner.config.background {
            store.start_background();
        }
        Ok(store)
    }

    fn start_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        let sweep = tokio::spawn(async move {
            let Some(store) = upgrade(&weak) else { return };
            match store.sweep().await {
                Ok(report) if report.is_clean() => {}
                Err(StorageError::ShuttingDown) => {}
                Ok(report) => tracing::info!(?report, "swept blob areas after start"),
                Err(error) => tracing::error!("sweep after start failed: {error:#}"),
            }
        });
        let weak = Arc::downgrade(&self.inner);
        let md5 = tokio::spawn(async move {
            loop {
                let Some(store) = upgrade(&weak) else { return };
                match store.backfill_md5().await {
                    Ok(_) => {}
                    Err(StorageError::ShuttingDown) => return,
                    Err(error) => tracing::error!("MD5 backfill failed: {error:#}"),
                }
                let inner = store.inner.clone();
                drop(store);
                // Wake on new work, and now and then to retry after errors.
                let woken =
                    tokio::time::timeout(Duration::from_secs(60), inner.md5_wanted.notified())
                        .await
                        .is_ok();
                drop(inner);
                if woken {
                    tokio::time::sleep(MD5_SETTLE).await;
                }
            }
        });
        let mut tasks = self.inner.background.lock().expect("background list lock");
        tasks.push(sweep.abort_handle());
        tasks.push(md5.abort_handle());
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    fn blob_lock(&self, blob: &Blake3Digest) -> &tokio::sync::Mutex<()> {
        &self.inner.blob_locks[usize::from(blob.0[0]) % BLOB_LOCKS]
    }

    /// Stores `body` under `key`. Streams: memory stays bounded whatever the size. Every byte
    /// is hashed on the way in; a body that breaks `options.expected` stores nothing. Storing
    /// identical bytes again succeeds without change; different bytes under an existing (or
    /// deleted) key fail with [`StorageError::Conflict`] and change nothing.
    pub async fn put<S, E>(&self, key: &ObjectKey, body: S, options: PutOptions) -> Result<Stored>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(content_type) = &options.content_type
            && (content_type.len() > 255 || content_type.chars().any(char::is_control))
        {
            return Err(StorageError::InvalidContentType);
        }
        let staging = self.inner.blobs.staging_paths();
        // Removes the staging files if this future fails or is dropped before they are placed.
        let mut guard = StagingGuard {
            store: Some(self.clone()),
            staging: staging.clone(),
        };
        let md5_inline = options.md5 == Md5Mode::Inline || options.expected.md5.is_some();
        let ingested = async {
            let mut ingest = Ingest::new(&staging, md5_inline);
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|error| StorageError::Body(std::io::Error::other(error)))?;
                if let Some(expected) = options.expected.size
                    && ingest.size() + chunk.len() as u64 > expected
                {
                    return Err(StorageError::SizeMismatch {
                        expected,
                        actual: ingest.size() + chunk.len() as u64,
                    });
                }
                ingest.feed(chunk).await?;
            }
            let ingested = ingest.finish().await?;
            check_expected(&options.expected, &ingested)?;
            if let Some(trailing) = &options.trailing_blake3 {
                let Some(blake3) = trailing.get() else {
                    return Err(StorageError::Body(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the body ended without the BLAKE3 trailer it announced",
                    )));
                };
                let promised = Expected {
                    blake3: Some(blake3),
                    ..Expected::default()
                };
                check_expected(&promised, &ingested)?;
            }
            Ok(ingested)
        }
        .await;
        let ingested = match ingested {
            Ok(ingested) => ingested,
            Err(error) => {
                // Gone before the caller hears of the refusal: a refused body leaves nothing.
                let store = self.clone();
                let staging = staging.clone();
                blocking(move || store.inner.blobs.discard(&staging)).await?;
                guard.store = None;
                return Err(error);
            }
        };

        let content_type = options
            .content_type
            .unwrap_or_else(|| ingest::sniff_content_type(&ingested.leading_bytes).to_owned());
        let object = NewObject {
            key: key.clone(),
            size: ingested.size,
            blake3: ingested.blake3,
            md5: ingested.md5,
            content_type,
            origin: options.origin,
            now: SystemTime::now(),
            parts: options.parts,
            fits: ingested.fits,
            tar: ingested.tar,
            small_body: ingested.small_body,
        };
        if object.small_body.is_some() {
            // Nothing was staged; the bytes are packed in the transaction that records them,
            // and conflicts are refused inside it.
            guard.store = None;
            return Ok(self.recorded(self.inner.catalog.insert(object).await?));
        }

        let blob = ingested.blake3;
        let _blob_lock = self.blob_lock(&blob).lock().await;
        let store = self.clone();
        let has_outboard = ingested.has_outboard;
        let bound_key = key.clone();
        // One hop: refuse a key bound to other content before placing anything, then place.
        let placement = blocking(move || {
            if let Some(existing) = store.inner.catalog.binding_now(&bound_key)?
                && existing != blob
            {
                store.inner.blobs.discard(&staging)?;
                return Ok(Err(existing));
            }
            let trash_copy = store.inner.blobs.contains(&blob, Area::Trash);
            let placed = store.inner.blobs.place(&staging, &blob, has_outboard)?;
            Ok(Ok((placed, trash_copy)))
        })
        .await?;
        let (placed, trash_copy) = match placement {
            Ok(placement) => placement,
            Err(existing) => {
                // Discarded in the hop.
                guard.store = None;
                return Err(StorageError::Conflict {
                    key: key.clone(),
                    existing,
                });
            }
        };
        // A deduplicated body's staging files stay with the guard, which removes them in the
        // background once this returns: unlinking a large file that was just written waits
        // for the filesystem to free its blocks (0.24-0.27 s for 1 GiB on ext4 here, a quarter
        // of the whole upload), and the client need not wait for garbage to go.
        if placed {
            guard.store = None;
        }
        let outcome = self.inner.catalog.insert(object).await;
        if placed && outcome.is_err() && self.inner.catalog.blob(blob).await?.is_none() {
            // Lost a race for the key after placing a blob nobody references.
            let store = self.clone();
            blocking(move || store.inner.blobs.remove(&blob, Area::Blobs)).await?;
        }
        let stored = self.recorded(outcome?);
        if placed && trash_copy {
            // The blob is live again; its copy from an earlier delete goes.
            let store = self.clone();
            blocking(move || store.inner.blobs.remove(&blob, Area::Trash)).await?;
        }
        Ok(stored)
    }

    /// The result of a recorded `put`; wakes the MD5 backfill when the MD5 is still to come.
    fn recorded(&self, outcome: InsertOutcome) -> Stored {
        let stored = Stored::from(outcome);
        if stored.record.md5.is_none() {
            self.inner.md5_wanted.notify_one();
        }
        stored
    }

    /// Binds `to` to the content of the live key `from` without copying bytes: the blob gains
    /// a reference and `to` a catalogue record (its own object ID, the same size, digests,
    /// content type and parts digest). Write-once as `put`: `to` already bound to other
    /// content is a [`StorageError::Conflict`]; already bound to this content, nothing changes.
    pub async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<Stored> {
        let source = self.head(from).await?;
        let blob = source.blake3;
        let _blob_lock = self.blob_lock(&blob).lock().await;
        // Under the blob's lock nothing can move the blob; it is in `blobs/` exactly when the
        // catalogue says it is live and referenced (the source may have been deleted since).
        let live = self
            .inner
            .catalog
            .blob(blob)
            .await?
            .is_some_and(|record| record.state == BlobState::Live && record.references > 0);
        if !live {
            return Err(StorageError::NotFound { key: from.clone() });
        }
        let object = NewObject {
            key: to.clone(),
            size: source.size,
            blake3: blob,
            md5: source.md5,
            content_type: source.content_type,
            origin: Origin::Local,
            now: SystemTime::now(),
            parts: source.parts,
            // The blob is already recorded, with its indexes and its bytes.
            fits: None,
            tar: None,
            small_body: None,
        };
        Ok(Stored::from(self.inner.catalog.insert(object).await?))
    }

    /// The record of a live key.
    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectRecord> {
        self.inner
            .catalog
            .get(key)
            .await?
            .ok_or_else(|| StorageError::NotFound { key: key.clone() })
    }

    /// The FITS index of the bytes of `record` (from [`Store::head`] or [`Store::get`]), built
    /// at ingest; `None` when they did not start like a FITS file.
    pub async fn fits_index(&self, record: &ObjectRecord) -> Result<Option<FitsIndex>> {
        self.inner.catalog.fits_index(record.blake3).await
    }

    /// The member index of the bytes of `record`, built at ingest; `None` when they were not
    /// a tar archive.
    pub async fn tar_index(&self, record: &ObjectRecord) -> Result<Option<tar::TarIndex>> {
        self.inner.catalog.tar_index(record.blake3).await
    }

    /// Opens a live key for reading, in one blocking hop: the catalogue lookup and the open
    /// share it, and an object of at most [`SMALL_OBJECT_BYTES`] is read whole in it, so
    /// serving it needs no further hop. The handle keeps the bytes readable even if the key is
    /// deleted meanwhile.
    pub async fn get(&self, key: &ObjectKey) -> Result<StoredObject> {
        if let Some(object) = self.open_remembered(key, None) {
            return Ok(object);
        }
        let store = self.clone();
        let key = key.clone();
        blocking(move || store.open_now(&key)).await
    }

    /// Like [`Store::get`], and also reads `range` (at most 256 KiB) of a large object in the
    /// same blocking hop, checked per `verify`: a later `read` of exactly that range then
    /// needs no further hop. For callers that know which range they will want (a `Range`
    /// header); any other read works as usual.
    pub async fn get_prefetching(
        &self,
        key: &ObjectKey,
        range: Range<u64>,
        verify: Verify,
    ) -> Result<StoredObject> {
        if let Some(object) = self.open_remembered(key, Some((range.clone(), verify))) {
            return Ok(object);
        }
        let store = self.clone();
        let key = key.clone();
        blocking(move || {
            let mut object = store.open_now(&key)?;
            object.prefetch(range, verify, Wait::Yes)?;
            Ok(object)
        })
        .await
    }

    /// Without blocking, on the caller's thread: the object at `key` when everything needed
    /// is at hand — its record remembered, its blob still open, and the bytes to read now (a
    /// small object, or the `prefetch` range) in the page cache (`RWF_NOWAIT`). `None` sends
    /// the caller to the blocking pool, which gives the authoritative answer (errors and
    /// damage included). This is what serves hot reads without a hop to another thread.
    fn open_remembered(
        &self,
        key: &ObjectKey,
        prefetch: Option<(Range<u64>, Verify)>,
    ) -> Option<StoredObject> {
        let (record, state) = self.inner.catalog.lookup_remembered(key)?;
        if state != BlobState::Live {
            return None;
        }
        if record.size <= SMALL_OBJECT_BYTES
            && let Some(bytes) = self.inner.catalog.packed_remembered(&record.blake3)
        {
            return Some(StoredObject::in_memory(self.clone(), record, bytes));
        }
        let open = self.inner.blobs.open_remembered(&record.blake3)?;
        let mut object = self.opened(record, open, Wait::No).ok()?;
        if let Some((range, verify)) = prefetch {
            object.prefetch(range, verify, Wait::No).ok()?;
        }
        Some(object)
    }

    /// Blocking: the work of [`Store::get`].
    fn open_now(&self, key: &ObjectKey) -> Result<StoredObject> {
        let not_found = || StorageError::NotFound { key: key.clone() };
        let (record, state) = self.inner.catalog.lookup_now(key)?.ok_or_else(not_found)?;
        let blob = record.blake3;
        if let BlobState::Quarantined { .. } = state {
            return Err(StorageError::Corrupt {
                blob,
                detail: "blob is quarantined".into(),
            });
        }
        if record.size <= SMALL_OBJECT_BYTES
            && let Some(bytes) = self.inner.catalog.packed_now(&blob)?
        {
            if bytes.len() as u64 != record.size {
                return Err(StorageError::Corrupt {
                    blob,
                    detail: format!("pack holds fewer than the recorded {} bytes", record.size),
                });
            }
            return Ok(StoredObject::in_memory(self.clone(), record, bytes));
        }
        let has_outboard = outboard::outboard_len(record.size) > 0;
        let open = match self.inner.blobs.open(&blob, has_outboard) {
            Ok(open) => open,
            // Deleted between the lookup and the open, or lost.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.inner.catalog.lookup_now(key)?.ok_or_else(not_found)?;
                return Err(StorageError::Corrupt {
                    blob,
                    detail: "blob file is missing".into(),
                });
            }
            Err(error) => {
                return Err(StorageError::Io {
                    op: "open",
                    path: self.inner.blobs.data_path(Area::Blobs, &blob),
                    source: error,
                });
            }
        };
        self.opened(record, open, Wait::Yes)
    }

    /// An object over its open blob; a small object is read whole now.
    fn opened(&self, record: ObjectRecord, open: OpenBlob, wait: Wait) -> Result<StoredObject> {
        let (data, outboard) = open;
        if record.size > SMALL_OBJECT_BYTES {
            return Ok(StoredObject::new(self.clone(), record, data, outboard));
        }
        let blob = record.blake3;
        let mut bytes = vec![0u8; usize::try_from(record.size).expect("small objects fit memory")];
        match read::read_exact_at(&data, &mut bytes, 0, wait) {
            Ok(()) => Ok(StoredObject::in_memory(
                self.clone(),
                record,
                Bytes::from(bytes),
            )),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(StorageError::Corrupt {
                    blob,
                    detail: format!("blob is shorter than its recorded {} bytes", record.size),
                })
            }
            Err(error) => Err(StorageError::Io {
                op: "read",
                path: self.inner.blobs.data_path(Area::Blobs, &blob),
                source: error,
            }),
        }
    }

    /// Deletes a key (soft): the key is tombstoned and logged; a blob no longer referenced by
    /// any key moves to the trash, from which `purge_trash` removes it after the retention
    /// period. The key stays bound to its content: only the same bytes can restore it.
    pub async fn delete(&self, key: &ObjectKey) -> Result<ObjectRecord> {
        let record = self.head(key).await?;
        let blob = record.blake3;
        let _blob_lock = self.blob_lock(&blob).lock().await;
        let (record, trashed) = self
            .inner
            .catalog
            .delete(key.clone(), SystemTime::now())
            .await?;
        if trashed == Some(Home::File) {
            let store = self.clone();
            blocking(move || store.inner.blobs.move_blob(&blob, Area::Blobs, Area::Trash)).await?;
        }
        Ok(record)
    }

    /// Removes trashed blobs whose retention period has passed; answers how many.
    pub async fn purge_trash(&self) -> Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(self.inner.config.trash_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut purged = 0;
        loop {
            let due = self.inner.catalog.trashed_before(cutoff, 1000).await?;
            if due.is_empty() {
                return Ok(purged);
            }
            for blob in due {
                let _blob_lock = self.blob_lock(&blob).lock().await;
                match self.inner.catalog.purge(blob, cutoff).await? {
                    Some(Home::File) => {
                        let store = self.clone();
                        blocking(move || store.inner.blobs.remove(&blob, Area::Trash)).await?;
                        purged += 1;
                    }
                    Some(Home::Pack(location)) => {
                        let store = self.clone();
                        blocking(move || store.inner.catalog.punch_now(location)).await?;
                        purged += 1;
                    }
                    None => {}
                }
            }
        }
    }

    /// Moves a blob that failed verification aside; it is never served until repaired (by a
    /// `put` of the same bytes, or later by a replica).
    pub async fn quarantine(&self, blob: Blake3Digest) -> Result<()> {
        let _blob_lock = self.blob_lock(&blob).lock().await;
        let home = self
            .inner
            .catalog
            .quarantine(blob, SystemTime::now())
            .await?;
        if home.is_some() {
            tracing::error!(%blob, "blob failed verification and is quarantined");
        }
        if home == Some(Home::File) {
            let store = self.clone();
            blocking(move || {
                store
                    .inner
                    .blobs
                    .move_blob(&blob, Area::Blobs, Area::Quarantine)
            })
            .await?;
        }
        Ok(())
    }

    /// The key an object ID names (also when the key is deleted).
    pub async fn key_of(&self, object_id: ObjectId) -> Result<Option<ObjectKey>> {
        self.inner.catalog.key_of(object_id).await
    }

    /// Up to `limit` live objects whose keys start with `prefix`, after `after`, in key order.
    /// Call again with the last key as `after` for the next page.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>> {
        self.inner
            .catalog
            .list(prefix.to_owned(), after.cloned(), limit, None)
            .await
    }

    /// Like [`Store::list`], only the objects whose FITS index passes `filter`. Scans past the
    /// others within the prefix, so a page may take longer to fill than the unfiltered one.
    pub async fn list_fits(
        &self,
        prefix: &str,
        after: Option<&ObjectKey>,
        limit: usize,
        filter: fits::FitsFilter,
    ) -> Result<Vec<ObjectRecord>> {
        self.inner
            .catalog
            .list(prefix.to_owned(), after.cloned(), limit, Some(filter))
            .await
    }

    /// Up to `limit` live objects whose keys start with `prefix`, beginning at `start` (a key or
    /// any string between keys, included or excluded), in key order. Listings that skip whole
    /// sub-prefixes (S3 delimiters) start past them with `Bound::Included(successor)`.
    pub async fn list_page(
        &self,
        prefix: &str,
        start: Bound<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>> {
        self.inner
            .catalog
            .list_page(prefix.to_owned(), start.map(str::to_owned), limit, None)
            .await
    }

    /// Up to `limit` change-log entries after sequence number `since` (0 for the start).
    pub async fn changes(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        self.inner.catalog.changes(since, limit).await
    }

    /// What the catalogue knows of a blob.
    pub async fn blob(&self, blob: Blake3Digest) -> Result<Option<BlobRecord>> {
        self.inner.catalog.blob(blob).await
    }

    /// Object and byte counts.
    pub async fn stats(&self) -> Result<CatalogStats> {
        self.inner.catalog.stats().await
    }

    /// Computes the MD5s deferred at ingest; answers how many it recorded. One pass over the
    /// queue: a blob that cannot be read now is left for the next pass.
    pub async fn backfill_md5(&self) -> Result<usize> {
        let mut done = 0;
        let mut after = None;
        loop {
            let pending = self.inner.catalog.md5_pending(after, MD5_PAGE).await?;
            let Some(last) = pending.last() else {
                return Ok(done);
            };
            after = Some(*last);
            // Packed blobs are read and summed in one hop per page: a hop per blob cost more
            // than the sum of a small blob.
            let store = self.clone();
            let packed = blocking(move || {
                let mut sums = Vec::with_capacity(pending.len());
                for blob in pending {
                    let found = store.inner.catalog.read_packed_whole(&blob)?;
                    // Bytes missing from a damaged pack are left for fsck and scrub to
                    // report.
                    sums.push((
                        blob,
                        found.map(|(bytes, whole)| whole.then(|| Md5Digest::of(&bytes))),
                    ));
                }
                Ok(sums)
            });
            let mut computed = Vec::new();
            for (blob, packed) in packed.await? {
                match packed {
                    Some(Some(md5)) => {
                        computed.push((blob, md5));
                        continue;
                    }
                    Some(None) => continue,
                    None => {}
                }
                let path = self.inner.blobs.data_path(Area::Blobs, &blob);
                match scrub::md5_of_file(path).await {
                    Ok(md5) => computed.push((blob, md5)),
                    // Deleted or quarantined meanwhile: its MD5 is queued again if the bytes
                    // come back.
                    Err(StorageError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
            done += computed.len();
            // One durable commit per page, not per blob.
            self.inner.catalog.set_md5s(computed).await?;
        }
    }
}

fn upgrade(weak: &Weak<Inner>) -> Option<Store> {
    weak.upgrade().map(|inner| Store { inner })
}

fn check_expected(expected: &Expected, ingested: &ingest::Ingested) -> Result<()> {
    if let Some(size) = expected.size
        && size != ingested.size
    {
        return Err(StorageError::SizeMismatch {
            expected: size,
            actual: ingested.size,
        });
    }
    if let Some(blake3) = expected.blake3
        && blake3 != ingested.blake3
    {
        return Err(StorageError::DigestMismatch {
            kind: DigestKind::Blake3,
            expected: blake3.to_hex(),
            actual: ingested.blake3.to_hex(),
        });
    }
    if let (Some(expected), Some(actual)) = (expected.md5, ingested.md5)
        && expected != actual
    {
        return Err(StorageError::DigestMismatch {
            kind: DigestKind::Md5,
            expected: expected.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(())
}

/// Removes staging files that were not placed, in the background: those of an ingest that
/// failed or whose future was dropped (a client that went away), and those of a body whose
/// blob was already stored.
struct StagingGuard {
    store: Option<Store>,
    staging: blobs::StagingPaths,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let staging = self.staging.clone();
        let discard = move || {
            if let Err(error) = store.inner.blobs.discard(&staging) {
                tracing::warn!("could not remove staging files: {error:#}");
            }
        };
        // Outside a runtime (shutdown) the next open clears staging instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn_blocking(discard));
        }
    }
}

/// Takes the exclusive lock on `<data-dir>/LOCK`.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(error::io_error("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path }),
        Err(std::fs::TryLockError::Error(error)) => Err(error::io_error("lock", &path)(error)),
    }
}

/// Runs blocking work (disk, catalogue, whole-buffer hashing) on the blocking pool, inside the
/// caller's tracing span.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let span = tracing::Span::current();
    joined(tokio::task::spawn_blocking(move || span.in_scope(work)).await)?
}

/// The value of a finished blocking task; a panic in it continues in the caller.
pub(crate) fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(StorageError::ShuttingDown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(store: &Store, key: &ObjectKey, verify: Verify) -> Result<Vec<u8>> {
        let object = store.get(key).await?;
        let mut stream = object.read_all(verify);
        let mut read = Vec::new();
        while let Some(piece) = stream.next().await {
            read.extend_from_slice(&piece?);
        }
        Ok(read)
    }

    /// Damaged bytes of a small blob (in a pack) are caught by verified reads, by
    /// the scrub and by `verify`, quarantined without moving anything, and repaired by a `put`
    /// of the good bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_small_blobs_are_quarantined_and_repaired() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let mut config = StoreConfig::new(dir.path().join("data"));
        config.background = false;
        let store = Store::open(config).await.expect("open");
        let good: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let twin: Vec<u8> = good.iter().rev().copied().collect();
        let (small, other) = (
            ObjectKey::parse("small").unwrap(),
            ObjectKey::parse("other").unwrap(),
        );
        let put = |key: ObjectKey, data: Vec<u8>| {
            let store = store.clone();
            async move {
                let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data))]);
                store.put(&key, body, PutOptions::default()).await
            }
        };
        let blob = put(small.clone(), good.clone())
            .await
            .expect("put")
            .record
            .blake3;
        let other_blob = put(other.clone(), twin.clone())
            .await
            .expect("put")
            .record
            .blake3;
        assert_eq!(read(&store, &small, Verify::Yes).await.expect("read"), good);

        let mut damaged = good.clone();
        damaged[19_000] ^= 0x10;
        store
            .inner
            .catalog
            .damage_packed(blob, damaged.clone())
            .await
            .expect("damage");
        assert_eq!(
            read(&store, &small, Verify::No)
                .await
                .expect("unverified read"),
            damaged,
            "without verification the damage passes"
        );
        match read(&store, &small, Verify::Yes).await {
            Err(StorageError::Corrupt { blob: found, .. }) => assert_eq!(found, blob),
            other => panic!("expected corruption, got {other:?}"),
        }
        assert!(matches!(
            store.get(&small).await,
            Err(StorageError::Corrupt { .. })
        ));
        let files = std::fs::read_dir(dir.path().join("data").join("quarantine")).unwrap();
        assert_eq!(files.count(), 0, "nothing to move");

        // The scrub finds damage the reads have not met; `verify` reports it too.
        let mut bad_twin = twin.clone();
        bad_twin[3] ^= 0x01;
        store
            .inner
            .catalog
            .damage_packed(other_blob, bad_twin)
            .await
            .expect("damage");
        let fsck = store.fsck(true).await.expect("fsck");
        assert_eq!(fsck.corrupt, vec![other_blob]);
        let options = ScrubOptions {
            bytes_per_second: 100 << 20,
            skip_verified_within: Duration::ZERO,
        };
        let scrubbed = store.scrub(options).await.expect("scrub");
        assert_eq!(scrubbed.quarantined, vec![other_blob]);

        // Good bytes repair both, served at once (nothing stale is remembered).
        put(small.clone(), good.clone()).await.expect("repair");
        assert_eq!(read(&store, &small, Verify::Yes).await.expect("read"), good);
        put(other.clone(), twin.clone()).await.expect("repair");
        let (_, verified) = store.verify(&other).await.expect("verify");
        assert_eq!(verified, Verified::Intact);
        assert_eq!(read(&store, &other, Verify::Yes).await.expect("read"), twin);

        // A pack cut short (its last blocks lost) is damage too, found without a panic.
        drop(store);
        let pack = dir.path().join("data").join("packs").join("00000000.pack");
        let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
        file.set_len(100).expect("cut the pack");
        let mut config = StoreConfig::new(dir.path().join("data"));
        config.background = false;
        let store = Store::open(config).await.expect("reopen");
        assert!(matches!(
            store.get(&small).await,
            Err(StorageError::Corrupt { .. })
        ));
        let mut missing = store.fsck(false).await.expect("fsck").missing;
        missing.sort();
        let mut both = vec![blob, other_blob];
        both.sort();
        assert_eq!(missing, both);
    }
}
