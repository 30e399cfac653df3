//! The reads the rest of the agent needs from S3: a listing under the prefix and an object's
//! `md5chksum` (for `verify`), whether the bucket answers (for `/readyz`) and keeps versions
//! (for HISTORY=auto), and an object's metadata and versions (for a catalog rebuild). Downloads are in
//! [`super::download`].

use std::collections::HashMap;

use super::{strip_quotes, Transfer, TransferError};

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
        let time = |t: Option<&aws_sdk_s3::primitives::DateTime>| {
            t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                .unwrap_or_default()
        };
        let (mut listed, mut markers) = (Vec::new(), (None, None));
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(markers.0.take())
                .set_version_id_marker(markers.1.take())
                .send()
                .await
                .map_err(|e| TransferError::s3("ListObjectVersions", e))?;
            for v in page.versions() {
                listed.push(ListedVersion {
                    key: v.key().unwrap_or_default().to_string(),
                    version_id: v.version_id().unwrap_or_default().to_string(),
                    is_latest: v.is_latest().unwrap_or(false),
                    delete_marker: false,
                    modified: time(v.last_modified()),
                    etag: strip_quotes(v.e_tag()).unwrap_or_default(),
                });
            }
            for m in page.delete_markers() {
                listed.push(ListedVersion {
                    key: m.key().unwrap_or_default().to_string(),
                    version_id: m.version_id().unwrap_or_default().to_string(),
                    is_latest: m.is_latest().unwrap_or(false),
                    delete_marker: true,
                    modified: time(m.last_modified()),
                    etag: String::new(),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(listed);
            }
            markers = (
                page.next_key_marker().map(String::from),
                page.next_version_id_marker().map(String::from),
            );
        }
    }

    /// Every object under `prefix`, by key. Keys come back raw (no `EncodingType`), so a
    /// `+` in a key stays a `+`.
    pub async fn list_objects(
        &self,
        prefix: &str,
    ) -> Result<HashMap<String, ListedObject>, TransferError> {
        let mut objects = HashMap::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| TransferError::s3("ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    let listed = ListedObject {
                        size: o.size().unwrap_or(-1),
                        etag: strip_quotes(o.e_tag()).unwrap_or_default(),
                        storage_class: o.storage_class().map(|c| c.as_str().to_string()),
                        modified: o.last_modified().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    };
                    objects.insert(k.to_string(), listed);
                }
            }
        }
        Ok(objects)
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
        let head = (self.client.head_object().bucket(&self.bucket).key(key))
            .set_version_id(version_id.map(String::from));
        let head = super::write::apply_sse_c!(head, &self.write)
            .send()
            .await
            .map_err(|e| TransferError::s3("HeadObject", e))?;
        let size = head.content_length().unwrap_or(-1);
        Ok((size, super::metadata::read_back(head.metadata())))
    }

    /// Whether the bucket has versioning Enabled (not Suspended, not never set).
    pub async fn versioning_enabled(&self) -> Result<bool, TransferError> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| TransferError::s3("GetBucketVersioning", e))?;
        Ok(out.status() == Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled))
    }

    /// Whether the bucket answers a HeadBucket.
    pub async fn bucket_reachable(&self) -> bool {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
    }
}
