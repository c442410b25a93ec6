//! The catalogue: keys → object records, object IDs → keys, blobs → reference counts and
//! verification, the change log, and the queues of pending work (MD5s to compute, trash to
//! purge). It never holds pixel data.
//!
//! This is the only module that knows the engine (redb; ARCHITECTURE.md has the measurement
//! that chose it). Every mutation goes through one writer thread that applies whatever
//! mutations are queued in one transaction and commits it durably before any of them is
//! acknowledged (group commit): concurrent writers share one fsync. Reads run on the blocking
//! pool against a snapshot; the live records of recently read keys are also remembered
//! ([`Recent`]), so a hot key is looked up without the engine, and without blocking.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::SystemTime;

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use crate::checksum::{Blake3Digest, Md5Digest};
use crate::error::{CatalogFailure, Result, StorageError, io_error};
use crate::fits::{FitsFilter, FitsIndex};
use crate::key::ObjectKey;
use crate::packs::{PackEnd, PackLocation, PackReader, PackWriter};
use crate::read::Wait;
use crate::recent::Recent;
use crate::record::{
    BlobRecord, BlobState, Change, ChangeKind, ObjectId, ObjectRecord, ObjectState, ObjectValue,
    PartsDigest, micros,
};
use crate::tar::TarIndex;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const OBJECT_IDS: TableDefinition<u64, &str> = TableDefinition::new("object_ids");
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
const MD5_PENDING: TableDefinition<&[u8], ()> = TableDefinition::new("md5_pending");
/// Trashed blobs by (time trashed, digest), so purging reads only what is due.
const TRASH: TableDefinition<&[u8], ()> = TableDefinition::new("trash");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// FITS indexes by blob digest (an index describes bytes, so keys sharing a blob share it).
const FITS_INDEXES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("fits_indexes");
/// Member indexes of tar archives (Measurement Sets) by blob digest.
const TAR_INDEXES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tar_indexes");
/// Where the bytes of small blobs (at most [`crate::SMALL_OBJECT_BYTES`]) are in the pack
/// files, by digest ([`PackLocation`]; ARCHITECTURE.md, "Small objects").
const PACKED_BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("packed_blobs");

const NEXT_SEQUENCE: &str = "next_object_sequence";
const LAST_CHANGE: &str = "last_change";
const LIVE_OBJECTS: &str = "live_objects";
const LIVE_BYTES: &str = "live_bytes";
/// Where appends to the packs stand after the last commit that appended.
const PACK_CURRENT: &str = "pack_current";
const PACK_END: &str = "pack_end";

/// Most mutations applied in one transaction: bounds the latency of the first in the batch.
const MAX_BATCH: usize = 512;

/// Live records remembered: a few megabytes, enough for the working set of a busy node.
const RECENT_RECORDS: usize = 16 * 1024;

/// Bytes of small blobs remembered: at most 64 MiB.
const RECENT_PACKED_BLOBS: usize = 1024;

/// Where a blob's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// A file in the blob areas (with its hash tree when large).
    File,
    /// A range of a pack file (small blobs).
    Pack(PackLocation),
}

/// Where a new object comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// Stored here by a client: a new object ID of this site, state primary.
    #[default]
    Local,
    /// A copy of an object first stored elsewhere: it keeps its identity.
    Remote {
        /// Its federation-wide identifier.
        object_id: ObjectId,
        /// When its origin stored it.
        created: SystemTime,
        /// Replica or cached.
        state: ObjectState,
    },
}

/// A verified object about to become visible.
pub(crate) struct NewObject {
    pub key: ObjectKey,
    pub size: u64,
    pub blake3: Blake3Digest,
    pub md5: Option<Md5Digest>,
    pub content_type: String,
    pub origin: Origin,
    pub now: SystemTime,
    pub parts: Option<PartsDigest>,
    /// The FITS index of its bytes, when they start like a FITS file.
    pub fits: Option<FitsIndex>,
    /// The member index of its bytes, when they are a tar archive.
    pub tar: Option<TarIndex>,
    /// The verified bytes of a small object, to append to a pack; `None` when they are (or
    /// already were) placed as a file.
    pub small_body: Option<Bytes>,
}

/// What an insert did.
pub(crate) enum InsertOutcome {
    /// The key is now bound to the content (new, or a deleted key restored with its content).
    Created(ObjectRecord),
    /// The key already held exactly this content.
    Unchanged(ObjectRecord),
}

/// Counts kept up to date by every mutation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Live keys.
    pub objects: u64,
    /// Sum of the sizes of live keys (logical bytes; shared blobs count once per key).
    pub bytes: u64,
    /// Sequence number of the newest change-log entry.
    pub last_change: u64,
}

/// Whether a write changed records that were live before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LiveRecords {
    /// It only added objects, or bound deleted keys again.
    Unchanged,
    /// It deleted a live key, or changed a live key's record or its blob's state or MD5.
    Changed,
}

type Job = Box<dyn FnOnce(&WriteTransaction, &mut PackWriter) -> Result<Reply, redb::Error> + Send>;
type Reply = Box<dyn FnOnce(Result<(), CatalogFailure>) + Send>;

