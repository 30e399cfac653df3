//! The sync engine end to end: real PostgreSQL, s3s-fs with SigV4 auth, `sync_once()`.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::os::unix::fs::symlink;

use portail_agent::model::guard::Guard;
use portail_agent::model::report::Stage;
use portail_agent::model::tree::SkipReason;
use portail_agent::{AgentSettings, SyncOptions};
use portail_core::catalog::{self, FileRow, FileStatus};
use portail_core::config::ByteSize;
use portail_tests::{md5_b64, md5_hex, TestEnv};

async fn catalog_rows(env: &TestEnv, agent_id: i64) -> Vec<FileRow> {
    catalog::files_of_agent(&env.db.pool, agent_id)
        .await
        .expect("rows")
}

fn row<'a>(rows: &'a [FileRow], path: &str) -> &'a FileRow {
    rows.iter()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("no row for {path}"))
}

async fn events(env: &TestEnv, file_id: i64) -> Vec<String> {
    let mut e: Vec<String> = catalog::events_of_file(&env.db.pool, file_id, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    e.reverse();
    e
}

/// Asserts S3 holds exactly these bytes with the right md5chksum, and the row agrees.
async fn assert_mirrored(env: &TestEnv, rows: &[FileRow], path: &str, bytes: &[u8]) {
    let r = row(rows, path);
    assert_eq!(r.status, FileStatus::Synced, "{path}");
    assert_eq!(r.size_bytes, bytes.len() as i64, "{path}");
    assert_eq!(r.md5.as_deref(), Some(md5_hex(bytes).as_str()), "{path}");
    let (got, md5) = env
        .object(&r.s3_key)
        .await
        .unwrap_or_else(|| panic!("no object for {path}"));
    assert!(got == bytes, "{path}: S3 bytes differ");
    assert_eq!(md5.as_deref(), Some(md5_b64(bytes).as_str()), "{path}");
}

#[tokio::test]
async fn initial_sync_of_a_nested_tree_with_awkward_names_and_a_multipart_file() {
    let env = TestEnv::new().await;
    let big: Vec<u8> = (0..(12u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.dat", vec![]),
        ("a/b/c/deep.txt", b"deep".to_vec()),
        ("with space/file name.txt", b"spaces".to_vec()),
        ("unicode/héllo wörld ✓.txt", "unicode".as_bytes().to_vec()),
        ("special/a+b%c#d?e.txt", b"specials".to_vec()),
        ("big/large.bin", big),
        // Above the 4 MiB in-memory limit, below the threshold: one streamed PutObject.
        ("big/medium.bin", vec![42u8; (4 << 20) + (512 << 10)]),
    ];
    for (p, b) in &files {
        env.write(p, b);
    }
    let mut settings = env.settings();
    settings.multipart_threshold = ByteSize(5 << 20);
    settings.multipart_part_size = ByteSize(5 << 20);
    settings.s3_prefix = "host1".into();
    let agent = env.agent(settings).await;
    let report = env.sync(&agent).await;
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.uploaded, files.len() as u64);
    let rows = catalog_rows(&env, agent.id).await;
    assert_eq!(rows.len(), files.len());
    for (p, b) in &files {
        assert_mirrored(&env, &rows, p, b).await;
        assert_eq!(row(&rows, p).s3_key, format!("host1/{p}"));
    }
    // The multipart object's ETag is not its MD5; md5chksum and the catalog carry the MD5.
    let big_row = row(&rows, "big/large.bin");
    assert!(
        big_row.etag.as_deref().is_some_and(|e| e.ends_with("-3")),
        "{:?}",
        big_row.etag
    );
    assert_eq!(
        row(&rows, "with space/file name.txt")
            .content_type
            .as_deref(),
        Some("text/plain")
    );

    // A second pass reads nothing.
    let again = env.sync(&agent).await;
    assert_eq!(
        (again.unchanged, again.hashed, again.uploaded),
        (files.len() as u64, 0, 0)
    );
}

#[tokio::test]
async fn modify_touch_delete_and_rename_cycles() {
    let env = TestEnv::new().await;
    for i in 0..6 {
        env.write(&format!("f{i}.txt"), format!("content {i}").as_bytes());
    }
    env.write("docs/report.pdf", b"the report bytes");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());

    // Modify: new bytes uploaded, event `updated`.
    std::thread::sleep(std::time::Duration::from_millis(5));
    env.write("f0.txt", b"content 0, edited");
    // Touch: new mtime, same bytes: only the catalog changes.
    let f1 = env.root.path().join("f1.txt");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&f1)
        .unwrap()
        .set_modified(later)
        .unwrap();
    // Delete one file.
    std::fs::remove_file(env.root.path().join("f2.txt")).unwrap();
    // Rename: same bytes under a new path.
    std::fs::create_dir_all(env.root.path().join("archive")).unwrap();
    std::fs::rename(
        env.root.path().join("docs/report.pdf"),
        env.root.path().join("archive/report-2026.pdf"),
    )
    .unwrap();

    let r = env.sync(&agent).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(
        (r.uploaded, r.metadata_only, r.deleted, r.renamed),
        (1, 1, 1, 1),
        "{r:?}"
    );
    let rows = catalog_rows(&env, agent.id).await;
    assert_mirrored(&env, &rows, "f0.txt", b"content 0, edited").await;
    assert_eq!(
        events(&env, row(&rows, "f0.txt").id).await,
        vec!["uploaded", "updated"]
    );
    assert_mirrored(&env, &rows, "f1.txt", b"content 1").await;
    assert_eq!(
        events(&env, row(&rows, "f1.txt").id).await,
        vec!["uploaded", "updated"]
    );
    let gone = row(&rows, "f2.txt");
    assert_eq!(gone.status, FileStatus::Deleted);
    assert!(gone.deleted_at.is_some());
    assert_eq!(events(&env, gone.id).await, vec!["uploaded", "deleted"]);
    assert!(env.object("f2.txt").await.is_none(), "object deleted");
    assert_mirrored(&env, &rows, "archive/report-2026.pdf", b"the report bytes").await;
    assert_eq!(
        events(&env, row(&rows, "archive/report-2026.pdf").id).await,
        vec!["renamed"]
    );
    assert_eq!(row(&rows, "docs/report.pdf").status, FileStatus::Deleted);
    assert!(
        env.object("docs/report.pdf").await.is_none(),
        "rename source removed"
    );

    // A deleted file that comes back is uploaded again on the same row.
    env.write("f2.txt", b"back again");
    let r = env.sync(&agent).await;
    assert_eq!(r.uploaded, 1);
    let rows = catalog_rows(&env, agent.id).await;
    assert_mirrored(&env, &rows, "f2.txt", b"back again").await;
    assert_eq!(
        events(&env, row(&rows, "f2.txt").id).await,
        vec!["uploaded", "deleted", "uploaded"]
    );
    assert_eq!(env.keys().await.len(), 7);
}

