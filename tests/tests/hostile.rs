//! Hostile names and files the walk meets on real file servers. Each is synced byte-exact
//! under its own key, or refused with a clear, counted reason; none crashes or hangs a pass.
//! (Links, FIFOs, sockets, non-UTF-8 names, 1024/1025-byte keys, unreadable directories and
//! 0-byte files are covered in sync.rs.)
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portail_agent::model::report::Stage;
use portail_core::catalog::FileStatus;
use portail_tests::{counter_sum, md5_b64, md5_hex, TestEnv};
use rand::Rng;

/// s3s-fs (the test server) names a metadata file after the whole URL-encoded key, so keys
/// whose encoding passes the 255-byte file-name limit fail there with InternalError; real S3
/// and MinIO take them. Such a file must then be a counted, explained `error` row.
fn s3s_fs_can_store(key: &str) -> bool {
    let encoded: usize = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum();
    encoded + ".bucket-portail-test.object-.metadata.json".len() <= 255
}

#[tokio::test]
async fn unusual_names_sync_exactly_or_fail_with_a_reason() {
    let env = TestEnv::new().await;
    let deep: String = (0..100)
        .map(|i| format!("l{}/", i % 10))
        .collect::<String>()
        + "deep.txt";
    let long_name = format!("{}.txt", "n".repeat(251));
    let names: Vec<String> = vec![
        "new\nline.txt".into(),
        "back\\slash.txt".into(),
        " leading space.txt".into(),
        "trailing space.txt ".into(),
        "caf\u{e9}.txt".into(),   // NFC
        "cafe\u{301}.txt".into(), // NFD: another name on Linux, so another key
        "tab\there.txt".into(),
        "quote'\"?*<>|:.txt".into(),
        "percent%20and+plus.txt".into(),
        "emoji 🎉.txt".into(),
        long_name.clone(),
        deep.clone(),
    ];
    for (i, n) in names.iter().enumerate() {
        env.write(n, format!("content {i}").as_bytes());
    }
    let registry = prometheus::Registry::new();
    let agent = env.agent_on(env.settings(), &registry).await;
    let report = env.sync(&agent).await;

    let mut server_refused = 0;
    for (i, n) in names.iter().enumerate() {
        let bytes = format!("content {i}");
        let row: (String, String, Option<String>, Option<String>) = sqlx::query_as(
            "select s3_key, status::text, md5, last_error from files where path = $1",
        )
        .bind(n)
        .fetch_one(&env.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{n:?}: no row ({e})"));
        assert_eq!(row.0, *n, "the key is the path, byte for byte");
        if s3s_fs_can_store(n) {
            assert_eq!(row.1, "synced", "{n:?}: {:?}", row.3);
            assert_eq!(row.2.as_deref(), Some(md5_hex(bytes.as_bytes()).as_str()));
            let (stored, md5) = env.object(n).await.unwrap();
            assert_eq!(stored, bytes.as_bytes(), "{n:?}");
            assert_eq!(md5.as_deref(), Some(md5_b64(bytes.as_bytes()).as_str()));
        } else {
            server_refused += 1;
            assert_eq!(row.1, "error", "{n:?}");
            let why = row.3.unwrap_or_default();
            assert!(
                why.contains("PutObject") && why.contains("InternalError"),
                "{n:?}: {why}"
            );
        }
    }
    // The 255-byte name and the 100-level path exceed what s3s-fs can store.
    assert_eq!(server_refused, 2);
    assert_eq!(report.failed.len(), server_refused);
    let counted = counter_sum(
        &registry,
        "portail_agent_errors_total",
        Some("server_error"),
    );
    assert_eq!(counted, server_refused as f64, "each refusal is counted");
    // NFC and NFD are two files, two keys.
    assert!(env.object("caf\u{e9}.txt").await.is_some());
    assert!(env.object("cafe\u{301}.txt").await.is_some());
}

#[tokio::test]
async fn a_directory_replaced_by_a_file_between_passes() {
    let env = TestEnv::new().await;
    env.write("x/a.txt", b"a");
    env.write("x/b.txt", b"b");
    env.write("keep.txt", b"keep");
    env.write("keep2.txt", b"keep2");
    env.write("keep3.txt", b"keep3");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    std::fs::remove_dir_all(env.root.path().join("x")).unwrap();
    env.write("x", b"now a file");
    let report = env.sync(&agent).await;
    assert_eq!(report.deleted, 2, "{}", report.summary());
    assert!(env.object("x/a.txt").await.is_none());
    // The upload of `x` is retried after the deletes (MinIO needs that). s3s-fs keeps the
    // emptied directory `x/` on disk, so there the key `x` stays impossible: a counted,
    // explained failure rather than a silent skip. (Real S3 has no directories.)
    let (status, why): (String, Option<String>) =
        sqlx::query_as("select status::text, last_error from files where path = 'x'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    if status == "synced" {
        assert!(report.converged());
    } else {
        assert_eq!(status, "error");
        assert!(why.unwrap_or_default().contains("InternalError"));
        assert_eq!(report.failed.len(), 1, "{}", report.summary());
    }
    // And back again: the file becomes a directory.
    std::fs::remove_file(env.root.path().join("x")).unwrap();
    env.write("x/c.txt", b"c");
    let report = env.sync(&agent).await;
    assert!(
        env.mirrored(agent.id, "x/c.txt", b"c").await,
        "{}",
        report.summary()
    );
    assert!(env.mirrored(agent.id, "keep.txt", b"keep").await);
    // Deleting the (never stored) key `x` trips over s3s-fs's directory `x/` again; anything
    // left is that delete, reported with the server's reason.
    for f in &report.failed {
        assert_eq!(
            (f.path.as_str(), f.stage),
            ("x", Stage::Delete),
            "{}",
            f.error
        );
    }
}

/// Files vanish, grow and get rewritten while a pass reads them. The pass may leave some
/// pending, but no row may claim bytes S3 does not hold; the next quiet pass converges.
#[tokio::test]
async fn files_that_vanish_grow_or_change_mid_pass() {
    let env = TestEnv::new().await;
    let n = 600;
    for i in 0..n {
        env.write(&format!("c/f{i:03}.bin"), &vec![i as u8; 2000 + i * 3]);
    }
    // Some larger files so reads take long enough to be overtaken.
    for i in 0..6 {
        env.write(&format!("c/big{i}.bin"), &vec![i as u8; 6 << 20]);
    }
    // The chaos deletes and rewrites most of the tree when the pass is slow (a loaded machine
    // makes thousands of changes): that is a mass change by design, so the delete guard and
    // the tripwire, which would rightly hold it, are off. This test is about the races.
    let mut settings = env.settings();
    settings.max_delete_percent = 100;
    settings.max_change_percent = 100;
    let agent = env.agent(settings).await;
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let root = env.root.path().join("c");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            let mut actions = 0;
            while !stop.load(Ordering::Relaxed) {
                let i = rng.gen_range(0..n);
                let p = root.join(format!("f{i:03}.bin"));
                match rng.gen_range(0..3) {
                    0 => {
                        let _ = std::fs::remove_file(&p);
                    }
                    1 => {
                        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&p) {
                            let _ = f.write_all(b"grown");
                        }
                    }
                    _ => {
                        let _ = std::fs::write(&p, format!("rewritten {actions}"));
                    }
                }
                let big = root.join(format!("big{}.bin", rng.gen_range(0..6)));
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&big) {
                    let _ = f.write_all(&[7u8; 4096]);
                }
                actions += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
            actions
        })
    };
    let first = env.sync(&agent).await;
    stop.store(true, Ordering::Relaxed);
    let actions = chaos.join().unwrap();
    assert!(actions > 100, "only {actions} changes made during the pass");

    // After the disturbed pass: every synced row's object holds exactly its MD5.
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select path, s3_key, md5 from files where agent_id = $1 and status = 'synced'",
    )
    .bind(agent.id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    for (path, key, md5) in &rows {
        let (bytes, meta) = env.object(key).await.unwrap();
        assert_eq!(
            md5.as_deref(),
            Some(md5_hex(&bytes).as_str()),
            "{path}: row vs S3"
        );
        assert_eq!(
            meta.as_deref(),
            Some(md5_b64(&bytes).as_str()),
            "{path}: md5chksum"
        );
    }
    let unsettled: i64 = sqlx::query_scalar(
        "select count(*) from files where agent_id = $1 and status <> 'synced' and status <> 'deleted'",
    )
    .bind(agent.id)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    eprintln!(
        "first pass: {} (rows not synced: {unsettled}, changes made: {actions})",
        first.summary()
    );

    // Quiet now: the next pass converges.
    let second = env.sync(&agent).await;
    assert!(second.converged(), "{}", second.summary());
    env.assert_converged(&agent).await;
    let statuses: Vec<FileStatus> =
        portail_core::catalog::rows_by_paths(&env.db.pool, agent.id, &["c/big0.bin".to_string()])
            .await
            .unwrap()
            .iter()
            .map(|r| r.status)
            .collect();
    assert_eq!(statuses, vec![FileStatus::Synced]);
}

/// A sparse file over 5 GiB must go up as multipart (a single PUT caps at 5 GiB). Slow in a
/// debug build (it hashes and sends 5 GiB), so it runs on demand:
/// `cargo test -p portail-tests --test hostile -- --ignored`.
#[tokio::test]
#[ignore]
async fn a_sparse_file_over_5_gib_uses_multipart() {
    let env = TestEnv::new().await;
    let path = env.root.path().join("sparse.img");
    let f = std::fs::File::create(&path).unwrap();
    let size: u64 = (5 << 30) + (1 << 20);
    f.set_len(size).unwrap();
    drop(f);
    let mut settings = env.settings();
    settings.multipart_part_size = portail_core::config::ByteSize(256 << 20);
    let agent = env.agent(settings).await;
    let report = env.sync(&agent).await;
    assert!(report.converged(), "{}", report.summary());
    let head = env
        .s3
        .client()
        .await
        .head_object()
        .bucket(&env.bucket)
        .key("sparse.img")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(size as i64));
    let etag = head.e_tag().unwrap();
    assert!(etag.contains('-'), "multipart ETag expected, got {etag}");
}
