//! Stage 4, transfer: every request to S3.
//!
//! In: a key, the file's bytes (in memory, or a path and size) and its whole-file MD5.
//! Out: the object in S3 with `Content-MD5` checked by the server, user metadata `md5chksum`
//! (base64 whole-file MD5, rclone's convention) and a guessed content type; or a
//! [`TransferError`] with a bounded kind for metrics.
//!
//! It is also the only holder of the S3 client: the reads that `verify` and `/readyz` need
//! (list, HEAD for `md5chksum`, bucket check) are here too. Every request goes through an
//! [`ObjectClient`] ([`client`]): aws-sdk-s3 in production ([`SdkClient`]), a bucket in memory
//! in unit tests ([`MemoryClient`]), and a wrapper that fails chosen requests ([`FaultyClient`]).
//!
//! Requests in flight are capped by one semaphore shared by every request (single PUTs,
//! multipart parts, copies, HEADs), so memory stays at most `UPLOAD_CONCURRENCY × part size`.
//! A failed multipart upload is aborted before the error is returned. The SDK retries 5xx and
//! SlowDown with backoff. Every request body (a PUT, a part) first waits for the BWLIMIT budget
//! ([`bandwidth`]), shared by all transfers; an SDK retry of a body does not pay twice.

pub mod bandwidth;
pub mod client;
mod download;
mod error;
pub mod faulty;
pub mod memory;
pub mod metadata;
mod multipart;
mod read;
pub mod sdk;
pub mod write;

use std::path::Path;
use std::sync::Arc;

use aws_sdk_s3::Client;
use base64::Engine;
use futures::future::BoxFuture;
use portail_core::catalog::OpenMultipart;
use tokio::sync::Semaphore;

pub use bandwidth::{Bandwidth, LimitFile, Timetable};
pub use client::ObjectClient;
pub use faulty::FaultyClient;
pub use memory::MemoryClient;
pub use sdk::SdkClient;
pub use write::WriteOptions;

pub use error::TransferError;
pub use metadata::{ObjectInfo, Posix};
pub use read::{ListedObject, ListedVersion};

/// The largest number of parts S3 accepts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// How the transfer stage uses S3, built once from the settings
/// ([`crate::AgentSettings::transfer`]). Each knob is named and documented here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferConfig {
    /// MULTIPART_THRESHOLD: files at least this large go up as multipart uploads.
    pub multipart_threshold: u64,
    /// MULTIPART_PART_SIZE: the size of each part; raised for a file that would need more
    /// than 10 000 parts ([`TransferConfig::part_size_for`]).
    pub part_size: u64,
    /// UPLOAD_CONCURRENCY: S3 requests in flight at once, of every kind. A pass keeps as many
    /// files in progress, so that small files alone can fill every slot.
    pub requests_in_flight: usize,
    /// Parts of one multipart file read and sent at once (each still needs a request slot),
    /// so one large file cannot hold every slot while small files wait.
    pub parts_per_file: usize,
}

impl TransferConfig {
    /// Parts in flight per file unless told otherwise.
    pub const PARTS_PER_FILE: usize = 8;

    /// Whether a file of this size goes up as a multipart upload.
    pub fn is_multipart(&self, size: u64) -> bool {
        size >= self.multipart_threshold
    }

    /// The part size for a file: the configured one, doubled until 10 000 parts suffice.
    pub fn part_size_for(&self, size: u64) -> u64 {
        let mut part = self.part_size;
        while size.div_ceil(part) > MAX_PARTS {
            part *= 2;
        }
        part
    }
}

/// Where multipart uploads in flight are recorded, so that a crash never leaves one behind.
/// The catalog handle implements it ([`crate::catalog::Catalog`]); the store runs no SQL.
pub trait MultipartJournal: Send + Sync + std::fmt::Debug {
    /// Records the intent to create an upload for `key`, before CreateMultipartUpload is sent,
    /// so a crash while that call is in flight leaves a trace. Returns the entry's id.
    fn intend<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<i64>>;
    /// Records the upload id S3 gave an intent, before the first part is sent.
    fn begin<'a>(&'a self, entry: i64, upload_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Forgets an entry whose upload completed or was aborted (or was never created).
    fn end(&self, entry: i64) -> BoxFuture<'_, anyhow::Result<()>>;
    /// The entries still recorded.
    fn open(&self) -> BoxFuture<'_, anyhow::Result<Vec<OpenMultipart>>>;
}

