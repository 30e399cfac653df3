//! Issue 28, the catalog: a file server holds only its agent's own DATABASE_URL (from
//! `portail-url-service agent add`), and with it reaches its own rows and nothing else. The
//! attacks tried with one agent's URL on a catalog of two, each refused; and the agent's own
//! work (sync, watch, verify, history, restore, release) under its role.
//!
//! The test cluster trusts every local login (scripts/lib.sh), so it shows what the role may
//! do once connected, not the password check; a real server's pg_hba.conf asks for it
//! (scram-sha-256, Debian's default for TCP).
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::process::Output;
use std::time::Duration;

use portail_tests::{eventually, workspace_bin, TestEnv};
use sqlx::PgPool;

fn url_service(env: &TestEnv, args: &[&str]) -> Output {
    std::process::Command::new(workspace_bin("portail-url-service"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("DATABASE_URL", &env.db.url)
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `agent add NAME`: the URL alone on stdout.
fn add_agent(env: &TestEnv, name: &str) -> String {
    let out = url_service(env, &["agent", "add", name]);
    assert!(out.status.success(), "{}", text(&out));
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(url.starts_with("postgres://portail_agent_"), "{url}");
    url
}

/// Runs the agent binary as `name`, with `url`, on `root` under key prefix `name/`.
async fn agent(
    env: &TestEnv,
    name: &str,
    url: &str,
    root: &std::path::Path,
    args: &[&str],
) -> Output {
    let mut cmd = env.agent_process(name, args, false);
    cmd.env("DATABASE_URL", url)
        .env("SYNC_ROOT", root)
        .env("S3_PREFIX", format!("{name}/"));
    cmd.output().await.unwrap()
}

fn tree(dir: &std::path::Path, files: &[(&str, &str)]) {
    for (p, body) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Two agents on one catalog, each synced under its own role. Returns a1's URL, a1's pool and
/// a2's tree.
async fn two_agents(env: &TestEnv) -> (String, PgPool, tempfile::TempDir) {
    let (url1, url2) = (add_agent(env, "a1"), add_agent(env, "a2"));
    tree(env.root.path(), &[("a.txt", "one"), ("d/b.txt", "two")]);
    let other = tempfile::tempdir().unwrap();
    let files: Vec<(String, String)> = (0..70)
        .map(|i| (format!("f{i}.txt"), format!("{i}")))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    tree(other.path(), &files);
    let out = agent(env, "a2", &url2, other.path(), &["sync"]).await;
    assert!(out.status.success(), "a2 under its role: {}", text(&out));
    let out = agent(env, "a1", &url1, env.root.path(), &["sync"]).await;
    assert!(out.status.success(), "a1 under its role: {}", text(&out));
    let pool = PgPool::connect(&url1).await.unwrap();
    (url1, pool, other)
}

const A2_SYNCED: &str = "select count(*) from files f join agents a on a.id = f.agent_id
                         where a.name = 'a2' and f.status = 'synced'";

#[tokio::test]
async fn one_agents_url_reads_and_changes_nothing_of_another_agent_and_mints_no_token() {
    let env = TestEnv::new().await;
    let (_, a1, _other) = two_agents(&env).await;
    let owner = &env.db.pool;
    assert_eq!(count(owner, A2_SYNCED).await, 70);

    // Its own rows only, whatever the query asks for.
    assert_eq!(count(&a1, "select count(*) from files").await, 2);
    assert_eq!(count(&a1, "select count(*) from agents").await, 1);
    let a2_rows =
        "select count(*) from files f join agents a on a.id = f.agent_id where a.name = 'a2'";
    assert_eq!(count(&a1, a2_rows).await, 0);
    assert_eq!(
        count(
            &a1,
            "select count(*) from file_versions where path like 'f%'"
        )
        .await,
        0
    );

    // Writes reach its own rows only.
    let rewrote = sqlx::query("update files set md5 = repeat('0', 32)")
        .execute(&a1)
        .await
        .unwrap();
    assert_eq!(rewrote.rows_affected(), 2);
    sqlx::query("delete from file_versions")
        .execute(&a1)
        .await
        .unwrap();
    sqlx::query("delete from file_events")
        .execute(&a1)
        .await
        .unwrap();
    let renamed = sqlx::query("update agents set name = 'pwned' where name = 'a2'")
        .execute(&a1)
        .await
        .unwrap();
    assert_eq!(renamed.rows_affected(), 0);
    assert_eq!(count(owner, A2_SYNCED).await, 70);
    let a2_versions = "select count(*) from file_versions v join agents a on a.id = v.agent_id where a.name = 'a2'";
    assert_eq!(
        count(owner, a2_versions).await,
        70,
        "a2's history is intact"
    );
    let zeroed = "select count(*) from files where md5 = repeat('0', 32)";
    assert_eq!(count(owner, zeroed).await, 2, "only a1's own rows changed");

    // Rows claimed for another agent are refused.
    let a2_id: i64 = sqlx::query_scalar("select id from agents where name = 'a2'")
        .fetch_one(owner)
        .await
        .unwrap();
    let planted = sqlx::query(
        "insert into files (agent_id, path, s3_key, size_bytes, mtime, status) values ($1, 'x', 'x', 0, now(), 'pending')",
    )
    .bind(a2_id)
    .execute(&a1)
    .await;
    assert!(planted
        .unwrap_err()
        .to_string()
        .contains("row-level security"));

    // Tokens, sessions, links, the audit log and the bindings are out of reach.
    let mint = "insert into api_tokens (name, token_sha256) values ('evil', repeat('a', 64))";
    for sql in [
        mint,
        "select count(*) from api_tokens",
        "select count(*) from ui_sessions",
        "select count(*) from share_links",
        "select count(*) from audit_log",
        "insert into agent_roles (role_name, agent_name) values (current_user, 'a2')",
        "update agent_roles set agent_name = 'a2'",
    ] {
        let err = sqlx::query(sql).execute(&a1).await.unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }
    assert_eq!(count(owner, "select count(*) from api_tokens").await, 0);

    // No DDL.
    for sql in [
        "drop table file_versions",
        "alter table files drop column md5",
        "create table t (x int)",
        "truncate files",
    ] {
        let err = sqlx::query(sql).execute(&a1).await.unwrap_err().to_string();
        assert!(
            err.contains("must be owner") || err.contains("permission denied"),
            "{sql}: {err}"
        );
    }
    assert_eq!(count(owner, a2_versions).await, 70);
}

#[tokio::test]
async fn an_agents_role_cannot_run_another_agent() {
    let env = TestEnv::new().await;
    let (url1, _, _other) = two_agents(&env).await;
    // a1's URL, a2's AGENT_ID, a one-file tree and no delete guard: refused before anything.
    let bait = tempfile::tempdir().unwrap();
    tree(bait.path(), &[("only.txt", "x")]);
    let mut cmd = env.agent_process("a2", &["sync"], false);
    cmd.env("DATABASE_URL", &url1)
        .env("SYNC_ROOT", bait.path())
        .env("S3_PREFIX", "a2/")
        .env("MAX_DELETE_PERCENT", "100");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("bound to agent \"a1\""),
        "{}",
        text(&out)
    );
    assert_eq!(count(&env.db.pool, A2_SYNCED).await, 70);
    let a2_objects = env
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("a2/"))
        .count();
    assert_eq!(a2_objects, 70, "a2's objects are all there");
}

#[tokio::test]
async fn the_agents_own_work_runs_under_its_role() {
    let env = TestEnv::new().await;
    let (url1, a1, _other) = two_agents(&env).await;
    let root = env.root.path();
    let out = agent(&env, "a1", &url1, root, &["verify"]).await;
    assert!(out.status.success(), "verify: {}", text(&out));
    std::fs::write(root.join("a.txt"), "one, then more").unwrap();
    let out = agent(&env, "a1", &url1, root, &["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = agent(&env, "a1", &url1, root, &["history", "a.txt"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out)
    );
    let to = tempfile::tempdir().unwrap();
    let dest = to.path().join("r");
    let out = agent(
        &env,
        "a1",
        &url1,
        root,
        &["restore", "--to", dest.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dest.join("a.txt")).unwrap(),
        "one, then more"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("d/b.txt")).unwrap(),
        "two"
    );
    let out = agent(&env, "a1", &url1, root, &["release-deletes"]).await;
    assert!(text(&out).contains("holds no deletes"), "{}", text(&out));

    // Watch mode: a new file arrives under the role too.
    let mut cmd = env.agent_process("a1", &["watch"], false);
    cmd.env("DATABASE_URL", &url1)
        .env("SYNC_ROOT", root)
        .env("S3_PREFIX", "a1/");
    cmd.env("METRICS_ADDR", "127.0.0.1:0");
    let mut child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(root.join("new.txt"), "new").unwrap();
    let synced = "select count(*) from files where path = 'new.txt' and status = 'synced'";
    eventually(30, "new.txt synced under the role", || async {
        count(&a1, synced).await == 1
    })
    .await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "watch exits 0 on SIGTERM: {status:?}");
}

#[tokio::test]
async fn an_agents_role_refuses_to_start_on_an_older_schema_and_names_the_command() {
    let env = TestEnv::new().await;
    let url1 = add_agent(&env, "a1");
    tree(env.root.path(), &[("a.txt", "one")]);
    let owner = &env.db.pool;
    let newest = "update _sqlx_migrations set version = -version
                  where version = (select max(version) from _sqlx_migrations)";
    sqlx::query(newest).execute(owner).await.unwrap();
    let out = agent(&env, "a1", &url1, env.root.path(), &["sync"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("portail-url-service migrate"),
        "{}",
        text(&out)
    );
    sqlx::query("update _sqlx_migrations set version = -version where version < 0")
        .execute(owner)
        .await
        .unwrap();
    let out = agent(&env, "a1", &url1, env.root.path(), &["sync"]).await;
    assert!(out.status.success(), "{}", text(&out));
    // `migrate` with the owner's URL is what the message names: it succeeds, changing nothing.
    let out = url_service(&env, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn agent_list_rotate_and_remove() {
    let env = TestEnv::new().await;
    let first = add_agent(&env, "a1");
    let again = url_service(&env, &["agent", "add", "a1"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "a second role for one agent: {}",
        text(&again)
    );
    let listed = url_service(&env, &["agent", "list"]);
    let role = first.split(['/', ':']).nth(3).unwrap().to_string();
    assert!(
        String::from_utf8_lossy(&listed.stdout).starts_with(&format!("a1\t{role}\t")),
        "{}",
        text(&listed)
    );
    let rotated = url_service(&env, &["agent", "rotate", "a1"]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    let new_url = String::from_utf8_lossy(&rotated.stdout).trim().to_string();
    assert!(
        new_url.contains(&format!("{role}:")) && new_url != first,
        "{new_url}"
    );
    let removed = url_service(&env, &["agent", "remove", "a1"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(
        PgPool::connect(&new_url).await.is_err(),
        "the dropped role cannot log in"
    );
    let none = url_service(&env, &["agent", "remove", "a1"]);
    assert_eq!(none.status.code(), Some(1));
}
