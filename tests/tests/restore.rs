//! Issue 13: history and restore against real servers (s3s-fs, HISTORY=prefix, which `auto`
//! picks there: s3s-fs has no versioning). A tree synced, then modified, renamed and partly
//! deleted over three passes restores byte for byte, with mtime and mode, as of each pass.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use std::time::Duration;

use chrono::{DateTime, Utc};
use portail_agent::ops::restore::{Restore, RestoreOptions, RestoreReport};
use portail_agent::Agent;
use portail_tests::TestEnv;

/// What a file should be: bytes, mode bits, mtime (whole seconds, set by the test).
type Tree = BTreeMap<String, (Vec<u8>, u32, i64)>;

fn put(env: &TestEnv, tree: &mut Tree, rel: &str, bytes: &[u8], mode: u32, mtime: i64) {
    let p = env.write(rel, bytes);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64);
    f.set_modified(t).unwrap();
    tree.insert(rel.into(), (bytes.to_vec(), mode, mtime));
}

fn remove(env: &TestEnv, tree: &mut Tree, rel: &str) {
    std::fs::remove_file(env.root.path().join(rel)).unwrap();
    tree.remove(rel);
}

/// Every regular file under `dir` (temporary names included, so leftovers fail the test).
fn read_tree(dir: &Path) -> Tree {
    let mut tree = Tree::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let m = e.metadata().unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        tree.insert(rel, (bytes, m.mode() & 0o7777, m.mtime()));
    }
    tree
}

fn options(to: &Path, at: DateTime<Utc>) -> RestoreOptions {
    RestoreOptions::new(to, at)
}

async fn restore(env: &TestEnv, agent: &Agent, opts: &RestoreOptions) -> RestoreReport {
    Restore {
        catalog: &agent.catalog,
        transfer: &agent.transfer,
        sync_root: env.root.path(),
    }
    .run(opts)
    .await
    .unwrap()
}

