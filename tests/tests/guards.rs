//! Issue 17: the guards hold in watch mode too. The agent binary runs watch mode as an operator
//! runs it (real inotify, real S3 on s3s-fs, real PostgreSQL, `/metrics` and `/readyz` on
//! METRICS_ADDR), and what it holds is let through by the binary's own release commands.

use std::time::Duration;

use portail_tests::{eventually, free_addr, http_client, md5_hex, TestEnv};
use serde_json::Value;
use tokio::process::{Child, Command};

/// The agent in watch mode, with a short settle time and DELETE_GRACE=2s.
fn watch(env: &TestEnv, id: &str, addr: &str) -> Child {
    env.agent_process(id, &["watch"], false)
        .env("METRICS_ADDR", addr)
        .env("SETTLE_TIME", "200ms")
        .env("DELETE_GRACE", "2s")
        .spawn()
        .expect("agent")
}

/// The value of one series on `/metrics` (`name` or `name{labels}`); panics when absent.
async fn metric(addr: &str, series: &str) -> f64 {
    let text = portail_tests::get_text(&format!("http://{addr}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not exported:\n{text}"))
}

async fn readyz(addr: &str) -> (u16, Value) {
    let r = http_client()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    (r.status().as_u16(), r.json().await.expect("readyz json"))
}