/// A live record and the state of its blob, as one snapshot showed them.
type LiveObject = (ObjectRecord, BlobState);

pub(crate) struct Catalog {
    db: Arc<redb::Database>,
    /// Live records recently read. Forgotten by every mutation that can change a live record
    /// (delete, quarantine, MD5s), on the writer thread right after its commit, so nothing
    /// stale survives an acknowledged change even when the caller has gone away.
    recent: Arc<Recent<ObjectKey, LiveObject>>,
    /// Bytes of small blobs recently read, forgotten together with `recent` (a repaired blob
    /// must not be served from bytes read before the repair).
    recent_packed: Arc<Recent<Blake3Digest, Bytes>>,
    /// The pack files small blobs are read from (the writer thread appends to them).
    packs: PackReader,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
    site: u16,
}

fn failure(op: &'static str) -> impl FnOnce(redb::Error) -> StorageError {
    move |error| StorageError::Catalog {
        op,
        source: CatalogFailure(error.to_string()),
    }
}

fn damaged(what: &str) -> redb::Error {
    redb::Error::Corrupted(format!("undecodable {what} record"))
}

impl Catalog {
    /// Opens (creating if needed) the catalogue file, opens the packs in `packs_dir` for
    /// appending (cutting off what was never committed), and starts the writer thread.
    pub fn open(path: &Path, packs_dir: &Path, site: u16) -> Result<Self> {
        let open = || -> Result<(redb::Database, PackEnd), redb::Error> {
            let db = redb::Database::builder()
                .set_cache_size(256 << 20)
                .create(path)?;
            let txn = db.begin_write()?;
            txn.open_table(OBJECTS)?;
            txn.open_table(CHANGES)?;
            txn.open_table(BLOBS)?;
            txn.open_table(OBJECT_IDS)?;
            txn.open_table(MD5_PENDING)?;
            txn.open_table(TRASH)?;
            txn.open_table(META)?;
            txn.open_table(FITS_INDEXES)?;
            txn.open_table(TAR_INDEXES)?;
            txn.open_table(PACKED_BLOBS)?;
            txn.commit()?;
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let value = |name| -> Result<u64, redb::Error> {
                Ok(meta.get(name)?.map(|value| value.value()).unwrap_or(0))
            };
            let pack = u32::try_from(value(PACK_CURRENT)?).map_err(|_| damaged("pack"))?;
            let end = PackEnd {
                pack,
                end: value(PACK_END)?,
            };
            Ok((db, end))
        };
        let (db, pack_end) = open().map_err(failure("open the catalogue"))?;
        let db = Arc::new(db);
        let mut pack_writer = PackWriter::open(packs_dir, pack_end)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let writer_db = db.clone();
        let writer = thread::Builder::new()
            .name("catalog-writer".into())
            .spawn(move || write_loop(&writer_db, &queue, &mut pack_writer))
            .map_err(crate::error::io_error("start the catalogue writer", path))?;
        Ok(Self {
            db,
            recent: Arc::new(Recent::new(RECENT_RECORDS)),
            recent_packed: Arc::new(Recent::new(RECENT_PACKED_BLOBS)),
            packs: PackReader::new(packs_dir),
            jobs: Some(jobs),
            writer: Some(writer),
            site,
        })
    }

