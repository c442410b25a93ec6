//! Multipart uploads staged on disk: `<data-dir>/s3/uploads/<upload-id>/` holds `upload.json`
//! (bucket, key, content type, start time) and one file per part,
//! `part-<number>-<md5 hex>`, written to a temporary name, fsynced and renamed, so a part is
//! either whole or absent, also across a crash or restart. Parts never sit in memory beyond
//! one 1 MiB piece. Completion streams the parts, in order, into one `Store::put`; abandoned
//! uploads are removed after the expiry by `expire`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use md5::Digest;
use serde::{Deserialize, Serialize};
use storage::Md5Digest;

/// Pieces written to and read from part files.
const PIECE_BYTES: usize = 1 << 20;

/// What an upload will become.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    /// Target bucket.
    pub bucket: String,
    /// Target key within the bucket.
    pub key: String,
    /// Content type given at creation.
    pub content_type: Option<String>,
    /// Start, in microseconds since the epoch.
    pub created_micros: u64,
}

impl UploadMeta {
    /// When the upload started.
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.created_micros)
    }
}

/// One stored part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// 1 to 10000.
    pub number: u16,
    /// MD5 of its bytes (its ETag).
    pub md5: Md5Digest,
    /// Bytes.
    pub size: u64,
    /// When it was written.
    pub modified: SystemTime,
    /// Its file.
    pub path: PathBuf,
}