/// Runs `portail-agent <command>` for agent `id` and returns its stdout.
async fn release(env: &TestEnv, id: &str, command: &str) -> String {
    let out = env
        .agent_process(id, &[command], false)
        .output()
        .await
        .expect("release");
    assert!(out.status.success(), "{command}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().expect("pid").to_string()])
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

#[tokio::test]
async fn a_slow_folder_by_folder_delete_is_held_past_the_limit_until_released() {
    let env = TestEnv::new().await;
    for d in 0..20 {
        for f in 0..50 {
            env.write(
                &format!("d{d:02}/f{f:02}.txt"),
                format!("{d}/{f}").as_bytes(),
            );
        }
    }
    let addr = free_addr();
    let agent = watch(&env, "slow", &addr);
    eventually(
        120,
        "the first pass mirrored 1000 files, objects and rows",
        || async { env.mirrored_count(1000).await },
    )
    .await;

    // 12 of 20 folders (60%), one every 1.5 s: each batch alone is far below the limit.
    for d in 0..12 {
        std::fs::remove_dir_all(env.root.path().join(format!("d{d:02}"))).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    eventually(60, "every vanished file deleted or held", || async {
        let held = metric(&addr, "portail_agent_deletes_held").await;
        let deleted = 1000 - env.keys().await.len();
        deleted as f64 + held == 600.0
    })
    .await;
    let held = metric(&addr, "portail_agent_deletes_held").await;
    let deleted = 1000 - env.keys().await.len();
    eprintln!("slow delete of 600: {deleted} deleted, {held} held");
    assert!(
        deleted <= 500,
        "at most MAX_DELETE_PERCENT=50 of 1000 within DELETE_WINDOW, got {deleted}"
    );
    assert!(held >= 100.0, "the rest is held: {held}");
    let blocked = r#"portail_agent_deletes_blocked_total{guard="max_delete_percent"}"#;
    assert!(metric(&addr, blocked).await >= 1.0);
    let (status, body) = readyz(&addr).await;
    assert_eq!(status, 200, "a hold needs a person, not a restart: {body}");
    assert_eq!(body["held"]["deletes"]["count"], held as u64, "{body}");
    assert_eq!(body["held"]["deletes"]["guard"], "max_delete_percent");

    // Held is not stuck: new files still go up, and one more delete is held too.
    env.write("d19/new.txt", b"new");
    std::fs::remove_file(env.root.path().join("d19/f00.txt")).unwrap();
    eventually(30, "the new file uploads during the hold", || async {
        env.keys().await.contains(&"d19/new.txt".to_string())
    })
    .await;
    eventually(30, "the later delete is held as well", || async {
        metric(&addr, "portail_agent_deletes_held").await == held + 1.0
    })
    .await;

    let said = release(&env, "slow", "release-deletes").await;
    assert!(
        said.contains(&format!("released {} held deletes", held as u64 + 1)),
        "{said}"
    );
    eventually(60, "the released deletes go through", || async {
        env.keys().await.len() == 1000 - 600 - 1 + 1
            && metric(&addr, "portail_agent_deletes_held").await == 0.0
    })
    .await;
    // The gauge drops to 0 before the hold's row is ended: wait for the row too.
    eventually(10, "the hold ended in the catalog", || async {
        let hold: Option<i64> = sqlx::query_scalar("select held from guard_holds")
            .fetch_optional(&env.db.pool)
            .await
            .unwrap();
        hold.is_none()
    })
    .await;
    stop(agent).await;
}

#[tokio::test]
async fn a_mass_rewrite_trips_the_tripwire_and_converges_after_release() {
    let env = TestEnv::new().await;
    let v = |gen: u8, i: usize| format!("v{gen} of file {i}").into_bytes();
    for i in 0..200 {
        env.write(&format!("f{i:03}.txt"), &v(1, i));
    }
    let addr = free_addr();
    let agent = watch(&env, "rewrite", &addr);
    eventually(
        60,
        "the first pass mirrored 200 files, objects and rows",
        || async { env.mirrored_count(200).await },
    )
    .await;

    // Every file rewritten within seconds, as ransomware encrypting a share would.
    for i in 0..200 {
        env.write(&format!("f{i:03}.txt"), &v(2, i));
    }
    let rewritten = || async {
        let mut n = 0;
        for i in 0..200 {
            let (body, _) = env.object(&format!("f{i:03}.txt")).await.expect("object");
            n += usize::from(md5_hex(&body) == md5_hex(&v(2, i)));
        }
        n
    };
    eventually(60, "the tripwire holds half", || async {
        metric(&addr, "portail_agent_changes_held").await == 100.0
    })
    .await;
    assert_eq!(
        rewritten().await,
        100,
        "MAX_CHANGE_PERCENT=50 of 200 passed"
    );
    assert_eq!(
        metric(&addr, "portail_agent_tripwire_trips_total").await,
        1.0
    );
    let (status, body) = readyz(&addr).await;
    assert_eq!(status, 200);
    assert_eq!(body["held"]["changes"]["count"], 100, "{body}");

    // New files still upload while changed ones are held.
    env.write("brand-new.txt", b"new");
    eventually(30, "a new file uploads during the hold", || async {
        env.keys().await.contains(&"brand-new.txt".to_string())
    })
    .await;
    assert_eq!(rewritten().await, 100, "still held");

    let said = release(&env, "rewrite", "release-changes").await;
    assert!(said.contains("released 100 held changes"), "{said}");
    eventually(60, "every rewrite arrives after the release", || async {
        rewritten().await == 200 && metric(&addr, "portail_agent_changes_held").await == 0.0
    })
    .await;
    assert_eq!(
        release(&env, "rewrite", "release-changes").await.trim(),
        "agent rewrite holds no changes"
    );
    stop(agent).await;
}

#[tokio::test]
async fn passes_count_deletes_over_the_window_and_a_tripped_guard_holds_until_released() {
    let env = TestEnv::new().await;
    for i in 0..10 {
        env.write(&format!("f{i}"), b"x");
    }
    let agent = env.agent(env.settings_for("passes")).await;
    assert!(env.sync(&agent).await.converged());
    let remove = |range: std::ops::Range<usize>| {
        for i in range {
            std::fs::remove_file(env.root.path().join(format!("f{i}"))).unwrap();
        }
    };

    // 30%, then 30% more: each pass alone is under 50%, the window is not.
    remove(0..3);
    assert_eq!(env.sync(&agent).await.deleted, 3);
    remove(3..6);
    let r = env.sync(&agent).await;
    let blocked = r.deletes_blocked.expect("the window's 60% is refused");
    assert_eq!(
        blocked.guard,
        portail_agent::model::guard::Guard::MaxDeletePercent
    );
    assert!(
        blocked
            .message
            .starts_with("refusing 3 deletes (3 already deleted within DELETE_WINDOW=1h, 6 in all): more than MAX_DELETE_PERCENT=50% of 10 tracked files"),
        "{}",
        blocked.message
    );
    assert_eq!((r.deleted, env.keys().await.len()), (0, 7));

    // Sticky: a pass that would pass on its own (3 of 7 tracked, window off) is held too.
    let mut per_pass = env.settings_for("passes");
    per_pass.delete_window = portail_core::config::HumanDuration(Duration::ZERO);
    let per_pass = env.agent(per_pass).await;
    let r = env.sync(&per_pass).await;
    let held = r.deletes_blocked.expect("held until released");
    assert!(held.message.contains("release-deletes"), "{}", held.message);
    assert_eq!(env.keys().await.len(), 7);
    let dry = portail_agent::SyncOptions {
        dry_run: true,
        ..Default::default()
    };
    let plan = portail_agent::sync_once(&per_pass, &dry).await.unwrap();
    assert!(
        plan.planned
            .iter()
            .any(|l| l.starts_with("deletes blocked: holding 3 deletes")),
        "a dry run sees the hold: {:?}",
        plan.planned
    );

    let said = portail_agent::app::release(
        &env.db.pool,
        "passes",
        portail_agent::policy::guard::Kind::Deletes,
    )
    .await
    .unwrap();
    assert!(said.starts_with("released 3 held deletes"), "{said}");
    let r = env.sync(&agent).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!((r.deleted, env.keys().await.len()), (3, 4));
    let holds: i64 = sqlx::query_scalar("select count(*) from guard_holds")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(holds, 0, "the release was used up and the hold ended");
}

#[tokio::test]
async fn more_than_1000_deletes_count_once_in_the_window() {
    let env = TestEnv::new().await;
    for i in 0..2500 {
        env.write(&format!("d{}/f{i:04}", i % 10), format!("{i}").as_bytes());
    }
    let agent = env.agent(env.settings_for("many")).await;
    assert!(env.sync(&agent).await.converged());
    for i in 0..1200 {
        std::fs::remove_file(env.root.path().join(format!("d{}/f{i:04}", i % 10))).unwrap();
    }
    let r = env.sync(&agent).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.deleted, 1200);
    // Two DeleteObjects calls (1000 + 200), one batch: the window counts 1200, not 2400.
    let counted: i64 = sqlx::query_scalar(
        "select coalesce(sum(count), 0)::int8 from guard_ledger where kind = 'deletes'",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(counted, 1200);
}
