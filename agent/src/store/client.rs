//! The seam between the store's logic and an S3 server: one method per request.
//!
//! In: a key and what one request carries. Out: what S3 answered, or a [`TransferError`].
//!
//! [`super::Transfer`] holds the logic (request slots, the BWLIMIT budget, the multipart
//! journal, abort on failure, ranged downloads) and sends every request through an
//! [`ObjectClient`]. Three implement it: [`super::sdk::SdkClient`] (aws-sdk-s3, what runs),
//! [`super::memory::MemoryClient`] (a bucket in memory, for unit tests), and
//! [`super::faulty::FaultyClient`] (wraps another and fails the requests a test names). This is
//! mountpoint-s3's `ObjectClient` with its mock and its failure-injecting wrapper; unlike
//! mountpoint, the store holds the client as a trait object, because every call is a network
//! request and a generic parameter would climb through every layer above.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::write::WriteOptions;
use super::{ListedObject, ListedVersion, ObjectInfo, TransferError};

/// What a request answers, boxed so that the trait can be a trait object.
pub type Answer<'a, T> = BoxFuture<'a, Result<T, TransferError>>;

/// An object's bytes as they arrive.
pub type Chunks = BoxStream<'static, Result<Bytes, TransferError>>;

/// The body of a PutObject.
#[derive(Debug, Clone)]
pub enum Body {
    /// Bytes already in memory.
    Bytes(Bytes),
    /// A file streamed from disk, which must be exactly `size` bytes long.
    File {
        /// The file.
        path: PathBuf,
        /// Its length.
        size: u64,
    },
}

/// What S3 answered a write that made an object (a put, a copy, a completed upload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The ETag without quotes.
    pub etag: Option<String>,
    /// The version S3 gave the object, when the bucket keeps versions.
    pub version_id: Option<String>,
}

/// What a HeadObject answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The size in bytes (-1 when the store did not say).
    pub size: i64,
    /// The user metadata (keys without `x-amz-meta-`).
    pub metadata: Option<HashMap<String, String>>,
}

/// A multipart upload a store lists as in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// Its key.
    pub key: String,
    /// Its upload id.
    pub upload_id: String,
}

/// One request per method. Writes take the [`WriteOptions`] (encryption, storage class, tags)
/// that their request carries; reads of an SSE-C object take them for the key.
pub trait ObjectClient: Send + Sync + std::fmt::Debug {
    /// PutObject with `Content-MD5` (the server refuses other bytes), the content type and the
    /// user metadata of `info`.
    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Body,
        info: &'a ObjectInfo,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written>;
    /// CopyObject within the bucket. With `info`, the copy gets that metadata; without, it
    /// keeps the source's.
    fn copy_object<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        info: Option<&'a ObjectInfo>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written>;
    /// DeleteObjects for up to 1000 keys (a version of one, with an id). Answers, for each key
    /// that failed, the key and the reason; a key already absent counts as deleted.
    fn delete_objects<'a>(
        &'a self,
        ids: &'a [(String, Option<String>)],
    ) -> Answer<'a, Vec<(String, String)>>;
    /// CreateMultipartUpload; answers the upload id.
    fn create_multipart<'a>(
        &'a self,
        key: &'a str,
        info: &'a ObjectInfo,
        write: &'a WriteOptions,
    ) -> Answer<'a, String>;
    /// UploadPart with the part's `Content-MD5`; answers the part's ETag.
    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        body: Bytes,
        md5: [u8; 16],
        write: &'a WriteOptions,
    ) -> Answer<'a, Option<String>>;
    /// CompleteMultipartUpload from `(part number, ETag)` pairs in order.
    fn complete_multipart<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: Vec<(i32, Option<String>)>,
    ) -> Answer<'a, Written>;
    /// AbortMultipartUpload.
    fn abort_multipart<'a>(&'a self, key: &'a str, upload_id: &'a str) -> Answer<'a, ()>;
    /// ListMultipartUploads under `prefix` (one page: what an abort at start needs).
    fn list_multipart_uploads<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<OpenUpload>>;
    /// ListObjectsV2 under `prefix`, every page, keys raw.
    fn list_objects<'a>(&'a self, prefix: &'a str) -> Answer<'a, HashMap<String, ListedObject>>;
    /// ListObjectVersions under `prefix`, every page, in no particular order.
    fn list_versions<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<ListedVersion>>;
    /// HeadObject of the current object, or of one version.
    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Head>;
    /// GetObject, of bytes `start..end` when `range` is given.
    fn get_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        range: Option<(u64, u64)>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Chunks>;
    /// Whether the bucket has versioning Enabled (GetBucketVersioning).
    fn versioning_enabled(&self) -> Answer<'_, bool>;
    /// Whether the bucket answers a HeadBucket.
    fn bucket_reachable(&self) -> BoxFuture<'_, bool>;
}
