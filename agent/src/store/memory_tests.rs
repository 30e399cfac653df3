//! The store's logic on a bucket in memory: multipart uploads journaled and aborted on every
//! failure, ranged downloads reassembled and checked, deletes of versions and keys. The same
//! paths run end to end on s3s-fs and moto in `tests/`.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use md5::{Digest, Md5};
use portail_core::catalog::OpenMultipart;

use super::*;
use crate::model::report::FailureKind;

fn config() -> TransferConfig {
    TransferConfig {
        multipart_threshold: 64 << 10,
        part_size: 16 << 10,
        requests_in_flight: 4,
        parts_per_file: 3,
    }
}

fn info(bytes: &[u8]) -> ObjectInfo {
    ObjectInfo {
        md5: Md5::digest(bytes).into(),
        content_type: "application/octet-stream".into(),
        posix: Posix {
            mtime: Utc::now(),
            mode: 0o100644,
            uid: 0,
            gid: 0,
        },
        since: None,
    }
}

/// Bytes that differ from part to part, so a part out of place shows.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// A journal in memory: what was intended, begun and ended.
#[derive(Debug, Default)]
struct Journal {
    entries: Mutex<Vec<OpenMultipart>>,
    ended: Mutex<Vec<i64>>,
    refuse_begin: bool,
}

impl MultipartJournal for Journal {
    fn intend<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<i64>> {
        let mut e = self.entries.lock().unwrap();
        let id = e.len() as i64 + 1;
        e.push(OpenMultipart {
            id,
            s3_key: key.into(),
            upload_id: None,
        });
        futures::future::ready(Ok(id)).boxed()
    }
    fn begin<'a>(&'a self, entry: i64, upload_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        if self.refuse_begin {
            return futures::future::ready(Err(anyhow::anyhow!("catalog down"))).boxed();
        }
        let mut e = self.entries.lock().unwrap();
        e.iter_mut().find(|x| x.id == entry).unwrap().upload_id = Some(upload_id.into());
        futures::future::ready(Ok(())).boxed()
    }
    fn end(&self, entry: i64) -> BoxFuture<'_, anyhow::Result<()>> {
        self.entries.lock().unwrap().retain(|x| x.id != entry);
        self.ended.lock().unwrap().push(entry);
        futures::future::ready(Ok(())).boxed()
    }
    fn open(&self) -> BoxFuture<'_, anyhow::Result<Vec<OpenMultipart>>> {
        futures::future::ready(Ok(self.entries.lock().unwrap().clone())).boxed()
    }
}

fn store(client: Arc<dyn ObjectClient>) -> Transfer {
    Transfer::on(client, "b".into(), config())
}

#[tokio::test]
async fn a_small_file_is_one_put_whose_etag_is_its_md5_and_which_carries_md5chksum() {
    let mem = Arc::new(MemoryClient::new());
    let bytes = data(1000);
    let (_d, path) = file_with(&bytes);
    let stored = store(mem.clone())
        .put_file("k", &path, 1000, &info(&bytes))
        .await
        .unwrap();
    assert!(!stored.multipart);
    let object = mem.object("k").unwrap();
    assert_eq!(object.bytes, bytes);
    assert_eq!(
        stored.etag.as_deref(),
        Some(hex::encode(Md5::digest(&bytes)).as_str())
    );
    let md5chksum = object.metadata.get("md5chksum").unwrap();
    assert_eq!(md5chksum, &md5_base64(&Md5::digest(&bytes).into()));
    assert_eq!(mem.requests(), ["PutObject"]);
}

#[tokio::test]
async fn bytes_that_do_not_match_their_md5_are_refused_as_bad_digest() {
    let mem = Arc::new(MemoryClient::new());
    let err = store(mem.clone())
        .put_bytes("k", bytes::Bytes::from_static(b"abc"), &info(b"abd"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::BadDigest);
    assert!(mem.object("k").is_none());
}

#[tokio::test]
async fn a_large_file_goes_up_in_parts_journaled_from_intent_to_end() {
    let mem = Arc::new(MemoryClient::new());
    let journal = Arc::new(Journal::default());
    let t = store(mem.clone()).with_journal(journal.clone());
    let bytes = data(100 << 10); // 7 parts of 16 KiB, the last one short
    let (_d, path) = file_with(&bytes);
    let stored = t
        .put_file("big", &path, bytes.len() as u64, &info(&bytes))
        .await
        .unwrap();
    assert!(stored.multipart);
    assert!(
        stored.etag.as_deref().unwrap().ends_with("-7"),
        "{stored:?}"
    );
    assert_eq!(mem.object("big").unwrap().bytes, bytes);
    assert_eq!(mem.count("UploadPart"), 7);
    assert!(
        journal.entries.lock().unwrap().is_empty(),
        "the entry ends with the upload"
    );
    assert_eq!(*journal.ended.lock().unwrap(), [1]);
    assert!(mem.open_uploads().is_empty());
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload_and_ends_its_journal_entry() {
    let mem = Arc::new(MemoryClient::new());
    let faulty = Arc::new(FaultyClient::new(mem.clone()));
    faulty.fail("UploadPart", "big", "SlowDown", 1);
    let journal = Arc::new(Journal::default());
    let t = store(faulty.clone()).with_journal(journal.clone());
    let bytes = data(100 << 10);
    let (_d, path) = file_with(&bytes);
    let err = t
        .put_file("big", &path, bytes.len() as u64, &info(&bytes))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Throttled);
    assert_eq!(faulty.injected(), 1);
    assert!(
        mem.object("big").is_none(),
        "no object from a failed upload"
    );
    assert_eq!(mem.count("AbortMultipartUpload"), 1);
    assert!(mem.open_uploads().is_empty(), "no parts left stored");
    assert!(journal.entries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_complete_aborts_too() {
    let mem = Arc::new(MemoryClient::new());
    let faulty = Arc::new(FaultyClient::new(mem.clone()));
    faulty.fail("CompleteMultipartUpload", "", "InternalError", 1);
    let bytes = data(70 << 10);
    let (_d, path) = file_with(&bytes);
    let err = store(faulty)
        .put_file("big", &path, bytes.len() as u64, &info(&bytes))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::ServerError);
    assert!(mem.open_uploads().is_empty());
    assert!(mem.object("big").is_none());
}

#[tokio::test]
async fn an_upload_whose_id_cannot_be_journaled_is_aborted_before_any_part() {
    let mem = Arc::new(MemoryClient::new());
    let journal = Arc::new(Journal {
        refuse_begin: true,
        ..Journal::default()
    });
    let t = store(mem.clone()).with_journal(journal);
    let bytes = data(70 << 10);
    let (_d, path) = file_with(&bytes);
    let err = t
        .put_file("big", &path, bytes.len() as u64, &info(&bytes))
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Journal(_)), "{err}");
    assert_eq!(mem.count("UploadPart"), 0);
    assert!(mem.open_uploads().is_empty());
}

