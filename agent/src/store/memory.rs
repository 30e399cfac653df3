//! A bucket in memory, for unit tests: [`ObjectClient`] without a server.
//!
//! In: the same requests as S3. Out: S3's answers for what the agent relies on: `Content-MD5`
//! checked (`BadDigest`), single-part ETags that are the MD5, multipart ETags that are not
//! (`md5-of-part-md5s-N`), user metadata, copies that keep or replace it, `NoSuchKey`,
//! `NoSuchUpload`, and, when made versioned, version ids and delete markers. Every request is
//! logged by its S3 name ([`MemoryClient::requests`]), so a test can count PutObjects.
//!
//! It is not a model of S3's consistency, its limits (5 GiB, 10 000 parts) or its listing
//! order; the end-to-end tests run on s3s-fs and moto for those.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use md5::{Digest, Md5};

use super::client::{Answer, Body, Chunks, Head, ObjectClient, OpenUpload, Written};
use super::write::WriteOptions;
use super::{ListedObject, ListedVersion, ObjectInfo, TransferError};

/// One stored version of a key, or a delete marker.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// The bytes (empty for a delete marker).
    pub bytes: Bytes,
    /// The ETag, without quotes.
    pub etag: String,
    /// The user metadata.
    pub metadata: HashMap<String, String>,
    /// The content type.
    pub content_type: String,
    /// The storage class it was written in (None: STANDARD).
    pub storage_class: Option<String>,
    /// Its version id ("null" when the bucket keeps no versions).
    pub version_id: String,
    /// When it was written.
    pub modified: DateTime<Utc>,
    /// A delete marker rather than an object.
    pub delete_marker: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Each key's versions, oldest first; the last is current.
    keys: BTreeMap<String, Vec<StoredObject>>,
    /// Uploads in progress: key, metadata, parts by number.
    uploads: BTreeMap<String, Upload>,
    requests: Vec<&'static str>,
    next_id: u64,
}

#[derive(Debug)]
struct Upload {
    key: String,
    content_type: String,
    metadata: HashMap<String, String>,
    parts: BTreeMap<i32, (Bytes, String)>,
}

/// A bucket in memory. Cheap to create; share it with `Arc`.
#[derive(Debug, Default)]
pub struct MemoryClient {
    versioned: bool,
    state: Mutex<State>,
}

fn error(op: &'static str, code: &str, message: impl Into<String>) -> TransferError {
    TransferError::S3 {
        op,
        code: Some(code.to_string()),
        message: format!("{code}: {}", message.into()),
    }
}

fn hex_md5(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

impl MemoryClient {
    /// An empty bucket that keeps no versions.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bucket with versioning Enabled.
    pub fn versioned() -> Self {
        MemoryClient {
            versioned: true,
            ..Self::default()
        }
    }

    /// The requests served so far, by S3 name, in order.
    pub fn requests(&self) -> Vec<&'static str> {
        self.lock().requests.clone()
    }

    /// How many requests named `op` were served.
    pub fn count(&self, op: &str) -> usize {
        self.lock().requests.iter().filter(|r| **r == op).count()
    }

    /// The current object at `key` (None if absent or deleted).
    pub fn object(&self, key: &str) -> Option<StoredObject> {
        let state = self.lock();
        let current = state.keys.get(key)?.last()?;
        (!current.delete_marker).then(|| current.clone())
    }

    /// Every version of `key`, delete markers included, oldest first.
    pub fn versions_of(&self, key: &str) -> Vec<StoredObject> {
        self.lock().keys.get(key).cloned().unwrap_or_default()
    }

    /// The keys that have a current object, in order.
    pub fn keys(&self) -> Vec<String> {
        let state = self.lock();
        let live = state
            .keys
            .iter()
            .filter(|(_, v)| v.last().is_some_and(|o| !o.delete_marker));
        live.map(|(k, _)| k.clone()).collect()
    }

    /// The multipart uploads in progress, as `(key, upload id)`.
    pub fn open_uploads(&self) -> Vec<(String, String)> {
        let state = self.lock();
        let open = state.uploads.iter();
        open.map(|(id, u)| (u.key.clone(), id.clone())).collect()
    }

    /// Stores `bytes` at `key` directly, as another writer would (no request logged).
    pub fn insert(&self, key: &str, bytes: &[u8], metadata: HashMap<String, String>) {
        let mut state = self.lock();
        let object = state.object(
            self.versioned,
            Bytes::copy_from_slice(bytes),
            metadata,
            "".into(),
        );
        state.store(key, object);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, op: &'static str) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.lock();
        state.requests.push(op);
        state
    }
}