/// A sync that must converge, then the time just after it.
async fn pass(env: &TestEnv, agent: &Agent) -> DateTime<Utc> {
    let r = env.sync(agent).await;
    assert!(r.converged(), "{r:?}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    t
}

/// Three passes over one tree (modified, renamed, partly deleted, a mode changed), `gap` apart;
/// returns the time after each with the tree it should restore to.
async fn three_passes(env: &TestEnv, agent: &Agent, gap: Duration) -> Vec<(DateTime<Utc>, Tree)> {
    let mut tree = Tree::new();
    put(env, &mut tree, "a.txt", b"one", 0o640, 1_600_000_000);
    put(env, &mut tree, "d/b.txt", b"bee", 0o644, 1_600_000_100);
    put(env, &mut tree, "d/c.txt", b"sea", 0o600, 1_600_000_200);
    let t1 = pass(env, agent).await;
    let tree1 = tree.clone();
    tokio::time::sleep(gap).await;

    put(env, &mut tree, "a.txt", b"two!", 0o640, 1_600_001_000);
    std::fs::create_dir_all(env.root.path().join("e")).unwrap();
    std::fs::rename(
        env.root.path().join("d/b.txt"),
        env.root.path().join("e/b.txt"),
    )
    .unwrap();
    let moved = tree.remove("d/b.txt").unwrap();
    tree.insert("e/b.txt".into(), moved);
    remove(env, &mut tree, "d/c.txt");
    put(env, &mut tree, "n.txt", b"new", 0o644, 1_600_002_000);
    let t2 = pass(env, agent).await;
    let tree2 = tree.clone();
    tokio::time::sleep(gap).await;

    put(env, &mut tree, "a.txt", b"three", 0o644, 1_600_003_000);
    remove(env, &mut tree, "e/b.txt");
    std::fs::set_permissions(
        env.root.path().join("n.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    tree.get_mut("n.txt").unwrap().1 = 0o600;
    let t3 = pass(env, agent).await;
    vec![(t1, tree1), (t2, tree2), (t3, tree)]
}

/// Restores as of each time into a fresh directory and compares bytes, mode and mtime.
async fn assert_restores(env: &TestEnv, agent: &Agent, states: &[(DateTime<Utc>, Tree)]) {
    for (at, expected) in states {
        let dir = tempfile::tempdir().unwrap();
        let r = restore(env, agent, &options(dir.path(), *at)).await;
        assert!(r.failed.is_empty(), "{r:?}");
        assert_eq!(r.restored as usize, expected.len());
        assert_eq!(&read_tree(dir.path()), expected, "as of {at}");
    }
}

#[tokio::test]
async fn a_tree_restores_as_of_each_of_three_passes() {
    let env = TestEnv::new().await;
    let mut s = env.settings();
    s.max_delete_percent = 100;
    let agent = env.agent(s).await;
    assert_eq!(agent.history.label(), "prefix", "s3s-fs has no versioning");
    let states = three_passes(&env, &agent, Duration::ZERO).await;
    assert!(
        !env.history_keys().await.is_empty(),
        "replaced content was copied aside"
    );
    assert_restores(&env, &agent, &states).await;
    let report = portail_agent::ops::verify::verify(&agent).await.unwrap();
    assert_eq!(report.drift, vec![], "history copies are not orphans");

    // The object of every current file carries its mtime and mode in rclone's names; a
    // chmod alone refreshed them.
    let client = env.s3.client().await;
    let head = |key: &'static str| client.head_object().bucket(&env.bucket).key(key).send();
    let a = head("a.txt").await.unwrap();
    let meta = a.metadata().unwrap();
    assert_eq!(meta["mtime"], "1600003000");
    assert_eq!(meta["mode"], "100644");
    assert!(meta.contains_key("uid") && meta.contains_key("md5chksum"));
    assert_eq!(
        head("n.txt").await.unwrap().metadata().unwrap()["mode"],
        "100600"
    );

    // `history PATH`: three contents of a.txt, newest first.
    let versions = portail_core::catalog::versions_of_path(&env.db.pool, agent.id, "a.txt")
        .await
        .unwrap();
    let sizes: Vec<i64> = versions.iter().map(|v| v.size_bytes).collect();
    assert_eq!(sizes, vec![5, 4, 3]);
    assert!(versions[0].valid_to.is_none() && versions[1].history_key.is_some());
}

/// The same on a bucket with versioning (moto: s3s-fs keeps no versions): nothing is copied
/// aside, and the catalog's VersionIds bring the past back.
#[tokio::test]
async fn a_multipart_file_restores_through_ranged_gets_as_of_each_pass() {
    let env = TestEnv::new().await;
    let mut s = env.settings();
    s.multipart_threshold = portail_core::config::ByteSize(5 << 20);
    s.multipart_part_size = portail_core::config::ByteSize(5 << 20);
    let agent = env.agent(s).await;
    let mut tree = Tree::new();
    // 12 MiB and a bit: two whole ranges and a short last one.
    let old: Vec<u8> = (0..(12 << 20) + 123).map(|i| (i % 251) as u8).collect();
    put(&env, &mut tree, "big.bin", &old, 0o640, 1_600_000_000);
    let t1 = pass(&env, &agent).await;
    let tree1 = tree.clone();
    let new: Vec<u8> = old.iter().rev().copied().collect();
    put(&env, &mut tree, "big.bin", &new, 0o600, 1_600_000_500);
    let t2 = pass(&env, &agent).await;
    // As of t1 the bytes come from the history copy, as of t2 from the object itself.
    assert_restores(&env, &agent, &[(t1, tree1), (t2, tree)]).await;

    // A size the object does not have fails the ranges (one GET would have read it whole).
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    let wrong = agent
        .transfer
        .download("big.bin", None, new.len() as u64 + 1, &dest)
        .await;
    assert!(wrong.is_err(), "{wrong:?}");
    let right = agent
        .transfer
        .download("big.bin", None, new.len() as u64, &dest)
        .await
        .unwrap();
    assert_eq!(hex::encode(right), portail_tests::md5_hex(&new));
    assert_eq!(std::fs::read(&dest).unwrap(), new);
}

/// An agent with HISTORY=versioning on a moto bucket with versioning Enabled; the moto
/// server lives as long as the first value.
async fn versioning_agent(env: &TestEnv) -> (portail_tests::moto::Moto, aws_sdk_s3::Client, Agent) {
    let moto = portail_tests::moto::spawn_moto().await;
    let client = moto.bucket_client(env).await;
    let on = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    client
        .put_bucket_versioning()
        .bucket(&env.bucket)
        .versioning_configuration(on)
        .send()
        .await
        .unwrap();
    let mut s = env.settings();
    s.max_delete_percent = 100;
    let mut agent = env
        .agent_with_client(s, client.clone(), &prometheus::Registry::new())
        .await;
    // moto 5.2.5 answers GetBucketVersioning with a `GetBucketVersioningResponse` root element
    // (S3 sends `VersioningConfiguration`), which the SDK cannot parse, so HISTORY=auto falls
    // back to prefix there. The detection is AWS's and MinIO's; the mode itself is tested here.
    assert!(
        agent.transfer.versioning_enabled().await.is_err(),
        "moto fixed its answer: drop this override"
    );
    agent.history = portail_agent::policy::history::History::Versioning;
    (moto, client, agent)
}

#[tokio::test]
async fn with_bucket_versioning_a_tree_restores_as_of_each_pass() {
    let env = TestEnv::new().await;
    let (_moto, client, agent) = versioning_agent(&env).await;
    let states = three_passes(&env, &agent, Duration::ZERO).await;
    let listed = client
        .list_objects_v2()
        .bucket(&env.bucket)
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        ["a.txt", "n.txt"],
        "no history copies: the bucket keeps versions"
    );
    let versions = portail_core::catalog::versions_of_path(&env.db.pool, agent.id, "a.txt")
        .await
        .unwrap();
    assert!(
        versions.iter().all(|v| v.version_id.is_some()),
        "{versions:?}"
    );
    assert_restores(&env, &agent, &states).await;
}

#[tokio::test]
async fn restore_resumes_refuses_conflicts_and_reports_missing_history() {
    let env = TestEnv::new().await;
    let agent = env.agent(env.settings()).await;
    let mut tree = Tree::new();
    for i in 0..6 {
        put(
            &env,
            &mut tree,
            &format!("f{i}.txt"),
            format!("v1 {i}").as_bytes(),
            0o644,
            1_600_000_000 + i,
        );
    }
    let t1 = pass(&env, &agent).await;
    for i in 0..6 {
        put(
            &env,
            &mut tree,
            &format!("f{i}.txt"),
            format!("v2 {i}").as_bytes(),
            0o644,
            1_700_000_000 + i,
        );
    }
    pass(&env, &agent).await;

    // A half-done restore (as after SIGKILL: one file in place, one temporary leftover)
    // completes when run again, and writes only what is missing.
    let dir = tempfile::tempdir().unwrap();
    let mut first = options(dir.path(), t1);
    first.paths = vec!["f0.txt".into()];
    assert_eq!(restore(&env, &agent, &first).await.restored, 1);
    std::fs::write(dir.path().join(".f1.txt.portail-restore"), b"torn").unwrap();
    let r = restore(&env, &agent, &options(dir.path(), t1)).await;
    assert_eq!((r.restored, r.present, r.failed.len()), (5, 1, 0), "{r:?}");
    let got = read_tree(dir.path());
    assert_eq!(got.len(), 6, "no temporary file is left: {:?}", got.keys());
    assert_eq!(got["f1.txt"].0, b"v1 1");

    // Other content in the way is refused, then replaced with --overwrite.
    std::fs::write(dir.path().join("f2.txt"), b"mine").unwrap();
    let r = restore(&env, &agent, &options(dir.path(), t1)).await;
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(r.failed[0].contains("--overwrite"), "{r:?}");
    assert_eq!(std::fs::read(dir.path().join("f2.txt")).unwrap(), b"mine");
    let mut over = options(dir.path(), t1);
    over.overwrite = true;
    assert_eq!(restore(&env, &agent, &over).await.restored, 1);
    assert_eq!(std::fs::read(dir.path().join("f2.txt")).unwrap(), b"v1 2");

    // A history object lost from S3: reported, and the other files still restored.
    let lost = env
        .history_keys()
        .await
        .into_iter()
        .find(|k| k.contains("f3.txt"))
        .unwrap();
    let client = env.s3.client().await;
    client
        .delete_object()
        .bucket(&env.bucket)
        .key(&lost)
        .send()
        .await
        .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let r = restore(&env, &agent, &options(fresh.path(), t1)).await;
    assert_eq!((r.restored, r.failed.len()), (5, 1), "{r:?}");
    assert!(
        r.failed[0].starts_with("f3.txt: ") && r.failed[0].contains("missing"),
        "{r:?}"
    );
    assert!(!fresh.path().join("f3.txt").exists());

    // Bad requests are refused up front, with what is wrong.
    let bad = |e: anyhow::Error| format!("{e:#}");
    let restorer = Restore {
        catalog: &agent.catalog,
        transfer: &agent.transfer,
        sync_root: env.root.path(),
    };
    let early = options(fresh.path(), t1 - chrono::Duration::hours(1));
    let e = bad(restorer.run(&early).await.unwrap_err());
    assert!(e.contains("before the first sync"), "{e}");
    let mut nowhere = options(fresh.path(), t1);
    nowhere.paths = vec!["never/was.txt".into()];
    let e = bad(restorer.run(&nowhere).await.unwrap_err());
    assert!(
        e.contains("no file was ever synced at \"never/was.txt\""),
        "{e}"
    );
    let into_root = options(&env.root.path().join("restored"), t1);
    let e = bad(restorer.run(&into_root).await.unwrap_err());
    assert!(e.contains("inside SYNC_ROOT"), "{e}");
    assert!(!env.root.path().join("restored").exists());
}

#[tokio::test]
async fn purge_deletes_history_past_the_retention_and_keeps_the_rest() {
    let env = TestEnv::new().await;
    let mut s = env.settings();
    s.max_delete_percent = 100;
    let agent = env.agent(s.clone()).await;
    let mut tree = Tree::new();
    put(&env, &mut tree, "keep.txt", b"v1", 0o644, 1_600_000_000);
    put(&env, &mut tree, "gone.txt", b"bye", 0o644, 1_600_000_000);
    pass(&env, &agent).await;
    put(&env, &mut tree, "keep.txt", b"v2", 0o644, 1_600_000_500);
    remove(&env, &mut tree, "gone.txt");
    pass(&env, &agent).await;
    assert_eq!(
        env.history_keys().await.len(),
        2,
        "one overwrite, one delete"
    );

    // Within the retention (30 days by default): nothing goes.
    let p = agent.purger().purge().await.unwrap();
    assert_eq!((p.versions, p.objects), (0, 0));
    assert_eq!(env.history_keys().await.len(), 2);

    // With a zero retention every ended version is expired: its copy and its row go; the
    // current versions stay.
    s.history_retention = portail_core::config::HumanDuration(std::time::Duration::ZERO);
    let strict = env.agent(s).await;
    let p = strict.purger().purge().await.unwrap();
    assert_eq!((p.versions, p.objects, p.failed), (2, 2, 0));
    assert!(env.history_keys().await.is_empty());
    let left = portail_core::catalog::versions_of_path(&env.db.pool, agent.id, "keep.txt")
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].valid_to.is_none());
}