    /// Runs `work` inside the next group-committed transaction and answers once it is durable.
    async fn write<R: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&WriteTransaction) -> Result<R, redb::Error> + Send + 'static,
    ) -> Result<R> {
        self.write_with(op, move |txn, _| Ok((work(txn)?, LiveRecords::Unchanged)))
            .await
    }

    /// Like [`Catalog::write`], for work that can change live records: the remembered records
    /// are forgotten once the transaction has committed, before anyone hears of it.
    async fn write_changing<R: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&WriteTransaction) -> Result<R, redb::Error> + Send + 'static,
    ) -> Result<R> {
        self.write_with(op, move |txn, _| Ok((work(txn)?, LiveRecords::Changed)))
            .await
    }

    /// Runs `work`, which may append to the packs and also says whether it changed live
    /// records.
    async fn write_with<R: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&WriteTransaction, &mut PackWriter) -> Result<(R, LiveRecords), redb::Error>
        + Send
        + 'static,
    ) -> Result<R> {
        let (reply, answer) = oneshot::channel();
        let recent = self.recent.clone();
        let recent_packed = self.recent_packed.clone();
        let job: Job = Box::new(move |txn, packs| {
            let (value, live_records) = work(txn, packs)?;
            Ok(Box::new(move |committed: Result<(), CatalogFailure>| {
                if live_records == LiveRecords::Changed {
                    recent.invalidate();
                    recent_packed.invalidate();
                }
                let _ = reply.send(committed.map(|()| value));
            }) as Reply)
        });
        let stopped = || StorageError::Catalog {
            op,
            source: CatalogFailure("the catalogue writer has stopped".into()),
        };
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(StorageError::Catalog { op, source }),
            // The writer drops the replies of a batch it rolled back, after logging why.
            Err(_) => Err(StorageError::Catalog {
                op,
                source: CatalogFailure(
                    "the transaction was rolled back; the log has the cause".into(),
                ),
            }),
        }
    }

    /// Runs a read against a snapshot on the calling thread, which must be one that may
    /// block (the blocking pool).
    fn read_now<R>(
        &self,
        op: &'static str,
        work: impl FnOnce(&redb::ReadTransaction) -> Result<R, redb::Error>,
    ) -> Result<R> {
        let txn = self.db.begin_read().map_err(redb::Error::from);
        txn.and_then(|txn| work(&txn)).map_err(failure(op))
    }

    /// Blocking: the live record of `key` and the state of its blob, from one snapshot.
    pub fn lookup_now(&self, key: &ObjectKey) -> Result<Option<LiveObject>> {
        if let Some(found) = self.recent.get(key) {
            return Ok(Some(found));
        }
        let generation = self.recent.generation();
        let found = self.read_now("read an object", |txn| live_object(txn, key))?;
        if let Some(found) = &found {
            self.recent.remember(generation, key.clone(), found.clone());
        }
        Ok(found)
    }

    /// Without blocking: the live record of `key` and its blob's state, when recently read.
    pub fn lookup_remembered(&self, key: &ObjectKey) -> Option<LiveObject> {
        self.recent.get(key)
    }

    /// Blocking: the content a key is bound to, live or deleted.
    pub fn binding_now(&self, key: &ObjectKey) -> Result<Option<Blake3Digest>> {
        self.read_now("read an object", |txn| {
            Ok(object_value(txn, key)?.map(|value| value.blake3))
        })
    }

    /// Blocking: the bytes of a packed blob, `None` when it is a file (or unknown).
    pub fn packed_now(&self, blob: &Blake3Digest) -> Result<Option<Bytes>> {
        if let Some(bytes) = self.recent_packed.get(blob) {
            return Ok(Some(bytes));
        }
        let generation = self.recent_packed.generation();
        let found = self.read_packed_whole(blob)?;
        Ok(found.map(|(bytes, whole)| {
            if whole {
                self.recent_packed
                    .remember(generation, *blob, bytes.clone());
            }
            bytes
        }))
    }

    /// Without blocking: the bytes of a packed blob, when recently read.
    pub fn packed_remembered(&self, blob: &Blake3Digest) -> Option<Bytes> {
        self.recent_packed.get(blob)
    }

    /// Blocking: the bytes of a packed blob read afresh from its pack (for re-hashing).
    /// A pack shorter than recorded gives fewer bytes than the blob's size.
    pub fn read_packed(&self, blob: &Blake3Digest) -> Result<Option<Bytes>> {
        Ok(self.read_packed_whole(blob)?.map(|(bytes, _)| bytes))
    }

    /// Blocking: the bytes of a packed blob, and whether they are all there.
    pub fn read_packed_whole(&self, blob: &Blake3Digest) -> Result<Option<(Bytes, bool)>> {
        let location = self.read_now("read a small blob", |txn| {
            let table = txn.open_table(PACKED_BLOBS)?;
            let location = table.get(&blob.0[..])?;
            location
                .map(|bytes| PackLocation::decode(bytes.value()).ok_or_else(|| damaged("pack")))
                .transpose()
        })?;
        let Some(location) = location else {
            return Ok(None);
        };
        match self.packs.read(location, Wait::Yes) {
            Ok(bytes) => Ok(Some((bytes, true))),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Ok(Some((Bytes::new(), false)))
            }
            Err(error) => Err(StorageError::Io {
                op: "read",
                path: self.packs.path(location.pack),
                source: error,
            }),
        }
    }

    /// Blocking: gives a purged blob's pack range back to the file system.
    pub fn punch_now(&self, location: PackLocation) -> Result<()> {
        self.packs
            .punch(location)
            .map_err(io_error("punch a hole in", &self.packs.path(location.pack)))
    }

    /// Points a packed blob at other bytes, as damage to its pack would (tests only).
    #[cfg(test)]
    pub async fn damage_packed(&self, blob: Blake3Digest, bytes: Vec<u8>) -> Result<()> {
        self.write_with("damage a small blob", move |txn, packs| {
            let location = packs.append(&bytes)?;
            txn.open_table(PACKED_BLOBS)?
                .insert(&blob.0[..], &location.encode()[..])?;
            Ok(((), LiveRecords::Changed))
        })
        .await
    }

    /// Runs a read against a snapshot on the blocking pool.
    async fn read<R: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&redb::ReadTransaction) -> Result<R, redb::Error> + Send + 'static,
    ) -> Result<R> {
        let db = self.db.clone();
        crate::blocking(move || {
            let txn = db.begin_read().map_err(redb::Error::from);
            txn.and_then(|txn| work(&txn)).map_err(failure(op))
        })
        .await
    }

    /// Binds `object.key` to its content, write-once.
    pub async fn insert(&self, object: NewObject) -> Result<InsertOutcome> {
        let site = self.site;
        self.write_with("record an object", move |txn, packs| {
            insert(txn, packs, object, site)
        })
        .await?
    }

    /// Tombstones a live key. Answers its record and, when its blob lost its last reference
    /// (and is now trashed), where the blob's bytes are.
    pub async fn delete(
        &self,
        key: ObjectKey,
        now: SystemTime,
    ) -> Result<(ObjectRecord, Option<Home>)> {
        self.write_changing("delete an object", move |txn| delete(txn, key, now))
            .await?
    }

    /// Records MD5s of blobs computed after ingest, in one transaction.
    pub async fn set_md5s(&self, computed: Vec<(Blake3Digest, Md5Digest)>) -> Result<()> {
        self.write_changing("record MD5s", move |txn| {
            for (blob, md5) in computed {
                txn.open_table(MD5_PENDING)?.remove(&blob.0[..])?;
                update_blob(txn, &blob, |record| {
                    record.md5.get_or_insert(md5);
                })?;
            }
            Ok(())
        })
        .await
    }

    /// Records that a blob was re-hashed and found whole.
    pub async fn mark_verified(&self, blob: Blake3Digest, now: SystemTime) -> Result<()> {
        self.write("record a verification", move |txn| {
            update_blob(txn, &blob, |record| record.last_verified = Some(now))
        })
        .await
    }

    /// Marks a live blob quarantined; answers where its bytes are when it was live.
    pub async fn quarantine(&self, blob: Blake3Digest, now: SystemTime) -> Result<Option<Home>> {
        self.write_changing("quarantine a blob", move |txn| {
            let mut was_live = false;
            update_blob(txn, &blob, |record| {
                if record.state == BlobState::Live {
                    record.state = BlobState::Quarantined { since: now };
                    was_live = true;
                }
            })?;
            // Its MD5 is computed when good bytes come back (`reference_blob` queues it).
            txn.open_table(MD5_PENDING)?.remove(&blob.0[..])?;
            // Damaged packed bytes stay where they are, unserved, until a `put` of
            // good bytes replaces them.
            match was_live {
                true => home(txn, &blob).map(Some),
                false => Ok(None),
            }
        })
        .await
    }

    /// Forgets a trashed, unreferenced blob whose retention ended at `cutoff`; answers where
    /// its bytes were when it did (a blob referenced again meanwhile is kept). Bytes kept in
    /// the catalogue go with the record.
    pub async fn purge(&self, blob: Blake3Digest, cutoff: SystemTime) -> Result<Option<Home>> {
        self.write("purge a blob", move |txn| {
            let home = home(txn, &blob)?;
            let mut blobs = txn.open_table(BLOBS)?;
            let Some(record) = blobs.get(&blob.0[..])?.map(|v| v.value().to_vec()) else {
                return Ok(None);
            };
            let record = BlobRecord::decode(&record).ok_or_else(|| damaged("blob"))?;
            match record.state {
                BlobState::Trashed { since } if since <= cutoff && record.references == 0 => {
                    blobs.remove(&blob.0[..])?;
                    txn.open_table(TRASH)?
                        .remove(&trash_key(since, &blob)[..])?;
                    txn.open_table(MD5_PENDING)?.remove(&blob.0[..])?;
                    txn.open_table(FITS_INDEXES)?.remove(&blob.0[..])?;
                    txn.open_table(TAR_INDEXES)?.remove(&blob.0[..])?;
                    txn.open_table(PACKED_BLOBS)?.remove(&blob.0[..])?;
                    Ok(Some(home))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    /// The live record of `key`.
    pub async fn get(&self, key: &ObjectKey) -> Result<Option<ObjectRecord>> {
        let key = key.clone();
        let found = self.read("read an object", move |txn| live_object(txn, &key));
        Ok(found.await?.map(|(record, _)| record))
    }

    /// The key an object ID names (also when deleted).
    pub async fn key_of(&self, object_id: ObjectId) -> Result<Option<ObjectKey>> {
        self.read("read an object id", move |txn| {
            let table = txn.open_table(OBJECT_IDS)?;
            let key = table.get(object_id.0)?.map(|key| key.value().to_owned());
            key.map(|key| ObjectKey::parse(&key).map_err(|_| damaged("object id")))
                .transpose()
        })
        .await
    }

    /// What the catalogue knows of a blob.
    pub async fn blob(&self, blob: Blake3Digest) -> Result<Option<BlobRecord>> {
        self.read("read a blob", move |txn| blob_record(txn, &blob))
            .await
    }

    /// The FITS index of a blob, when it was indexed at ingest.
    pub async fn fits_index(&self, blob: Blake3Digest) -> Result<Option<FitsIndex>> {
        self.read("read a FITS index", move |txn| {
            content_index(&txn.open_table(FITS_INDEXES)?, &blob, FitsIndex::decode)
        })
        .await
    }

    /// The member index of a blob that is a tar archive, when it was indexed at ingest.
    pub async fn tar_index(&self, blob: Blake3Digest) -> Result<Option<TarIndex>> {
        self.read("read a tar index", move |txn| {
            content_index(&txn.open_table(TAR_INDEXES)?, &blob, TarIndex::decode)
        })
        .await
    }

    /// Up to `limit` live records with keys starting with `prefix`, after `after`, in key order.
    pub async fn list(
        &self,
        prefix: String,
        after: Option<ObjectKey>,
        limit: usize,
        filter: Option<FitsFilter>,
    ) -> Result<Vec<ObjectRecord>> {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_str().to_owned()),
            None => Bound::Unbounded,
        };
        self.list_page(prefix, start, limit, filter).await
    }

    /// Up to `limit` live objects whose keys start with `prefix`, from `start` on, in key
    /// order; with a filter, only those whose FITS index passes it.
    pub async fn list_page(
        &self,
        prefix: String,
        start: Bound<String>,
        limit: usize,
        filter: Option<FitsFilter>,
    ) -> Result<Vec<ObjectRecord>> {
        self.read("list objects", move |txn| {
            let indexes = match filter {
                Some(_) => Some(txn.open_table(FITS_INDEXES)?),
                None => None,
            };
            let objects = txn.open_table(OBJECTS)?;
            // Begin at the later of the prefix and the caller's start.
            let from = match &start {
                Bound::Included(start) | Bound::Excluded(start)
                    if start.as_str() >= prefix.as_str() =>
                {
                    start.as_str()
                }
                _ => prefix.as_str(),
            };
            let mut found = Vec::new();
            for entry in objects.range(from..)? {
                let (key, value) = entry?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) || found.len() == limit {
                    break;
                }
                if matches!(&start, Bound::Excluded(start) if key <= start.as_str()) {
                    continue;
                }
                let value = ObjectValue::decode(value.value()).ok_or_else(|| damaged("object"))?;
                if value.deleted.is_some() {
                    continue;
                }
                if let (Some(filter), Some(indexes)) = (filter, &indexes) {
                    let index = content_index(indexes, &value.blake3, FitsIndex::decode)?;
                    if !filter.matches(index.as_ref()) {
                        continue;
                    }
                }
                let key = ObjectKey::parse(key).map_err(|_| damaged("object key"))?;
                let md5 = blob_record(txn, &value.blake3)?.and_then(|blob| blob.md5);
                found.push(value.to_record(key, md5));
            }
            Ok(found)
        })
        .await
    }

    /// Up to `limit` change-log entries after sequence number `since`.
    pub async fn changes(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        self.read("read the change log", move |txn| {
            let changes = txn.open_table(CHANGES)?;
            let mut found = Vec::new();
            for entry in changes.range(since.saturating_add(1)..)?.take(limit) {
                let (sequence, bytes) = entry?;
                let change = Change::decode(sequence.value(), bytes.value())
                    .ok_or_else(|| damaged("change"))?;
                found.push(change);
            }
            Ok(found)
        })
        .await
    }

    /// Up to `limit` blobs after `after`, in digest order.
    pub async fn blobs(
        &self,
        after: Option<Blake3Digest>,
        limit: usize,
    ) -> Result<Vec<(Blake3Digest, BlobRecord)>> {
        self.read("list blobs", move |txn| {
            let blobs = txn.open_table(BLOBS)?;
            let start = after.map(|digest| digest.0).unwrap_or([0; 32]);
            let mut found = Vec::new();
            for entry in blobs.range(&start[..]..)? {
                let (digest, bytes) = entry?;
                let digest =
                    Blake3Digest(digest.value().try_into().map_err(|_| damaged("blob key"))?);
                if Some(digest) == after {
                    continue;
                }
                if found.len() == limit {
                    break;
                }
                let record = BlobRecord::decode(bytes.value()).ok_or_else(|| damaged("blob"))?;
                found.push((digest, record));
            }
            Ok(found)
        })
        .await
    }

    /// Up to `limit` blobs trashed at or before `cutoff`.
    pub async fn trashed_before(
        &self,
        cutoff: SystemTime,
        limit: usize,
    ) -> Result<Vec<Blake3Digest>> {
        self.read("list the trash", move |txn| {
            let trash = txn.open_table(TRASH)?;
            let end = trash_key(cutoff, &Blake3Digest([0xff; 32]));
            let mut found = Vec::new();
            for entry in trash.range(..=&end[..])?.take(limit) {
                let (key, _) = entry?;
                let digest = key.value().get(8..).and_then(|bytes| bytes.try_into().ok());
                found.push(Blake3Digest(digest.ok_or_else(|| damaged("trash"))?));
            }
            Ok(found)
        })
        .await
    }

    /// Up to `limit` blobs after `after` whose MD5 is still to be computed.
    pub async fn md5_pending(
        &self,
        after: Option<Blake3Digest>,
        limit: usize,
    ) -> Result<Vec<Blake3Digest>> {
        self.read("list pending MD5s", move |txn| {
            let pending = txn.open_table(MD5_PENDING)?;
            let start = after.map(|digest| digest.0).unwrap_or([0; 32]);
            let mut found = Vec::new();
            for entry in pending.range(&start[..]..)? {
                let (digest, _) = entry?;
                let digest = Blake3Digest(
                    digest
                        .value()
                        .try_into()
                        .map_err(|_| damaged("md5 queue"))?,
                );
                if Some(digest) == after {
                    continue;
                }
                if found.len() == limit {
                    break;
                }
                found.push(digest);
            }
            Ok(found)
        })
        .await
    }

    /// Object and byte counts and the newest change.
    pub async fn stats(&self) -> Result<CatalogStats> {
        self.read("read statistics", |txn| {
            let meta = txn.open_table(META)?;
            let value = |name: &str| -> Result<u64, redb::Error> {
                Ok(meta.get(name)?.map(|value| value.value()).unwrap_or(0))
            };
            Ok(CatalogStats {
                objects: value(LIVE_OBJECTS)?,
                bytes: value(LIVE_BYTES)?,
                last_change: value(LAST_CHANGE)?,
            })
        })
        .await
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        // Closing the queue ends the writer after it has committed what was queued.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: one transaction per batch of queued jobs, committed before any reply.
/// Bytes the batch appended to the packs are fsynced first, and where the packs end is
/// recorded in the same transaction.
fn write_loop(db: &redb::Database, queue: &mpsc::Receiver<Job>, packs: &mut PackWriter) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let outcome = (|| -> Result<Vec<Reply>, redb::Error> {
            let txn = db.begin_write()?;
            let mut replies = Vec::with_capacity(jobs.len());
            for job in jobs {
                replies.push(job(&txn, packs)?);
            }
            if let Some(end) = packs.sync()? {
                let mut meta = txn.open_table(META)?;
                meta.insert(PACK_CURRENT, u64::from(end.pack))?;
                meta.insert(PACK_END, end.end)?;
            }
            txn.commit()?;
            Ok(replies)
        })();
        match outcome {
            Ok(replies) => {
                packs.committed();
                replies.into_iter().for_each(|reply| reply(Ok(())));
            }
            Err(error) => {
                // The whole batch was rolled back; its jobs' senders are dropped, and each
                // waiting caller learns that its change did not happen.
                tracing::error!("catalogue transaction failed: {error:#}");
                if let Err(error) = packs.rolled_back() {
                    tracing::error!("could not reopen the pack file: {error:#}");
                }
            }
        }
    }
}

/// The live record of `key` (MD5 joined from its blob) and the state of its blob.
fn live_object(
    txn: &redb::ReadTransaction,
    key: &ObjectKey,
) -> Result<Option<(ObjectRecord, BlobState)>, redb::Error> {
    let Some(value) = object_value(txn, key)? else {
        return Ok(None);
    };
    if value.deleted.is_some() {
        return Ok(None);
    }
    let blob = blob_record(txn, &value.blake3)?;
    let state = blob.map_or(BlobState::Live, |blob| blob.state);
    let md5 = blob.and_then(|blob| blob.md5);
    Ok(Some((value.to_record(key.clone(), md5), state)))
}

/// The content index (FITS, tar) a table keeps for a blob, decoded.
fn content_index<T>(
    table: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    blob: &Blake3Digest,
    decode: fn(&[u8]) -> Option<T>,
) -> Result<Option<T>, redb::Error> {
    table
        .get(&blob.0[..])?
        .map(|bytes| decode(bytes.value()).ok_or_else(|| damaged("content index")))
        .transpose()
}

fn object_value(
    txn: &redb::ReadTransaction,
    key: &ObjectKey,
) -> Result<Option<ObjectValue>, redb::Error> {
    let objects = txn.open_table(OBJECTS)?;
    let value = objects.get(key.as_str())?;
    value
        .map(|bytes| ObjectValue::decode(bytes.value()).ok_or_else(|| damaged("object")))
        .transpose()
}

fn blob_record(
    txn: &redb::ReadTransaction,
    blob: &Blake3Digest,
) -> Result<Option<BlobRecord>, redb::Error> {
    let blobs = txn.open_table(BLOBS)?;
    let bytes = blobs.get(&blob.0[..])?;
    bytes
        .map(|bytes| BlobRecord::decode(bytes.value()).ok_or_else(|| damaged("blob")))
        .transpose()
}

/// Where the bytes of a recorded blob are, seen from inside a write.
fn home(txn: &WriteTransaction, blob: &Blake3Digest) -> Result<Home, redb::Error> {
    let table = txn.open_table(PACKED_BLOBS)?;
    let location = table.get(&blob.0[..])?;
    match location {
        Some(bytes) => Ok(Home::Pack(
            PackLocation::decode(bytes.value()).ok_or_else(|| damaged("pack"))?,
        )),
        None => Ok(Home::File),
    }
}

/// Appends the verified bytes of a small blob to the packs and records where (a damaged copy
/// recorded before is left behind, unreferenced).
fn keep_packed(
    txn: &WriteTransaction,
    packs: &mut PackWriter,
    object: &NewObject,
) -> Result<(), redb::Error> {
    if let Some(bytes) = &object.small_body {
        let location = packs.append(bytes)?;
        txn.open_table(PACKED_BLOBS)?
            .insert(&object.blake3.0[..], &location.encode()[..])?;
    }
    Ok(())
}

fn trash_key(since: SystemTime, blob: &Blake3Digest) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&micros(since).to_be_bytes());
    key[8..].copy_from_slice(&blob.0);
    key
}

