//! [`ObjectClient`] on aws-sdk-s3: the client that runs.
//!
//! In: one request's parts. Out: the SDK's answer in the store's words. Every SDK call of the
//! agent is here (`tests/tests/iam.rs` reads them to check the IAM policy). Checksums are the
//! ones the config builder sets (`WhenRequired`); bodies carry our own `Content-MD5`, so their
//! SigV4 payload hash is skipped (a second pass over every byte for no added safety).

use std::collections::HashMap;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::client::{Answer, Body, Chunks, Head, ObjectClient, OpenUpload, Written};
use super::write::{apply_sse_c, apply_write_options, Sse, WriteOptions};
use super::{md5_base64, strip_quotes, ListedObject, ListedVersion, ObjectInfo, TransferError};

/// One bucket through aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct SdkClient {
    client: Client,
    bucket: String,
}

impl SdkClient {
    /// The client for `bucket`.
    pub fn new(client: Client, bucket: String) -> Self {
        SdkClient { client, bucket }
    }
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

fn time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

impl SdkClient {
    async fn put(
        &self,
        key: &str,
        body: Body,
        info: &ObjectInfo,
        write: &WriteOptions,
    ) -> Result<Written, TransferError> {
        let body = match body {
            Body::Bytes(b) => ByteStream::from(b),
            Body::File { path, size } => ByteStream::read_from()
                .path(path)
                .length(Length::Exact(size))
                .build()
                .await
                .map_err(|e| TransferError::Io(std::io::Error::other(e)))?,
        };
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_md5(md5_base64(&info.md5))
            .content_type(&info.content_type)
            .set_metadata(Some(info.metadata()))
            .body(body);
        let out = apply_write_options!(put, write)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| TransferError::s3("PutObject", e))?;
        Ok(Written {
            etag: strip_quotes(out.e_tag()),
            version_id: out.version_id().map(String::from),
        })
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        info: Option<&ObjectInfo>,
        write: &WriteOptions,
    ) -> Result<Written, TransferError> {
        let copy = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(encode_copy_source(&self.bucket, from));
        let copy = match info {
            Some(info) => copy
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                .content_type(&info.content_type)
                .set_metadata(Some(info.metadata())),
            None => copy,
        };
        // The source's SSE-C key too: the store must read it to copy it.
        let copy = match &write.sse {
            Some(Sse::Customer {
                key_b64,
                key_md5_b64,
            }) => copy
                .copy_source_sse_customer_algorithm("AES256")
                .copy_source_sse_customer_key(key_b64)
                .copy_source_sse_customer_key_md5(key_md5_b64),
            _ => copy,
        };
        // Tags and storage class are set anew (REPLACE), so a copy never keeps stale ones.
        let copy = copy.set_tagging_directive(
            write
                .tags
                .as_ref()
                .map(|_| aws_sdk_s3::types::TaggingDirective::Replace),
        );
        let out = apply_write_options!(copy, write)
            .send()
            .await
            .map_err(|e| TransferError::s3("CopyObject", e))?;
        let etag = out.copy_object_result().and_then(|r| r.e_tag());
        Ok(Written {
            etag: strip_quotes(etag),
            version_id: out.version_id().map(String::from),
        })
    }