/// Bytes and mtime only: the bucket keeps past contents, but only the latest mode of each.
fn contents(tree: &Tree) -> BTreeMap<String, (Vec<u8>, i64)> {
    tree.iter()
        .map(|(p, (b, _, m))| (p.clone(), (b.clone(), *m)))
        .collect()
}

/// The catalog lost: `rebuild-catalog` recreates the rows from the bucket, after which a sync
/// uploads nothing and `verify` is clean; `restore --from-bucket` needs no catalog at all.
#[tokio::test]
async fn after_the_catalog_is_lost_the_bucket_alone_rebuilds_it_and_restores() {
    let env = TestEnv::new().await;
    let mut s = env.settings();
    s.max_delete_percent = 100;
    let agent = env.agent(s).await;
    // LastModified has whole seconds on many stores: passes a second apart.
    let states = three_passes(&env, &agent, Duration::from_millis(1100)).await;
    let rebuilt = recover_from_the_bucket(&env, &agent, &states, false).await;
    assert_eq!(
        rebuilt.past_versions, 5,
        "a.txt twice, d/b.txt, d/c.txt, e/b.txt"
    );
}

#[tokio::test]
async fn with_bucket_versioning_the_bucket_alone_rebuilds_the_catalog_and_restores() {
    let env = TestEnv::new().await;
    let (_moto, _client, agent) = versioning_agent(&env).await;
    let states = three_passes(&env, &agent, Duration::from_millis(1100)).await;
    let rebuilt = recover_from_the_bucket(&env, &agent, &states, true).await;
    assert_eq!(
        rebuilt.past_versions, 6,
        "a.txt twice, d/b.txt, d/c.txt, e/b.txt, and n.txt before its chmod (a new version)"
    );
}