/// Why a part was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// The request body failed (cut short, too large, stalled, checksum mismatch).
    #[error("request body: {0}")]
    Body(#[source] io::Error),
    /// The body does not match its `Content-MD5`.
    #[error("the part does not match its Content-MD5")]
    Md5Mismatch,
    /// Our disk.
    #[error("write part: {0}")]
    Io(#[from] io::Error),
}

/// The staging area of multipart uploads.
#[derive(Debug, Clone)]
pub struct Uploads {
    dir: PathBuf,
}

impl Uploads {
    /// Opens (creating) `<data-dir>/s3/uploads` and removes parts whose writing was
    /// interrupted by a crash (temporary files).
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("s3").join("uploads");
        std::fs::create_dir_all(&dir)?;
        let uploads = Self { dir };
        for (id, _) in uploads.list()? {
            for entry in std::fs::read_dir(uploads.dir.join(&id))? {
                let path = entry?.path();
                if path.extension().is_some_and(|ext| ext == "tmp") {
                    std::fs::remove_file(path)?;
                }
            }
        }
        Ok(uploads)
    }

    /// The directory of upload `id`, if `id` has the form of an upload ID (so a client's ID
    /// never names a path outside the staging area).
    fn upload_dir(&self, id: &str) -> Option<PathBuf> {
        let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        well_formed.then(|| self.dir.join(id))
    }

    /// Starts an upload durably; answers its ID.
    pub fn create(&self, meta: &UploadMeta) -> anyhow::Result<String> {
        let id = crate::auth::random_hex(16)?;
        let dir = self.dir.join(&id);
        std::fs::create_dir(&dir)?;
        let temporary = dir.join("upload.json.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec(meta)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, dir.join("upload.json"))?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(id)
    }

    /// What upload `id` will become; None when there is no such upload.
    pub fn meta(&self, id: &str) -> io::Result<Option<UploadMeta>> {
        let Some(dir) = self.upload_dir(id) else {
            return Ok(None);
        };
        match std::fs::read(dir.join("upload.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Every upload with its target, in ID order.
    pub fn list(&self) -> io::Result<Vec<(String, UploadMeta)>> {
        let mut uploads = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let Some(id) = entry?.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(meta) = self.meta(&id)? {
                uploads.push((id, meta));
            }
        }
        uploads.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(uploads)
    }

    /// The stored parts of upload `id`, by number.
    pub fn parts(&self, id: &str) -> io::Result<Vec<PartInfo>> {
        let Some(dir) = self.upload_dir(id) else {
            return Ok(Vec::new());
        };
        let mut parts = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((number, md5)) = name.to_str().and_then(parse_part_name) else {
                continue;
            };
            let metadata = entry.metadata()?;
            parts.push(PartInfo {
                number,
                md5,
                size: metadata.len(),
                modified: metadata.modified()?,
                path: entry.path(),
            });
        }
        parts.sort_by_key(|part| part.number);
        Ok(parts)
    }

    /// Stores part `number` of upload `id` from `body`, replacing an earlier part of that
    /// number only once the new one is whole and durable.
    pub async fn write_part<S>(
        &self,
        id: &str,
        number: u16,
        body: S,
        expected_md5: Option<Md5Digest>,
    ) -> Result<PartInfo, PartError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        let dir = self
            .upload_dir(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such upload"))?;
        let temporary = dir.join(format!(
            "{number:05}.{}.tmp",
            crate::auth::random_hex(8).map_err(io::Error::other)?
        ));
        let file = blocking({
            let temporary = temporary.clone();
            move || std::fs::File::create_new(temporary)
        })
        .await?;
        // Removes the temporary file if this future fails or is dropped.
        let mut guard = RemoveOnDrop(Some(temporary.clone()));
        let mut writer = Some((file, md5::Md5::new()));
        let mut pending = BytesMut::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        loop {
            let next = body.next().await;
            let end = next.is_none();
            if let Some(piece) = next {
                let piece = piece.map_err(PartError::Body)?;
                size += piece.len() as u64;
                pending.extend_from_slice(&piece);
            }
            if pending.len() >= PIECE_BYTES || (end && !pending.is_empty()) {
                let piece = pending.split().freeze();
                let (mut file, mut hasher) = writer.take().expect("writer is returned each hop");
                writer = Some(
                    blocking(move || {
                        file.write_all(&piece)?;
                        hasher.update(&piece);
                        Ok((file, hasher))
                    })
                    .await?,
                );
            }
            if end {
                break;
            }
        }
        let (file, hasher) = writer.take().expect("writer is returned each hop");
        let md5 = Md5Digest(hasher.finalize().into());
        if expected_md5.is_some_and(|expected| expected != md5) {
            return Err(PartError::Md5Mismatch);
        }
        let final_path = dir.join(part_name(number, &md5));
        let placed = final_path.clone();
        blocking(move || {
            file.sync_all()?;
            std::fs::rename(&temporary, &placed)?;
            // An earlier upload of this part number goes once the new one is in place.
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if path != placed && parse_part_name(name).is_some_and(|(n, _)| n == number) {
                    std::fs::remove_file(&path)?;
                }
            }
            sync_dir(&dir)
        })
        .await?;
        guard.0 = None;
        Ok(PartInfo {
            number,
            md5,
            size,
            modified: SystemTime::now(),
            path: final_path,
        })
    }

    /// Removes upload `id` and its parts; answers false when there was no such upload.
    pub fn remove(&self, id: &str) -> io::Result<bool> {
        let Some(dir) = self.upload_dir(id) else {
            return Ok(false);
        };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Removes uploads started more than `expiry` ago; answers how many.
    pub fn expire(&self, expiry: Duration) -> io::Result<usize> {
        let cutoff = SystemTime::now().checked_sub(expiry).unwrap_or(UNIX_EPOCH);
        let mut removed = 0;
        for (id, meta) in self.list()? {
            if meta.created() < cutoff && self.remove(&id)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The bytes of `parts`, in order, in pieces of up to 1 MiB, one blocking hop each.
pub fn read_parts(parts: Vec<PathBuf>) -> impl Stream<Item = io::Result<Bytes>> + Send {
    stream::unfold(
        (parts.into_iter(), None::<std::fs::File>),
        |(mut paths, mut current)| async move {
            loop {
                let file = match current.take() {
                    Some(file) => file,
                    None => {
                        let path = paths.next()?;
                        match blocking(move || std::fs::File::open(path)).await {
                            Ok(file) => file,
                            Err(error) => return Some((Err(error), (paths, None))),
                        }
                    }
                };
                let read = blocking(move || {
                    let mut file = file;
                    let mut piece = vec![0u8; PIECE_BYTES];
                    let mut filled = 0;
                    while filled < piece.len() {
                        match file.read(&mut piece[filled..])? {
                            0 => break,
                            n => filled += n,
                        }
                    }
                    piece.truncate(filled);
                    Ok((file, piece))
                })
                .await;
                match read {
                    Ok((_, piece)) if piece.is_empty() => continue,
                    Ok((file, piece)) => {
                        return Some((Ok(Bytes::from(piece)), (paths, Some(file))));
                    }
                    Err(error) => return Some((Err(error), (paths, None))),
                }
            }
        },
    )
}

fn part_name(number: u16, md5: &Md5Digest) -> String {
    format!("part-{number:05}-{}", md5.to_hex())
}

fn parse_part_name(name: &str) -> Option<(u16, Md5Digest)> {
    let rest = name.strip_prefix("part-")?;
    let (number, md5) = rest.split_once('-')?;
    Some((number.parse().ok()?, Md5Digest::from_hex(md5).ok()?))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(io::Error::other("shutting down")),
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // A leftover is also removed at the next start.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn_blocking(move || std::fs::remove_file(path)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> UploadMeta {
        UploadMeta {
            bucket: "b".into(),
            key: "k".into(),
            content_type: None,
            created_micros: 1,
        }
    }

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
        let pieces: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        stream::iter(pieces)
    }

    #[tokio::test]
    async fn parts_are_written_replaced_listed_and_read_back() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let uploads = Uploads::open(dir.path()).expect("open");
        let id = uploads.create(&meta()).expect("create");
        assert_eq!(uploads.meta(&id).expect("meta"), Some(meta()));
        assert_eq!(uploads.meta("../../etc").expect("meta"), None);
        let first = uploads
            .write_part(&id, 2, body(&[b"wor", b"ld"]), None)
            .await
            .expect("part 2");
        assert_eq!(first.md5, Md5Digest::of(b"world"));
        uploads
            .write_part(&id, 1, body(&[b"old"]), None)
            .await
            .expect("part 1");
        uploads
            .write_part(&id, 1, body(&[b"hello "]), Some(Md5Digest::of(b"hello ")))
            .await
            .expect("part 1 again");
        let refused = uploads
            .write_part(&id, 3, body(&[b"x"]), Some(Md5Digest::of(b"y")))
            .await;
        assert!(
            matches!(refused, Err(PartError::Md5Mismatch)),
            "{refused:?}"
        );
        let parts = uploads.parts(&id).expect("parts");
        assert_eq!(
            parts.iter().map(|p| (p.number, p.size)).collect::<Vec<_>>(),
            [(1, 6), (2, 5)]
        );
        let paths = parts.into_iter().map(|p| p.path).collect();
        let bytes: Vec<Bytes> = futures_util::TryStreamExt::try_collect(read_parts(paths))
            .await
            .expect("read");
        assert_eq!(bytes.concat(), b"hello world");
        // A reopen (restart) keeps the parts and drops leftovers.
        let uploads = Uploads::open(dir.path()).expect("reopen");
        assert_eq!(uploads.parts(&id).expect("parts").len(), 2);
        assert_eq!(
            uploads.expire(Duration::from_secs(3600)).expect("expire"),
            1
        );
        assert_eq!(uploads.meta(&id).expect("meta"), None);
        assert!(!uploads.remove(&id).expect("remove"));
    }
}
