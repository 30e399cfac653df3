//! A client that fails the requests a test names, and passes the others to the one it wraps.
//!
//! In: an [`ObjectClient`] and faults, each an S3 operation (`"UploadPart"`), optionally a part
//! of the key, the error code S3 would answer (`"SlowDown"`, `"AccessDenied"`) and how many
//! times. Out: those requests fail as S3 would fail them, before reaching the inner client;
//! [`FaultyClient::injected`] says how many did.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::client::{Answer, Body, Chunks, Head, ObjectClient, OpenUpload, Written};
use super::write::WriteOptions;
use super::{ListedObject, ListedVersion, ObjectInfo, TransferError};

/// One failure to inject.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The S3 operation, e.g. `"PutObject"`.
    pub op: &'static str,
    /// Only requests whose key contains this (None: any key).
    pub key_contains: Option<String>,
    /// The error code to answer.
    pub code: &'static str,
    /// How many matching requests fail (then the fault is spent).
    pub times: usize,
}

/// Wraps a client and fails the requests its faults match.
#[derive(Debug)]
pub struct FaultyClient {
    inner: Arc<dyn ObjectClient>,
    faults: Mutex<Vec<Fault>>,
    injected: Mutex<usize>,
}

impl FaultyClient {
    /// A wrapper that injects nothing until told to.
    pub fn new(inner: Arc<dyn ObjectClient>) -> Self {
        FaultyClient {
            inner,
            faults: Mutex::new(Vec::new()),
            injected: Mutex::new(0),
        }
    }

    /// Fails the next `times` requests `op` whose key contains `key_contains` (any key: "").
    pub fn fail(&self, op: &'static str, key_contains: &str, code: &'static str, times: usize) {
        let key_contains = (!key_contains.is_empty()).then(|| key_contains.to_string());
        let fault = Fault {
            op,
            key_contains,
            code,
            times,
        };
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// How many requests were failed so far.
    pub fn injected(&self) -> usize {
        *self.injected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error for this request, if a fault matches it (and is spent by one).
    fn check(&self, op: &'static str, key: &str) -> Result<(), TransferError> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let hit = faults.iter_mut().find(|f| {
            f.op == op && f.times > 0 && f.key_contains.as_deref().is_none_or(|k| key.contains(k))
        });
        let Some(fault) = hit else { return Ok(()) };
        fault.times -= 1;
        *self.injected.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Err(TransferError::S3 {
            op,
            code: Some(fault.code.to_string()),
            message: format!("{}: injected by FaultyClient", fault.code),
        })
    }

    fn refuse<'a, T: Send + 'a>(&self, op: &'static str, key: &str) -> Option<Answer<'a, T>> {
        self.check(op, key)
            .err()
            .map(|e| futures::future::ready(Err(e)).boxed())
    }
}

impl ObjectClient for FaultyClient {
    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Body,
        info: &'a ObjectInfo,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written> {
        self.refuse("PutObject", key)
            .unwrap_or_else(|| self.inner.put_object(key, body, info, write))
    }
    fn copy_object<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        info: Option<&'a ObjectInfo>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written> {
        self.refuse("CopyObject", to)
            .unwrap_or_else(|| self.inner.copy_object(from, to, info, write))
    }
    fn delete_objects<'a>(
        &'a self,
        ids: &'a [(String, Option<String>)],
    ) -> Answer<'a, Vec<(String, String)>> {
        let keys: Vec<&str> = ids.iter().map(|(k, _)| k.as_str()).collect();
        self.refuse("DeleteObjects", &keys.join("\n"))
            .unwrap_or_else(|| self.inner.delete_objects(ids))
    }
    fn create_multipart<'a>(
        &'a self,
        key: &'a str,
        info: &'a ObjectInfo,
        write: &'a WriteOptions,
    ) -> Answer<'a, String> {
        self.refuse("CreateMultipartUpload", key)
            .unwrap_or_else(|| self.inner.create_multipart(key, info, write))
    }
    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        body: Bytes,
        md5: [u8; 16],
        write: &'a WriteOptions,
    ) -> Answer<'a, Option<String>> {
        self.refuse("UploadPart", key).unwrap_or_else(|| {
            self.inner
                .upload_part(key, upload_id, number, body, md5, write)
        })
    }
    fn complete_multipart<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: Vec<(i32, Option<String>)>,
    ) -> Answer<'a, Written> {
        self.refuse("CompleteMultipartUpload", key)
            .unwrap_or_else(|| self.inner.complete_multipart(key, upload_id, parts))
    }
    fn abort_multipart<'a>(&'a self, key: &'a str, upload_id: &'a str) -> Answer<'a, ()> {
        self.refuse("AbortMultipartUpload", key)
            .unwrap_or_else(|| self.inner.abort_multipart(key, upload_id))
    }
    fn list_multipart_uploads<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<OpenUpload>> {
        self.refuse("ListMultipartUploads", prefix)
            .unwrap_or_else(|| self.inner.list_multipart_uploads(prefix))
    }
    fn list_objects<'a>(&'a self, prefix: &'a str) -> Answer<'a, HashMap<String, ListedObject>> {
        self.refuse("ListObjectsV2", prefix)
            .unwrap_or_else(|| self.inner.list_objects(prefix))
    }
    fn list_versions<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<ListedVersion>> {
        self.refuse("ListObjectVersions", prefix)
            .unwrap_or_else(|| self.inner.list_versions(prefix))
    }
    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Head> {
        self.refuse("HeadObject", key)
            .unwrap_or_else(|| self.inner.head_object(key, version_id, write))
    }
    fn get_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        range: Option<(u64, u64)>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Chunks> {
        self.refuse("GetObject", key)
            .unwrap_or_else(|| self.inner.get_object(key, version_id, range, write))
    }
    fn versioning_enabled(&self) -> Answer<'_, bool> {
        self.refuse("GetBucketVersioning", "")
            .unwrap_or_else(|| self.inner.versioning_enabled())
    }
    fn bucket_reachable(&self) -> BoxFuture<'_, bool> {
        match self.check("HeadBucket", "") {
            Ok(()) => self.inner.bucket_reachable(),
            Err(_) => futures::future::ready(false).boxed(),
        }
    }
}