fn update_blob(
    txn: &WriteTransaction,
    blob: &Blake3Digest,
    change: impl FnOnce(&mut BlobRecord),
) -> Result<(), redb::Error> {
    let mut blobs = txn.open_table(BLOBS)?;
    let Some(bytes) = blobs.get(&blob.0[..])?.map(|v| v.value().to_vec()) else {
        return Ok(());
    };
    let mut record = BlobRecord::decode(&bytes).ok_or_else(|| damaged("blob"))?;
    change(&mut record);
    blobs.insert(&blob.0[..], &record.encode()[..])?;
    Ok(())
}

fn add_to_meta(txn: &WriteTransaction, name: &str, delta: i128) -> Result<u64, redb::Error> {
    let mut meta = txn.open_table(META)?;
    let current = meta.get(name)?.map(|value| value.value()).unwrap_or(0);
    let next = u64::try_from((i128::from(current) + delta).max(0)).unwrap_or(u64::MAX);
    meta.insert(name, next)?;
    Ok(next)
}

fn append_change(
    txn: &WriteTransaction,
    kind: ChangeKind,
    key: &ObjectKey,
    value: &ObjectValue,
    time: SystemTime,
) -> Result<(), redb::Error> {
    let sequence = add_to_meta(txn, LAST_CHANGE, 1)?;
    let change = Change {
        sequence,
        kind,
        key: key.clone(),
        object_id: value.object_id,
        blake3: value.blake3,
        size: value.size,
        time,
    };
    txn.open_table(CHANGES)?
        .insert(sequence, &change.encode()[..])?;
    let sign = if kind == ChangeKind::Put { 1 } else { -1 };
    add_to_meta(txn, LIVE_OBJECTS, sign)?;
    add_to_meta(txn, LIVE_BYTES, sign * i128::from(value.size))?;
    Ok(())
}

