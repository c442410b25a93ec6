//! Buckets. A bucket `B` is the key prefix `B/`; it exists when it was created through S3 (a
//! marker file `<data-dir>/s3/buckets/B`, durable) or when any live key starts with `B/` (a
//! prefix used through the native API). ListBuckets shows the marked buckets only: finding
//! every first path segment would mean scanning the whole catalogue.
//!
//! Blocking functions; callers run them on the blocking pool.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The bucket markers of one data directory.
#[derive(Debug, Clone)]
pub struct BucketDir {
    dir: PathBuf,
}

impl BucketDir {
    /// Creates `<data-dir>/s3/buckets` when missing.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("s3").join("buckets");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Whether `bucket` has a marker.
    pub fn is_marked(&self, bucket: &str) -> bool {
        self.dir.join(bucket).is_file()
    }

    /// Creates the marker durably; answers false when it already existed.
    pub fn mark(&self, bucket: &str) -> io::Result<bool> {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.dir.join(bucket))
        {
            Ok(file) => {
                file.sync_all()?;
                std::fs::File::open(&self.dir)?.sync_all()?;
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Removes the marker durably; answers false when there was none.
    pub fn unmark(&self, bucket: &str) -> io::Result<bool> {
        match std::fs::remove_file(self.dir.join(bucket)) {
            Ok(()) => {
                std::fs::File::open(&self.dir)?.sync_all()?;
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The marked buckets with their creation times, by name.
    pub fn list(&self) -> io::Result<Vec<(String, SystemTime)>> {
        let mut buckets = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let created = entry.metadata()?.modified()?;
            buckets.push((name, created));
        }
        buckets.sort();
        Ok(buckets)
    }
}

/// The smallest string greater than every string that starts with `prefix` (None when no
/// such string exists): a listing that starts there, included, skips the whole prefix. Byte
/// order of UTF-8 is code point order, so raising the last character is enough.
pub fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn successors() {
        assert_eq!(successor("a/").as_deref(), Some("a0"));
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        assert_eq!(successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{10FFFF}"), None);
        assert_eq!(successor(""), None);
    }

    proptest! {
        #[test]
        fn successor_bounds_every_extension(prefix in ".{1,8}", rest in ".{0,8}", other in ".{0,12}") {
            if let Some(next) = successor(&prefix) {
                let extended = format!("{prefix}{rest}");
                prop_assert!(extended.as_str() < next.as_str());
                // Nothing outside the prefix lies between the prefix and its successor.
                if other.as_str() >= prefix.as_str() && other.as_str() < next.as_str() {
                    prop_assert!(other.starts_with(&prefix));
                }
            }
        }
    }

    #[test]
    fn markers_are_created_once_and_listed() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let buckets = BucketDir::open(dir.path()).expect("open");
        assert!(buckets.mark("b").expect("mark"));
        assert!(!buckets.mark("b").expect("mark again"));
        assert!(buckets.mark("a").expect("mark"));
        assert!(buckets.is_marked("a"));
        let names: Vec<_> = buckets
            .list()
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(buckets.unmark("a").expect("unmark"));
        assert!(!buckets.unmark("a").expect("unmark again"));
        assert!(!buckets.is_marked("a"));
    }
}
