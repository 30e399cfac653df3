//! The public endpoint under a slowloris flood, against the real `portail-url-service` binary:
//! connections that send a request line and one header and then nothing are closed after
//! HTTP_HEADER_TIMEOUT, an idle keep-alive connection too, and meanwhile `/healthz` and
//! `/l/{token}` keep answering.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::{Duration, Instant};

use portail_tests::{
    eventually, free_addr, http_client, workspace_bin, TestEnv, ACCESS_KEY, SECRET_KEY,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FLOOD: usize = 2000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads until the server closes the connection (EOF or reset), at most `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (e.g. 408) before the close
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn half_sent_requests_are_closed_and_the_service_keeps_answering() {
    let env = TestEnv::new().await;
    env.write("shared.txt", b"still served during the flood");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let addr = free_addr();
    let _svc = tokio::process::Command::new(workspace_bin("portail-url-service"))
        .arg("serve")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("DATABASE_URL", &env.db.url)
        .env("AWS_BUCKET_NAME", &env.bucket)
        .env("AWS_ENDPOINT_URL", &env.s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("LISTEN_ADDR", &addr)
        .env("PUBLIC_BASE_URL", format!("http://{addr}"))
        .env(
            "HTTP_HEADER_TIMEOUT",
            format!("{}s", HEADER_TIMEOUT.as_secs()),
        )
        .env("LOG_LEVEL", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = http_client();
    let base = format!("http://{addr}");
    eventually(20, "url-service up", || {
        let (h, url) = (http.clone(), format!("{base}/healthz"));
        async move { h.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let token = env.create_token("flood", None, None).await;
    let files: serde_json::Value = http
        .get(format!("{base}/v1/files"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = files["files"][0]["id"].as_i64().unwrap();
    let link: serde_json::Value = http
        .post(format!("{base}/v1/links"))
        .bearer_auth(&token)
        .json(&json!({"file_id": id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link_url = link["url"].as_str().unwrap().to_string();

    // The flood: a request line and one header, then nothing, on 2000 connections.
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /l/0000 HTTP/1.1\r\nHost: portail\r\n")
            .await
            .unwrap();
        flood.push(s);
    }
    let flooded = Instant::now();
    // An idle keep-alive connection: one whole request, then silence.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: portail\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // Meanwhile the service answers, the public link included.
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let click = http.get(&link_url).send().await.unwrap();
    assert_eq!(click.status(), 302, "a share link during the flood");
    assert!(
        flooded.elapsed() < HEADER_TIMEOUT,
        "the checks ran after the timeout"
    );

    // Every half-sent request is closed once the header timeout has passed.
    let checks = flood
        .iter_mut()
        .map(|s| closed_within(s, HEADER_TIMEOUT * 3));
    let closed = futures::future::join_all(checks).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} of {FLOOD} half-sent requests still open");
    assert!(
        flooded.elapsed() >= HEADER_TIMEOUT,
        "closed before HTTP_HEADER_TIMEOUT: the test would not tell a timeout from a refusal"
    );
    assert!(
        closed_within(&mut idle, HEADER_TIMEOUT * 3).await,
        "idle keep-alive left open"
    );
    // And the service still answers afterwards.
    let after = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(after.status(), 200);
}