/// Adds a reference to a blob whose verified bytes the caller has just put in place, and
/// answers its MD5 as far as known.
/// Adds a reference to the object's blob; answers its MD5, and whether the blob's record
/// changed for keys already live (a quarantined blob revived, an MD5 learnt).
fn reference_blob(
    txn: &WriteTransaction,
    packs: &mut PackWriter,
    object: &NewObject,
) -> Result<(Option<Md5Digest>, LiveRecords), redb::Error> {
    let mut blobs = txn.open_table(BLOBS)?;
    let existing = blobs.get(&object.blake3.0[..])?.map(|v| v.value().to_vec());
    let mut live_records = LiveRecords::Unchanged;
    let record = match existing {
        None => {
            if let Some(index) = &object.fits {
                txn.open_table(FITS_INDEXES)?
                    .insert(&object.blake3.0[..], &index.encode()[..])?;
            }
            if let Some(index) = &object.tar {
                txn.open_table(TAR_INDEXES)?
                    .insert(&object.blake3.0[..], &index.encode()[..])?;
            }
            keep_packed(txn, packs, object)?;
            BlobRecord {
                size: object.size,
                references: 1,
                md5: object.md5,
                last_verified: Some(object.now),
                state: BlobState::Live,
            }
        }
        Some(bytes) => {
            let mut record = BlobRecord::decode(&bytes).ok_or_else(|| damaged("blob"))?;
            if let BlobState::Trashed { since } = record.state {
                txn.open_table(TRASH)?
                    .remove(&trash_key(since, &object.blake3)[..])?;
            }
            if matches!(record.state, BlobState::Quarantined { .. })
                || (record.md5.is_none() && object.md5.is_some())
            {
                live_records = LiveRecords::Changed;
            }
            // Live or trashed bytes are in place (packed, or a file kept from before small
            // blobs were packed); quarantined ones are replaced by the verified bytes.
            if matches!(record.state, BlobState::Quarantined { .. }) {
                keep_packed(txn, packs, object)?;
            }
            record.references += 1;
            record.state = BlobState::Live;
            record.md5 = record.md5.or(object.md5);
            record
        }
    };
    blobs.insert(&object.blake3.0[..], &record.encode()[..])?;
    let mut pending = txn.open_table(MD5_PENDING)?;
    match record.md5 {
        None => pending.insert(&object.blake3.0[..], ())?,
        Some(_) => pending.remove(&object.blake3.0[..])?,
    };
    Ok((record.md5, live_records))
}

