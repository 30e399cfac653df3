//! Watch mode end to end: the real inotify watcher, real PostgreSQL, in-process s3s-fs.
//! Timing targets belong to the benchmark harness: these tests poll with generous deadlines.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use portail_agent::watch::RescanCause;
use portail_agent::AgentSettings;
use portail_core::catalog::{self, FileStatus};
use portail_core::config::HumanDuration;
use portail_tests::{eventually, free_addr, start_watch, TestEnv, Watching};

fn fast(mut s: AgentSettings) -> AgentSettings {
    s.settle_time = HumanDuration(Duration::from_millis(200));
    s.delete_grace = HumanDuration(Duration::from_millis(800));
    s.rescan_interval = HumanDuration(Duration::from_secs(3600));
    s.max_delete_percent = 100;
    s
}

async fn start(env: &TestEnv, settings: AgentSettings) -> Watching {
    start_watch(env.agent(settings).await).await
}

/// A path's row and the kinds of its events, newest first.
async fn events(env: &TestEnv, agent_id: i64, path: &str) -> (catalog::FileRow, Vec<String>) {
    let row = catalog::rows_by_paths(&env.db.pool, agent_id, &[path.to_string()])
        .await
        .unwrap()
        .remove(0);
    let kinds = catalog::events_of_file(&env.db.pool, row.id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    (row, kinds)
}

async fn status(env: &TestEnv, agent_id: i64, path: &str) -> Option<FileStatus> {
    catalog::rows_by_paths(&env.db.pool, agent_id, &[path.to_string()])
        .await
        .unwrap()
        .first()
        .map(|r| r.status)
}

#[tokio::test]
async fn create_modify_move_and_delete_reach_s3_and_the_catalog() {
    let env = TestEnv::new().await;
    env.write("before.txt", b"there at start");
    let w = start(&env, fast(env.settings())).await;
    let id = w.agent.id;
    eventually(20, "initial pass", || {
        env.mirrored(id, "before.txt", b"there at start")
    })
    .await;

    env.write("new.txt", b"created");
    eventually(20, "create", || env.mirrored(id, "new.txt", b"created")).await;
    env.write("new.txt", b"modified, longer");
    eventually(20, "modify", || {
        env.mirrored(id, "new.txt", b"modified, longer")
    })
    .await;

    std::fs::create_dir_all(env.root.path().join("moved")).unwrap();
    std::fs::rename(
        env.root.path().join("before.txt"),
        env.root.path().join("moved/after.txt"),
    )
    .unwrap();
    eventually(20, "move target", || {
        env.mirrored(id, "moved/after.txt", b"there at start")
    })
    .await;
    eventually(20, "move source deleted", || async {
        status(&env, id, "before.txt").await == Some(FileStatus::Deleted)
    })
    .await;
    assert!(env.object("before.txt").await.is_none());
    let (_, kinds) = events(&env, id, "moved/after.txt").await;
    assert_eq!(
        kinds,
        vec!["renamed"],
        "a move is a server-side copy, not a re-upload"
    );

    std::fs::remove_file(env.root.path().join("new.txt")).unwrap();
    eventually(20, "delete", || async {
        status(&env, id, "new.txt").await == Some(FileStatus::Deleted)
    })
    .await;
    assert!(env.object("new.txt").await.is_none());
    // A deleted file that comes back is uploaded again.
    env.write("new.txt", b"back");
    eventually(20, "re-create", || env.mirrored(id, "new.txt", b"back")).await;
    w.stop().await;
}

/// `mkdir d && mv f d/`: the directory's event comes first, and its watch may come too late to
/// see the move's other end, so walking `d` finds `d/f`. Each move must still be a server-side
/// copy, whatever the gap between the two steps: the gaps here span the loop's 20 ms tick, which
/// once split such a move across two batches (and uploaded `d/f` again) about one run in five.
#[tokio::test]
async fn moves_into_new_directories_are_copies_whatever_the_gap() {
    let env = TestEnv::new().await;
    let names: Vec<String> = (0..8).map(|i| format!("f{i}.txt")).collect();
    for n in &names {
        env.write(n, format!("content of {n}").as_bytes());
    }
    let w = start(&env, fast(env.settings())).await;
    let id = w.agent.id;
    for n in &names {
        let body = format!("content of {n}");
        eventually(20, "initial pass", || env.mirrored(id, n, body.as_bytes())).await;
    }
    for (i, n) in names.iter().enumerate() {
        let dir = env.root.path().join(format!("d{i}"));
        std::fs::create_dir(&dir).unwrap();
        tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
        std::fs::rename(env.root.path().join(n), dir.join(n)).unwrap();
    }
    for (i, n) in names.iter().enumerate() {
        let (to, body) = (format!("d{i}/{n}"), format!("content of {n}"));
        eventually(20, "move target", || env.mirrored(id, &to, body.as_bytes())).await;
        let (_, kinds) = events(&env, id, &to).await;
        assert_eq!(
            kinds,
            vec!["renamed"],
            "{to}: a move is a copy, not a re-upload"
        );
    }
    w.stop().await;
}

#[tokio::test]
async fn deep_new_directories_and_a_burst_of_2000_files_are_picked_up() {
    let env = TestEnv::new().await;
    let w = start(&env, fast(env.settings())).await;
    let id = w.agent.id;
    // mkdir -p, then files straight away: some land before the new watches exist.
    let deep = "a/b/c/d/e/f/g/h";
    std::fs::create_dir_all(env.root.path().join(deep)).unwrap();
    for i in 0..5 {
        env.write(&format!("{deep}/f{i}.txt"), format!("deep {i}").as_bytes());
    }
    for i in 0..2000 {
        env.write(
            &format!("burst/{:02}/file{i:04}.txt", i % 20),
            format!("burst {i}").as_bytes(),
        );
    }
    eventually(20, "deep files", || async {
        let mut all = true;
        for i in 0..5 {
            all &= env
                .mirrored(
                    id,
                    &format!("{deep}/f{i}.txt"),
                    format!("deep {i}").as_bytes(),
                )
                .await;
        }
        all
    })
    .await;
    eventually(180, "2000 burst files synced", || async {
        catalog::agent_totals(&env.db.pool, id)
            .await
            .unwrap()
            .synced_files
            == 2005
    })
    .await;
    assert_eq!(env.keys().await.len(), 2005);
    assert!(
        env.mirrored(id, "burst/07/file1007.txt", b"burst 1007")
            .await
    );
    w.stop().await;
}

#[tokio::test]
async fn an_atomic_save_updates_in_place_and_never_deletes() {
    let env = TestEnv::new().await;
    env.write("doc.txt", b"version 1");
    let w = start(&env, fast(env.settings())).await;
    let id = w.agent.id;
    eventually(20, "initial", || env.mirrored(id, "doc.txt", b"version 1")).await;
    // What editors do: write a temp file, then rename it over the target.
    env.write("doc.txt.tmp", b"version 2, saved atomically");
    std::fs::rename(
        env.root.path().join("doc.txt.tmp"),
        env.root.path().join("doc.txt"),
    )
    .unwrap();
    eventually(20, "saved", || {
        env.mirrored(id, "doc.txt", b"version 2, saved atomically")
    })
    .await;
    // Let any (wrong) delete grace expire before judging.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (row, kinds) = events(&env, id, "doc.txt").await;
    assert!(!kinds.contains(&"deleted".to_string()), "{kinds:?}");
    assert_eq!(row.status, FileStatus::Synced);
    assert_eq!(
        env.keys().await,
        vec!["doc.txt"],
        "the temp file never reaches S3"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_forced_rescan_catches_what_the_watcher_cannot_see() {
    let env = TestEnv::new().await;
    env.write("a.txt", b"content");
    let w = start(&env, fast(env.settings())).await;
    let id = w.agent.id;
    eventually(20, "initial", || env.mirrored(id, "a.txt", b"content")).await;
    // Drift no file-system event can report (as if events were lost to a queue overflow):
    // the catalog no longer vouches for the object. Only a full reconcile repairs it.
    sqlx::query("update files set status = 'error', last_error = 'simulated' where path = 'a.txt'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status(&env, id, "a.txt").await,
        Some(FileStatus::Error),
        "nothing repairs it without a rescan"
    );
    w.handle.rescan(RescanCause::Overflow);
    eventually(20, "the full reconcile repairs it", || {
        env.mirrored(id, "a.txt", b"content")
    })
    .await;
    assert_eq!(
        w.agent
            .metrics
            .watch_rescans
            .with_label_values(&["overflow"])
            .get(),
        1
    );
    assert_eq!(
        w.agent
            .metrics
            .watch_rescans
            .with_label_values(&["startup"])
            .get(),
        1
    );
    w.stop().await;
}

/// A free loopback port for a child's METRICS_ADDR.
#[tokio::test]
async fn sigterm_exits_cleanly_and_health_answers() {
    let env = TestEnv::new().await;
    env.write("a.txt", b"a");
    let addr = free_addr();
    let mut child = env
        .agent_process("term", &["watch"], false)
        .env("METRICS_ADDR", &addr)
        .env("SETTLE_TIME", "100ms")
        .spawn()
        .unwrap();
    let http = portail_tests::http_client();
    eventually(30, "readyz 200", || async {
        http.get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let metrics = portail_tests::get_text(&format!("http://{addr}/metrics")).await;
    assert!(
        metrics.contains("portail_agent_watch_rescans_total{cause=\"startup\"} 1"),
        "{metrics}"
    );
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_burst_then_restart_converges() {
    let env = TestEnv::new().await;
    let spawn = || {
        env.agent_process("killed", &["watch"], false)
            .env("METRICS_ADDR", free_addr())
            .env("SETTLE_TIME", "100ms")
            .env("MULTIPART_THRESHOLD", "5MiB")
            .env("MULTIPART_PART_SIZE", "5MiB")
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    // A burst with a few multipart files, so the kill can land mid-upload.
    for i in 0..400 {
        env.write(
            &format!("burst/f{i:03}.txt"),
            format!("file {i}").as_bytes(),
        );
        if i % 100 == 0 {
            env.write(&format!("burst/big{i:03}.bin"), &vec![i as u8; 11 << 20]);
        }
    }
    let pool = env.db.pool.clone();
    eventually(60, "some files synced", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from files where status = 'synced'")
            .fetch_one(&pool)
            .await
            .unwrap();
        n >= 20
    })
    .await;
    child.kill().await.unwrap();
    let _ = child.wait().await;

    let mut restarted = spawn();
    eventually(120, "all 404 files synced after restart", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from files where status = 'synced'")
            .fetch_one(&pool)
            .await
            .unwrap();
        n == 404
    })
    .await;
    restarted.kill().await.unwrap();
    let _ = restarted.wait().await;
    // No row claims content S3 lacks, no object is missing, no multipart upload is left.
    let mut s = env.settings();
    s.agent_id = Some("killed".into());
    let agent = env.agent(s).await;
    let report = portail_agent::ops::verify::verify(&agent).await.unwrap();
    assert_eq!(report.drift, vec![], "after restart everything verifies");
    assert!(catalog::open_multiparts(&env.db.pool, agent.id)
        .await
        .unwrap()
        .is_empty());
    let dupes: i64 = sqlx::query_scalar("select count(*) from (select path from files group by agent_id, path having count(*) > 1) d")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(dupes, 0);
}

#[tokio::test]
async fn a_database_outage_is_survived_and_caught_up() {
    let cluster = portail_tests::PgCluster::start();
    let env = TestEnv::on_server(&cluster.url()).await;
    env.write("a.txt", b"before the outage");
    let w = start(&env, fast(env.settings())).await;
    let id = w.agent.id;
    eventually(20, "initial", || {
        env.mirrored(id, "a.txt", b"before the outage")
    })
    .await;

    cluster.stop();
    env.write("b.txt", b"written while the database is down");
    env.write("a.txt", b"changed while the database is down");
    // 20 s: long enough for several failed batches and full-pass retries with backoff.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        !w.task.is_finished(),
        "the agent keeps running through the outage"
    );
    cluster.resume();

    eventually(90, "caught up after the outage", || async {
        env.mirrored(id, "b.txt", b"written while the database is down")
            .await
            && env
                .mirrored(id, "a.txt", b"changed while the database is down")
                .await
    })
    .await;
    let rows: i64 = sqlx::query_scalar("select count(*) from files")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2, "no lost or duplicated rows");
    w.stop().await;
}
