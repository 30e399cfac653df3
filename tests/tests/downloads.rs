//! Downloads as a user on another host meets them: the compose wiring reproduced without Docker
//! (services reach the store at one address, the user at another), and proxy mode's HTTP
//! semantics (Range, 416, a vanished object, share-link limits, a client that goes away).
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeMap;
use std::time::Duration;

use portail_tests::compose::{compose, environment, interpolate, service};
use portail_tests::forward::Forwarder;
use portail_tests::{
    eventually, free_addr, fresh_db, http_client, serve_s3, workspace_bin, TestEnv,
};
use portail_url_service::config::DownloadMode;
use portail_url_service::ServiceSettings;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A service's compose environment, interpolated with compose's defaults (no `.env`), the
/// in-network addresses replaced by this machine's: `minio:9000` by the internal store,
/// MinIO's published port on localhost by the forwarder, the database by a test database.
fn wired(name: &str, internal: &str, public: &str, db_url: &str) -> BTreeMap<String, String> {
    let c = compose();
    let no_env = BTreeMap::new();
    let published = interpolate("http://localhost:${MINIO_API_PORT:-9000}", &no_env);
    let mut env: BTreeMap<String, String> = environment(service(&c, name))
        .into_iter()
        .map(|(k, v)| {
            let v = interpolate(&v, &no_env)
                .replace("http://minio:9000", internal)
                .replace(&published, public);
            (k, v)
        })
        .collect();
    env.insert("DATABASE_URL".into(), db_url.into());
    env.insert("LOG_LEVEL".into(), "warn".into());
    env
}

fn command(bin: &str, env: &BTreeMap<String, String>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(workspace_bin(bin));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env)
        .current_dir("/")
        .kill_on_drop(true);
    cmd
}

async fn json_of(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

/// What the user's side checks in both modes.
struct Client {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{path}");
        json_of(resp).await
    }

    /// GETs a URL, following one redirect by hand (so its target can be checked).
    async fn fetch(&self, url: &str, public: &str, internal: &str) -> Vec<u8> {
        let mut req = self.http.get(url);
        if url.starts_with(&self.api) {
            req = req.bearer_auth(&self.token);
        }
        let resp = req.send().await.unwrap();
        let resp = if resp.status() == 302 {
            let to = resp.headers()["location"].to_str().unwrap().to_string();
            assert!(
                to.starts_with(public),
                "redirect to {to}, not the public endpoint"
            );
            assert!(!to.contains(internal.trim_start_matches("http://")), "{to}");
            self.http.get(&to).send().await.unwrap()
        } else {
            resp
        };
        assert_eq!(resp.status(), 200, "{url}");
        resp.bytes().await.unwrap().to_vec()
    }
}

