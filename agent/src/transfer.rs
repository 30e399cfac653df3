//! Stage 4, transfer: every write to S3.
//!
//! In: a key, the file's bytes (in memory, or a path and size) and its whole-file MD5.
//! Out: the object in S3 with `Content-MD5` checked by the server, user metadata `md5chksum`
//! (base64 whole-file MD5, rclone's convention) and a guessed content type; or a
//! [`TransferError`] with a bounded `kind()` for metrics.
//!
//! Requests in flight are capped by one semaphore shared by single PUTs and multipart parts,
//! so memory stays at most `UPLOAD_CONCURRENCY × part size`. A failed multipart upload is
//! aborted before the error is returned. The SDK retries 5xx and SlowDown with backoff.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use base64::Engine;
use futures::stream::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::sync::Semaphore;

/// The largest number of parts S3 accepts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// An S3 write that failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// S3 answered with an error, or could not be reached, after the SDK's retries.
    #[error("S3 {op} failed: {message}")]
    S3 {
        /// The operation, e.g. `PutObject`.
        op: &'static str,
        /// The S3 error code when there was one (`SlowDown`, `BadDigest`, ...).
        code: Option<String>,
        /// The error with its causes.
        message: String,
    },
    /// Reading the local file failed.
    #[error("reading the file failed: {0}")]
    Io(#[from] std::io::Error),
    /// The multipart journal could not be written, so the upload was not attempted.
    #[error("cannot journal the multipart upload: {0}")]
    Journal(String),
}

impl TransferError {
    fn s3<E>(op: &'static str, err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = err.code().map(String::from);
        // A service error is best told by its code, message and status; the SDK's full
        // context is a page of debug output. Transport errors keep their cause chain.
        let message = match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                match (err.code(), err.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
                    (Some(c), None) => format!("{c} (HTTP {status})"),
                    _ => format!("HTTP {status}"),
                }
            }
            _ => DisplayErrorContext(&err).to_string(),
        };
        TransferError::S3 { op, code, message }
    }

    /// Every label [`TransferError::kind`] returns.
    pub const KINDS: [&'static str; 9] = [
        "io",
        "catalog",
        "throttled",
        "bad_digest",
        "denied",
        "no_such_bucket",
        "server_error",
        "s3_error",
        "unreachable",
    ];

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TransferError::Io(_) => "io",
            TransferError::Journal(_) => "catalog",
            TransferError::S3 { code: Some(c), .. } => match c.as_str() {
                "SlowDown" | "ServiceUnavailable" | "Throttling" => "throttled",
                "BadDigest" | "InvalidDigest" => "bad_digest",
                "AccessDenied" | "SignatureDoesNotMatch" | "InvalidAccessKeyId" => "denied",
                "NoSuchBucket" => "no_such_bucket",
                "InternalError" => "server_error",
                _ => "s3_error",
            },
            TransferError::S3 { code: None, .. } => "unreachable",
        }
    }
}

/// What an upload or copy produced.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The ETag S3 gave the object (quotes removed). Not an MD5 for multipart objects.
    pub etag: Option<String>,
    /// Whether it was a multipart upload.
    pub multipart: bool,
}

/// The S3 side of the agent: one client, one bucket, one cap on requests in flight.
#[derive(Debug, Clone)]
pub struct Transfer {
    client: Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: u64,
    in_flight: Arc<Semaphore>,
    journal: Option<Journal>,
}

