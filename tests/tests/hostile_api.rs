//! Hostile input to the url-service: injection strings in every filter, escaping path
//! prefixes, bad bodies and expiries, and floods of unknown link tokens. Never a 5xx, never a
//! changed catalog, always a JSON error that says what was wrong.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use portail_tests::TestEnv;
use serde_json::{json, Value};

const HOSTILE: &[&str] = &[
    "' OR 1=1 --",
    "'; DROP TABLE files; --",
    "\" OR \"\"=\"",
    "1; select pg_sleep(5)",
    "%",
    "_",
    "\\",
    "../",
    "../../etc/passwd",
    "/etc/passwd",
    "docs/../..",
    "\0",
    "a\0b",
    "\u{202e}txt.exe",
    "日本語/ファイル",
];

async fn world() -> (TestEnv, portail_tests::TestUrlService, i64) {
    let env = TestEnv::new().await;
    env.write("docs/a.txt", b"alpha");
    env.write("docs/b.txt", b"bravo");
    env.write("private/c.txt", b"charlie");
    let agent = env.agent(env.settings()).await;
    env.sync(&agent).await;
    let svc = env.spawn_url_service().await;
    let id: i64 = sqlx::query_scalar("select id from files where path = 'docs/a.txt'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    (env, svc, id)
}

async fn rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from files")
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

/// A 4xx must carry `{"error", "message"}`; anything else must be a success.
async fn check(r: reqwest::Response, what: &str) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status < 500, "{what}: {status} {body}");
    if status >= 400 {
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{what}: {status} without a JSON error: {body}"
        );
    }
    (status, body)
}

#[tokio::test]
async fn injection_strings_in_every_filter_are_inert() {
    let (env, svc, _) = world().await;
    let before = rows(&env).await;
    for h in HOSTILE {
        for param in ["agent", "path_prefix", "status", "cursor", "limit"] {
            let r = svc
                .http
                .get(svc.url("/v1/files"))
                .bearer_auth(&svc.token)
                .query(&[(param, *h)])
                .send()
                .await
                .unwrap();
            let (status, body) = check(r, &format!("{param}={h:?}")).await;
            if status == 200 {
                // A filter can only narrow: never more than the three files, never other rows.
                let files = body["files"].as_array().unwrap();
                assert!(files.len() <= 3, "{param}={h:?}: {body}");
                for f in files {
                    let path = f["path"].as_str().unwrap();
                    if param == "path_prefix" {
                        assert!(path.starts_with(h), "{param}={h:?} returned {path}");
                    }
                }
            }
        }
        let r = svc
            .http
            .get(svc.url("/v1/links"))
            .bearer_auth(&svc.token)
            .query(&[("file_id", *h)])
            .send()
            .await
            .unwrap();
        check(r, &format!("links file_id={h:?}")).await;
    }
    assert_eq!(rows(&env).await, before, "the catalog is unchanged");
}

#[tokio::test]
async fn path_prefixes_that_escape_the_root_are_refused_clearly() {
    let (_env, svc, _) = world().await;
    for p in ["../", "..", "docs/../private", "/docs", "/", "a\0b"] {
        let r = svc
            .http
            .get(svc.url("/v1/files"))
            .bearer_auth(&svc.token)
            .query(&[("path_prefix", p)])
            .send()
            .await
            .unwrap();
        let (status, body) = check(r, p).await;
        assert_eq!(status, 400, "path_prefix={p:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("path_prefix"),
            "{body}"
        );
    }
    // A relative prefix still works.
    let r = svc
        .http
        .get(svc.url("/v1/files"))
        .bearer_auth(&svc.token)
        .query(&[("path_prefix", "docs/")])
        .send()
        .await
        .unwrap();
    let (status, body) = check(r, "docs/").await;
    assert_eq!(status, 200);
    assert_eq!(body["files"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_bodies_and_expiries_are_400_never_500() {
    let (_env, svc, id) = world().await;
    let url = format!("/v1/files/{id}/url");
    let raw = |body: &'static str| {
        svc.http
            .post(svc.url(&url))
            .bearer_auth(&svc.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{",
        "null",
        "[]",
        "\"x\"",
        "{\"expires_in_seconds\": \"60\"}",
        "{\"expires_in_seconds\": 1e309}",
        "{\"expires_in_seconds\": 99999999999999999999}",
        "{\"expires_in_seconds\": -1}",
        "{\"expires_in_seconds\": 0}",
        "{\"expires_in_seconds\": 604801}",
        "{\"expires_in_seconds\": 1.5}",
        "{\"unknown\": 1}",
        "{\"disposition\": \"evil\"}",
    ] {
        let (status, b) = check(raw(body).await.unwrap(), body).await;
        assert!(status == 400 || status == 422, "{body}: {status} {b}");
    }
    // Control characters in a file name are encoded, never passed through to a header.
    for name in ["a\r\nSet-Cookie: x=1", "a\u{0}b", "\u{7f}\t"] {
        let r = svc
            .post(&url, json!({"disposition": "attachment", "filename": name}))
            .await;
        let (status, b) = check(r, name).await;
        assert_eq!(status, 201, "{name:?}: {b}");
        let signed = reqwest::Url::parse(b["url"].as_str().unwrap()).unwrap();
        let (_, cd) = signed
            .query_pairs()
            .find(|(k, _)| k == "response-content-disposition")
            .unwrap();
        assert!(!cd.chars().any(|c| c.is_control()), "{name:?} -> {cd:?}");
    }
    // Oversized body: 413 before any parsing.
    let big = format!("{{\"filename\": \"{}\"}}", "x".repeat(64 * 1024));
    let r = svc
        .http
        .post(svc.url(&url))
        .bearer_auth(&svc.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Links: same rules.
    for body in [
        json!({"file_id": id, "expires_in_seconds": -5}),
        json!({"file_id": id, "max_downloads": 0}),
        json!({"file_id": id, "max_downloads": -1}),
        json!({"file_id": "1; drop table files"}),
        json!({"file_id": id, "extra": true}),
    ] {
        let (status, b) = check(svc.post("/v1/links", body.clone()).await, &body.to_string()).await;
        assert_eq!(status, 400, "{body}: {b}");
    }
}

#[tokio::test]
async fn a_flood_of_unknown_link_tokens_finds_nothing() {
    let (_env, svc, id) = world().await;
    let r = svc.post("/v1/links", json!({"file_id": id})).await;
    assert_eq!(r.status(), 201);
    let real: Value = r.json().await.unwrap();
    let real = real["url"].as_str().unwrap();
    let token = &real[real.find("/l/").unwrap() + 3..];
    // Near misses (one hex digit off), wrong lengths, and garbage: all 404, none 5xx.
    let mut guesses: Vec<String> = (0..token.len())
        .step_by(7)
        .map(|i| {
            let mut t = token.as_bytes().to_vec();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(t).unwrap()
        })
        .collect();
    guesses.extend([
        token[..63].to_string(),
        format!("{token}0"),
        token.to_uppercase(),
        "%27%20OR%201%3D1--".into(),
        "..%2F..%2Fetc".into(),
    ]);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let url = svc.url(&format!("/l/{}", guesses[i % guesses.len()]));
            let c = svc.http.clone();
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 404 || status == 400, "guess answered {status}");
    }
    // The real one still works.
    let r = svc
        .http
        .get(svc.url(&format!("/l/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
}
