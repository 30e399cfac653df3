//! The foundation's vertical slice: `sync_once` uploads a tree and records it; the url-service
//! presigns a URL that a plain HTTP client fetches from the (auth-checking) S3 server.

use portail_core::catalog::{self, FileStatus};
use portail_tests::{md5_b64, md5_hex, TestEnv};
use serde_json::json;

#[tokio::test]
async fn sync_then_presign_then_fetch_returns_the_exact_bytes() {
    let env = TestEnv::new().await;
    let hello = b"hello, portail\n".to_vec();
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    env.write("hello.txt", &hello);
    env.write("nested/dir/blob.bin", &blob);

    let agent = env.agent(env.settings()).await;
    let report = env.sync(&agent).await;
    assert!(report.converged(), "{report:?}");
    assert_eq!((report.scanned, report.uploaded), (2, 2));

    // S3 holds the bytes and the whole-file MD5 under md5chksum.
    for (key, bytes) in [("hello.txt", &hello), ("nested/dir/blob.bin", &blob)] {
        let (got, md5) = env.object(key).await.expect("object exists");
        assert_eq!(&got, bytes, "{key}");
        assert_eq!(md5.as_deref(), Some(md5_b64(bytes).as_str()), "{key}");
    }

    // The catalog says synced, with the right size and MD5.
    let rows = catalog::files_of_agent(&env.db.pool, agent.id)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let row = rows
        .iter()
        .find(|r| r.path == "nested/dir/blob.bin")
        .unwrap();
    assert_eq!(row.status, FileStatus::Synced);
    assert_eq!(row.size_bytes, blob.len() as i64);
    assert_eq!(row.md5.as_deref(), Some(md5_hex(&blob).as_str()));
    assert_eq!(row.s3_key, "nested/dir/blob.bin");
    let events = catalog::events_of_file(&env.db.pool, row.id, 10)
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["uploaded"]
    );

    // The url-service signs a URL; a plain client gets the exact bytes from S3.
    let svc = env.spawn_url_service().await;
    let resp = svc
        .post(
            &format!("/v1/files/{}/url", row.id),
            json!({"expires_in_seconds": 120}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["method"], "GET");
    assert!(body["expires_at"].is_string());
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with(&env.s3.endpoint), "{url}");
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), blob);

    // The signature is really checked: a tampered one is refused by the S3 server.
    let tampered = tamper_signature(url);
    let refused = reqwest::get(&tampered).await.unwrap();
    assert_eq!(refused.status(), 403, "{tampered}");
}

#[tokio::test]
async fn presign_needs_a_valid_token() {
    let env = TestEnv::new().await;
    let svc = env.spawn_url_service().await;
    let url = svc.url("/v1/files/1/url");
    let none = svc.http.post(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let body: serde_json::Value = none.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let bad = svc
        .http
        .post(&url)
        .bearer_auth("ptl_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let unknown = svc.post("/v1/files/999999/url", json!({})).await;
    assert_eq!(unknown.status(), 404);
}

/// Flips the last hex digit of X-Amz-Signature.
fn tamper_signature(url: &str) -> String {
    let at = url.find("X-Amz-Signature=").expect("signed URL") + "X-Amz-Signature=".len();
    let end = url[at..].find('&').map(|i| at + i).unwrap_or(url.len());
    let mut sig: Vec<char> = url[at..end].chars().collect();
    let last = sig.last_mut().expect("non-empty signature");
    *last = if *last == '0' { '1' } else { '0' };
    format!(
        "{}{}{}",
        &url[..at],
        sig.into_iter().collect::<String>(),
        &url[end..]
    )
}