/// The catalog lost: restores from the bucket alone as of each pass; then drops the agent's
/// rows and versions, rebuilds them, and checks that a sync uploads nothing, `verify` is clean,
/// a second rebuild is refused, and the rebuilt catalog restores each pass.
async fn recover_from_the_bucket(
    env: &TestEnv,
    agent: &Agent,
    states: &[(DateTime<Utc>, Tree)],
    versioned: bool,
) -> portail_agent::ops::recover::Rebuilt {
    let h = format!("{}.portail-history/", agent.prefix);
    for (at, expected) in states {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), *at);
        let root = env.root.path();
        let r = portail_agent::ops::restore::from_bucket(
            &agent.transfer,
            &agent.prefix,
            &h,
            versioned,
            root,
            &opts,
        )
        .await
        .unwrap();
        assert!(r.failed.is_empty(), "{r:?}");
        let got = contents(&read_tree(dir.path()));
        assert_eq!(got, contents(expected), "from the bucket as of {at}");
    }
    for table in ["file_versions", "files"] {
        sqlx::query(&format!("delete from {table} where agent_id = $1"))
            .bind(agent.id)
            .execute(&env.db.pool)
            .await
            .unwrap();
    }
    let rebuilt = portail_agent::ops::recover::rebuild(agent).await.unwrap();
    assert_eq!(
        (rebuilt.files, rebuilt.skipped.len()),
        (2, 0),
        "{rebuilt:?}"
    );
    let r = env.sync(agent).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!((r.uploaded, r.renamed, r.deleted), (0, 0, 0), "{r:?}");
    let report = portail_agent::ops::verify::verify(agent).await.unwrap();
    assert_eq!(report.drift, vec![]);
    let e = portail_agent::ops::recover::rebuild(agent)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("already has rows"), "{e:#}");
    for (at, expected) in states {
        let dir = tempfile::tempdir().unwrap();
        let r = restore(env, agent, &options(dir.path(), *at)).await;
        assert!(r.failed.is_empty(), "{r:?}");
        let got = contents(&read_tree(dir.path()));
        assert_eq!(got, contents(expected), "rebuilt, as of {at}");
    }
    rebuilt
}