#[tokio::test]
async fn compose_links_open_from_the_host_in_both_modes() {
    // The store, with compose's MinIO credentials, at the address only services use.
    let c = compose();
    let url_env = environment(service(&c, "url-service"));
    let no_env = BTreeMap::new();
    let key = interpolate(&url_env["AWS_ACCESS_KEY_ID"], &no_env);
    let secret = interpolate(&url_env["AWS_SECRET_ACCESS_KEY"], &no_env);
    let bucket = interpolate(&url_env["AWS_BUCKET_NAME"], &no_env);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(&bucket)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal = format!("http://{}", listener.local_addr().unwrap());
    let root = dir.path().to_path_buf();
    let s3 = tokio::spawn(async move { serve_s3(listener, &root, &key, &secret).await });
    // What the host sees: the same store through another address.
    let public = Forwarder::start(internal.trim_start_matches("http://")).await;
    let db = fresh_db().await;

    // The agent, with compose's environment, mirrors a tree once.
    let tree = tempfile::tempdir().unwrap();
    let content = b"opened from the host, through the published port\n".repeat(100);
    std::fs::write(tree.path().join("report.txt"), &content).unwrap();
    let mut agent_env = wired("agent", &internal, &public.url(), &db.url);
    agent_env.insert("SYNC_ROOT".into(), tree.path().display().to_string());
    agent_env.insert("METRICS_ADDR".into(), free_addr());
    let out = command("portail-agent", &agent_env)
        .arg("sync")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for mode in ["redirect", "proxy"] {
        let mut env = wired("url-service", &internal, &public.url(), &db.url);
        let listen = free_addr();
        env.insert("LISTEN_ADDR".into(), listen.clone());
        env.insert("PUBLIC_BASE_URL".into(), format!("http://{listen}"));
        if mode == "proxy" {
            env.insert("DOWNLOAD_MODE".into(), "proxy".into());
        }
        let token_out = command("portail-url-service", &env)
            .args(["token", "create", "--name", &format!("host-{mode}")])
            .output()
            .await
            .unwrap();
        assert!(
            token_out.status.success(),
            "{}",
            String::from_utf8_lossy(&token_out.stderr)
        );
        let _svc = command("portail-url-service", &env)
            .arg("serve")
            .spawn()
            .unwrap();
        let user = Client {
            http: http_client(),
            api: format!("http://{listen}"),
            token: String::from_utf8(token_out.stdout)
                .unwrap()
                .trim()
                .to_string(),
        };
        let health = format!("{}/healthz", user.api);
        eventually(20, "url-service up", || {
            let (h, url) = (user.http.clone(), health.clone());
            async move { h.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        let files = user
            .http
            .get(format!("{}/v1/files", user.api))
            .bearer_auth(&user.token);
        let files = json_of(files.send().await.unwrap()).await;
        let id = files["files"][0]["id"].as_i64().unwrap();

        // A presigned URL (both modes) is signed for the address the host reaches.
        let presigned = user.post(&format!("/v1/files/{id}/url"), json!({})).await;
        let url = presigned["url"].as_str().unwrap();
        assert!(url.starts_with(&public.url()), "{mode}: {url}");
        let got = user.fetch(url, &public.url(), &internal).await;
        assert_eq!(got, content, "{mode}: presigned URL");
        // The download route and a share link: a redirect to the public address, or the
        // bytes themselves.
        let route = format!("{}/v1/files/{id}/content", user.api);
        assert_eq!(
            user.fetch(&route, &public.url(), &internal).await,
            content,
            "{mode}"
        );
        let link = user.post("/v1/links", json!({"file_id": id})).await;
        let link_url = link["url"].as_str().unwrap();
        assert_eq!(
            user.fetch(link_url, &public.url(), &internal).await,
            content,
            "{mode}"
        );
    }
    s3.abort();
}

/// A world with one file, and a url-service in proxy mode whose S3 traffic crosses a counting
/// forwarder.
async fn proxy_world(
    files: &[(&str, Vec<u8>)],
) -> (TestEnv, portail_tests::TestUrlService, Forwarder) {
    let env = TestEnv::new().await;
    for (path, bytes) in files {
        env.write(path, bytes);
    }
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let forward = Forwarder::start(env.s3.endpoint.trim_start_matches("http://")).await;
    let mut cfg = env.s3.config(&env.bucket);
    cfg.aws_endpoint_url = Some(forward.url());
    let client = portail_core::s3::build_client(&cfg).await;
    let mut settings = ServiceSettings::defaults();
    settings.download_mode = DownloadMode::Proxy;
    let svc = env
        .spawn_url_service_with(env.db.pool.clone(), client, settings)
        .await;
    (env, svc, forward)
}

async fn file_id(svc: &portail_tests::TestUrlService, path: &str) -> i64 {
    let resp = svc.http.get(svc.url("/v1/files")).bearer_auth(&svc.token);
    let body = json_of(resp.send().await.unwrap()).await;
    body["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["id"].as_i64())
        .unwrap()
}

#[tokio::test]
async fn proxy_mode_serves_ranges_and_refuses_what_it_cannot_serve() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let files = [("d/data.bin", data.clone()), ("empty", Vec::new())];
    let (env, svc, _fwd) = proxy_world(&files).await;
    let id = file_id(&svc, "d/data.bin").await;
    let get = |range: Option<&str>, id: i64| {
        let mut req = svc
            .http
            .get(svc.url(&format!("/v1/files/{id}/content")))
            .bearer_auth(&svc.token);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send()
    };

    let whole = get(None, id).await.unwrap();
    assert_eq!(whole.status(), 200);
    let h = whole.headers().clone();
    assert_eq!(h["content-length"], "100000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "application/octet-stream");
    assert!(h["etag"]
        .to_str()
        .unwrap()
        .contains(&portail_tests::md5_hex(&data)));
    let cd = h["content-disposition"].to_str().unwrap();
    assert!(cd.starts_with("attachment; filename=\"data.bin\""), "{cd}");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &data[..]);

    for (range, first, last) in [
        ("bytes=10-19", 10, 19),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-5", 99_995, 99_999),
        ("bytes=0-999999", 0, 99_999),
    ] {
        let resp = get(Some(range), id).await.unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        let cr = resp.headers()["content-range"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(cr, format!("bytes {first}-{last}/100000"), "{range}");
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            &data[first..=last],
            "{range}"
        );
    }
    // Several ranges: the whole object, as documented.
    let multi = get(Some("bytes=0-1,5-6"), id).await.unwrap();
    assert_eq!(multi.status(), 200);
    assert_eq!(multi.bytes().await.unwrap().len(), data.len());
    // Past the end, malformed, or any range of an empty file: 416 with the size, JSON body.
    let empty = file_id(&svc, "empty").await;
    for (range, id, size) in [
        ("bytes=100000-", id, 100_000),
        ("bytes=abc", id, 100_000),
        ("bytes=0-", empty, 0),
    ] {
        let resp = get(Some(range), id).await.unwrap();
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(resp.headers()["content-range"], format!("bytes */{size}"));
        let body = json_of(resp).await;
        assert_eq!(body["error"], "range_not_satisfiable", "{range}");
    }

    // The object vanished from S3 behind the catalog's back: a JSON 404, never a 500.
    let client = env.s3.client().await;
    client
        .delete_object()
        .bucket(&env.bucket)
        .key("d/data.bin")
        .send()
        .await
        .unwrap();
    let gone = get(None, id).await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(json_of(gone).await["error"], "not_found");
}

#[tokio::test]
async fn proxy_mode_links_keep_their_limits() {
    let (_env, svc, _fwd) = proxy_world(&[("a.txt", b"shared".to_vec())]).await;
    let id = file_id(&svc, "a.txt").await;
    let link = json_of(
        svc.post("/v1/links", json!({"file_id": id, "max_downloads": 2}))
            .await,
    )
    .await;
    // The service listens on a random port, not on PUBLIC_BASE_URL's default.
    let link_url = link["url"].as_str().unwrap();
    let url = svc.url(&link_url[link_url.find("/l/").unwrap()..]);
    for _ in 0..2 {
        let resp = svc.http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), b"shared");
    }
    assert_eq!(
        svc.http.get(&url).send().await.unwrap().status(),
        410,
        "used up"
    );
    let metrics = portail_tests::get_text(&svc.url("/metrics")).await;
    assert!(
        metrics.contains("portail_url_link_redirects_total{outcome=\"proxied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portail_url_proxied_bytes_total 12"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_download_from_s3() {
    let big: Vec<u8> = (0..(64u32 << 20)).map(|i| (i % 253) as u8).collect();
    let (_env, svc, fwd) = proxy_world(&[("big.bin", big)]).await;
    let id = file_id(&svc, "big.bin").await;
    let before = fwd.bytes_down();
    let mut resp = svc
        .http
        .get(svc.url(&format!("/v1/files/{id}/content")))
        .bearer_auth(&svc.token)
        .send()
        .await
        .unwrap();
    let mut read = 0;
    while read < 1 << 20 {
        read += resp.chunk().await.unwrap().unwrap().len();
    }
    drop(resp);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = fwd.bytes_down();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fwd.bytes_down(),
        settled,
        "S3 kept sending after the client left"
    );
    let sent = settled - before;
    assert!(
        sent < 32 << 20,
        "S3 sent {sent} of 64 MiB for a client that read 1 MiB"
    );
}

#[tokio::test]
async fn a_bad_public_endpoint_or_download_mode_stops_the_service_naming_it() {
    let base = [
        ("AWS_BUCKET_NAME", "b"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
    ];
    let cases = [
        ("S3_PUBLIC_ENDPOINT_URL", "ftp://s3.example.com"),
        ("S3_PUBLIC_ENDPOINT_URL", "s3.example.com"),
        ("S3_PUBLIC_ENDPOINT_URL", "http://"),
        ("DOWNLOAD_MODE", "stream"),
    ];
    for (var, value) in cases {
        let out = tokio::process::Command::new(workspace_bin("portail-url-service"))
            .arg("serve")
            .env_clear()
            .envs(base)
            .env(var, value)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
}