/// Where multipart uploads in flight are recorded, so a crash never leaves one behind.
#[derive(Debug, Clone)]
pub struct Journal {
    /// The catalog.
    pub pool: sqlx::PgPool,
    /// The agent whose uploads these are.
    pub agent_id: i64,
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

/// Percent-encodes a key for `x-amz-copy-source`, keeping '/' as is.
fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Transfer {
    /// A transfer stage for one bucket.
    pub fn new(
        client: Client,
        bucket: String,
        multipart_threshold: u64,
        part_size: u64,
        concurrency: usize,
    ) -> Self {
        Transfer {
            client,
            bucket,
            multipart_threshold,
            part_size,
            in_flight: Arc::new(Semaphore::new(concurrency)),
            journal: None,
        }
    }

    /// Records multipart uploads in the catalog while they are in flight.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Aborts the multipart uploads a previous run left behind: every journaled one, and,
    /// when `prefix` is not empty, every upload the store lists under it (this covers a crash
    /// between creating an upload and journaling it). Only one process runs per AGENT_ID, so
    /// none of them is in flight. Returns how many were aborted.
    pub async fn abort_stale_multiparts(&self, prefix: &str) -> anyhow::Result<usize> {
        let mut aborted = 0;
        if let Some(j) = &self.journal {
            for (key, upload_id) in
                portail_core::catalog::open_multiparts(&j.pool, j.agent_id).await?
            {
                self.abort(&key, &upload_id).await;
                portail_core::catalog::end_multipart(&j.pool, &upload_id).await?;
                aborted += 1;
            }
        }
        if prefix.is_empty() {
            return Ok(aborted);
        }
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await;
        match listed {
            Ok(out) => {
                for u in out.uploads() {
                    if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                        self.abort(key, id).await;
                        aborted += 1;
                    }
                }
            }
            // Some stores (s3s-fs among them) cannot list uploads; the journal covers them.
            Err(e) => {
                tracing::debug!(error = %DisplayErrorContext(&e), "ListMultipartUploads unavailable")
            }
        }
        Ok(aborted)
    }

    /// The bucket this stage writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The S3 client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether a file of this size goes through multipart upload.
    pub fn is_multipart(&self, size: u64) -> bool {
        size >= self.multipart_threshold
    }

    /// Uploads a file whose bytes are already in memory, with one PutObject.
    pub async fn put_bytes(
        &self,
        key: &str,
        body: bytes::Bytes,
        md5: &[u8; 16],
        content_type: &str,
    ) -> Result<Stored, TransferError> {
        let _permit = self.permit().await;
        self.put_object(key, ByteStream::from(body), md5, content_type)
            .await
    }

