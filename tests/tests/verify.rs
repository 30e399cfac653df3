//! `verify` reports no drift after a sync, and reports each kind of drift planted by hand.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use portail_agent::ops::verify::{verify, Drift};
use portail_core::config::ByteSize;
use portail_tests::TestEnv;

#[tokio::test]
async fn verify_is_clean_after_sync_and_finds_every_planted_drift() {
    let env = TestEnv::new().await;
    for name in ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"] {
        env.write(name, name.as_bytes());
    }
    env.write("big.bin", &vec![7u8; 6 << 20]);
    let mut s = env.settings();
    s.s3_prefix = "pfx".into();
    s.multipart_threshold = ByteSize(5 << 20);
    s.multipart_part_size = ByteSize(5 << 20);
    let agent = env.agent(s).await;
    assert!(env.sync(&agent).await.converged());
    let clean = verify(&agent).await.unwrap();
    assert_eq!(clean.drift, vec![], "a fresh sync must verify clean");
    assert_eq!(clean.checked, 6);

    let client = env.s3.client().await;
    // S3 side: one object overwritten, one deleted, one orphan, the multipart one replaced.
    client
        .put_object()
        .bucket(&env.bucket)
        .key("pfx/a.txt")
        .body(b"tampered".to_vec().into())
        .send()
        .await
        .unwrap();
    client
        .delete_object()
        .bucket(&env.bucket)
        .key("pfx/b.txt")
        .send()
        .await
        .unwrap();
    client
        .put_object()
        .bucket(&env.bucket)
        .key("pfx/stray.txt")
        .body(b"?".to_vec().into())
        .send()
        .await
        .unwrap();
    client
        .put_object()
        .bucket(&env.bucket)
        .key("pfx/big.bin")
        .body(vec![8u8; 6 << 20].into())
        .send()
        .await
        .unwrap();
    // Local side: one file changed, one removed, one added.
    std::thread::sleep(std::time::Duration::from_millis(5));
    env.write("c.txt", b"changed locally");
    std::fs::remove_file(env.root.path().join("d.txt")).unwrap();
    env.write("new.txt", b"new");

    let found = verify(&agent).await.unwrap().drift;
    let want = vec![
        Drift::ChangedLocally("c.txt".into()),
        Drift::MissingInS3 {
            path: "b.txt".into(),
            key: "pfx/b.txt".into(),
        },
        Drift::MissingLocally("d.txt".into()),
        Drift::NotSynced("new.txt".into()),
        Drift::Orphan("pfx/stray.txt".into()),
    ];
    for w in &want {
        assert!(found.contains(w), "missing {w}; found {found:?}");
    }
    let differs: Vec<&str> = found
        .iter()
        .filter_map(|d| match d {
            Drift::ContentDiffers { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(differs, vec!["a.txt", "big.bin"], "{found:?}");
    assert_eq!(found.len(), want.len() + 2, "{found:?}");
}

#[tokio::test]
async fn a_file_that_only_grew_is_changed_since_not_drift() {
    let env = TestEnv::new().await;
    env.write("app.log", b"line 1\n");
    env.write("db.bin", b"0123456789");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    // The log grows (a busy file between two syncs); the other file changes inside.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(env.root.path().join("app.log"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"line 2\n").unwrap();
    env.write("db.bin", b"0123X56789 and longer");
    let r = verify(&agent).await.unwrap();
    assert_eq!(r.changed_since, vec!["app.log".to_string()]);
    assert_eq!(r.drift, vec![Drift::ChangedLocally("db.bin".into())]);
}
