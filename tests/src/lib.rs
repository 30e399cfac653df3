//! The end-to-end harness: real PostgreSQL, real (in-process) S3, real services.
//!
//! In: `DATABASE_URL` pointing at a PostgreSQL server the tests may create databases on
//! (`scripts/test` starts a throwaway one). Out, per test:
//! - [`TestDb`]: a fresh database with the migrations applied;
//! - [`TestS3`]: s3s-fs serving a fresh temp directory on `127.0.0.1:0`, SigV4 auth on, so
//!   signatures, Content-MD5 and presigned URLs are really checked;
//! - [`TestEnv`]: both, plus a sync root, agents driven by `sync_once()` and the url-service
//!   router served on a random port.
//!
//! Nothing here reaches beyond loopback.

pub mod browser;
pub mod compose;
pub mod config_vars;
pub mod fault;
pub mod forward;
pub mod moto;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use portail_agent::{Agent, AgentSettings, SyncOptions, SyncReport};
use portail_core::config::{HumanDuration, S3Config, Secret};
use rand::Rng;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::net::TcpListener;

/// The access key of every test S3 server.
pub const ACCESS_KEY: &str = "portail-test-key";
/// The secret key of every test S3 server.
pub const SECRET_KEY: &str = "portail-test-secret-0123456789";

/// Serves s3s-fs over `root` on an accepted listener until the task is dropped or aborted.
pub async fn serve_s3(
    listener: TcpListener,
    root: &Path,
    access_key: &str,
    secret_key: &str,
) -> anyhow::Result<()> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
    let service = builder.build();
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "dev-s3 accept failed");
                continue;
            }
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// An in-process S3 server with its own data directory.
#[derive(Debug)]
pub struct TestS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The data directory (s3s-fs keeps one folder per bucket).
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts s3s-fs on a random loopback port with SigV4 auth.
pub async fn spawn_s3() -> TestS3 {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let root = dir.path().to_path_buf();
    let task = tokio::spawn(async move {
        if let Err(e) = serve_s3(listener, &root, ACCESS_KEY, SECRET_KEY).await {
            eprintln!("test S3 server stopped: {e:#}");
        }
    });
    TestS3 {
        endpoint: format!("http://{addr}"),
        dir,
        task,
    }
}

impl TestS3 {
    /// The S3 settings a service needs to reach this server.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            aws_region: "us-east-1".into(),
            aws_bucket_name: bucket.into(),
            aws_access_key_id: Some(ACCESS_KEY.into()),
            aws_secret_access_key: Some(Secret::new(SECRET_KEY)),
            aws_endpoint_url: Some(self.endpoint.clone()),
            aws_force_path_style: Some(true),
            s3_connect_timeout: HumanDuration(std::time::Duration::from_secs(2)),
            s3_read_timeout: HumanDuration(std::time::Duration::from_secs(30)),
            s3_max_attempts: 3,
        }
    }

    /// A client built exactly as the services build theirs.
    pub async fn client(&self) -> Client {
        portail_core::s3::build_client(&self.config("unused")).await
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .await
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket");
    }
}

/// A fresh database with the migrations applied.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// A pool on it.
    pub pool: PgPool,
    /// Its URL, for child processes.
    pub url: String,
}

/// The server the tests use, from DATABASE_URL.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the suite with scripts/test, which starts a throwaway PostgreSQL",
    )
}

/// Creates `portail_test_<random>` on the DATABASE_URL server and migrates it.
pub async fn fresh_db() -> TestDb {
    fresh_db_on(&server_url()).await
}