#[tokio::test]
async fn delete_guards_refuse_and_say_how_to_override() {
    let env = TestEnv::new().await;
    for i in 0..10 {
        env.write(&format!("d/f{i}"), b"x");
    }
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());

    // More than half the tree gone: refused, nothing deleted.
    for i in 0..6 {
        std::fs::remove_file(env.root.path().join(format!("d/f{i}"))).unwrap();
    }
    let r = env.sync(&agent).await;
    let blocked = r.deletes_blocked.as_ref().expect("blocked");
    assert_eq!(blocked.guard, Guard::MaxDeletePercent);
    assert!(blocked.message.contains("MAX_DELETE_PERCENT"));
    assert!(!r.converged());
    assert_eq!(r.deleted, 0);
    assert_eq!(env.keys().await.len(), 10);

    // MAX_DELETE caps the absolute number.
    let mut s = env.settings();
    s.max_delete_percent = 100;
    s.max_delete = Some(5);
    let capped = env.agent(s.clone()).await;
    assert_eq!(
        env.sync(&capped).await.deletes_blocked.map(|b| b.guard),
        Some(Guard::MaxDelete)
    );
    assert_eq!(env.keys().await.len(), 10);

    // Raising the limits lets the deletes through.
    s.max_delete = Some(6);
    let raised = env.agent(s.clone()).await;
    let r = env.sync(&raised).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.deleted, 6);
    assert_eq!(env.keys().await.len(), 4);

    // An empty root with tracked files: refused even with the limits off.
    for i in 6..10 {
        std::fs::remove_file(env.root.path().join(format!("d/f{i}"))).unwrap();
    }
    let mut open = s.clone();
    open.max_delete = None;
    let open_agent = env.agent(open.clone()).await;
    let r = env.sync(&open_agent).await;
    assert_eq!(r.deletes_blocked.map(|b| b.guard), Some(Guard::EmptyRoot));
    assert_eq!(env.keys().await.len(), 4);
    open.allow_empty_root = true;
    let allowed = env.agent(open).await;
    assert_eq!(env.sync(&allowed).await.deleted, 4);
    assert!(env.keys().await.is_empty());
}