    async fn delete(
        &self,
        ids: &[(String, Option<String>)],
    ) -> Result<Vec<(String, String)>, TransferError> {
        let objects = ids
            .iter()
            .map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .set_version_id(v.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransferError::invalid("DeleteObjects", e))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| TransferError::invalid("DeleteObjects", e))?;
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
                let reason = format!(
                    "{}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or_default()
                );
                (e.key().unwrap_or_default().to_string(), reason)
            })
            .collect())
    }

    async fn create(
        &self,
        key: &str,
        info: &ObjectInfo,
        write: &WriteOptions,
    ) -> Result<String, TransferError> {
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(&info.content_type)
            .set_metadata(Some(info.metadata()));
        let created = apply_write_options!(create, write)
            .send()
            .await
            .map_err(|e| TransferError::s3("CreateMultipartUpload", e))?;
        Ok(created.upload_id().unwrap_or_default().to_string())
    }

    async fn part(
        &self,
        (key, upload_id, number): (&str, &str, i32),
        body: bytes::Bytes,
        md5: [u8; 16],
        write: &WriteOptions,
    ) -> Result<Option<String>, TransferError> {
        let part = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_md5(md5_base64(&md5))
            .body(ByteStream::from(body));
        let out = apply_sse_c!(part, write)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| TransferError::s3("UploadPart", e))?;
        Ok(out.e_tag().map(String::from))
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, Option<String>)>,
    ) -> Result<Written, TransferError> {
        let parts = parts
            .into_iter()
            .map(|(n, etag)| {
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(etag)
                    .build()
            })
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| TransferError::s3("CompleteMultipartUpload", e))?;
        Ok(Written {
            etag: strip_quotes(out.e_tag()),
            version_id: out.version_id().map(String::from),
        })
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), TransferError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| TransferError::s3("AbortMultipartUpload", e))?;
        Ok(())
    }

    async fn uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, TransferError> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| {
                tracing::debug!(error = %DisplayErrorContext(&e), "ListMultipartUploads failed");
                TransferError::s3("ListMultipartUploads", e)
            })?;
        Ok(out
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(OpenUpload {
                    key: u.key()?.to_string(),
                    upload_id: u.upload_id()?.to_string(),
                })
            })
            .collect())
    }

    async fn objects(&self, prefix: &str) -> Result<HashMap<String, ListedObject>, TransferError> {
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
                        modified: time(o.last_modified()),
                    };
                    objects.insert(k.to_string(), listed);
                }
            }
        }
        Ok(objects)
    }

    async fn versions(&self, prefix: &str) -> Result<Vec<ListedVersion>, TransferError> {
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
                    modified: time(v.last_modified()).unwrap_or_default(),
                    etag: strip_quotes(v.e_tag()).unwrap_or_default(),
                });
            }
            for m in page.delete_markers() {
                listed.push(ListedVersion {
                    key: m.key().unwrap_or_default().to_string(),
                    version_id: m.version_id().unwrap_or_default().to_string(),
                    is_latest: m.is_latest().unwrap_or(false),
                    delete_marker: true,
                    modified: time(m.last_modified()).unwrap_or_default(),
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

    async fn head(
        &self,
        key: &str,
        version_id: Option<&str>,
        write: &WriteOptions,
    ) -> Result<Head, TransferError> {
        let head = (self.client.head_object().bucket(&self.bucket).key(key))
            .set_version_id(version_id.map(String::from));
        let head = apply_sse_c!(head, write)
            .send()
            .await
            .map_err(|e| TransferError::s3("HeadObject", e))?;
        Ok(Head {
            size: head.content_length().unwrap_or(-1),
            metadata: head.metadata().cloned(),
        })
    }

    async fn get(
        &self,
        key: &str,
        version_id: Option<&str>,
        range: Option<(u64, u64)>,
        write: &WriteOptions,
    ) -> Result<Chunks, TransferError> {
        let get = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(String::from))
            .set_range(range.map(|(start, end)| format!("bytes={start}-{}", end - 1)));
        let out = apply_sse_c!(get, write)
            .send()
            .await
            .map_err(|e| TransferError::s3("GetObject", e))?;
        let chunks = futures::stream::try_unfold(out.body, |mut body| async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(TransferError::Io(std::io::Error::other(e))),
            }
        });
        Ok(chunks.boxed())
    }

    async fn versioning(&self) -> Result<bool, TransferError> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| TransferError::s3("GetBucketVersioning", e))?;
        Ok(out.status() == Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled))
    }
}

impl ObjectClient for SdkClient {
    fn put_object<'a>(
        &'a self,
        key: &'a str,
        body: Body,
        info: &'a ObjectInfo,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written> {
        self.put(key, body, info, write).boxed()
    }
    fn copy_object<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        info: Option<&'a ObjectInfo>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Written> {
        self.copy(from, to, info, write).boxed()
    }
    fn delete_objects<'a>(
        &'a self,
        ids: &'a [(String, Option<String>)],
    ) -> Answer<'a, Vec<(String, String)>> {
        self.delete(ids).boxed()
    }
    fn create_multipart<'a>(
        &'a self,
        key: &'a str,
        info: &'a ObjectInfo,
        write: &'a WriteOptions,
    ) -> Answer<'a, String> {
        self.create(key, info, write).boxed()
    }
    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        body: bytes::Bytes,
        md5: [u8; 16],
        write: &'a WriteOptions,
    ) -> Answer<'a, Option<String>> {
        self.part((key, upload_id, number), body, md5, write)
            .boxed()
    }
    fn complete_multipart<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: Vec<(i32, Option<String>)>,
    ) -> Answer<'a, Written> {
        self.complete(key, upload_id, parts).boxed()
    }
    fn abort_multipart<'a>(&'a self, key: &'a str, upload_id: &'a str) -> Answer<'a, ()> {
        self.abort(key, upload_id).boxed()
    }
    fn list_multipart_uploads<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<OpenUpload>> {
        self.uploads(prefix).boxed()
    }
    fn list_objects<'a>(&'a self, prefix: &'a str) -> Answer<'a, HashMap<String, ListedObject>> {
        self.objects(prefix).boxed()
    }
    fn list_versions<'a>(&'a self, prefix: &'a str) -> Answer<'a, Vec<ListedVersion>> {
        self.versions(prefix).boxed()
    }
    fn head_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Head> {
        self.head(key, version_id, write).boxed()
    }
    fn get_object<'a>(
        &'a self,
        key: &'a str,
        version_id: Option<&'a str>,
        range: Option<(u64, u64)>,
        write: &'a WriteOptions,
    ) -> Answer<'a, Chunks> {
        self.get(key, version_id, range, write).boxed()
    }
    fn versioning_enabled(&self) -> Answer<'_, bool> {
        self.versioning().boxed()
    }
    fn bucket_reachable(&self) -> BoxFuture<'_, bool> {
        async move {
            let head = self.client.head_bucket().bucket(&self.bucket).send();
            head.await.is_ok()
        }
        .boxed()
    }
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
}
