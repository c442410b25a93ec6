//! `impl s3s::S3` over `storage::Store`: bucket `B` and object `K` are the key `B/K`.
//!
//! Every operation checks access first (`authorize`): the request's access key (verified by
//! s3s with SigV4) maps onto the scopes and prefix of a bearer token; a request without one
//! may only read, and only where reads are public. Storage errors become S3 errors in
//! `s3_error`, the one place S3 codes and statuses are chosen.

use std::ops::Bound;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::StatusCode;
use md5::Digest;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use storage::{
    Md5Digest, Md5Mode, ObjectKey, ObjectRecord, PartsDigest, PutOptions, StorageError, Store,
};

use super::buckets::{BucketDir, successor};
use super::checksums::{self, Announced};
use super::uploads::{PartError, UploadMeta, Uploads, read_parts};
use super::{BodyFailure, body_failure};
use crate::auth::{Access, S3Key, Scope};
use crate::config::Config;

/// Largest number of parts, smallest part but the last, as S3.
const MAX_PARTS: usize = 10_000;
const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Largest page of any listing, as S3.
const MAX_PAGE: usize = 1000;

/// The S3 API of one node.
pub struct Dataserver {
    pub(super) store: Store,
    pub(super) access: Arc<Access>,
    pub(super) keys: Arc<Vec<S3Key>>,
    pub(super) buckets: BucketDir,
    pub(super) uploads: Uploads,
    pub(super) verify: storage::Verify,
    pub(super) max_body_bytes: u64,
}

impl Dataserver {
    /// The S3 side of `store`, its multipart uploads staged in `uploads`.
    pub fn new(
        store: Store,
        config: &Config,
        access: Arc<Access>,
        keys: Arc<Vec<S3Key>>,
        uploads: Uploads,
    ) -> std::io::Result<Self> {
        Ok(Self {
            buckets: BucketDir::open(&config.data_dir)?,
            uploads,
            store,
            access,
            keys,
            verify: config.verify_reads,
            max_body_bytes: config.limits.max_body_bytes,
        })
    }

    /// Checks that `credentials` may do `scope` to everything under `path` (`B/K`, or `B/`
    /// for bucket operations and listings).
    fn authorize(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        scope: Scope,
        path: &str,
    ) -> S3Result<()> {
        let Some(credentials) = credentials else {
            if scope == Scope::Read && self.access.public_reads() {
                return Ok(());
            }
            return Err(s3_error!(
                AccessDenied,
                "this request needs a signature by an access key"
            ));
        };
        let key = self
            .keys
            .iter()
            .find(|key| key.access_key_id == credentials.access_key)
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        if key.grant.allows_under(scope, path) {
            Ok(())
        } else {
            let verb = match scope {
                Scope::Read => "read",
                Scope::Write => "write",
                Scope::Admin => "delete or administer",
            };
            Err(s3_error!(
                AccessDenied,
                "access key {} may not {verb} {path}",
                key.access_key_id
            ))
        }
    }

    /// The source and target keys of a copy, checked: the source readable, the target
    /// writable.
    fn copy_keys(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        source: &CopySource,
        bucket: &str,
        key: &str,
    ) -> S3Result<(ObjectKey, ObjectKey)> {
        let CopySource::Bucket {
            bucket: source_bucket,
            key: source_key,
            ..
        } = source
        else {
            return Err(s3_error!(NotImplemented, "copy sources are bucket/key"));
        };
        let from = object_key(source_bucket, source_key)?;
        let to = object_key(bucket, key)?;
        self.authorize(credentials, Scope::Read, from.as_str())?;
        self.authorize(credentials, Scope::Write, to.as_str())?;
        Ok((from, to))
    }

    /// Whether bucket `bucket` exists: a marker, or a live key under `bucket/`.
    async fn bucket_exists(&self, bucket: &str) -> S3Result<bool> {
        let buckets = self.buckets.clone();
        let name = bucket.to_owned();
        let marked = tokio::task::spawn_blocking(move || buckets.is_marked(&name))
            .await
            .map_err(S3Error::internal_error)?;
        Ok(marked || self.has_keys_under(&format!("{bucket}/")).await?)
    }