    /// Uploads a file from disk: one streamed PutObject below the multipart threshold,
    /// a multipart upload above it.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        md5: &[u8; 16],
        content_type: &str,
    ) -> Result<Stored, TransferError> {
        if self.is_multipart(size) {
            return self.put_multipart(key, path, size, md5, content_type).await;
        }
        let _permit = self.permit().await;
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(|e| TransferError::Io(std::io::Error::other(e)))?;
        self.put_object(key, body, md5, content_type).await
    }

    /// One PutObject with `Content-MD5` (checked by the server) and `md5chksum`.
    async fn put_object(
        &self,
        key: &str,
        body: ByteStream,
        md5: &[u8; 16],
        content_type: &str,
    ) -> Result<Stored, TransferError> {
        let b64 = md5_base64(md5);
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_md5(&b64)
            .content_type(content_type)
            .metadata("md5chksum", &b64)
            .body(body)
            .customize()
            // Content-MD5 (checked by the server) guards the bytes; a SigV4 SHA-256 of the
            // whole body as well only costs a second pass over it.
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| TransferError::s3("PutObject", e))?;
        Ok(Stored {
            etag: strip_quotes(out.e_tag()),
            multipart: false,
        })
    }

    /// A slot among the UPLOAD_CONCURRENCY requests allowed in flight.
    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore lives as long as `self` and is never closed.
        self.in_flight
            .acquire()
            .await
            .expect("semaphore never closed")
    }

    /// The part size for a file: the configured one, raised until 10 000 parts suffice.
    pub fn part_size_for(&self, size: u64) -> u64 {
        let mut part = self.part_size;
        while size.div_ceil(part) > MAX_PARTS {
            part *= 2;
        }
        part
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        md5: &[u8; 16],
        content_type: &str,
    ) -> Result<Stored, TransferError> {
        let b64 = md5_base64(md5);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .metadata("md5chksum", &b64)
            .send()
            .await
            .map_err(|e| TransferError::s3("CreateMultipartUpload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if let Some(j) = &self.journal {
            if let Err(e) =
                portail_core::catalog::begin_multipart(&j.pool, j.agent_id, key, &upload_id).await
            {
                // Never run an upload a crash could orphan without trace.
                self.abort(key, &upload_id).await;
                return Err(TransferError::Journal(e.to_string()));
            }
        }
        let result = self.run_multipart(key, &upload_id, path, size).await;
        if let Some(j) = &self.journal {
            // Completed or aborted: either way nothing is left to clean up. If this write fails
            // the next start aborts an upload that no longer exists, which is harmless.
            if let Err(e) = portail_core::catalog::end_multipart(&j.pool, &upload_id).await {
                tracing::warn!(key, upload_id, error = %e, "could not clear the multipart journal");
            }
        }
        result
    }

    async fn run_multipart(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Stored, TransferError> {
        let upload_id = upload_id.to_string();
        match self.upload_parts(key, &upload_id, path, size).await {
            Ok(parts) => {
                let done = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match done {
                    Ok(out) => Ok(Stored {
                        etag: strip_quotes(out.e_tag()),
                        multipart: true,
                    }),
                    Err(e) => {
                        self.abort(key, &upload_id).await;
                        Err(TransferError::s3("CompleteMultipartUpload", e))
                    }
                }
            }
            Err(e) => {
                self.abort(key, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, TransferError> {
        let part_size = self.part_size_for(size);
        let count = size.div_ceil(part_size).max(1);
        let file = Arc::new(std::fs::File::open(path)?);
        let mut parts: Vec<CompletedPart> = futures::stream::iter(0..count)
            .map(|i| {
                let file = Arc::clone(&file);
                async move {
                    let _permit = self.permit().await;
                    let offset = i * part_size;
                    let len = part_size.min(size - offset) as usize;
                    let (buf, md5) = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; len];
                        file.read_exact_at(&mut buf, offset)?;
                        let md5: [u8; 16] = Md5::digest(&buf).into();
                        Ok::<_, std::io::Error>((buf, md5))
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    let number = (i + 1) as i32;
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_md5(md5_base64(&md5))
                        .body(ByteStream::from(buf))
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| TransferError::s3("UploadPart", e))?;
                    Ok::<_, TransferError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(String::from))
                            .build(),
                    )
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    /// Aborts a multipart upload, logging (not failing) if even that is impossible.
    pub async fn abort(&self, key: &str, upload_id: &str) {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = res {
            tracing::warn!(key, upload_id, error = %TransferError::s3("AbortMultipartUpload", e), "could not abort multipart upload");
        }
    }

    /// Copies an object server-side, keeping its metadata (and so its `md5chksum`).
    pub async fn copy(&self, from_key: &str, to_key: &str) -> Result<Stored, TransferError> {
        let _permit = self.permit().await;
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to_key)
            .copy_source(encode_copy_source(&self.bucket, from_key))
            .send()
            .await
            .map_err(|e| TransferError::s3("CopyObject", e))?;
        let etag = out.copy_object_result().and_then(|r| r.e_tag());
        Ok(Stored {
            etag: strip_quotes(etag),
            multipart: false,
        })
    }

    /// Deletes up to 1000 keys in one DeleteObjects call. Returns, for each key that failed,
    /// the key and the reason; a key that was already absent counts as deleted.
    pub async fn delete_batch(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, TransferError> {
        debug_assert!(keys.len() <= 1000);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransferError::S3 {
                op: "DeleteObjects",
                code: None,
                message: e.to_string(),
            })?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| TransferError::S3 {
                op: "DeleteObjects",
                code: None,
                message: e.to_string(),
            })?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| TransferError::s3("DeleteObjects", e))?;
        Ok(out
            .errors()
            .iter()
            .filter(|e| e.code() != Some("NoSuchKey"))
            .map(|e| {
                (
                    e.key().unwrap_or_default().to_string(),
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or_default()
                    ),
                )
            })
            .collect())
    }
}

/// The absolute path of a relative one under the root.
pub fn absolute(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_percent_encoded_but_keeps_slashes() {
        assert_eq!(
            encode_copy_source("b", "a dir/x+y#?%.txt"),
            "b/a%20dir/x%2By%23%3F%25.txt"
        );
        assert_eq!(encode_copy_source("b", "é"), "b/%C3%A9");
    }

    #[test]
    fn content_type_from_extension() {
        assert_eq!(content_type_for("a/b.txt"), "text/plain");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }
}
