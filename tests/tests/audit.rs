//! Issue 15: search by name, and the audit log of every presigned URL and share-link click.
//! Real PostgreSQL, s3s-fs, and the url-service on its production server.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::HashSet;

use portail_core::catalog::{self, FileRow};
use portail_tests::{TestEnv, TestUrlService};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Synced files with names to search, and their rows.
async fn world(names: &[&str]) -> (TestEnv, Vec<FileRow>) {
    let env = TestEnv::new().await;
    for n in names {
        env.write(n, n.as_bytes());
    }
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let rows = catalog::files_of_agent(&env.db.pool, agent.id)
        .await
        .unwrap();
    (env, rows)
}

fn id_of(rows: &[FileRow], path: &str) -> i64 {
    rows.iter().find(|r| r.path == path).unwrap().id
}

async fn get_json(svc: &TestUrlService, token: &str, path: &str) -> (StatusCode, Value) {
    let r = svc.http.get(svc.url(path)).bearer_auth(token).send().await;
    let r = r.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The paths `GET /v1/files?q=` answers, sorted.
async fn search(svc: &TestUrlService, token: &str, q: &str) -> Vec<String> {
    let q: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let (status, page) = get_json(svc, token, &format!("/v1/files?q={q}")).await;
    assert_eq!(status, 200, "{page}");
    let mut paths: Vec<String> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    paths
}

#[tokio::test]
async fn search_matches_a_substring_anywhere_ignoring_case_and_wildcards() {
    let names = [
        "Docs/Report_2026.PDF",
        "a/b/old-report.txt",
        "a/other.txt",
        "50%_off.txt",
        "back\\slash.txt",
    ];
    let (env, _) = world(&names).await;
    let svc = env.spawn_url_service().await;
    let t = &svc.token;
    assert_eq!(
        search(&svc, t, "REPORT").await,
        ["Docs/Report_2026.PDF", "a/b/old-report.txt"]
    );
    assert_eq!(search(&svc, t, "b/old").await, ["a/b/old-report.txt"]);
    // LIKE's wildcards are plain characters here.
    assert_eq!(search(&svc, t, "%").await, ["50%_off.txt"]);
    assert_eq!(
        search(&svc, t, "_").await,
        ["50%_off.txt", "Docs/Report_2026.PDF"]
    );
    assert_eq!(search(&svc, t, "\\").await, ["back\\slash.txt"]);
    assert!(search(&svc, t, "nothing-like-it").await.is_empty());
    // A scoped token searches only its scope.
    let scoped = env.create_token("docs-only", Some("Docs/"), None).await;
    assert_eq!(
        search(&svc, &scoped, "report").await,
        ["Docs/Report_2026.PDF"]
    );
    let long = "x".repeat(257);
    let (status, body) = get_json(&svc, t, &format!("/v1/files?q={long}")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(&svc, t, "/v1/files?q=%00").await;
    assert_eq!(status, 400, "{body}");
}

/// Every path a search answers, read `limit` at a time through `next_cursor`; none twice, and
/// in id order across the pages.
async fn search_all(svc: &TestUrlService, token: &str, filter: &str, limit: usize) -> Vec<String> {
    let files = all_pages(svc, token, "/v1/files", "files", filter, limit).await;
    let ids: Vec<i64> = files.iter().map(|f| f["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "not in id order: {ids:?}"
    );
    files
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// A search in one agent takes its own query (ordered by agent, then id: catalog::list_files).
/// Another agent's rows, with lower ids and matching names, must never leak into its pages,
/// and its pages must still come in id order with nothing skipped, for `?agent=`, for a token
/// scoped to the agent, and for `status=any`.
#[tokio::test]
async fn a_search_in_one_agent_pages_through_that_agent_only_in_id_order() {
    let env = TestEnv::new().await;
    sqlx::raw_sql(
        "insert into agents (name, hostname, root, bucket) values ('earlier', 'h', '/r', 'b');
         insert into files (agent_id, path, s3_key, size_bytes, mtime, status, md5)
           select a.id, 'dir/report-' || i || '.txt', 'k' || i, 1, now(), 'synced', null
           from agents a, generate_series(1, 50) i where a.name = 'earlier'",
    )
    .execute(&env.db.pool)
    .await
    .unwrap();
    let names: Vec<String> = (0..7).map(|i| format!("mine/report-{i}.txt")).collect();
    for n in &names {
        env.write(n, n.as_bytes());
    }
    env.write("mine/other.txt", b"not a match");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let me = agent.name.clone();
    let svc = env.spawn_url_service().await;
    let mut want = names.clone();
    want.sort();
    for filter in [
        format!("&agent={me}&q=report"),
        format!("&agent={me}&q=report&status=any"),
    ] {
        let mut got = search_all(&svc, &svc.token, &filter, 3).await;
        got.sort();
        assert_eq!(got, want, "{filter}");
    }
    let scoped = env.create_token("mine-only", None, Some(&me)).await;
    let mut got = search_all(&svc, &scoped, "&q=report", 2).await;
    got.sort();
    assert_eq!(got, want, "a token scoped to the agent");
    let everyone = search_all(&svc, &svc.token, "&q=report", 20).await;
    assert_eq!(everyone.len(), 57, "without an agent: both agents' matches");
    let none = search_all(&svc, &svc.token, "&agent=nobody&q=report", 3).await;
    assert!(none.is_empty(), "an unknown agent has no files");
}

/// The whole audit log as `token` sees it, newest first, read `limit` at a time; every entry
/// must appear exactly once.
async fn audit_all(svc: &TestUrlService, token: &str, filter: &str, limit: usize) -> Vec<Value> {
    all_pages(svc, token, "/v1/audit", "entries", filter, limit).await
}

/// Every item of a keyset-paginated route (`items` in each page), read `limit` at a time
/// through `next_cursor`; none may appear twice.
async fn all_pages(
    svc: &TestUrlService,
    token: &str,
    route: &str,
    items: &str,
    filter: &str,
    limit: usize,
) -> Vec<Value> {
    let (mut all, mut cursor, mut seen) = (Vec::new(), String::new(), HashSet::new());
    loop {
        let path = format!("{route}?limit={limit}{filter}&cursor={cursor}");
        let (status, page) = get_json(svc, token, &path).await;
        assert_eq!(status, 200, "{page}");
        for e in page[items].as_array().unwrap() {
            assert!(seen.insert(e["id"].as_i64().unwrap()), "twice: {e}");
            all.push(e.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return all,
        }
    }
}

/// (actor, channel, outcome, file_id) of each entry, oldest first.
fn summary(entries: &[Value]) -> Vec<(String, String, String, Option<i64>)> {
    let mut s: Vec<_> = entries
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap().to_string();
            (
                text("actor"),
                text("channel"),
                text("outcome"),
                e["file_id"].as_i64(),
            )
        })
        .collect();
    s.reverse();
    s
}

/// Waits until the audit writer has written `n` entries.
async fn wait_for_entries(env: &TestEnv, n: i64) {
    portail_tests::eventually(10, "audit entries written", || async {
        let count: i64 = sqlx::query_scalar("select count(*) from audit_log")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
        count >= n
    })
    .await;
}

#[tokio::test]
async fn every_presign_and_click_is_audited_with_its_outcome_and_client() {
    let (env, rows) = world(&["docs/a.txt", "private/b.txt"]).await;
    let svc = env.spawn_url_service().await;
    let (a, b) = (id_of(&rows, "docs/a.txt"), id_of(&rows, "private/b.txt"));
    let send = |req: reqwest::RequestBuilder| async move {
        let req = req.header("user-agent", "audit-test/1.0");
        req.header("x-forwarded-for", "6.6.6.6")
            .send()
            .await
            .unwrap()
    };
    let presign = |id: i64| {
        let req = svc.http.post(svc.url(&format!("/v1/files/{id}/url")));
        req.bearer_auth(&svc.token)
    };
    assert_eq!(send(presign(a)).await.status(), 201);
    assert_eq!(send(presign(999_999)).await.status(), 404);
    let bad = presign(a)
        .header("content-type", "application/json")
        .body("{\"expires_in_seconds\": 0}");
    assert_eq!(send(bad).await.status(), 400);
    let (status, link) = {
        let r = svc.post("/v1/links", json!({"file_id": b})).await;
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 201, "{link}");
    let link_path = link["url"].as_str().unwrap();
    let link_url = svc.url(&link_path[link_path.find("/l/").unwrap()..]);
    let link_id = link["id"].as_i64().unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(send(no_redirects.get(&link_url)).await.status(), 302);
    let revoke = svc.http.delete(svc.url(&format!("/v1/links/{link_id}")));
    assert_eq!(
        revoke
            .bearer_auth(&svc.token)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(send(no_redirects.get(&link_url)).await.status(), 410);
    let unknown = svc.url(&format!(
        "/l/{}",
        portail_url_service::auth::generate_link_token()
    ));
    assert_eq!(send(no_redirects.get(&unknown)).await.status(), 404);
    wait_for_entries(&env, 6).await;

    let entries = audit_all(&svc, &svc.token, "", 2).await;
    let link_actor = format!("link:{link_id}");
    let api = |outcome: &str, file| ("test-admin".into(), "api".into(), outcome.into(), file);
    let via_link =
        |actor: &str, outcome: &str, file| (actor.into(), "link".into(), outcome.into(), file);
    assert_eq!(
        summary(&entries),
        vec![
            api("issued", Some(a)),
            api("not_found", Some(999_999)),
            api("refused", Some(a)),
            via_link(&link_actor, "redirected", Some(b)),
            via_link(&link_actor, "gone", Some(b)),
            via_link("link:unknown", "not_found", None),
        ]
    );
    for e in &entries {
        // The forwarded address came from an untrusted peer: the peer's own is recorded.
        assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
        assert_eq!(e["user_agent"], "audit-test/1.0", "{e}");
    }
    assert_audit_filters(&env, &svc, a, &link_actor).await;
    let written = portail_tests::get_text(&svc.url("/metrics")).await;
    assert!(
        written.contains("portail_url_audit_entries_total{result=\"written\"} 6"),
        "{written}"
    );
}

/// The filters of `GET /v1/audit`, a scoped token's view, and bad parameters.
async fn assert_audit_filters(env: &TestEnv, svc: &TestUrlService, a: i64, link_actor: &str) {
    let t = &svc.token;
    let about_a = audit_all(svc, t, &format!("&file_id={a}"), 100).await;
    assert_eq!(about_a.len(), 2, "issued and refused");
    let by_link = audit_all(svc, t, &format!("&actor={link_actor}"), 100).await;
    assert_eq!(by_link.len(), 2, "redirected and gone");
    let since = form_urlencoded::byte_serialize(chrono::Utc::now().to_rfc3339().as_bytes())
        .collect::<String>();
    assert!(audit_all(svc, t, &format!("&since={since}"), 100)
        .await
        .is_empty());
    // A token scoped to docs/ sees only what concerns docs/ files.
    let scoped = env.create_token("docs-reader", Some("docs/"), None).await;
    let seen = audit_all(svc, &scoped, "", 100).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|e| e["file_id"] == a));
    for bad in [
        "limit=0",
        "limit=1001",
        "cursor=abc",
        "since=yesterday",
        "nope=1",
    ] {
        let (status, body) = get_json(svc, t, &format!("/v1/audit?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let anonymous = svc.http.get(svc.url("/v1/audit")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn forwarded_for_is_recorded_only_from_trusted_proxies_and_old_entries_expire() {
    let (env, rows) = world(&["f.txt"]).await;
    let mut settings = portail_url_service::ServiceSettings::defaults();
    settings.trusted_proxies = "127.0.0.0/8".parse().unwrap();
    let s3 = env.s3.client().await;
    let svc = env
        .spawn_url_service_with(env.db.pool.clone(), s3, settings)
        .await;
    let id = id_of(&rows, "f.txt");
    let r = svc.http.post(svc.url(&format!("/v1/files/{id}/url")));
    let r = r
        .bearer_auth(&svc.token)
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.5");
    assert_eq!(r.send().await.unwrap().status(), 201);
    wait_for_entries(&env, 1).await;
    let entries = audit_all(&svc, &svc.token, "", 10).await;
    assert_eq!(
        entries[0]["client_ip"], "203.0.113.5",
        "the hop the proxy saw"
    );
    assert_eq!(entries[0]["user_agent"], Value::Null);

    // Retention: an entry older than the cut goes, a recent one stays.
    sqlx::query("update audit_log set at = now() - interval '91 days'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let r = svc.http.post(svc.url(&format!("/v1/files/{id}/url")));
    assert_eq!(
        r.bearer_auth(&svc.token).send().await.unwrap().status(),
        201
    );
    wait_for_entries(&env, 2).await;
    let cut = chrono::Utc::now() - chrono::Duration::days(90);
    assert_eq!(catalog::purge_audit(&env.db.pool, cut).await.unwrap(), 1);
    assert_eq!(audit_all(&svc, &svc.token, "", 10).await.len(), 1);
}
