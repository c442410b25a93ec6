//! The two engines behind one small interface, each used the way the catalogue
//! would use it: both mappings of a group of records written atomically and
//! made durable before the call returns.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, TableDefinition};

use crate::record::Record;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Same cache budget for both engines, so neither wins by using more memory.
pub const CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Which of the two mappings a read goes to.
#[derive(Debug, Clone, Copy)]
pub enum Mapping {
    /// file name → catalogue entry
    ByKey,
    /// object id (u64 big-endian) → file name
    ById,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sled,
    Redb,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sled" => Ok(Self::Sled),
            "redb" => Ok(Self::Redb),
            other => Err(format!("unknown engine {other:?} (want sled or redb)").into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sled => "sled",
            Self::Redb => "redb",
        }
    }
}

/// A consistent view for many reads (used by the crash checker, so it sees one
/// state of the database rather than paying for a transaction per read).
pub trait Reader {
    fn get(&self, mapping: Mapping, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

pub trait Engine {
    /// Writes both mappings of every record in `group` as one atomic unit and
    /// returns only once that unit is durable (the acknowledgement point).
    fn write_group(&self, group: &[Record]) -> Result<()>;

    /// A single point read of the by-key mapping as an independent request
    /// would do it (for redb: its own read transaction).
    fn lookup_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    fn reader(&self) -> Result<Box<dyn Reader + '_>>;
}

/// How to open: `Create` for writers starting on an empty directory, `Existing`
/// for readers and the crash checker, which must not silently create an empty
/// database where one is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    Create,
    Existing,
}

pub fn open(kind: Kind, dir: &Path, mode: OpenMode) -> Result<Box<dyn Engine>> {
    match kind {
        Kind::Sled => Ok(Box::new(SledEngine::open(dir, mode)?)),
        Kind::Redb => Ok(Box::new(RedbEngine::open(dir, mode)?)),
    }
}

// ---------------------------------------------------------------- sled ----

/// sled has atomic batches only within one Tree, so both mappings share one
/// Tree and are told apart by a prefix byte.
const SLED_KEY_PREFIX: u8 = b'k';
const SLED_ID_PREFIX: u8 = b'i';

struct SledEngine {
    db: sled::Db,
}

impl SledEngine {
    fn open(dir: &Path, mode: OpenMode) -> Result<Self> {
        // sled keeps its metadata in `conf`; without it there is no database.
        if mode == OpenMode::Existing && !dir.join("conf").is_file() {
            return Err(format!("no sled database in {}", dir.display()).into());
        }
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES as u64)
            .open()?;
        Ok(Self { db })
    }
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

fn sled_get(db: &sled::Db, mapping: Mapping, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let prefix = match mapping {
        Mapping::ByKey => SLED_KEY_PREFIX,
        Mapping::ById => SLED_ID_PREFIX,
    };
    Ok(db.get(prefixed(prefix, key))?.map(|v| v.to_vec()))
}

impl Engine for SledEngine {
    fn write_group(&self, group: &[Record]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for r in group {
            batch.insert(prefixed(SLED_KEY_PREFIX, &r.key), &r.value[..]);
            batch.insert(prefixed(SLED_ID_PREFIX, &r.id), r.key.as_slice());
        }
        // apply_batch makes the group atomic; flush() fsyncs it, which is what
        // makes it durable (sled's own background flush runs only every 500 ms).
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn lookup_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        sled_get(&self.db, Mapping::ByKey, key)
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(SledReader { db: &self.db }))
    }
}

/// sled has no read snapshots; reads see the latest state, which is the same
/// thing for the checker because nothing writes while it runs.
struct SledReader<'a> {
    db: &'a sled::Db,
}

impl Reader for SledReader<'_> {
    fn get(&self, mapping: Mapping, key: &[u8]) -> Result<Option<Vec<u8>>> {
        sled_get(self.db, mapping, key)
    }
}

// ---------------------------------------------------------------- redb ----

/// Byte-slice keys in both tables so that redb stores exactly the bytes sled
/// stores (redb's native `u64` key would be little-endian and fixed-width).
const BY_KEY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_key");
const BY_ID: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_id");

const REDB_FILE: &str = "catalogue.redb";

struct RedbEngine {
    db: redb::Database,
}

impl RedbEngine {
    fn open(dir: &Path, mode: OpenMode) -> Result<Self> {
        let path: PathBuf = dir.join(REDB_FILE);
        let mut builder = redb::Builder::new();
        builder.set_cache_size(CACHE_BYTES);
        let db = match mode {
            OpenMode::Create => {
                std::fs::create_dir_all(dir)?;
                let db = builder.create(&path)?;
                // Create both tables up front so readers never meet a
                // "table does not exist" on a fresh database.
                let txn = db.begin_write()?;
                txn.open_table(BY_KEY)?;
                txn.open_table(BY_ID)?;
                txn.commit()?;
                db
            }
            OpenMode::Existing => builder.open(&path)?,
        };
        Ok(Self { db })
    }
}

impl Engine for RedbEngine {
    fn write_group(&self, group: &[Record]) -> Result<()> {
        // One write transaction covers both tables: atomic. The default
        // durability (Immediate) means commit() returns after the fsync.
        let txn = self.db.begin_write()?;
        {
            let mut by_key = txn.open_table(BY_KEY)?;
            let mut by_id = txn.open_table(BY_ID)?;
            for r in group {
                by_key.insert(r.key.as_slice(), &r.value[..])?;
                by_id.insert(&r.id[..], r.key.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn lookup_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BY_KEY)?;
        Ok(table.get(key)?.map(|g| g.value().to_vec()))
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        let txn = self.db.begin_read()?;
        Ok(Box::new(RedbReader {
            by_key: txn.open_table(BY_KEY)?,
            by_id: txn.open_table(BY_ID)?,
        }))
    }
}

struct RedbReader {
    by_key: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    by_id: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl Reader for RedbReader {
    fn get(&self, mapping: Mapping, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = match mapping {
            Mapping::ByKey => &self.by_key,
            Mapping::ById => &self.by_id,
        };
        Ok(table.get(key)?.map(|g| g.value().to_vec()))
    }
}