#[tokio::test]
async fn a_missing_root_is_fatal_and_deletes_nothing() {
    let env = TestEnv::new().await;
    env.write("keep.txt", b"precious");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let mut s = env.settings();
    s.sync_root = env.root.path().join("not-mounted");
    s.allow_empty_root = true;
    s.max_delete_percent = 100;
    let unmounted = env.agent(s).await;
    let err = portail_agent::sync_once(&unmounted, &SyncOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("missing or not a directory"),
        "{err}"
    );
    assert_eq!(env.keys().await, vec!["keep.txt"]);
}

#[tokio::test]
async fn an_unreadable_directory_blocks_deletes_and_fails_the_pass() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new().await;
    for i in 0..4 {
        env.write(&format!("f{i}"), b"x");
    }
    env.write("locked/inner.txt", b"y");
    // The agent runs as `nobody` (when the suite runs as root), so it needs to read the tree.
    std::fs::set_permissions(env.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env
        .agent_process("perm", &["sync"], true)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Now one file is deleted and one directory becomes unreadable.
    std::fs::remove_file(env.root.path().join("f0")).unwrap();
    let locked = env.root.path().join("locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = env
        .agent_process("perm", &["sync"], true)
        .output()
        .await
        .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed: locked") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(stderr.contains("deletes blocked (scan_errors)"), "{stderr}");
    assert!(
        env.object("f0").await.is_some(),
        "nothing may be deleted while the scan had errors"
    );
    assert!(env.object("locked/inner.txt").await.is_some());

    // Readable again: the next pass deletes f0 and converges.
    let out = env
        .agent_process("perm", &["sync"], true)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.object("f0").await.is_none());
}

