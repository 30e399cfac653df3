//! Multipart uploads: create (journaled), parts in parallel with `Content-MD5` each, complete;
//! abort on any failure; and at start, abort what an earlier run left behind.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures::stream::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::{ObjectInfo, Stored, Transfer, TransferError};

/// A part sent: its number and the ETag S3 gave it.
type SentPart = (i32, Option<String>);

impl Transfer {
    /// Aborts the multipart uploads a previous run left behind: every journaled one; for an
    /// intent whose CreateMultipartUpload never answered, every upload the store lists for
    /// exactly that key; and, when `prefix` is not empty, every upload listed under it. Only one
    /// process runs per AGENT_ID, so none of them is in flight. Returns how many were aborted.
    pub async fn abort_stale_multiparts(&self, prefix: &str) -> anyhow::Result<usize> {
        let mut aborted = 0;
        if let Some(journal) = &self.journal {
            for entry in journal.open().await? {
                aborted += match &entry.upload_id {
                    Some(id) => {
                        self.abort(&entry.s3_key, id).await;
                        1
                    }
                    None => self.abort_listed(&entry.s3_key, true).await,
                };
                journal.end(entry.id).await?;
            }
        }
        if !prefix.is_empty() {
            aborted += self.abort_listed(prefix, false).await;
        }
        Ok(aborted)
    }

    /// Aborts the uploads the store lists under `prefix` (only those for exactly that key when
    /// `exact`); returns how many.
    async fn abort_listed(&self, prefix: &str, exact: bool) -> usize {
        let listed = self.client.list_multipart_uploads(prefix).await;
        let uploads = match listed {
            Ok(uploads) => uploads,
            // Some stores (s3s-fs among them) cannot list uploads. The journal's upload ids
            // cover every upload S3 answered; only one whose create was cut off may remain.
            Err(e) => {
                if exact {
                    tracing::warn!(key = prefix, error = %e, "cannot list multipart uploads to abort one whose creation was interrupted; if the store keeps it, an AbortIncompleteMultipartUpload lifecycle rule removes it");
                } else {
                    tracing::debug!(error = %e, "ListMultipartUploads unavailable");
                }
                return 0;
            }
        };
        let mut aborted = 0;
        for u in uploads {
            if !exact || u.key == prefix {
                self.abort(&u.key, &u.upload_id).await;
                aborted += 1;
            }
        }
        aborted
    }

    /// Uploads a file as a multipart upload, journaled from before its creation to its
    /// completion or abort.
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        info: &ObjectInfo,
    ) -> Result<Stored, TransferError> {
        let entry = match &self.journal {
            Some(journal) => Some(
                journal
                    .intend(key)
                    .await
                    .map_err(|e| TransferError::Journal(format!("{e:#}")))?,
            ),
            None => None,
        };
        let result = self.create_and_run(key, entry, path, size, info).await;
        if let (Some(journal), Some(entry)) = (&self.journal, entry) {
            // Completed or aborted (or never created): nothing is left to clean up. If this
            // write fails the next start aborts an upload that no longer exists: harmless.
            if let Err(e) = journal.end(entry).await {
                tracing::warn!(key, error = %format!("{e:#}"), "could not clear the multipart journal");
            }
        }
        result
    }

    /// Creates the upload, journals its id, and runs it.
    async fn create_and_run(
        &self,
        key: &str,
        entry: Option<i64>,
        path: &Path,
        size: u64,
        info: &ObjectInfo,
    ) -> Result<Stored, TransferError> {
        let upload_id = (self.client)
            .create_multipart(key, info, &self.write)
            .await?;
        if let (Some(journal), Some(entry)) = (&self.journal, entry) {
            if let Err(e) = journal.begin(entry, &upload_id).await {
                // Never run an upload a crash could orphan without trace.
                self.abort(key, &upload_id).await;
                return Err(TransferError::Journal(format!("{e:#}")));
            }
        }
        self.run_multipart(key, &upload_id, path, size).await
    }

    /// Sends the parts and completes the upload; aborts it if either fails.
    async fn run_multipart(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Stored, TransferError> {
        let parts = match self.upload_parts(key, upload_id, path, size).await {
            Ok(parts) => parts,
            Err(e) => {
                self.abort(key, upload_id).await;
                return Err(e);
            }
        };
        let done = (self.client)
            .complete_multipart(key, upload_id, parts)
            .await;
        match done {
            Ok(out) => Ok(Stored {
                etag: out.etag,
                multipart: true,
                version_id: out.version_id,
            }),
            Err(e) => {
                self.abort(key, upload_id).await;
                Err(e)
            }
        }
    }

    /// Sends every part, `parts_per_file` at a time, each within a request slot.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Vec<SentPart>, TransferError> {
        let part_size = self.config.part_size_for(size);
        let count = size.div_ceil(part_size).max(1);
        let file = Arc::new(std::fs::File::open(path)?);
        let mut parts: Vec<SentPart> = futures::stream::iter(0..count)
            .map(|i| {
                let offset = i * part_size;
                let len = part_size.min(size - offset) as usize;
                self.upload_part(key, upload_id, Arc::clone(&file), i + 1, offset, len)
            })
            .buffer_unordered(self.config.parts_per_file)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.0);
        Ok(parts)
    }

    /// Reads one part from disk (on a blocking thread), and sends it with its `Content-MD5`.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        file: Arc<std::fs::File>,
        number: u64,
        offset: u64,
        len: usize,
    ) -> Result<SentPart, TransferError> {
        self.budget(len as u64).await;
        let _permit = self.permit().await;
        let (buf, md5) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            let md5: [u8; 16] = Md5::digest(&buf).into();
            Ok::<_, std::io::Error>((buf, md5))
        })
        .await
        .map_err(std::io::Error::other)??;
        let number = number as i32;
        let etag = (self.client)
            .upload_part(key, upload_id, number, buf.into(), md5, &self.write)
            .await?;
        Ok((number, etag))
    }

    /// Aborts a multipart upload, logging (not failing) if even that is impossible.
    pub async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) = self.client.abort_multipart(key, upload_id).await {
            tracing::warn!(key, upload_id, error = %e, "could not abort multipart upload");
        }
    }
}