impl State {
    fn id(&mut self, versioned: bool) -> String {
        self.next_id += 1;
        if versioned {
            format!("v{:06}", self.next_id)
        } else {
            "null".into()
        }
    }

    fn object(
        &mut self,
        versioned: bool,
        bytes: Bytes,
        metadata: HashMap<String, String>,
        content_type: String,
    ) -> StoredObject {
        StoredObject {
            etag: hex_md5(&bytes),
            bytes,
            metadata,
            content_type,
            storage_class: None,
            version_id: self.id(versioned),
            modified: Utc::now(),
            delete_marker: false,
        }
    }

    /// Makes `object` the current version of `key` (the only one when unversioned).
    fn store(&mut self, key: &str, object: StoredObject) -> Written {
        let written = Written {
            etag: Some(object.etag.clone()),
            version_id: (object.version_id != "null").then(|| object.version_id.clone()),
        };
        let versions = self.keys.entry(key.to_string()).or_default();
        if object.version_id == "null" {
            versions.clear();
        }
        versions.push(object);
        written
    }

    fn current(
        &self,
        op: &'static str,
        key: &str,
        version: Option<&str>,
    ) -> Result<&StoredObject, TransferError> {
        let versions = self.keys.get(key).map(Vec::as_slice).unwrap_or_default();
        let found = match version {
            Some(v) => versions.iter().find(|o| o.version_id == v),
            None => versions.last().filter(|o| !o.delete_marker),
        };
        found.ok_or_else(|| error(op, "NoSuchKey", key))
    }

    fn delete(&mut self, versioned: bool, key: &str, version: Option<&str>) {
        match version {
            Some(v) => {
                if let Some(versions) = self.keys.get_mut(key) {
                    versions.retain(|o| o.version_id != v);
                }
            }
            None if versioned => {
                let mut marker = self.object(true, Bytes::new(), HashMap::new(), String::new());
                marker.delete_marker = true;
                marker.etag = String::new();
                self.keys.entry(key.to_string()).or_default().push(marker);
            }
            None => {
                self.keys.remove(key);
            }
        }
        if self.keys.get(key).is_some_and(Vec::is_empty) {
            self.keys.remove(key);
        }
    }
}

fn storage_class(write: &WriteOptions) -> Option<String> {
    write.storage_class.as_ref().map(|c| c.as_str().to_string())
}

impl MemoryClient {
    fn put(
        &self,
        key: &str,
        bytes: Bytes,
        info: &ObjectInfo,
        write: &WriteOptions,
    ) -> Result<Written, TransferError> {
        let mut state = self.serve("PutObject");
        if Md5::digest(&bytes).as_slice() != info.md5 {
            return Err(error(
                "PutObject",
                "BadDigest",
                "the Content-MD5 you specified did not match what we received",
            ));
        }
        let mut object = state.object(
            self.versioned,
            bytes,
            info.metadata(),
            info.content_type.clone(),
        );
        object.storage_class = storage_class(write);
        Ok(state.store(key, object))
    }

    fn copy(
        &self,
        from: &str,
        to: &str,
        info: Option<&ObjectInfo>,
        write: &WriteOptions,
    ) -> Result<Written, TransferError> {
        let mut state = self.serve("CopyObject");
        let mut object = state.current("CopyObject", from, None)?.clone();
        if let Some(info) = info {
            object.metadata = info.metadata();
            object.content_type = info.content_type.clone();
        }
        object.storage_class = storage_class(write);
        object.version_id = state.id(self.versioned);
        object.modified = Utc::now();
        Ok(state.store(to, object))
    }

    fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, Option<String>)>,
    ) -> Result<Written, TransferError> {
        let op = "CompleteMultipartUpload";
        let mut state = self.serve(op);
        let upload = state
            .uploads
            .remove(upload_id)
            .ok_or_else(|| error(op, "NoSuchUpload", upload_id))?;
        let (mut bytes, mut md5s) = (Vec::new(), Vec::new());
        for (n, etag) in &parts {
            let Some((body, sent)) = upload.parts.get(n) else {
                return Err(error(op, "InvalidPart", format!("part {n}")));
            };
            if etag.as_deref().map(|e| e.trim_matches('"')) != Some(sent.as_str()) {
                return Err(error(op, "InvalidPart", format!("part {n}: ETag {etag:?}")));
            }
            bytes.extend_from_slice(body);
            md5s.extend_from_slice(&Md5::digest(body));
        }
        let mut object = state.object(
            self.versioned,
            bytes.into(),
            upload.metadata,
            upload.content_type,
        );
        object.etag = format!("{}-{}", hex_md5(&md5s), parts.len());
        debug_assert_eq!(upload.key, key);
        Ok(state.store(key, object))
    }

    fn head(&self, key: &str, version_id: Option<&str>) -> Result<Head, TransferError> {
        let state = self.serve("HeadObject");
        let object = state.current("HeadObject", key, version_id)?;
        Ok(Head {
            size: object.bytes.len() as i64,
            metadata: Some(object.metadata.clone()),
        })
    }

    fn get(
        &self,
        key: &str,
        version_id: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<Chunks, TransferError> {
        let state = self.serve("GetObject");
        let bytes = state.current("GetObject", key, version_id)?.bytes.clone();
        let bytes = match range {
            Some((start, end)) => {
                let end = (end as usize).min(bytes.len());
                bytes.slice((start as usize).min(end)..end)
            }
            None => bytes,
        };
        // In chunks of 64 KiB, as a body arrives from the network.
        let chunks: Vec<_> = bytes
            .chunks(64 << 10)
            .map(|c| Ok::<_, TransferError>(bytes.slice_ref(c)))
            .collect();
        Ok(futures::StreamExt::boxed(futures::stream::iter(chunks)))
    }

    fn listed(&self, prefix: &str) -> HashMap<String, ListedObject> {
        let state = self.serve("ListObjectsV2");
        let under = state
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        under
            .filter_map(|(k, v)| {
                let o = v.last().filter(|o| !o.delete_marker)?;
                let listed = ListedObject {
                    size: o.bytes.len() as i64,
                    etag: o.etag.clone(),
                    storage_class: o.storage_class.clone(),
                    modified: Some(o.modified),
                };
                Some((k.clone(), listed))
            })
            .collect()
    }

    fn listed_versions(&self, prefix: &str) -> Vec<ListedVersion> {
        let state = self.serve("ListObjectVersions");
        let under = state
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        let mut out = Vec::new();
        for (key, versions) in under {
            for (i, o) in versions.iter().enumerate() {
                out.push(ListedVersion {
                    key: key.clone(),
                    version_id: o.version_id.clone(),
                    is_latest: i + 1 == versions.len(),
                    delete_marker: o.delete_marker,
                    modified: o.modified,
                    etag: o.etag.clone(),
                });
            }
        }
        out
    }
}