fn insert(
    txn: &WriteTransaction,
    packs: &mut PackWriter,
    object: NewObject,
    site: u16,
) -> Result<(Result<InsertOutcome>, LiveRecords), redb::Error> {
    let mut objects = txn.open_table(OBJECTS)?;
    let existing = objects
        .get(object.key.as_str())?
        .map(|v| v.value().to_vec());
    let existing = existing
        .map(|bytes| ObjectValue::decode(&bytes).ok_or_else(|| damaged("object")))
        .transpose()?;
    if let Some(value) = &existing
        && value.blake3 != object.blake3
    {
        let conflict = StorageError::Conflict {
            key: object.key,
            existing: value.blake3,
        };
        return Ok((Err(conflict), LiveRecords::Unchanged));
    }
    match existing {
        Some(value) if value.deleted.is_none() => {
            // Identical content: nothing changes, except that a quarantined blob the caller
            // has just replaced with verified bytes is live again.
            let mut md5 = None;
            let mut live_records = LiveRecords::Unchanged;
            update_blob(txn, &object.blake3, |record| {
                if matches!(record.state, BlobState::Quarantined { .. }) {
                    record.state = BlobState::Live;
                    record.last_verified = Some(object.now);
                    live_records = LiveRecords::Changed;
                }
                md5 = record.md5;
            })?;
            if live_records == LiveRecords::Changed {
                keep_packed(txn, packs, &object)?;
            }
            let unchanged = InsertOutcome::Unchanged(value.to_record(object.key, md5));
            Ok((Ok(unchanged), live_records))
        }
        Some(mut value) => {
            // A deleted key stored again with its own content is restored, same identity.
            value.deleted = None;
            objects.insert(object.key.as_str(), &value.encode()[..])?;
            drop(objects);
            let (md5, live_records) = reference_blob(txn, packs, &object)?;
            append_change(txn, ChangeKind::Put, &object.key, &value, object.now)?;
            let created = InsertOutcome::Created(value.to_record(object.key, md5));
            Ok((Ok(created), live_records))
        }
        None => {
            let mut ids = txn.open_table(OBJECT_IDS)?;
            let (object_id, created, state) = match object.origin {
                Origin::Local => {
                    let sequence = add_to_meta(txn, NEXT_SEQUENCE, 1)?;
                    let Some(id) = ObjectId::new(site, sequence) else {
                        let exhausted = StorageError::ObjectIdsExhausted;
                        return Ok((Err(exhausted), LiveRecords::Unchanged));
                    };
                    (id, object.now, ObjectState::Primary)
                }
                Origin::Remote {
                    object_id,
                    created,
                    state,
                } => {
                    if let Some(other) = ids.get(object_id.0)? {
                        let key =
                            ObjectKey::parse(other.value()).map_err(|_| damaged("object id"))?;
                        let taken = StorageError::ObjectIdTaken {
                            object_id: object_id.0,
                            key,
                        };
                        return Ok((Err(taken), LiveRecords::Unchanged));
                    }
                    (object_id, created, state)
                }
            };
            let value = ObjectValue {
                object_id,
                size: object.size,
                blake3: object.blake3,
                created,
                origin_site: object_id.site(),
                state,
                content_type: object.content_type.clone(),
                deleted: None,
                parts: object.parts,
            };
            objects.insert(object.key.as_str(), &value.encode()[..])?;
            ids.insert(object_id.0, object.key.as_str())?;
            drop((objects, ids));
            let (md5, live_records) = reference_blob(txn, packs, &object)?;
            append_change(txn, ChangeKind::Put, &object.key, &value, object.now)?;
            let created = InsertOutcome::Created(value.to_record(object.key, md5));
            Ok((Ok(created), live_records))
        }
    }
}