    async fn has_keys_under(&self, prefix: &str) -> S3Result<bool> {
        let page = self
            .store
            .list_page(prefix, Bound::Unbounded, 1)
            .await
            .map_err(s3_error)?;
        Ok(!page.is_empty())
    }

    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.bucket_exists(bucket).await? {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket, "bucket {bucket} does not exist"))
        }
    }

    /// Streams `body` into `key` with inline MD5, the client's promises checked.
    async fn put_body(
        &self,
        key: &ObjectKey,
        body: StreamingBlob,
        options: PutOptions,
        announced: Announced,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> S3Result<(storage::Stored, Checksum)> {
        let (body, computed) = checksums::verify(body, announced, trailers);
        let stored = self
            .store
            .put(key, body, options)
            .await
            .map_err(|error| self.body_error(error))?;
        let checksum = std::mem::take(&mut *computed.lock().expect("checksum lock"));
        Ok((stored, checksum))
    }

    /// Maps a failed put, telling the client's body faults (checksum, size cap, stall) apart.
    fn body_error(&self, error: StorageError) -> S3Error {
        match error {
            StorageError::Body(source) => body_io_error(&source, self.max_body_bytes),
            other => s3_error(other),
        }
    }

    /// `If-None-Match: *`: 412 when the key holds a live object (a create-only put).
    async fn refuse_if_present(&self, key: &ObjectKey) -> S3Result<()> {
        match self.store.head(key).await {
            Ok(_) => Err(s3_error!(PreconditionFailed, "{key} already exists")),
            Err(StorageError::NotFound { .. }) => Ok(()),
            Err(error) => Err(s3_error(error)),
        }
    }

    /// The target of an upload, checked against the request's bucket and key.
    async fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<UploadMeta> {
        let uploads = self.uploads.clone();
        let owned = id.to_owned();
        let meta = tokio::task::spawn_blocking(move || uploads.meta(&owned))
            .await
            .map_err(S3Error::internal_error)?
            .map_err(S3Error::internal_error)?;
        match meta {
            Some(meta) if meta.bucket == bucket && meta.key == key => Ok(meta),
            _ => Err(s3_error!(NoSuchUpload, "no upload {id} for {bucket}/{key}")),
        }
    }

    /// Stores one part from `body`.
    async fn store_part<S>(
        &self,
        upload_id: &str,
        part_number: i32,
        body: S,
        content_md5: Option<Md5Digest>,
    ) -> S3Result<super::uploads::PartInfo>
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send,
    {
        let number = part_number_of(part_number)?;
        match self
            .uploads
            .write_part(upload_id, number, body, content_md5)
            .await
        {
            Ok(part) => Ok(part),
            Err(PartError::Body(source)) => Err(body_io_error(&source, self.max_body_bytes)),
            Err(PartError::Md5Mismatch) => Err(s3_error!(
                BadDigest,
                "the part does not match its Content-MD5"
            )),
            Err(PartError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(s3_error!(NoSuchUpload))
            }
            Err(PartError::Io(error)) => Err(S3Error::internal_error(error)),
        }
    }

    /// Checks access and the bucket, lists one page and shapes it for the response.
    #[allow(
        clippy::too_many_arguments,
        reason = "the parameters of S3's listing requests"
    )]
    async fn listed(
        &self,
        credentials: Option<&s3s::auth::Credentials>,
        bucket: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: Option<i32>,
        encoding_type: Option<&EncodingType>,
    ) -> S3Result<Listed> {
        let prefix = prefix.unwrap_or_default();
        self.authorize(credentials, Scope::Read, &format!("{bucket}/{prefix}"))?;
        self.require_bucket(bucket).await?;
        let page_size = checked_max_keys(max_keys)?;
        let listing = self
            .list_page(bucket, prefix, delimiter, start, page_size)
            .await?;
        let url_encoded = encoding_type.is_some_and(|e| e.as_str() == EncodingType::URL);
        let mut listed = Listed {
            contents: Vec::new(),
            common_prefixes: Vec::new(),
            truncated: listing.truncated,
            next: listing.truncated.then(|| listing.last(bucket)).flatten(),
            max_keys: max_keys.unwrap_or(MAX_PAGE as i32),
            url_encoded,
        };
        let bucket_len = bucket.len() + 1;
        listed.contents = listing
            .objects
            .iter()
            .map(|record| Object {
                key: Some(listed.encode(record.key.as_str()[bucket_len..].to_owned())),
                size: i64::try_from(record.size).ok(),
                e_tag: Some(etag(record)),
                last_modified: Some(timestamp(record.created)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        listed.common_prefixes = listing
            .prefixes
            .into_iter()
            .map(|prefix| CommonPrefix {
                prefix: Some(listed.encode(prefix)),
            })
            .collect();
        Ok(listed)
    }

    /// One listing page of bucket `bucket`, streamed from the catalogue in key order: objects
    /// and common prefixes after `start`, at most `max_keys` of them together.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: usize,
    ) -> S3Result<Listing> {
        let bucket_prefix = format!("{bucket}/");
        let full_prefix = format!("{bucket_prefix}{prefix}");
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let common_prefix_of = |relative: &str| -> Option<String> {
            let d = delimiter?;
            let rest = relative.strip_prefix(prefix)?;
            rest.find(d)
                .map(|at| relative[..prefix.len() + at + d.len()].to_owned())
        };
        let mut cursor: Bound<String> = match start {
            // A start that is itself a common prefix stands for everything under it: skip it
            // all. (A key merely ending in the delimiter, "dir/" under the prefix "dir/", is
            // not one.)
            Some(start) if common_prefix_of(start).as_deref() == Some(start) => {
                match successor(&format!("{bucket_prefix}{start}")) {
                    Some(next) => Bound::Included(next),
                    None => return Ok(Listing::default()),
                }
            }
            Some(start) => Bound::Excluded(format!("{bucket_prefix}{start}")),
            None => Bound::Unbounded,
        };
        let mut listing = Listing::default();
        if max_keys == 0 {
            return Ok(listing);
        }
        'pages: loop {
            let wanted = (max_keys - listing.count() + 1).min(MAX_PAGE);
            let page = self
                .store
                .list_page(&full_prefix, cursor.as_ref().map(String::as_str), wanted)
                .await
                .map_err(s3_error)?;
            let full_page = page.len() == wanted;
            for record in page {
                let common = common_prefix_of(&record.key.as_str()[bucket_prefix.len()..]);
                if listing.count() == max_keys {
                    listing.truncated = true;
                    break 'pages;
                }
                match common {
                    Some(common) => {
                        let Some(next) = successor(&format!("{bucket_prefix}{common}")) else {
                            listing.prefixes.push(common);
                            break 'pages;
                        };
                        listing.prefixes.push(common);
                        cursor = Bound::Included(next);
                        // The rest of this page lies under the prefix: fetch from past it.
                        continue 'pages;
                    }
                    None => {
                        cursor = Bound::Excluded(record.key.as_str().to_owned());
                        listing.objects.push(record);
                    }
                }
            }
            if !full_page {
                break;
            }
        }
        Ok(listing)
    }
}

