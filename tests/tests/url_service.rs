//! The url-service end to end: real PostgreSQL, s3s-fs with SigV4 auth, the real router.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::HashSet;

use portail_core::catalog::{self, EventKind, FileRow, SyncedFile};
use portail_tests::{eventually, TestEnv, TestUrlService};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A world with two synced files under `docs/` and `private/`, and a running service.
async fn world() -> (TestEnv, TestUrlService, Vec<FileRow>) {
    let env = TestEnv::new().await;
    env.write("docs/readme.txt", b"public bytes");
    env.write("private/secret.txt", b"private bytes");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let rows = catalog::files_of_agent(&env.db.pool, agent.id)
        .await
        .unwrap();
    let svc = env.spawn_url_service().await;
    (env, svc, rows)
}

fn id_of(rows: &[FileRow], path: &str) -> i64 {
    rows.iter().find(|r| r.path == path).unwrap().id
}

async fn get(svc: &TestUrlService, token: &str, path: &str) -> (StatusCode, Value) {
    let r = svc
        .http
        .get(svc.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(svc: &TestUrlService, token: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let r = svc
        .http
        .post(svc.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn file_detail_has_history_and_presign_honours_disposition() {
    let (_env, svc, rows) = world().await;
    let id = id_of(&rows, "docs/readme.txt");
    let (status, body) = get(&svc, &svc.token, &format!("/v1/files/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["file"]["path"], "docs/readme.txt");
    assert_eq!(body["events"][0]["kind"], "uploaded");

    let req = json!({"disposition": "attachment", "filename": "report final.txt", "expires_in_seconds": 60});
    let (status, body) = post(
        &svc,
        &svc.token,
        &format!("/v1/files/{id}/url"),
        &req.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let resp = reqwest::get(body["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let cd = resp
        .headers()
        .get("content-disposition")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        cd.as_deref(),
        Some("attachment; filename=\"report final.txt\"; filename*=UTF-8''report%20final.txt")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"public bytes");
}

#[tokio::test]
async fn an_expired_presigned_url_is_refused_by_s3() {
    let (_env, svc, rows) = world().await;
    let id = id_of(&rows, "docs/readme.txt");
    let (status, body) = post(
        &svc,
        &svc.token,
        &format!("/v1/files/{id}/url"),
        r#"{"expires_in_seconds": 1}"#,
    )
    .await;
    assert_eq!(status, 201);
    let url = body["url"].as_str().unwrap().to_string();
    // Expiry has one-second resolution; wait until it has certainly passed.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn bad_expiries_and_bodies_are_400_never_500() {
    let (_env, svc, rows) = world().await;
    let url = format!("/v1/files/{}/url", id_of(&rows, "docs/readme.txt"));
    for body in [
        r#"{"expires_in_seconds": 0}"#,
        r#"{"expires_in_seconds": -5}"#,
        r#"{"expires_in_seconds": 604801}"#,
        r#"{"expires_in_seconds": 99999999999999999999}"#,
        r#"{"expires_in_seconds": "soon"}"#,
        r#"{"expires_in_seconds": 60, "unknown": 1}"#,
        r#"{"disposition": "download"}"#,
        r#"not json"#,
    ] {
        let (status, resp) = post(&svc, &svc.token, &url, body).await;
        assert_eq!(status, 400, "{body} -> {resp}");
        assert_eq!(resp["error"], "bad_request", "{body}");
    }
    let (status, _) = post(&svc, &svc.token, &url, r#"{"expires_in_seconds": 604800}"#).await;
    assert_eq!(status, 201, "the SigV4 maximum is allowed");
    let huge = format!(r#"{{"filename": "{}"}}"#, "a".repeat(64 * 1024));
    let (status, _) = post(&svc, &svc.token, &url, &huge).await;
    assert_eq!(status, 413);
    for bad_id in ["/v1/files/abc/url", "/v1/files/-1/url", "/v1/files/0/url"] {
        let (status, resp) = post(&svc, &svc.token, bad_id, "{}").await;
        assert_eq!(status, 400, "{bad_id}: {resp}");
    }
    let (status, resp) = get(&svc, &svc.token, "/v1/nope").await;
    assert_eq!(
        (status, resp["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

/// Waits until no token read before now is still believed from the token cache.
async fn wait_out_token_cache() {
    let margin = std::time::Duration::from_millis(100);
    tokio::time::sleep(portail_url_service::auth::TOKEN_CACHE_TTL + margin).await;
}

#[tokio::test]
async fn tokens_are_required_revocable_and_scoped() {
    let (env, svc, rows) = world().await;
    let public = id_of(&rows, "docs/readme.txt");
    let private = id_of(&rows, "private/secret.txt");
    // Missing, malformed and unknown tokens.
    let r = svc.http.get(svc.url("/v1/files")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = svc
        .http
        .get(svc.url("/v1/files"))
        .header("authorization", "Basic Zm9v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(get(&svc, "ptl_0000", "/v1/files").await.0, 401);

    // A token scoped to docs/ sees nothing else: outside its scope a file does not exist.
    let docs = env.create_token("docs-only", Some("docs/"), None).await;
    let (status, body) = get(&svc, &docs, "/v1/files").await;
    assert_eq!(status, 200);
    let paths: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["docs/readme.txt"]);
    let (status, body) = get(&svc, &docs, "/v1/files?path_prefix=private/").await;
    assert_eq!(
        (status, body["files"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    assert_eq!(
        get(&svc, &docs, &format!("/v1/files/{private}")).await.0,
        404
    );
    assert_eq!(
        post(&svc, &docs, &format!("/v1/files/{private}/url"), "{}")
            .await
            .0,
        404
    );
    assert_eq!(
        post(
            &svc,
            &docs,
            "/v1/links",
            &json!({"file_id": private}).to_string()
        )
        .await
        .0,
        404
    );
    assert_eq!(
        get(&svc, &docs, &format!("/v1/links?file_id={private}"))
            .await
            .0,
        404
    );
    assert_eq!(
        post(&svc, &docs, &format!("/v1/files/{public}/url"), "{}")
            .await
            .0,
        201
    );

    // A token scoped to another agent sees nothing at all.
    let other = env
        .create_token("other-agent", None, Some("someone-else"))
        .await;
    let (_, body) = get(&svc, &other, "/v1/files").await;
    assert_eq!(body["files"].as_array().unwrap().len(), 0);
    assert_eq!(
        get(&svc, &other, &format!("/v1/files/{public}")).await.0,
        404
    );

    // A revoked token stops working within the token cache's second.
    assert!(catalog::revoke_token(&env.db.pool, "docs-only")
        .await
        .unwrap());
    wait_out_token_cache().await;
    assert_eq!(get(&svc, &docs, "/v1/files").await.0, 401);
}

#[tokio::test]
async fn pagination_returns_every_file_exactly_once_while_files_are_added() {
    let env = TestEnv::new().await;
    let agent = env.agent(env.settings()).await;
    let batch = |range: std::ops::Range<usize>| -> Vec<SyncedFile> {
        range
            .map(|i| SyncedFile {
                path: format!("bulk/{i:05}.txt"),
                s3_key: format!("bulk/{i:05}.txt"),
                size_bytes: 1,
                mtime: chrono::Utc::now(),
                md5: "0cc175b9c0f1b6a831c399e269772661".into(),
                etag: None,
                content_type: "text/plain".into(),
                inode: None,
                ctime: None,
                encryption: None,
                event: EventKind::Uploaded,
                details: json!({}),
                posix: None,
                version_id: None,
                history_key: None,
                storage_class: None,
            })
            .collect()
    };
    for chunk in batch(0..2500).chunks(500) {
        catalog::record_synced(&env.db.pool, agent.id, chunk)
            .await
            .unwrap();
    }
    let svc = env.spawn_url_service().await;
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/files?limit=300&cursor={c}"),
            None => "/v1/files?limit=300".to_string(),
        };
        let (status, body) = get(&svc, &svc.token, &q).await;
        assert_eq!(status, 200, "{body}");
        for f in body["files"].as_array().unwrap() {
            assert!(
                seen.insert(f["path"].as_str().unwrap().to_string()),
                "duplicate {f}"
            );
        }
        pages += 1;
        if pages == 2 {
            // Files added mid-listing come after everything already listed, never in between.
            catalog::record_synced(&env.db.pool, agent.id, &batch(2500..2510))
                .await
                .unwrap();
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2510);
    assert!((0..2510).all(|i| seen.contains(&format!("bulk/{i:05}.txt"))));
    let (status, _) = get(&svc, &svc.token, "/v1/files?limit=1001").await;
    assert_eq!(status, 400);
    let (status, _) = get(&svc, &svc.token, "/v1/files?cursor=drop%20table%20files").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn share_links_redirect_count_atomically_and_can_be_revoked() {
    let (env, svc, rows) = world().await;
    let id = id_of(&rows, "docs/readme.txt");
    let (status, link) = post(
        &svc,
        &svc.token,
        "/v1/links",
        &json!({"file_id": id, "max_downloads": 3}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!(
        "http://{}/l/",
        portail_url_service::ServiceSettings::defaults().listen_addr
    )));
    // The link is served by this test's instance: swap the default base for its address.
    let path = &url[url.find("/l/").unwrap()..];
    let link_url = svc.url(path);

    // Ten concurrent clicks on a 3-download link: exactly three redirects.
    let clicks = (0..10).map(|_| {
        let http = svc.http.clone();
        let u = link_url.clone();
        tokio::spawn(async move { http.get(u).send().await.unwrap() })
    });
    let mut statuses = Vec::new();
    let mut location = None;
    for c in clicks {
        let r = c.await.unwrap();
        if r.status() == 302 {
            location = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 302).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 410).count(),
        7,
        "{statuses:?}"
    );
    let fetched = reqwest::get(location.unwrap()).await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"public bytes");

    // Listing shows the count, never the token; revoking makes an unlimited link 410.
    let (_, unlimited) = post(
        &svc,
        &svc.token,
        "/v1/links",
        &json!({"file_id": id}).to_string(),
    )
    .await;
    let unlimited_url = svc.url(&unlimited["url"].as_str().unwrap()[url.find("/l/").unwrap()..]);
    assert_eq!(
        svc.http.get(&unlimited_url).send().await.unwrap().status(),
        302
    );
    let (status, list) = get(&svc, &svc.token, &format!("/v1/links?file_id={id}")).await;
    assert_eq!(status, 200);
    let links = list["links"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[1]["downloads"], 3);
    // The unlimited link's click is counted with its audit entry, a moment later.
    eventually(1, "the unlimited link's click counted", || async {
        let (_, list) = get(&svc, &svc.token, &format!("/v1/links?file_id={id}")).await;
        list["links"][0]["downloads"] == 1
    })
    .await;
    assert!(links.iter().all(|l| l.get("token_sha256").is_none()));
    let lid = unlimited["id"].as_i64().unwrap();
    let r = svc
        .http
        .delete(svc.url(&format!("/v1/links/{lid}")))
        .bearer_auth(&svc.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        svc.http.get(&unlimited_url).send().await.unwrap().status(),
        410
    );

    // Unknown tokens are 404, malformed ones too.
    assert_eq!(
        svc.http
            .get(svc.url(&format!("/l/{}", "0".repeat(64))))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        svc.http
            .get(svc.url("/l/' or 1=1 --"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    drop(env);
}

#[tokio::test]
async fn deleted_files_get_no_url_and_their_links_are_gone() {
    let (env, svc, rows) = world().await;
    let id = id_of(&rows, "docs/readme.txt");
    let (_, link) = post(
        &svc,
        &svc.token,
        "/v1/links",
        &json!({"file_id": id}).to_string(),
    )
    .await;
    let link_url = {
        let u = link["url"].as_str().unwrap();
        svc.url(&u[u.find("/l/").unwrap()..])
    };
    std::fs::remove_file(env.root.path().join("docs/readme.txt")).unwrap();
    let mut s = env.settings();
    s.max_delete_percent = 100;
    let agent = env.agent(s).await;
    assert_eq!(env.sync(&agent).await.deleted, 1);
    let (status, body) = post(&svc, &svc.token, &format!("/v1/files/{id}/url"), "{}").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "file_deleted");
    assert!(body.get("url").is_none());
    assert_eq!(svc.http.get(&link_url).send().await.unwrap().status(), 410);
    let (status, _) = post(
        &svc,
        &svc.token,
        "/v1/links",
        &json!({"file_id": id}).to_string(),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn openapi_lists_every_route_and_each_is_served() {
    let (_env, svc, rows) = world().await;
    let id = id_of(&rows, "docs/readme.txt");
    let (status, doc) = get(&svc, &svc.token, "/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    let mut listed = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
            let concrete = path
                .replace("{id}", &id.to_string())
                .replace("{token}", &"0".repeat(64));
            let concrete = if path == "/v1/links" && method == "get" {
                format!("{concrete}?file_id={id}")
            } else {
                concrete
            };
            let req = svc
                .http
                .request(method.to_uppercase().parse().unwrap(), svc.url(&concrete))
                .bearer_auth(&svc.token);
            let req = if method == "post" {
                req.header("content-type", "application/json")
                    .body(json!({"file_id": id}).to_string())
            } else {
                req
            };
            let resp = req.send().await.unwrap();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["message"], "route not found",
                "{method} {path} is documented but not served"
            );
        }
    }
    listed.sort();
    let mut expected = vec![
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /v1/files",
        "GET /v1/files/{id}",
        "POST /v1/files/{id}/url",
        "GET /v1/files/{id}/versions",
        "GET /v1/files/{id}/content",
        "POST /v1/links",
        "GET /v1/links",
        "DELETE /v1/links/{id}",
        "GET /v1/audit",
        "GET /l/{token}",
    ];
    expected.sort();
    assert_eq!(listed, expected);
    // The HTTP API page documents the same routes.
    let page = portail_tests::repo_file("docs/http-api.md");
    for route in &expected {
        assert!(
            page.contains(&format!("`{route}")),
            "docs/http-api.md lacks {route}"
        );
    }
}

#[tokio::test]
async fn token_cli_prints_the_token_once_and_stores_only_its_hash() {
    let (env, svc, _rows) = world().await;
    let bin = portail_tests::workspace_bin("portail-url-service");
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &env.db.url)
            .output()
            .unwrap()
    };
    let out = run(&["token", "create", "--name", "cli", "--path-prefix", "docs/"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim_end_matches('\n');
    assert!(
        token.starts_with("ptl_") && token.len() == 68 && !token.contains('\n'),
        "{stdout:?}"
    );
    // The database holds its hash, never the token.
    let stored: Vec<String> =
        sqlx::query_scalar("select token_sha256 from api_tokens where name = 'cli'")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, vec![portail_url_service::auth::token_hash(token)]);
    let (status, body) = get(&svc, token, "/v1/files").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["files"].as_array().unwrap().len(),
        1,
        "scoped to docs/"
    );

    let list = String::from_utf8(run(&["token", "list"]).stdout).unwrap();
    assert!(list.contains("cli\tactive\tprefix=docs/"), "{list}");
    assert!(!list.contains(token));
    assert!(
        run(&["token", "create", "--name", "cli"]).status.code() == Some(1),
        "names are unique"
    );
    assert!(run(&["token", "revoke", "cli"]).status.success());
    wait_out_token_cache().await;
    assert_eq!(get(&svc, token, "/v1/files").await.0, 401);
    assert_eq!(
        run(&["token", "revoke", "cli"]).status.code(),
        Some(1),
        "already revoked"
    );
}

/// Issue 13: a file's versions, and a presigned URL for a past one, which still works once
/// the file is deleted; a version whose content was not kept is a 409.
#[tokio::test]
async fn versions_are_listed_and_a_past_one_can_be_presigned() {
    let (env, svc, rows) = world().await;
    let id = id_of(&rows, "docs/readme.txt");
    let mut s = env.settings();
    s.max_delete_percent = 100;
    let agent = env.agent(s.clone()).await;
    env.write("docs/readme.txt", b"second edition");
    assert!(env.sync(&agent).await.converged());

    let (status, body) = get(&svc, &svc.token, &format!("/v1/files/{id}/versions")).await;
    assert_eq!(status, 200, "{body}");
    let versions = body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{body}");
    assert_eq!(versions[0]["size_bytes"], 14, "newest first");
    assert!(versions[0]["valid_to"].is_null() && versions[1]["restorable"] == true);
    assert!(
        body.to_string().find("portail-history").is_none(),
        "no S3 keys: {body}"
    );
    let old = versions[1]["id"].as_i64().unwrap();

    let fetch = |body: Value| async move {
        let url = body["url"].as_str().unwrap().to_string();
        reqwest::get(url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    };
    let path = format!("/v1/files/{id}/url");
    let (status, body) = post(
        &svc,
        &svc.token,
        &path,
        &json!({"version_id": old}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let first = fetch(body).await;
    assert_eq!(first, b"public bytes");
    let (_, body) = post(&svc, &svc.token, &path, "").await;
    assert_eq!(fetch(body).await, b"second edition");

    // A version of another file is unknown here.
    let other = id_of(&rows, "private/secret.txt");
    let (status, _) = post(
        &svc,
        &svc.token,
        &format!("/v1/files/{other}/url"),
        &json!({"version_id": old}).to_string(),
    )
    .await;
    assert_eq!(status, 404);

    // Deleted: the current content is gone (409), the past one still served.
    std::fs::remove_file(env.root.path().join("docs/readme.txt")).unwrap();
    assert!(env.sync(&agent).await.converged());
    let (status, body) = post(&svc, &svc.token, &path, "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("file_deleted"))
    );
    let (status, body) = post(
        &svc,
        &svc.token,
        &path,
        &json!({"version_id": old}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(fetch(body).await, first);

    // With HISTORY=off nothing is kept: that version is listed but not restorable.
    s.history = portail_agent::policy::history::HistorySetting::Off;
    let off = env.agent(s).await;
    env.write("docs/readme.txt", b"third");
    assert!(env.sync(&off).await.converged());
    env.write("docs/readme.txt", b"fourth");
    assert!(env.sync(&off).await.converged());
    let (_, body) = get(&svc, &svc.token, &format!("/v1/files/{id}/versions")).await;
    let lost = &body["versions"][1];
    assert_eq!(lost["restorable"], false, "{body}");
    let req = json!({"version_id": lost["id"]}).to_string();
    let (status, body) = post(&svc, &svc.token, &path, &req).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("version_not_kept"))
    );
}