fn delete(
    txn: &WriteTransaction,
    key: ObjectKey,
    now: SystemTime,
) -> Result<Result<(ObjectRecord, Option<Home>)>, redb::Error> {
    let mut objects = txn.open_table(OBJECTS)?;
    let existing = objects.get(key.as_str())?.map(|v| v.value().to_vec());
    let Some(mut value) = existing.and_then(|bytes| ObjectValue::decode(&bytes)) else {
        return Ok(Err(StorageError::NotFound { key }));
    };
    if value.deleted.is_some() {
        return Ok(Err(StorageError::NotFound { key }));
    }
    value.deleted = Some(now);
    objects.insert(key.as_str(), &value.encode()[..])?;
    drop(objects);
    let mut md5 = None;
    let mut unreferenced = false;
    update_blob(txn, &value.blake3, |record| {
        record.references = record.references.saturating_sub(1);
        md5 = record.md5;
        if record.references == 0 && record.state == BlobState::Live {
            record.state = BlobState::Trashed { since: now };
            unreferenced = true;
        }
    })?;
    if unreferenced {
        txn.open_table(TRASH)?
            .insert(&trash_key(now, &value.blake3)[..], ())?;
        // Trashed bytes need no MD5; a restore queues it again.
        txn.open_table(MD5_PENDING)?.remove(&value.blake3.0[..])?;
    }
    append_change(txn, ChangeKind::Delete, &key, &value, now)?;
    let trashed = match unreferenced {
        true => Some(home(txn, &value.blake3)?),
        false => None,
    };
    Ok(Ok((value.to_record(key, md5), trashed)))
}