/// What an upload or copy produced.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The ETag S3 gave the object (quotes removed). Not an MD5 for multipart objects.
    pub etag: Option<String>,
    /// Whether it was a multipart upload.
    pub multipart: bool,
    /// The object's S3 version, when the bucket keeps versions (HISTORY=versioning).
    pub version_id: Option<String>,
}

/// The S3 side of the agent: one client, one bucket, one cap on requests in flight.
#[derive(Debug, Clone)]
pub struct Transfer {
    client: Arc<dyn ObjectClient>,
    bucket: String,
    config: TransferConfig,
    in_flight: Arc<Semaphore>,
    journal: Option<Arc<dyn MultipartJournal>>,
    bandwidth: Option<Arc<Bandwidth>>,
    write: Arc<WriteOptions>,
}

/// `Content-MD5` and `md5chksum` both carry the base64 MD5.
pub fn md5_base64(md5: &[u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

/// The content type for a path, from its extension.
pub fn content_type_for(path: &str) -> String {
    mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

fn strip_quotes(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"').to_string())
}

impl Transfer {
    /// A transfer stage for one bucket, through aws-sdk-s3.
    pub fn new(client: Client, bucket: String, config: TransferConfig) -> Self {
        let sdk = SdkClient::new(client, bucket.clone());
        Self::on(Arc::new(sdk), bucket, config)
    }

    /// A transfer stage that sends its requests through `client` (in unit tests, a
    /// [`MemoryClient`] or a [`FaultyClient`]); `bucket` is the name it reports.
    pub fn on(client: Arc<dyn ObjectClient>, bucket: String, config: TransferConfig) -> Self {
        Transfer {
            client,
            bucket,
            in_flight: Arc::new(Semaphore::new(config.requests_in_flight)),
            config,
            journal: None,
            bandwidth: None,
            write: Arc::default(),
        }
    }

    /// The storage class objects are written in now (S3_STORAGE_CLASS), as the catalog
    /// records it.
    pub fn storage_class(&self) -> Option<&str> {
        self.write.storage_class.as_ref().map(|c| c.as_str())
    }

    /// How objects written now are encrypted, as the catalog records it.
    pub fn encryption(&self) -> Option<&'static str> {
        match self.write.sse {
            None => None,
            Some(write::Sse::S3) => Some("AES256"),
            Some(write::Sse::Kms { .. }) => Some("aws:kms"),
            Some(write::Sse::Customer { .. }) => Some("SSE-C"),
        }
    }

    /// Encrypts, classes and tags every object written as `write` says.
    pub fn with_write_options(mut self, write: WriteOptions) -> Self {
        self.write = Arc::new(write);
        self
    }

    /// Caps the bytes per second of every request body at `bandwidth` (BWLIMIT).
    pub fn with_bandwidth(mut self, bandwidth: Arc<Bandwidth>) -> Self {
        self.bandwidth = Some(bandwidth);
        self
    }

    /// Waits until `bytes` fit the bandwidth limit. Taken before a request slot, so a body
    /// waiting for its turn holds no slot that a HEAD or a delete could use.
    async fn budget(&self, bytes: u64) {
        if let Some(b) = &self.bandwidth {
            b.acquire(bytes).await;
        }
    }

    /// Records multipart uploads in `journal` while they are in flight.
    pub fn with_journal(mut self, journal: Arc<dyn MultipartJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The settings this stage runs with.
    pub fn config(&self) -> &TransferConfig {
        &self.config
    }

    /// The bucket this stage writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A slot among the UPLOAD_CONCURRENCY requests allowed in flight.
    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore lives as long as `self` and is never closed.
        self.in_flight
            .acquire()
            .await
            .expect("semaphore never closed")
    }

    /// Uploads a file whose bytes are already in memory, with one PutObject.
    pub async fn put_bytes(
        &self,
        key: &str,
        body: bytes::Bytes,
        info: &ObjectInfo,
    ) -> Result<Stored, TransferError> {
        self.budget(body.len() as u64).await;
        let _permit = self.permit().await;
        self.put_object(key, client::Body::Bytes(body), info).await
    }

    /// Uploads a file from disk: one streamed PutObject below the multipart threshold,
    /// a multipart upload above it.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        info: &ObjectInfo,
    ) -> Result<Stored, TransferError> {
        if self.config.is_multipart(size) {
            return self.put_multipart(key, path, size, info).await;
        }
        self.budget(size).await;
        let _permit = self.permit().await;
        let body = client::Body::File {
            path: path.to_path_buf(),
            size,
        };
        self.put_object(key, body, info).await
    }

    /// One PutObject with `Content-MD5` (checked by the server) and our metadata.
    async fn put_object(
        &self,
        key: &str,
        body: client::Body,
        info: &ObjectInfo,
    ) -> Result<Stored, TransferError> {
        let out = self.client.put_object(key, body, info, &self.write).await?;
        Ok(Stored {
            etag: out.etag,
            multipart: false,
            version_id: out.version_id,
        })
    }

    /// Copies an object server-side. With `info`, the copy gets that metadata (a rename, or a
    /// metadata refresh of the object onto itself); without, it keeps the source's (a history
    /// copy).
    pub async fn copy(
        &self,
        from_key: &str,
        to_key: &str,
        info: Option<&ObjectInfo>,
    ) -> Result<Stored, TransferError> {
        let _permit = self.permit().await;
        let out = (self.client)
            .copy_object(from_key, to_key, info, &self.write)
            .await?;
        Ok(Stored {
            etag: out.etag,
            multipart: false,
            version_id: out.version_id,
        })
    }

    /// Deletes one object, or one version of it. Returns false when it was already absent.
    pub async fn delete_object(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<bool, TransferError> {
        let ids = [(key.to_string(), version_id.map(String::from))];
        let errors = self.delete_versions(&ids).await?;
        match errors.into_iter().next() {
            Some((_, reason)) => Err(TransferError::invalid("DeleteObjects", reason)),
            None => Ok(true),
        }
    }

    /// Deletes up to 1000 keys in one DeleteObjects call. Returns, for each key that failed,
    /// the key and the reason; a key that was already absent counts as deleted.
    pub async fn delete_batch(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, TransferError> {
        let ids: Vec<_> = keys.iter().map(|k| (k.clone(), None)).collect();
        self.delete_versions(&ids).await
    }

    /// Deletes up to 1000 objects (a version of one, with an id) in one DeleteObjects call.
    pub async fn delete_versions(
        &self,
        ids: &[(String, Option<String>)],
    ) -> Result<Vec<(String, String)>, TransferError> {
        debug_assert!(ids.len() <= 1000);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let _permit = self.permit().await;
        self.client.delete_objects(ids).await
    }
}

#[cfg(test)]
mod memory_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_from_extension() {
        assert_eq!(content_type_for("a/b.txt"), "text/plain");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }

    fn config(part_size: u64) -> TransferConfig {
        TransferConfig {
            multipart_threshold: 64 << 20,
            part_size,
            requests_in_flight: 16,
            parts_per_file: TransferConfig::PARTS_PER_FILE,
        }
    }

    #[test]
    fn part_size_stays_as_configured_while_10000_parts_suffice() {
        let c = config(5 << 20);
        assert_eq!(c.part_size_for(1), 5 << 20);
        assert_eq!(c.part_size_for(10_000 * (5 << 20)), 5 << 20);
    }

    #[test]
    fn part_size_doubles_until_10000_parts_suffice() {
        let c = config(5 << 20);
        // One byte over 10 000 parts of 5 MiB: the next size, 10 MiB, is enough.
        assert_eq!(c.part_size_for(10_000 * (5 << 20) + 1), 10 << 20);
        // S3's largest object, 5 TiB, fits in 10 000 parts of 640 MiB (5 MiB doubled 7 times).
        let five_tib: u64 = 5 << 40;
        let part = c.part_size_for(five_tib);
        assert_eq!(part, 640 << 20);
        assert!(five_tib.div_ceil(part) <= MAX_PARTS);
        assert!(
            five_tib.div_ceil(part / 2) > MAX_PARTS,
            "not larger than needed"
        );
    }

    #[test]
    fn multipart_from_the_threshold_on() {
        let c = config(5 << 20);
        assert!(!c.is_multipart((64 << 20) - 1));
        assert!(c.is_multipart(64 << 20));
    }
}