/// A listing page as both ListObjects versions answer it.
struct Listed {
    contents: Vec<Object>,
    common_prefixes: Vec<CommonPrefix>,
    truncated: bool,
    /// Where the next page starts (not encoded).
    next: Option<String>,
    max_keys: i32,
    url_encoded: bool,
}

impl Listed {
    fn count(&self) -> usize {
        self.contents.len() + self.common_prefixes.len()
    }

    /// `text` as the listing sends it: percent-encoded when the client asked.
    fn encode(&self, text: String) -> String {
        if self.url_encoded {
            percent(&text)
        } else {
            text
        }
    }
}

/// One page of a listing.
#[derive(Default)]
struct Listing {
    objects: Vec<ObjectRecord>,
    prefixes: Vec<String>,
    truncated: bool,
}

impl Listing {
    fn count(&self) -> usize {
        self.objects.len() + self.prefixes.len()
    }

    /// The last entry, relative to the bucket: where the next page starts.
    fn last(&self, bucket: &str) -> Option<String> {
        let object = self
            .objects
            .last()
            .map(|record| record.key.as_str()[bucket.len() + 1..].to_owned());
        let prefix = self.prefixes.last().cloned();
        object.max(prefix)
    }
}

fn object_key(bucket: &str, key: &str) -> S3Result<ObjectKey> {
    ObjectKey::parse(&format!("{bucket}/{key}"))
        .map_err(|error| s3_error!(InvalidArgument, "invalid key {bucket}/{key}: {error}"))
}