impl ObjectClient for MemoryClient {
    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Body,
        info: &'a ObjectInfo,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written> {
        async move {
            let bytes = match body {
                Body::Bytes(b) => b,
                Body::File { path, size } => {
                    let bytes = tokio::fs::read(&path).await?;
                    if bytes.len() as u64 != size {
                        return Err(TransferError::Io(std::io::Error::other(
                            "the file's length changed",
                        )));
                    }
                    bytes.into()
                }
            };
            self.put(key, bytes, info, write)
        }
        .boxed()
    }

    fn copy_object<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        info: Option<&'a ObjectInfo>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written> {
        futures::future::ready(self.copy(from, to, info, write)).boxed()
    }

    fn delete_objects<'a>(
        &'a self,
        ids: &'a [(String, Option<String>)],
    ) -> Answer<'a, Vec<(String, String)>> {
        let mut state = self.serve("DeleteObjects");
        for (key, version) in ids {
            state.delete(self.versioned, key, version.as_deref());
        }
        futures::future::ready(Ok(Vec::new())).boxed()
    }

    fn create_multipart<'a>(
        &'a self,
        key: &'a str,
        info: &'a ObjectInfo,
        _write: &'a WriteOptions,
    ) -> Answer<'a, String> {
        let mut state = self.serve("CreateMultipartUpload");
        state.next_id += 1;
        let id = format!("upload-{}", state.next_id);
        let upload = Upload {
            key: key.to_string(),
            content_type: info.content_type.clone(),
            metadata: info.metadata(),
            parts: BTreeMap::new(),
        };
        state.uploads.insert(id.clone(), upload);
        futures::future::ready(Ok(id)).boxed()
    }

    fn upload_part<'a>(
        &'a self,
        _key: &'a str,
        upload_id: &'a str,
        number: i32,
        body: Bytes,
        md5: [u8; 16],
        _write: &'a WriteOptions,
    ) -> Answer<'a, Option<String>> {
        let op = "UploadPart";
        let mut state = self.serve(op);
        let answer = match state.uploads.get_mut(upload_id) {
            None => Err(error(op, "NoSuchUpload", upload_id)),
            Some(_) if Md5::digest(&body).as_slice() != md5 => {
                Err(error(op, "BadDigest", format!("part {number}")))
            }
            Some(upload) => {
                let etag = hex_md5(&body);
                upload.parts.insert(number, (body, etag.clone()));
                Ok(Some(format!("\"{etag}\"")))
            }
        };
        futures::future::ready(answer).boxed()
    }

    fn complete_multipart<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: Vec<(i32, Option<String>)>,
    ) -> Answer<'a, Written> {
        futures::future::ready(self.complete(key, upload_id, parts)).boxed()
    }

    fn abort_multipart<'a>(&'a self, _key: &'a str, upload_id: &'a str) -> Answer<'a, ()> {
        let mut state = self.serve("AbortMultipartUpload");
        let answer = match state.uploads.remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(error("AbortMultipartUpload", "NoSuchUpload", upload_id)),
        };
        futures::future::ready(answer).boxed()
    }

    fn list_multipart_uploads<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<OpenUpload>> {
        let state = self.serve("ListMultipartUploads");
        let open = state
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix));
        let open = open.map(|(id, u)| OpenUpload {
            key: u.key.clone(),
            upload_id: id.clone(),
        });
        futures::future::ready(Ok(open.collect())).boxed()
    }

    fn list_objects<'a>(&'a self, prefix: &'a str) -> Answer<'a, HashMap<String, ListedObject>> {
        futures::future::ready(Ok(self.listed(prefix))).boxed()
    }

    fn list_versions<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<ListedVersion>> {
        futures::future::ready(Ok(self.listed_versions(prefix))).boxed()
    }

    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        _write: &'a WriteOptions,
    ) -> Answer<'a, Head> {
        futures::future::ready(self.head(key, version_id)).boxed()
    }

    fn get_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        range: Option<(u64, u64)>,
        _write: &'a WriteOptions,
    ) -> Answer<'a, Chunks> {
        futures::future::ready(self.get(key, version_id, range)).boxed()
    }

    fn versioning_enabled(&self) -> Answer<'_, bool> {
        drop(self.serve("GetBucketVersioning"));
        futures::future::ready(Ok(self.versioned)).boxed()
    }

    fn bucket_reachable(&self) -> BoxFuture<'_, bool> {
        drop(self.serve("HeadBucket"));
        futures::future::ready(true).boxed()
    }
}