#[tokio::test]
async fn at_start_journaled_and_listed_uploads_are_aborted() {
    let mem = Arc::new(MemoryClient::new());
    let journal = Arc::new(Journal::default());
    let i = info(b"x");
    let w = WriteOptions::default();
    // One the journal knows by id, one whose create never answered, one only listed.
    let known = mem.create_multipart("p/a", &i, &w).await.unwrap();
    let cut = mem.create_multipart("p/b", &i, &w).await.unwrap();
    mem.create_multipart("p/c", &i, &w).await.unwrap();
    let a = journal.intend("p/a").await.unwrap();
    journal.begin(a, &known).await.unwrap();
    journal.intend("p/b").await.unwrap();
    let t = store(mem.clone()).with_journal(journal.clone());
    let aborted = t.abort_stale_multiparts("p/").await.unwrap();
    assert_eq!(aborted, 3);
    assert!(mem.open_uploads().is_empty(), "{cut} and the rest");
    assert!(journal.entries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_ranged_download_reassembles_the_object_and_its_md5() {
    let mem = Arc::new(MemoryClient::new());
    let bytes = data(200 << 10); // 13 ranges of 16 KiB, three at a time
    mem.insert("k", &bytes, Default::default());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let md5 = store(mem.clone())
        .download("k", None, bytes.len() as u64, &dest)
        .await
        .unwrap();
    assert_eq!(md5, <[u8; 16]>::from(Md5::digest(&bytes)));
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(mem.count("GetObject"), 13);
}

#[tokio::test]
async fn a_download_shorter_than_expected_is_an_error() {
    let mem = Arc::new(MemoryClient::new());
    let bytes = data(100 << 10);
    mem.insert("k", &bytes, Default::default());
    let dir = tempfile::tempdir().unwrap();
    let err = store(mem)
        .download("k", None, (120 << 10) as u64, &dir.path().join("out"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the object changed?"), "{err}");
}

#[tokio::test]
async fn deletes_on_a_versioned_bucket_leave_a_marker_unless_a_version_is_named() {
    let mem = Arc::new(MemoryClient::versioned());
    let t = store(mem.clone());
    let first = t.put_bytes("k", "one".into(), &info(b"one")).await.unwrap();
    t.put_bytes("k", "two".into(), &info(b"two")).await.unwrap();
    assert!(t.delete_object("k", None).await.unwrap());
    assert!(mem.object("k").is_none());
    assert_eq!(mem.versions_of("k").len(), 3, "two versions and a marker");
    t.delete_object("k", first.version_id.as_deref())
        .await
        .unwrap();
    let left: Vec<_> = mem.versions_of("k").into_iter().map(|v| v.bytes).collect();
    assert_eq!(left, [bytes::Bytes::from("two"), bytes::Bytes::new()]);
    assert!(t.versioning_enabled().await.unwrap());
}

#[tokio::test]
async fn a_copy_keeps_the_source_metadata_or_replaces_it() {
    let mem = Arc::new(MemoryClient::new());
    let t = store(mem.clone());
    let i = info(b"abc");
    t.put_bytes("a", "abc".into(), &i).await.unwrap();
    t.copy("a", "h/a", None).await.unwrap();
    assert_eq!(mem.object("h/a").unwrap().metadata, i.metadata());
    let mut renamed = i.clone();
    renamed.posix.mode = 0o100600;
    t.copy("a", "b", Some(&renamed)).await.unwrap();
    assert_eq!(
        mem.object("b").unwrap().metadata.get("mode").unwrap(),
        "100600"
    );
    let err = t.copy("missing", "c", None).await.unwrap_err();
    assert!(err.to_string().contains("NoSuchKey"), "{err}");
}