fn part_number_of(part_number: i32) -> S3Result<u16> {
    u16::try_from(part_number)
        .ok()
        .filter(|n| (1..=MAX_PARTS as u16).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

/// The S3 ETag of a record: `md5-of-part-md5s-N` for objects assembled from parts, else the
/// MD5 of the bytes; the BLAKE3 digest while the MD5 of a natively stored object is not yet
/// computed (64 hex digits, so clients do not mistake it for an MD5).
fn etag(record: &ObjectRecord) -> ETag {
    ETag::Strong(match (&record.parts, &record.md5) {
        (Some(parts), _) => format!("{}-{}", parts.md5_of_part_md5s.to_hex(), parts.parts),
        (None, Some(md5)) => md5.to_hex(),
        (None, None) => record.blake3.to_hex(),
    })
}

/// A record's time as S3 shows it: whole seconds, as `Last-Modified` carries them, so a
/// client's `If-Modified-Since` with the value it was given compares equal.
fn timestamp(time: SystemTime) -> Timestamp {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    Timestamp::from(UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// The conditional headers of GET and HEAD, in RFC 9110's order: `If-Match` (else
/// `If-Unmodified-Since`) failing is 412; `If-None-Match` (else `If-Modified-Since`) matching
/// is 304.
fn check_conditions(
    record: &ObjectRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let current = etag(record);
    let modified = timestamp(record.created);
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(other) => current.weak_cmp(other),
    };
    let precondition_failed = match if_match {
        Some(condition) => !matches(condition),
        None => if_unmodified_since.is_some_and(|since| modified > *since),
    };
    if precondition_failed {
        return Err(s3_error!(
            PreconditionFailed,
            "the object does not meet the condition"
        ));
    }
    let not_modified = match if_none_match {
        Some(condition) => matches(condition),
        None => if_modified_since.is_some_and(|since| modified <= *since),
    };
    if not_modified {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

fn content_md5(value: Option<&str>) -> S3Result<Option<Md5Digest>> {
    let Some(value) = value else { return Ok(None) };
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
    let digest: [u8; 16] = bytes
        .try_into()
        .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not 16 bytes"))?;
    Ok(Some(Md5Digest(digest)))
}

/// The client's content type, unless generic (then the store detects one).
fn specific_content_type(content_type: Option<String>) -> Option<String> {
    content_type.filter(|value| {
        !value.is_empty()
            && !["application/octet-stream", "binary/octet-stream"].contains(&value.as_str())
    })
}

/// Maps a storage error to an S3 error: the one place S3 codes are chosen for the store.
pub fn s3_error(error: StorageError) -> S3Error {
    match error {
        StorageError::NotFound { key } => s3_error!(NoSuchKey, "no object {key}"),
        StorageError::Conflict { key, .. } => {
            let mut error = S3Error::with_message(
                S3ErrorCode::Custom("KeyAlreadyExists".into()),
                format!(
                    "{key} already holds other content; keys are write-once, store a new \
                     version under a new key"
                ),
            );
            error.set_status_code(StatusCode::CONFLICT);
            error
        }
        StorageError::DigestMismatch { kind, .. } => {
            s3_error!(
                BadDigest,
                "the body does not match the {kind:?} the client sent"
            )
        }
        StorageError::SizeMismatch { expected, actual } => s3_error!(
            IncompleteBody,
            "the body has {actual} bytes, not the {expected} announced"
        ),
        StorageError::InvalidContentType => {
            s3_error!(InvalidArgument, "content type too long or not printable")
        }
        StorageError::InvalidKey(error) => s3_error!(InvalidArgument, "invalid key: {error}"),
        StorageError::RangeNotSatisfiable { .. } => s3_error!(InvalidRange),
        StorageError::Body(source) => body_io_error(&source, u64::MAX),
        other => {
            tracing::error!("S3 request failed: {}", crate::http::chain(&other));
            s3_error!(InternalError, "internal error")
        }
    }
}

/// Maps a failed request body.
fn body_io_error(source: &std::io::Error, limit: u64) -> S3Error {
    if let Some(mismatch) = checksums::mismatch_of(source) {
        return s3_error!(BadDigest, "{mismatch}");
    }
    match body_failure(source) {
        Some(BodyFailure::TooLarge) => {
            s3_error!(
                EntityTooLarge,
                "request bodies are limited to {limit} bytes"
            )
        }
        Some(BodyFailure::Stalled) => s3_error!(RequestTimeout, "the request body stalled"),
        None => s3_error!(IncompleteBody, "the request body failed: {source}"),
    }
}

fn percent(text: &str) -> String {
    /// Everything but the unreserved characters and `/`, as S3's `encoding-type=url`.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

fn micros_now() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn checked_max_keys(max_keys: Option<i32>) -> S3Result<usize> {
    match max_keys {
        None => Ok(MAX_PAGE),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(S3Error::internal_error)?
        .map_err(S3Error::internal_error)
}

#[async_trait::async_trait]
impl S3 for Dataserver {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.authorize(req.credentials.as_ref(), Scope::Read, "")
            .or_else(|error| match req.credentials.as_ref() {
                // A prefix-limited key sees the buckets it may read.
                Some(_) => Ok(()),
                None => Err(error),
            })?;
        let buckets = self.buckets.clone();
        let marked = blocking(move || buckets.list()).await?;
        let buckets = marked
            .into_iter()
            .filter(|(name, _)| {
                self.authorize(req.credentials.as_ref(), Scope::Read, &format!("{name}/"))
                    .is_ok()
            })
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        self.authorize(
            req.credentials.as_ref(),
            Scope::Write,
            &format!("{bucket}/"),
        )?;
        let buckets = self.buckets.clone();
        let name = bucket.clone();
        if !blocking(move || buckets.mark(&name)).await? {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "bucket {bucket} already exists"
            ));
        }
        tracing::info!(bucket, "bucket created");
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let bucket = req.input.bucket;
        self.authorize(req.credentials.as_ref(), Scope::Read, &format!("{bucket}/"))?;
        self.require_bucket(&bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let bucket = req.input.bucket;
        self.authorize(req.credentials.as_ref(), Scope::Read, &format!("{bucket}/"))?;
        self.require_bucket(&bucket).await?;
        // No location constraint: the default region, as a single-region server.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let prefix = format!("{bucket}/");
        self.authorize(req.credentials.as_ref(), Scope::Admin, &prefix)?;
        if self.has_keys_under(&prefix).await? {
            return Err(s3_error!(
                BucketNotEmpty,
                "bucket {bucket} still holds objects"
            ));
        }
        let buckets = self.buckets.clone();
        let name = bucket.clone();
        if !blocking(move || buckets.unmark(&name)).await? {
            return Err(s3_error!(NoSuchBucket, "bucket {bucket} does not exist"));
        }
        tracing::info!(bucket, "bucket deleted");
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let announced = Announced::from_headers(&req.headers);
        let trailers = req.trailing_headers;
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Write, key.as_str())?;
        self.require_bucket(&input.bucket).await?;
        if input
            .if_none_match
            .as_ref()
            .is_some_and(ETagCondition::is_any)
        {
            self.refuse_if_present(&key).await?;
        }
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let size = input.content_length.and_then(|n| u64::try_from(n).ok());
        if size.is_some_and(|size| size > self.max_body_bytes) {
            return Err(s3_error!(
                EntityTooLarge,
                "request bodies are limited to {} bytes",
                self.max_body_bytes
            ));
        }
        let options = PutOptions {
            md5: Md5Mode::Inline,
            expected: storage::Expected {
                size,
                md5: content_md5(input.content_md5.as_deref())?,
                blake3: None,
            },
            content_type: specific_content_type(input.content_type),
            ..PutOptions::default()
        };
        let (stored, checksum) = self
            .put_body(&key, body, options, announced, trailers)
            .await?;
        if stored.created {
            tracing::info!(key = %key, size = stored.record.size, "stored through S3");
        }
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&stored.record)),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Read, key.as_str())?;
        let object = self.store.get(&key).await.map_err(s3_error)?;
        let record = object.record().clone();
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let range = match &input.range {
            None => 0..record.size,
            Some(range) => range
                .check(record.size)
                .map_err(|_| s3_error!(InvalidRange, "the range lies outside the object"))?,
        };
        let content_range = input.range.is_some().then(|| {
            format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                record.size
            )
        });
        let length = range.end - range.start;
        let body = object
            .read(range, self.verify)
            .map_err(s3_error)?
            .map_err(|error| std::io::Error::other(error.to_string()));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(SyncStream(std::sync::Mutex::new(body)))),
            content_length: i64::try_from(length).ok(),
            content_range,
            content_type: Some(record.content_type.clone()),
            e_tag: Some(etag(&record)),
            last_modified: Some(timestamp(record.created)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Read, key.as_str())?;
        let record = self.store.head(&key).await.map_err(s3_error)?;
        check_conditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: i64::try_from(record.size).ok(),
            content_type: Some(record.content_type.clone()),
            e_tag: Some(etag(&record)),
            last_modified: Some(timestamp(record.created)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Admin, key.as_str())?;
        match self.store.delete(&key).await {
            Ok(_) => tracing::info!(key = %key, "deleted through S3"),
            // Deleting what is not there succeeds, as S3.
            Err(StorageError::NotFound { .. }) => {}
            Err(error) => return Err(s3_error(error)),
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > MAX_PAGE {
            return Err(s3_error!(
                MalformedXML,
                "at most 1000 keys per DeleteObjects request"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            let outcome = async {
                let key = object_key(&input.bucket, &object.key)?;
                self.authorize(req.credentials.as_ref(), Scope::Admin, key.as_str())?;
                match self.store.delete(&key).await {
                    Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
                    Err(error) => Err(s3_error(error)),
                }
            }
            .await;
            match outcome {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }),
                Err(error) => errors.push(Error {
                    code: Some(error.code().as_str().to_owned()),
                    key: Some(object.key),
                    message: error.message().map(str::to_owned),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let (from, to) = self.copy_keys(
            req.credentials.as_ref(),
            &input.copy_source,
            &input.bucket,
            &input.key,
        )?;
        self.require_bucket(&input.bucket).await?;
        let stored = self.store.copy(&from, &to).await.map_err(s3_error)?;
        if stored.created {
            tracing::info!(from = %from, to = %to, "copied through S3");
        }
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&stored.record)),
                last_modified: Some(timestamp(stored.record.created)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        // Resume after the later of the continuation token and start-after.
        let start = match (&input.continuation_token, &input.start_after) {
            (Some(token), Some(after)) => Some(token.max(after).clone()),
            (token, after) => token.clone().or_else(|| after.clone()),
        };
        let listed = self
            .listed(
                req.credentials.as_ref(),
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                start.as_deref(),
                input.max_keys,
                input.encoding_type.as_ref(),
            )
            .await?;
        let encode = |text: String| listed.encode(text);
        Ok(S3Response::new(ListObjectsV2Output {
            key_count: Some(i32::try_from(listed.count()).unwrap_or(i32::MAX)),
            max_keys: Some(listed.max_keys),
            is_truncated: Some(listed.truncated),
            next_continuation_token: listed.next.clone(),
            continuation_token: input.continuation_token,
            delimiter: input.delimiter.map(encode),
            prefix: Some(encode(input.prefix.unwrap_or_default())),
            start_after: input.start_after.map(encode),
            contents: Some(listed.contents),
            common_prefixes: Some(listed.common_prefixes),
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let listed = self
            .listed(
                req.credentials.as_ref(),
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                input.marker.as_deref(),
                input.max_keys,
                input.encoding_type.as_ref(),
            )
            .await?;
        let encode = |text: String| listed.encode(text);
        Ok(S3Response::new(ListObjectsOutput {
            max_keys: Some(listed.max_keys),
            is_truncated: Some(listed.truncated),
            next_marker: listed.next.clone().map(encode),
            marker: input.marker.map(encode),
            delimiter: input.delimiter.map(encode),
            prefix: Some(encode(input.prefix.unwrap_or_default())),
            contents: Some(listed.contents),
            common_prefixes: Some(listed.common_prefixes),
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Write, key.as_str())?;
        self.require_bucket(&input.bucket).await?;
        let meta = UploadMeta {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_type: specific_content_type(input.content_type),
            created_micros: micros_now(),
        };
        let uploads = self.uploads.clone();
        let upload_id = tokio::task::spawn_blocking(move || uploads.create(&meta))
            .await
            .map_err(S3Error::internal_error)?
            .map_err(|error| {
                tracing::error!("create a multipart upload: {error:#}");
                s3_error!(InternalError, "internal error")
            })?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let announced = Announced::from_headers(&req.headers);
        let trailers = req.trailing_headers;
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Write, key.as_str())?;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let (body, computed) = checksums::verify(body, announced, trailers);
        let part = self
            .store_part(
                &input.upload_id,
                input.part_number,
                body,
                content_md5(input.content_md5.as_deref())?,
            )
            .await?;
        if let Some(expected) = input.content_length
            && u64::try_from(expected).ok() != Some(part.size)
        {
            return Err(s3_error!(
                IncompleteBody,
                "the part is shorter than announced"
            ));
        }
        let checksum = std::mem::take(&mut *computed.lock().expect("checksum lock"));
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.md5.to_hex())),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let (from, _key) = self.copy_keys(
            req.credentials.as_ref(),
            &input.copy_source,
            &input.bucket,
            &input.key,
        )?;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let object = self.store.get(&from).await.map_err(s3_error)?;
        let size = object.record().size;
        let range = match &input.copy_source_range {
            None => 0..size,
            Some(text) => copy_range(text, size)?,
        };
        let body = object
            .read(range, self.verify)
            .map_err(s3_error)?
            .map_err(|error| std::io::Error::other(error.to_string()));
        let part = self
            .store_part(&input.upload_id, input.part_number, body, None)
            .await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.md5.to_hex())),
                last_modified: Some(timestamp(part.modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Write, key.as_str())?;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let uploads = self.uploads.clone();
        let id = input.upload_id.clone();
        let parts = blocking(move || uploads.parts(&id)).await?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max_parts = checked_max_keys(input.max_parts)?;
        let mut after: Vec<_> = parts
            .into_iter()
            .filter(|part| i32::from(part.number) > marker)
            .collect();
        let truncated = after.len() > max_parts;
        after.truncate(max_parts);
        let next = after.last().map(|part| i32::from(part.number));
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            is_truncated: Some(truncated),
            max_parts: Some(max_parts as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            parts: Some(
                after
                    .into_iter()
                    .map(|part| Part {
                        part_number: Some(i32::from(part.number)),
                        e_tag: Some(ETag::Strong(part.md5.to_hex())),
                        size: i64::try_from(part.size).ok(),
                        last_modified: Some(timestamp(part.modified)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        self.authorize(
            req.credentials.as_ref(),
            Scope::Write,
            &format!("{}/{prefix}", input.bucket),
        )?;
        let uploads = self.uploads.clone();
        let all = blocking(move || uploads.list()).await?;
        let max_uploads = checked_max_keys(input.max_uploads)?;
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let mut matching: Vec<_> = all
            .into_iter()
            .filter(|(_, meta)| {
                meta.bucket == input.bucket
                    && meta.key.starts_with(&prefix)
                    && meta.key.as_str() > key_marker.as_str()
            })
            .collect();
        matching.sort_by(|a, b| (&a.1.key, &a.0).cmp(&(&b.1.key, &b.0)));
        let truncated = matching.len() > max_uploads;
        matching.truncate(max_uploads);
        let next_key = truncated
            .then(|| matching.last().map(|(_, meta)| meta.key.clone()))
            .flatten();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            next_key_marker: next_key,
            max_uploads: Some(max_uploads as i32),
            is_truncated: Some(truncated),
            uploads: Some(
                matching
                    .into_iter()
                    .map(|(id, meta)| MultipartUpload {
                        initiated: Some(timestamp(meta.created())),
                        key: Some(meta.key),
                        upload_id: Some(id),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Write, key.as_str())?;
        self.upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let uploads = self.uploads.clone();
        let id = input.upload_id.clone();
        if !blocking(move || uploads.remove(&id)).await? {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let key = object_key(&input.bucket, &input.key)?;
        self.authorize(req.credentials.as_ref(), Scope::Write, key.as_str())?;
        let meta = self
            .upload(&input.upload_id, &input.bucket, &input.key)
            .await?;
        if input
            .if_none_match
            .as_ref()
            .is_some_and(ETagCondition::is_any)
        {
            self.refuse_if_present(&key).await?;
        }
        let requested = input
            .multipart_upload
            .and_then(|upload| upload.parts)
            .unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "name at least one part"));
        }
        if requested.len() > MAX_PARTS {
            return Err(s3_error!(InvalidArgument, "at most 10000 parts"));
        }
        let uploads = self.uploads.clone();
        let id = input.upload_id.clone();
        let stored_parts = blocking(move || uploads.parts(&id)).await?;
        let mut chosen = Vec::with_capacity(requested.len());
        let mut previous = 0;
        for (index, wanted) in requested.iter().enumerate() {
            let number = part_number_of(wanted.part_number.unwrap_or(0))?;
            if number <= previous {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "parts must be listed in ascending order"
                ));
            }
            previous = number;
            let part = stored_parts
                .iter()
                .find(|part| part.number == number)
                .ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded"))?;
            let wanted_etag = wanted.e_tag.as_ref().map(|etag| match etag {
                ETag::Strong(value) | ETag::Weak(value) => value.trim_matches('"'),
            });
            if wanted_etag.is_some_and(|etag| etag != part.md5.to_hex()) {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number} has ETag {}, not the one named",
                    part.md5.to_hex()
                ));
            }
            let last = index + 1 == requested.len();
            if !last && part.size < MIN_PART_BYTES {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {number} has {} bytes; every part but the last needs at least 5 MiB",
                    part.size
                ));
            }
            chosen.push(part.clone());
        }
        let mut hasher = md5::Md5::new();
        for part in &chosen {
            hasher.update(part.md5.0);
        }
        let parts = PartsDigest {
            md5_of_part_md5s: Md5Digest(hasher.finalize().into()),
            parts: u32::try_from(chosen.len()).expect("at most 10000 parts"),
        };
        let size: u64 = chosen.iter().map(|part| part.size).sum();
        let options = PutOptions {
            md5: Md5Mode::Deferred,
            expected: storage::Expected {
                size: Some(size),
                ..Default::default()
            },
            content_type: meta.content_type,
            parts: Some(parts),
            ..PutOptions::default()
        };
        let body = read_parts(chosen.into_iter().map(|part| part.path).collect());
        let store = self.store.clone();
        let uploads = self.uploads.clone();
        let upload_id = input.upload_id.clone();
        let bucket = input.bucket.clone();
        let object_name = input.key.clone();
        // Assembling a large object takes a while: s3s keeps the connection alive with
        // whitespace meanwhile and sends the result (or an error document) at the end.
        let assemble = async move {
            let stored = store.put(&key, body, options).await.map_err(s3_error)?;
            let removed = tokio::task::spawn_blocking(move || uploads.remove(&upload_id)).await;
            if !matches!(removed, Ok(Ok(_))) {
                tracing::warn!("could not remove the parts of a completed upload");
            }
            tracing::info!(key = %key, size = stored.record.size, parts = parts.parts, "multipart upload completed");
            Ok(CompleteMultipartUploadOutput {
                bucket: Some(bucket),
                key: Some(object_name),
                e_tag: Some(etag(&stored.record)),
                ..Default::default()
            })
        };
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(assemble)),
            ..Default::default()
        }))
    }
}