/// Creates `portail_test_<random>` on the given server and migrates it.
pub async fn fresh_db_on(server_url: &str) -> TestDb {
    let server: PgConnectOptions = server_url.parse().expect("not a postgres URL");
    let name = format!("portail_test_{:016x}", rand::thread_rng().gen::<u64>());
    let mut admin = server
        .clone()
        .database("postgres")
        .connect()
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("create database {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    admin.close().await.ok();
    let opts = server.database(&name);
    let url = opts.to_url_lossy().to_string();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect_with(opts)
        .await
        .expect("connect to test database");
    portail_core::catalog::migrate(&pool)
        .await
        .expect("migrate");
    TestDb { pool, url }
}

/// A complete test world: one database, one S3 server with one bucket, one sync root.
#[derive(Debug)]
pub struct TestEnv {
    /// The catalog.
    pub db: TestDb,
    /// The S3 server.
    pub s3: TestS3,
    /// The bucket the agents write to.
    pub bucket: String,
    /// The directory the agents mirror.
    pub root: tempfile::TempDir,
}

impl TestEnv {
    /// A new world with bucket `portail-test`, its catalog on the DATABASE_URL server.
    pub async fn new() -> Self {
        Self::on_server(&server_url()).await
    }

    /// A world whose catalog lives on the given server (outage tests own theirs).
    pub async fn on_server(server_url: &str) -> Self {
        let (db, s3) = tokio::join!(fresh_db_on(server_url), spawn_s3());
        let bucket = "portail-test".to_string();
        s3.create_bucket(&bucket).await;
        let root = tempfile::tempdir().expect("root");
        TestEnv {
            db,
            s3,
            bucket,
            root,
        }
    }

    /// Agent settings for the root, with a unique agent name.
    pub fn settings(&self) -> AgentSettings {
        let mut s = AgentSettings::for_root(self.root.path());
        s.agent_id = Some("test-agent".into());
        s
    }

    /// Settings for another agent name on the same root.
    pub fn settings_for(&self, agent_id: &str) -> AgentSettings {
        let mut s = self.settings();
        s.agent_id = Some(agent_id.into());
        s
    }

    /// Starts an agent (its own metrics registry) on this world.
    pub async fn agent(&self, settings: AgentSettings) -> Agent {
        self.agent_on(settings, &prometheus::Registry::new()).await
    }

    /// Starts an agent whose metrics are registered on `registry` (to scrape it).
    pub async fn agent_on(
        &self,
        settings: AgentSettings,
        registry: &prometheus::Registry,
    ) -> Agent {
        self.agent_with_client(settings, self.s3.client().await, registry)
            .await
    }

    /// One full pass.
    pub async fn sync(&self, agent: &Agent) -> SyncReport {
        portail_agent::sync_once(agent, &SyncOptions::default())
            .await
            .expect("sync_once")
    }

    /// Writes a file under the root, creating its directories.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write");
        p
    }

    /// Fetches an object: its bytes and its `md5chksum` metadata.
    pub async fn object(&self, key: &str) -> Option<(Vec<u8>, Option<String>)> {
        let client = self.s3.client().await;
        let out = client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        let md5 = out.metadata().and_then(|m| m.get("md5chksum").cloned());
        let bytes = out.body.collect().await.ok()?.into_bytes().to_vec();
        Some((bytes, md5))
    }

    /// The mirror's keys (history copies left out), sorted.
    pub async fn keys(&self) -> Vec<String> {
        let (mirror, _) = self.all_keys().await;
        mirror
    }

    /// How many catalog rows are `synced`, over every agent of this test's database. The agent
    /// stores an object before it writes its row, in batches, so a test that saw the objects
    /// and needs the rows waits for this too.
    pub async fn synced_rows(&self) -> usize {
        let n: i64 = sqlx::query_scalar("select count(*) from files where status = 'synced'")
            .fetch_one(&self.db.pool)
            .await
            .expect("count synced rows");
        n as usize
    }

    /// Whether S3 holds exactly `n` mirror objects and the catalog `n` synced rows: the state
    /// after a pass over `n` files, seen from both sides.
    pub async fn mirrored_count(&self, n: usize) -> bool {
        self.keys().await.len() == n && self.synced_rows().await == n
    }

    /// The history copies (HISTORY=prefix, under the default HISTORY_PREFIX), sorted.
    pub async fn history_keys(&self) -> Vec<String> {
        let (_, history) = self.all_keys().await;
        history
    }

    /// Every key in the bucket, split into the mirror's and the history copies.
    async fn all_keys(&self) -> (Vec<String>, Vec<String>) {
        let client = self.s3.client().await;
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(&self.bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("list");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
        }
        keys.sort();
        keys.into_iter()
            .partition(|k| !k.split('/').any(|s| s == ".portail-history"))
    }

    /// Serves the url-service router on a random port; returns its address and an API token.
    pub async fn spawn_url_service(&self) -> TestUrlService {
        self.spawn_url_service_on(self.db.pool.clone()).await
    }

    /// The same, with the service using `pool` (e.g. one built by `catalog::connect`).
    pub async fn spawn_url_service_on(&self, pool: PgPool) -> TestUrlService {
        let settings = portail_url_service::ServiceSettings::defaults();
        self.spawn_url_service_with(pool, self.s3.client().await, settings)
            .await
    }

    /// The url-service with these settings, reaching S3 through `s3` (e.g. a client aimed at
    /// a [`forward::Forwarder`]).
    pub async fn spawn_url_service_with(
        &self,
        pool: PgPool,
        s3: Client,
        settings: portail_url_service::ServiceSettings,
    ) -> TestUrlService {
        let limits = settings.server_limits();
        let state = portail_url_service::AppState::new(pool, s3, self.bucket.clone(), settings)
            .expect("state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = portail_url_service::router(state);
        // The production server (it hands handlers the peer's address, for the audit log).
        let task = tokio::spawn(async move {
            let never = std::future::pending::<()>();
            let _ = portail_url_service::server::serve(listener, app, limits, never).await;
        });
        let token = self.create_token("test-admin", None, None).await;
        TestUrlService {
            addr,
            token,
            task,
            http: http_client(),
        }
    }

    /// Creates an API token and returns it.
    pub async fn create_token(
        &self,
        name: &str,
        prefix: Option<&str>,
        agent: Option<&str>,
    ) -> String {
        let token = portail_url_service::auth::generate_token();
        portail_core::catalog::create_token(
            &self.db.pool,
            name,
            &portail_url_service::auth::token_hash(&token),
            prefix,
            agent,
        )
        .await
        .expect("create token");
        token
    }
}

/// Polls `check` every 50 ms until it holds; panics after `secs` seconds naming `what`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// A loopback address that was free a moment ago.
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("free port")
}