#[tokio::test]
async fn hostile_entries_are_skipped_with_reasons_and_never_block() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new().await;
    env.write("ok.txt", b"fine");
    let root = env.root.path();
    // A name that is not UTF-8.
    std::fs::write(root.join(OsStr::from_bytes(b"bad-\xff\xfe.txt")), b"latin1").unwrap();
    // A key over 1024 bytes (five 250-byte components plus a file name).
    let long_dir: String = (0..5)
        .map(|i| format!("{}/", char::from(b'a' + i).to_string().repeat(250)))
        .collect();
    env.write(&format!("{long_dir}file.txt"), b"too long");
    // A key of exactly 1024 bytes is fine (255 bytes is the file-name limit).
    let exact: String = {
        let mut parts = vec![
            "g".repeat(200),
            "h".repeat(200),
            "i".repeat(200),
            "k".repeat(200),
        ];
        let used: usize = parts.iter().map(|p| p.len() + 1).sum();
        parts.push("j".repeat(1024 - used));
        parts.join("/")
    };
    assert_eq!(exact.len(), 1024);
    env.write(&exact, b"exactly 1024");
    // A symlink loop, a link out of the root, a FIFO and a socket.
    symlink("loop", root.join("loop")).unwrap();
    symlink("/etc/passwd", root.join("outside")).unwrap();
    mkfifo(&root.join("pipe"));
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();

    let agent = env.agent(env.settings()).await;
    let r = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        env.sync(&agent).await
    })
    .await
    .expect("a FIFO must never block the pass");
    let reasons = |reason: SkipReason| r.skipped.iter().filter(|s| s.reason == reason).count();
    assert_eq!(reasons(SkipReason::NonUtf8Name), 1);
    assert_eq!(reasons(SkipReason::KeyTooLong), 1);
    assert_eq!(reasons(SkipReason::Symlink), 2);
    assert_eq!(reasons(SkipReason::SpecialFile), 2);
    let bad = r
        .skipped
        .iter()
        .find(|s| s.reason == SkipReason::NonUtf8Name)
        .unwrap();
    assert_eq!(
        bad.raw_hex.as_deref(),
        Some(hex::encode(b"bad-\xff\xfe.txt").as_str())
    );
    assert!(
        !r.converged(),
        "unsyncable names must make the pass report failure"
    );
    // The catalog keeps them so an operator can find them: lossy text plus the raw bytes.
    let stored = catalog::unsyncable_entries(&env.db.pool, agent.id)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored
        .iter()
        .any(|(p, hex, reason)| p == "bad-\u{fffd}\u{fffd}.txt"
            && hex.as_deref() == Some(hex::encode(b"bad-\xff\xfe.txt").as_str())
            && reason == "non_utf8_name"));
    assert!(stored
        .iter()
        .any(|(_, hex, reason)| hex.is_none() && reason == "key_too_long"));
    let rows = catalog_rows(&env, agent.id).await;
    assert_mirrored(&env, &rows, "ok.txt", b"fine").await;
    // portail accepts a key of exactly 1024 bytes. s3s-fs itself cannot store one: it names a
    // metadata file after the whole key, and a file name is capped at 255 bytes, so it answers
    // InternalError. Real S3 stores it; here we check portail did not refuse it.
    match r.failed.iter().find(|f| f.path == exact) {
        Some(f) => {
            assert_eq!(f.stage, Stage::Transfer, "{f:?}");
            assert!(f.error.contains("InternalError"), "{f:?}");
        }
        None => assert_mirrored(&env, &rows, &exact, b"exactly 1024").await,
    }
}

/// Creates a FIFO (std has no mkfifo, and the workspace forbids unsafe code).
fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo");
}

