//! The reads the rest of the agent needs from S3: a listing under the prefix and an object's
//! `md5chksum` (for `verify`), whether the bucket answers (for `/readyz`) and keeps versions
//! (for HISTORY=auto), and an object's metadata and versions (for a catalog rebuild). Downloads are in
//! [`super::download`].

use std::collections::HashMap;

use super::{Transfer, TransferError};

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Size in bytes (-1 when the store did not say).
    pub size: i64,
    /// The ETag without quotes: the MD5 for a single-part upload, something else otherwise.
    pub etag: String,
    /// The storage class the listing names (None: the store did not say, i.e. STANDARD).
    pub storage_class: Option<String>,
    /// When the object was written (for a history copy: when its content was replaced).
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl ListedObject {
    /// Whether the object sits in an archive class (GLACIER, DEEP_ARCHIVE): it must be
    /// restored (RestoreObject) before anyone can read it.
    pub fn archived(&self) -> bool {
        self.storage_class
            .as_deref()
            .is_some_and(|c| super::write::ARCHIVE_CLASSES.contains(&c))
    }
}

impl ListedObject {
    /// The ETag when it can only be the MD5 of the bytes (single part, no `-N` suffix).
    pub fn etag_md5(&self) -> Option<&str> {
        (self.etag.len() == 32 && !self.etag.contains('-')).then_some(self.etag.as_str())
    }
}

/// One entry of a versioned listing: a version of a key, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVersion {
    /// The object's key.
    pub key: String,
    /// The S3 version id.
    pub version_id: String,
    /// Whether this is the key's current entry.
    pub is_latest: bool,
    /// A delete marker: the key was deleted at `modified`.
    pub delete_marker: bool,
    /// When this entry was written.
    pub modified: chrono::DateTime<chrono::Utc>,
    /// The ETag without quotes (empty for a delete marker).
    pub etag: String,
}

impl Transfer {
    /// Every version and delete marker under `prefix` (ListObjectVersions, all pages), in no
    /// particular order. Keys come back raw, as in [`Transfer::list_objects`].
    pub async fn list_versions(&self, prefix: &str) -> Result<Vec<ListedVersion>, TransferError> {
        self.client.list_versions(prefix).await
    }

    /// Every object under `prefix`, by key. Keys come back raw (no `EncodingType`), so a
    /// `+` in a key stays a `+`.
    pub async fn list_objects(
        &self,
        prefix: &str,
    ) -> Result<HashMap<String, ListedObject>, TransferError> {
        self.client.list_objects(prefix).await
    }

    /// The whole-file MD5 (lowercase hex) that an object's `md5chksum` metadata records, or
    /// `None` when it has none (or one that is not base64).
    pub async fn head_md5(&self, key: &str) -> Result<Option<String>, TransferError> {
        let (_, meta) = self.head_metadata(key, None).await?;
        Ok(meta.md5.map(hex::encode))
    }

    /// An object's size and metadata (see [`super::metadata`]): of its version `version_id`
    /// if given, else of the current one.
    pub async fn head_metadata(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<(i64, super::metadata::ReadBack), TransferError> {
        let _permit = self.permit().await;
        let head = (self.client)
            .head_object(key, version_id, &self.write)
            .await?;
        Ok((
            head.size,
            super::metadata::read_back(head.metadata.as_ref()),
        ))
    }

    /// Whether the bucket has versioning Enabled (not Suspended, not never set).
    pub async fn versioning_enabled(&self) -> Result<bool, TransferError> {
        self.client.versioning_enabled().await
    }

    /// Whether the bucket answers a HeadBucket.
    pub async fn bucket_reachable(&self) -> bool {
        self.client.bucket_reachable().await
    }
}