/// A file of the repository, as text.
pub fn repo_file(name: &str) -> String {
    let path = format!("{}/../{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `.env.example` as (service variables, docker-compose-only variables). The compose-only ones
/// follow the `# --- docker compose only` heading.
pub fn env_example_vars() -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let (mut service, mut compose) = (Default::default(), Default::default());
    let mut in_compose = false;
    for line in repo_file(".env.example").lines() {
        if line.starts_with("# --- docker compose only") {
            in_compose = true;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            let set: &mut std::collections::BTreeSet<String> = if in_compose {
                &mut compose
            } else {
                &mut service
            };
            set.insert(k.trim().to_string());
        }
    }
    (service, compose)
}

/// The sum of a counter's values in `registry`, over the label sets that carry `label_value`
/// (all of them when `None`).
pub fn counter_sum(registry: &prometheus::Registry, name: &str, label_value: Option<&str>) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| label_value.is_none_or(|v| m.get_label().iter().any(|l| l.value() == v)))
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// The body of a GET, as text (e.g. a `/metrics` scrape).
pub async fn get_text(url: &str) -> String {
    http_client()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// An HTTP client that never uses a proxy (tests stay on loopback).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// A url-service running in-process.
#[derive(Debug)]
pub struct TestUrlService {
    /// Where it listens.
    pub addr: SocketAddr,
    /// An unscoped API token.
    pub token: String,
    /// A client for it.
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUrlService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUrlService {
    /// `http://ADDR` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST JSON with the API token.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }
}

/// The hex MD5 of some bytes.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// The base64 MD5 of some bytes (the `md5chksum` convention).
pub fn md5_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

/// A workspace binary built next to this test executable (`cargo test --workspace` builds
/// every binary of the workspace first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

/// The `portail-agent` binary.
pub fn agent_bin() -> PathBuf {
    workspace_bin("portail-agent")
}

/// The `portail-agent` binary at a path the `nobody` user can reach. The checkout may sit
/// where `nobody` cannot enter (a clone under `/root`, a home with mode 700), so the binary is
/// hard-linked (or, across file systems, copied) into a world-readable directory of this test
/// process under the temp dir. Directories left by earlier, finished processes are removed.
pub fn agent_bin_for_nobody() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = std::env::temp_dir();
        remove_stale_nobody_dirs(&tmp);
        let dir = tmp.join(format!("portail-nobody-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir for nobody's binary");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.join("portail-agent");
        let _ = std::fs::remove_file(&bin);
        if std::fs::hard_link(agent_bin(), &bin).is_err() {
            std::fs::copy(agent_bin(), &bin).expect("copy the agent binary");
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        bin
    })
    .clone()
}

fn remove_stale_nobody_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("portail-nobody-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl TestEnv {
    /// A `portail-agent` child process configured for this world through its environment,
    /// exactly as an operator would run it. With `as_nobody` (and when we are root), it runs
    /// as the `nobody` user, so file permissions really apply.
    pub fn agent_process(
        &self,
        agent_id: &str,
        args: &[&str],
        as_nobody: bool,
    ) -> tokio::process::Command {
        let root_user = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        let mut cmd = if as_nobody && root_user {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(agent_bin_for_nobody());
            c
        } else {
            tokio::process::Command::new(agent_bin())
        };
        cmd.args(args)
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SYNC_ROOT", self.root.path())
            .env("AGENT_ID", agent_id)
            .env("DATABASE_URL", &self.db.url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_BUCKET_NAME", &self.bucket)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", &self.s3.endpoint)
            .env("LOG_LEVEL", "warn")
            .kill_on_drop(true);
        cmd
    }
}

/// A PostgreSQL cluster owned by one test, for cases that stop and restart the server.
/// Built like `scripts/lib.sh` does: `initdb` as the `postgres` user when we are root.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    /// The loopback port it listens on.
    pub port: u16,
    bin: PathBuf,
}

fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn as_pg(bin: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = std::process::Command::new("/usr/sbin/runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        std::process::Command::new(bin)
    };
    cmd.args(args)
        .current_dir("/")
        .output()
        .expect("run a PostgreSQL tool")
}

impl PgCluster {
    /// Creates and starts a cluster on a free port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            let out = std::process::Command::new("chown")
                .args(["postgres:"])
                .arg(&data)
                .output()
                .expect("chown");
            assert!(
                out.status.success(),
                "chown: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bin = pg_bindir();
        let data_s = data.to_str().expect("utf-8 path");
        let out = as_pg(
            &bin.join("initdb"),
            &["-D", data_s, "--auth=trust", "--no-sync", "-U", "postgres"],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let c = PgCluster { dir, port, bin };
        c.resume();
        c
    }

    fn data(&self) -> String {
        self.dir
            .path()
            .join("data")
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }

    /// Starts the (stopped) server again on the same port.
    pub fn resume(&self) {
        let data = self.data();
        let opts = format!(
            "-p {} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = format!("{data}/server.log");
        let out = as_pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D", &data, "-w", "-t", "30", "-l", &log, "-o", &opts, "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let out = as_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_pg(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// An agent running watch mode in this process.
#[derive(Debug)]
pub struct Watching {
    /// The agent.
    pub agent: Agent,
    /// Its watch handle (to force a rescan).
    pub handle: portail_agent::watch::WatchHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The watch loop; finished only after `stop`, or if it failed.
    pub task: tokio::task::JoinHandle<()>,
}

impl Watching {
    /// Asks watch mode to stop and waits (30 s at most) for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), self.task)
            .await
            .expect("watch mode stops within 30 s")
            .expect("watch task");
    }
}

/// Runs `portail_agent::watch::run` for the agent until [`Watching::stop`].
pub async fn start_watch(agent: Agent) -> Watching {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (h_tx, h_rx) = tokio::sync::oneshot::channel();
    let a = agent.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        portail_agent::watch::run(&a, shutdown, move |h| {
            let _ = h_tx.send(h);
        })
        .await
        .expect("watch mode");
    });
    let handle = h_rx.await.expect("watch handle");
    Watching {
        agent,
        handle,
        stop: Some(stop_tx),
        task,
    }
}

impl TestEnv {
    /// Whether S3 holds exactly `bytes` for `path` and its row is synced with that MD5.
    pub async fn mirrored(&self, agent_id: i64, path: &str, bytes: &[u8]) -> bool {
        let rows =
            portail_core::catalog::rows_by_paths(&self.db.pool, agent_id, &[path.to_string()])
                .await
                .expect("rows");
        let Some(row) = rows.first() else {
            return false;
        };
        if row.status != portail_core::catalog::FileStatus::Synced
            || row.md5.as_deref() != Some(md5_hex(bytes).as_str())
        {
            return false;
        }
        self.object(&row.s3_key)
            .await
            .is_some_and(|(b, _)| b == bytes)
    }

    /// Asserts that the local tree, the catalog and S3 agree for `agent`: every regular file
    /// under the root has a `synced` row with its MD5 and an object with its bytes and
    /// `md5chksum`; no live row lacks its file; no object lacks its live row; no path has two
    /// rows. Returns the number of files checked.
    pub async fn assert_converged(&self, agent: &Agent) -> usize {
        use std::collections::BTreeMap;
        let mut local = BTreeMap::new();
        for entry in walkdir::WalkDir::new(self.root.path()) {
            let entry = entry.expect("walk");
            if entry.file_type().is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(self.root.path())
                    .expect("under root")
                    .to_str()
                    .expect("utf-8 test names")
                    .to_string();
                local.insert(rel, std::fs::read(entry.path()).expect("read"));
            }
        }
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "select path, s3_key, status::text, md5 from files where agent_id = $1 and status <> 'deleted'",
        )
        .bind(agent.id)
        .fetch_all(&self.db.pool)
        .await
        .expect("rows");
        let dupes: i64 = sqlx::query_scalar(
            "select count(*) from (select path from files where agent_id = $1 group by path having count(*) > 1) d",
        )
        .bind(agent.id)
        .fetch_one(&self.db.pool)
        .await
        .expect("dupes");
        assert_eq!(dupes, 0, "a path has two rows");
        let mut live = std::collections::BTreeSet::new();
        for (path, key, status, md5) in &rows {
            let bytes = local
                .get(path)
                .unwrap_or_else(|| panic!("row {path} ({status}) has no local file"));
            assert_eq!(status, "synced", "{path}");
            assert_eq!(
                md5.as_deref(),
                Some(md5_hex(bytes).as_str()),
                "{path}: row md5"
            );
            let (stored, meta) = self
                .object(key)
                .await
                .unwrap_or_else(|| panic!("{path}: no object {key}"));
            assert!(stored == *bytes, "{path}: S3 holds other bytes");
            assert_eq!(
                meta.as_deref(),
                Some(md5_b64(bytes).as_str()),
                "{path}: md5chksum"
            );
            live.insert(key.clone());
        }
        let missing: Vec<_> = local
            .keys()
            .filter(|p| !rows.iter().any(|r| &r.0 == *p))
            .collect();
        assert!(missing.is_empty(), "files with no live row: {missing:?}");
        let orphans: Vec<_> = self
            .keys()
            .await
            .into_iter()
            .filter(|k| k.starts_with(&agent.prefix) && !live.contains(k))
            .collect();
        assert!(orphans.is_empty(), "objects with no live row: {orphans:?}");
        local.len()
    }

    /// A client for this world's bucket through another endpoint (e.g. a fault proxy), with
    /// `attempts` attempts per request.
    pub async fn client_via(&self, endpoint: &str, attempts: u32) -> Client {
        let mut cfg = self.s3.config(&self.bucket);
        cfg.aws_endpoint_url = Some(endpoint.to_string());
        cfg.s3_max_attempts = attempts;
        portail_core::s3::build_client(&cfg).await
    }

    /// Starts an agent that reaches S3 through `client`, its metrics on `registry`.
    pub async fn agent_with_client(
        &self,
        settings: AgentSettings,
        client: Client,
        registry: &prometheus::Registry,
    ) -> Agent {
        Agent::start(
            settings,
            self.db.pool.clone(),
            client,
            self.bucket.clone(),
            registry,
        )
        .await
        .expect("agent start")
    }
}