/// Makes a `Send` stream `Sync`, as s3s's bodies must be: polling takes `&mut self`, so the
/// mutex is never contended (`get_mut`).
struct SyncStream<S>(std::sync::Mutex<S>);

impl<S: Stream + Unpin> Stream for SyncStream<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.get_mut().0.get_mut() {
            Ok(stream) => stream.poll_next_unpin(cx),
            Err(poisoned) => poisoned.into_inner().poll_next_unpin(cx),
        }
    }
}

/// `bytes=first-last` of a copy source: a valid range inside the object.
fn copy_range(text: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range must be bytes=first-last"
        )
    };
    let (first, last) = text
        .strip_prefix("bytes=")
        .and_then(|range| range.split_once('-'))
        .ok_or_else(invalid)?;
    let first: u64 = first.parse().map_err(|_| invalid())?;
    let last: u64 = last.parse().map_err(|_| invalid())?;
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidRange,
            "the copy range lies outside the source"
        ));
    }
    Ok(first..last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a whole listing (all pages) must give: objects and common prefixes in order.
    fn model(keys: &[String], prefix: &str, delimiter: Option<&str>) -> Vec<String> {
        let mut entries: Vec<String> = Vec::new();
        for key in keys.iter().filter(|key| key.starts_with(prefix)) {
            let entry = match delimiter.and_then(|d| key[prefix.len()..].find(d).map(|at| (at, d)))
            {
                Some((at, d)) => key[..prefix.len() + at + d.len()].to_owned(),
                None => key.clone(),
            };
            if entries.last() != Some(&entry) {
                entries.push(entry);
            }
        }
        entries
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_page_through_the_catalogue_like_a_sorted_model() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let mut store_config = storage::StoreConfig::new(dir.path().join("data"));
        store_config.background = false;
        let store = Store::open(store_config).await.expect("open store");
        let flags = crate::config::Flags {
            data_dir: Some(dir.path().join("data")),
            ..Default::default()
        };
        let config = Config::validate(Default::default(), flags).expect("config");
        let api = Dataserver::new(
            store.clone(),
            &config,
            Arc::new(Access::new(Vec::new(), true)),
            Arc::new(Vec::new()),
            Uploads::open(&config.data_dir).expect("uploads"),
        )
        .expect("api");
        // Keys with nested prefixes, neighbours of '/' ('.', '0') and multi-byte characters.
        let mut state = 7u64;
        let parts = ["a", "a.b", "a0", "b", "é", "z"];
        let mut keys = std::collections::BTreeSet::new();
        while keys.len() < 300 {
            let mut key = String::new();
            let depth = 1 + (state % 4) as usize;
            for level in 0..depth {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if level > 0 {
                    key.push('/');
                }
                key.push_str(parts[(state % parts.len() as u64) as usize]);
            }
            keys.insert(key);
        }
        for key in &keys {
            let object = ObjectKey::parse(&format!("bkt/{key}")).expect("key");
            let body =
                futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(key.clone()))]);
            store
                .put(&object, body, PutOptions::default())
                .await
                .expect("put");
        }
        let keys: Vec<String> = keys.into_iter().collect();
        for prefix in ["", "a", "a/", "a/a", "é/", "nothing"] {
            for delimiter in [None, Some("/"), Some("a"), Some("/a")] {
                for max_keys in [1, 2, 7, 1000] {
                    let mut listed = Vec::new();
                    let mut start: Option<String> = None;
                    loop {
                        let page = api
                            .list_page("bkt", prefix, delimiter, start.as_deref(), max_keys)
                            .await
                            .expect("list");
                        let mut entries: Vec<String> = page
                            .objects
                            .iter()
                            .map(|record| record.key.as_str()["bkt/".len()..].to_owned())
                            .chain(page.prefixes.iter().cloned())
                            .collect();
                        entries.sort();
                        assert!(entries.len() <= max_keys);
                        listed.extend(entries);
                        if !page.truncated {
                            break;
                        }
                        start = page.last("bkt");
                    }
                    assert_eq!(
                        listed,
                        model(&keys, prefix, delimiter),
                        "prefix {prefix:?}, delimiter {delimiter:?}, max-keys {max_keys}"
                    );
                }
            }
        }
    }

    #[test]
    fn copy_ranges() {
        assert_eq!(copy_range("bytes=0-9", 10).ok(), Some(0..10));
        assert_eq!(copy_range("bytes=5-5", 10).ok(), Some(5..6));
        for bad in ["bytes=0-10", "bytes=5-4", "0-9", "bytes=-5", "bytes=a-b"] {
            assert!(copy_range(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn part_numbers() {
        assert_eq!(part_number_of(1).ok(), Some(1));
        assert_eq!(part_number_of(10_000).ok(), Some(10_000));
        assert!(part_number_of(0).is_err());
        assert!(part_number_of(10_001).is_err());
        assert!(part_number_of(-1).is_err());
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(percent("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
    }

    #[test]
    fn conflicts_are_409_with_a_clear_code() {
        let error = s3_error(StorageError::Conflict {
            key: ObjectKey::parse("b/k").expect("key"),
            existing: storage::Blake3Digest::of(b"x"),
        });
        assert_eq!(error.status_code(), Some(StatusCode::CONFLICT));
        assert_eq!(error.code().as_str(), "KeyAlreadyExists");
        assert!(error.message().is_some_and(|m| m.contains("write-once")));
    }
}