#[tokio::test]
async fn multipart_uploads_left_by_a_crash_are_aborted_at_start() {
    let env = TestEnv::new().await;
    let agent = env.agent(env.settings()).await;
    // A crash after CreateMultipartUpload and one part: the journal row is all that is left.
    let client = env.s3.client().await;
    let created = client
        .create_multipart_upload()
        .bucket(&env.bucket)
        .key("half.bin")
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap().to_string();
    client
        .upload_part()
        .bucket(&env.bucket)
        .key("half.bin")
        .upload_id(&upload_id)
        .part_number(1)
        .body(vec![1u8; 1024].into())
        .send()
        .await
        .unwrap();
    let entry = catalog::intend_multipart(&env.db.pool, agent.id, "half.bin")
        .await
        .unwrap();
    catalog::begin_multipart(&env.db.pool, entry, &upload_id)
        .await
        .unwrap();
    let part_count = |c: aws_sdk_s3::Client, id: String, b: String| async move {
        let out = c
            .list_parts()
            .bucket(b)
            .key("half.bin")
            .upload_id(id)
            .send()
            .await
            .unwrap();
        out.parts().len()
    };
    assert_eq!(
        part_count(client.clone(), upload_id.clone(), env.bucket.clone()).await,
        1
    );

    // The restarted agent aborts it and clears the journal: the part is gone and the upload
    // can no longer be completed.
    let _restarted = env.agent(env.settings()).await;
    assert_eq!(
        part_count(client.clone(), upload_id.clone(), env.bucket.clone()).await,
        0
    );
    let completed = client
        .complete_multipart_upload()
        .bucket(&env.bucket)
        .key("half.bin")
        .upload_id(&upload_id)
        .send()
        .await;
    assert!(completed.is_err(), "an aborted upload cannot complete");
    assert!(catalog::open_multiparts(&env.db.pool, agent.id)
        .await
        .unwrap()
        .is_empty());
    assert!(env.keys().await.is_empty());
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let env = TestEnv::new().await;
    env.write("a.txt", b"a");
    env.write("b.txt", b"b");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    env.write("new.txt", b"new");
    std::fs::remove_file(env.root.path().join("a.txt")).unwrap();
    let before = catalog_rows(&env, agent.id).await;
    let r = portail_agent::sync_once(
        &agent,
        &SyncOptions {
            dry_run: true,
            ..SyncOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(
        r.planned
            .iter()
            .any(|l| l.contains("new.txt") && l.contains("new")),
        "{:?}",
        r.planned
    );
    assert!(
        r.planned.iter().any(|l| l.starts_with("delete a.txt")),
        "{:?}",
        r.planned
    );
    assert_eq!(catalog_rows(&env, agent.id).await, before);
    assert_eq!(env.keys().await, vec!["a.txt", "b.txt"]);
}

#[tokio::test]
async fn two_agents_share_one_database_and_one_bucket() {
    let env = TestEnv::new().await;
    let other_root = tempfile::tempdir().unwrap();
    env.write("same-name.txt", b"from agent one");
    std::fs::write(other_root.path().join("same-name.txt"), b"from agent two").unwrap();
    let mut one = env.settings();
    one.agent_id = Some("one".into());
    one.s3_prefix = "one".into();
    let mut two = AgentSettings::for_root(other_root.path());
    two.agent_id = Some("two".into());
    two.s3_prefix = "two".into();
    let (a1, a2) = (env.agent(one).await, env.agent(two).await);
    assert!(env.sync(&a1).await.converged());
    assert!(env.sync(&a2).await.converged());
    assert_eq!(
        env.keys().await,
        vec!["one/same-name.txt", "two/same-name.txt"]
    );
    // Agent two's tree empties out: with the guards relaxed, only its own objects go.
    std::fs::remove_file(other_root.path().join("same-name.txt")).unwrap();
    let mut two = AgentSettings::for_root(other_root.path());
    two.agent_id = Some("two".into());
    two.s3_prefix = "two".into();
    two.allow_empty_root = true;
    two.max_delete_percent = 100;
    let a2 = env.agent(two).await;
    assert_eq!(env.sync(&a2).await.deleted, 1);
    assert_eq!(env.keys().await, vec!["one/same-name.txt"]);
    assert_eq!(
        row(&catalog_rows(&env, a1.id).await, "same-name.txt").status,
        FileStatus::Synced
    );
    assert!(env.sync(&a1).await.converged());
}

#[tokio::test]
async fn a_file_rewritten_during_upload_is_never_recorded_with_stale_content() {
    let env = TestEnv::new().await;
    let path = env.write("growing.log", &vec![b'a'; 6 << 20]);
    let mut s = env.settings();
    s.multipart_threshold = ByteSize(5 << 20);
    s.multipart_part_size = ByteSize(5 << 20);
    let agent = env.agent(s).await;
    // A writer appends continuously while the pass runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&[b'b'; 4096]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let r = env.sync(&agent).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let rows = catalog_rows(&env, agent.id).await;
    let local = std::fs::read(env.root.path().join("growing.log")).unwrap();
    match rows.iter().find(|r| r.path == "growing.log") {
        // Whatever the row claims as synced, S3 must hold exactly that.
        Some(r) if r.status == FileStatus::Synced => {
            let (bytes, _) = env.object(&r.s3_key).await.unwrap();
            assert_eq!(r.md5.as_deref(), Some(md5_hex(&bytes).as_str()));
        }
        Some(r) => assert!(
            r.md5.is_none(),
            "an unstable row must not claim an MD5: {r:?}"
        ),
        None => assert!(!r.converged()),
    }
    // Once the writer stops, the next pass converges on the final bytes.
    let r2 = env.sync(&agent).await;
    assert!(r2.converged(), "{r2:?}");
    assert_mirrored(
        &env,
        &catalog_rows(&env, agent.id).await,
        "growing.log",
        &local,
    )
    .await;
}

#[tokio::test]
async fn rows_written_during_a_pass_are_never_mistaken_for_vanished_files() {
    // With only `deleted` rows in the catalog, new files stream straight into uploads while the
    // catalog is still being read in (here: tiny) batches; rows written meanwhile must never
    // come back as vanished files.
    let env = TestEnv::new().await;
    let names: Vec<String> = (0..12).map(|i| format!("f{i:02}")).collect();
    for n in &names {
        env.write(n, n.as_bytes());
    }
    let mut s = env.settings();
    s.allow_empty_root = true;
    s.max_delete_percent = 100;
    let agent = env.agent(s).await;
    assert!(env.sync(&agent).await.converged());
    for n in &names {
        std::fs::remove_file(env.root.path().join(n)).unwrap();
    }
    assert_eq!(env.sync(&agent).await.deleted, 12);
    // Everything comes back, plus files in between the old names.
    for n in &names {
        env.write(n, b"back");
        env.write(&format!("{n}x"), b"between");
    }
    let opts = SyncOptions {
        row_batch: 2,
        ..SyncOptions::default()
    };
    let r = portail_agent::sync_once(&agent, &opts).await.unwrap();
    assert!(r.converged(), "{r:?}");
    assert_eq!((r.uploaded, r.deleted), (24, 0), "{r:?}");
    assert_eq!(env.keys().await.len(), 24);
    let again = portail_agent::sync_once(&agent, &opts).await.unwrap();
    assert_eq!(
        (again.unchanged, again.uploaded, again.deleted),
        (24, 0, 0),
        "{again:?}"
    );
}

#[tokio::test]
async fn excludes_are_never_uploaded_and_delete_mode_keep_leaves_objects() {
    let env = TestEnv::new().await;
    env.write("keep/a.txt", b"a");
    env.write("keep/b.txt", b"b");
    env.write("keep/c.txt", b"c");
    env.write("scratch.tmp", b"temp");
    env.write(".git/config", b"[core]");
    env.write("deep/x/.git/HEAD", b"ref");
    let mut s = env.settings();
    s.exclude = vec!["*.tmp".into(), ".git/**".into()];
    s.delete_mode = portail_agent::policy::delete_rules::DeleteMode::Keep;
    let agent = env.agent(s).await;
    let r = env.sync(&agent).await;
    assert!(r.converged(), "{r:?}");
    // `.git/**` is anchored at the root; the nested .git is not excluded.
    assert_eq!(
        env.keys().await,
        vec!["deep/x/.git/HEAD", "keep/a.txt", "keep/b.txt", "keep/c.txt"]
    );
    assert_eq!(
        r.skipped
            .iter()
            .filter(|s| s.reason == SkipReason::Excluded)
            .count(),
        2
    );

    std::fs::remove_file(env.root.path().join("keep/a.txt")).unwrap();
    let r = env.sync(&agent).await;
    assert_eq!(r.deleted, 1);
    let rows = catalog_rows(&env, agent.id).await;
    assert_eq!(row(&rows, "keep/a.txt").status, FileStatus::Deleted);
    assert!(
        env.object("keep/a.txt").await.is_some(),
        "DELETE_MODE=keep leaves the object"
    );
}
