//! Issue 16, second part: encryption, storage class and tags on every write, and a mirror that
//! does not depend on ETags being MD5s (s3cmd#611: SSE-KMS made every sync re-upload all).
//! s3s-fs behind the fault proxy, whose request log shows what the agent sent.

use portail_agent::AgentSettings;
use portail_core::config::{ByteSize, Secret};
use portail_tests::fault::{FaultProxy, Faults, Logged};
use portail_tests::TestEnv;

/// An agent whose S3 requests go through a fresh proxy.
async fn through_proxy(
    env: &TestEnv,
    settings: AgentSettings,
    faults: Faults,
) -> (portail_agent::Agent, FaultProxy) {
    let proxy = FaultProxy::start(&env.s3.endpoint).await;
    proxy.set(faults);
    let client = env.client_via(&proxy.endpoint, 3).await;
    let registry = prometheus::Registry::new();
    let agent = env.agent_with_client(settings, client, &registry).await;
    (agent, proxy)
}

fn log(proxy: &FaultProxy) -> Vec<Logged> {
    proxy.injected.log.lock().expect("log lock").clone()
}

/// PutObject, CopyObject (a PUT with x-amz-copy-source) and CreateMultipartUpload.
fn object_writes(log: &[Logged]) -> Vec<&Logged> {
    log.iter()
        .filter(|r| {
            let part = r.target.contains("partNumber=");
            (r.method == "PUT" && !part) || (r.method == "POST" && r.target.contains("uploads"))
        })
        .filter(|r| !r.target.contains("uploadId="))
        .collect()
}

#[tokio::test]
async fn every_write_carries_encryption_storage_class_and_tags() {
    let env = TestEnv::new().await;
    env.write("a.txt", b"alpha");
    env.write("big.bin", &vec![5u8; 6 << 20]);
    let mut s = env.settings();
    s.s3_sse = Some("aws:kms".into());
    s.s3_sse_kms_key_id = Some("alias/portail".into());
    // s3s-fs takes only STANDARD and REDUCED_REDUNDANCY (see the next test).
    s.s3_storage_class = Some("REDUCED_REDUNDANCY".into());
    s.s3_object_tags = Some("team=ops&tier=warm".into());
    s.multipart_threshold = ByteSize(5 << 20);
    let (agent, proxy) = through_proxy(&env, s, Faults::default()).await;
    let r = env.sync(&agent).await;
    assert!(r.converged(), "{:?}", r.failed);
    std::fs::rename(env.root.path().join("a.txt"), env.root.path().join("b.txt")).unwrap();
    let r = env.sync(&agent).await;
    assert_eq!(r.renamed, 1, "{r:?}");

    let log = log(&proxy);
    let writes = object_writes(&log);
    let kinds = |pred: &dyn Fn(&&Logged) -> bool| writes.iter().filter(|r| pred(r)).count();
    // The rename's copy, and the copy that keeps the old path's history (HISTORY=prefix).
    assert_eq!(
        kinds(&|r| r.header("x-amz-copy-source").is_some()),
        2,
        "two copies"
    );
    assert_eq!(
        kinds(&|r| r.target.contains(".portail-history/a.txt/")),
        1,
        "one history copy"
    );
    assert_eq!(kinds(&|r| r.method == "POST"), 1, "one multipart create");
    assert_eq!(writes.len(), 4, "a PUT, a create, two copies: {writes:#?}");
    for w in &writes {
        let h = |n: &str| w.header(n).unwrap_or("<missing>");
        assert_eq!(h("x-amz-server-side-encryption"), "aws:kms", "{w:?}");
        assert_eq!(
            h("x-amz-server-side-encryption-aws-kms-key-id"),
            "alias/portail"
        );
        assert_eq!(h("x-amz-storage-class"), "REDUCED_REDUNDANCY");
        assert_eq!(h("x-amz-tagging"), "team=ops&tier=warm");
    }
    let copy = writes
        .iter()
        .find(|r| r.header("x-amz-copy-source").is_some())
        .unwrap();
    assert_eq!(copy.header("x-amz-tagging-directive"), Some("REPLACE"));
}

#[tokio::test]
async fn a_store_that_rejects_a_header_fails_that_file_with_its_message() {
    let env = TestEnv::new().await;
    env.write("a.txt", b"alpha");
    let mut s = env.settings();
    s.s3_storage_class = Some("STANDARD_IA".into());
    let agent = env.agent(s).await;
    let r = env.sync(&agent).await;
    assert!(!r.converged());
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(
        r.failed[0].error.contains("InvalidStorageClass"),
        "the store's own words: {}",
        r.failed[0].error
    );
    let pending = portail_core::catalog::rows_by_paths(&env.db.pool, agent.id, &["a.txt".into()])
        .await
        .unwrap();
    assert_ne!(pending[0].status, portail_core::catalog::FileStatus::Synced);
}

#[tokio::test]
async fn non_md5_etags_never_cause_reuploads_or_false_drift() {
    let env = TestEnv::new().await;
    for i in 0..5 {
        env.write(&format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    let s = env.settings();
    let faults = Faults {
        rewrite_etags: true,
        ..Faults::default()
    };
    let (agent, proxy) = through_proxy(&env, s, faults).await;
    assert!(env.sync(&agent).await.converged());
    let rows = portail_core::catalog::rows_by_paths(&env.db.pool, agent.id, &["f0.txt".into()])
        .await
        .unwrap();
    assert_ne!(
        rows[0].etag.as_deref(),
        rows[0].md5.as_deref(),
        "the store's ETag is not the MD5 here"
    );

    // Touch every file: same bytes, new mtime. Nothing goes up again.
    for i in 0..5 {
        env.write(&format!("f{i}.txt"), format!("file {i}").as_bytes());
    }
    let r = env.sync(&agent).await;
    assert_eq!((r.uploaded, r.metadata_only), (0, 5), "{r:?}");
    let report = portail_agent::ops::verify::verify(&agent).await.unwrap();
    assert_eq!(report.drift, vec![], "md5chksum vouches for every object");
    assert_eq!(report.checked, 5);
    let heads = log(&proxy).iter().filter(|r| r.method == "HEAD").count();
    assert!(heads >= 5, "verify asked md5chksum: {heads} HEADs");

    // Real drift is still drift: an object replaced behind the agent's back.
    let direct = env.s3.client().await;
    direct
        .put_object()
        .bucket(&env.bucket)
        .key("f3.txt")
        .body(b"tampered".to_vec().into())
        .send()
        .await
        .unwrap();
    let report = portail_agent::ops::verify::verify(&agent).await.unwrap();
    assert_eq!(report.drift.len(), 1, "{:?}", report.drift);
}

#[tokio::test]
async fn sse_c_sends_its_key_with_every_write_part_and_head() {
    let env = TestEnv::new().await;
    env.write("big.bin", &vec![9u8; 6 << 20]);
    let mut s = env.settings();
    // 32 bytes, base64. A real key comes from `openssl rand -base64 32`.
    s.s3_sse_customer_key = Some(Secret::new("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
    s.multipart_threshold = ByteSize(5 << 20);
    let faults = Faults {
        rewrite_etags: true,
        ..Faults::default()
    };
    let (agent, proxy) = through_proxy(&env, s, faults).await;
    assert!(env.sync(&agent).await.converged());
    let report = portail_agent::ops::verify::verify(&agent).await.unwrap();
    assert_eq!(report.drift, vec![]);
    let log = log(&proxy);
    let keyed = |r: &&Logged| {
        r.header("x-amz-server-side-encryption-customer-algorithm") == Some("AES256")
            && r.header("x-amz-server-side-encryption-customer-key-md5")
                .is_some()
    };
    let parts: Vec<_> = log
        .iter()
        .filter(|r| r.target.contains("partNumber="))
        .collect();
    let heads: Vec<_> = log
        .iter()
        .filter(|r| r.method == "HEAD" && r.target.contains("big.bin"))
        .collect();
    let creates: Vec<_> = log
        .iter()
        .filter(|r| r.method == "POST" && r.target.contains("uploads"))
        .collect();
    assert_eq!(parts.len(), 2);
    assert!(!heads.is_empty(), "verify read md5chksum with a HEAD");
    assert_eq!(creates.len(), 1);
    for r in parts.iter().chain(&heads).chain(&creates) {
        assert!(keyed(r), "no SSE-C key on {} {}", r.method, r.target);
    }

    // A restore reads with the same key (issue 13).
    let dir = tempfile::tempdir().unwrap();
    let restored = portail_agent::ops::restore::Restore {
        catalog: &agent.catalog,
        transfer: &agent.transfer,
        sync_root: env.root.path(),
    }
    .run(&portail_agent::ops::restore::RestoreOptions::new(
        dir.path(),
        chrono::Utc::now(),
    ))
    .await
    .unwrap();
    assert_eq!(
        (restored.restored, restored.failed.len()),
        (1, 0),
        "{restored:?}"
    );
    let log = proxy.injected.log.lock().expect("log lock").clone();
    let gets: Vec<_> = log
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains("big.bin"))
        .collect();
    // 6 MiB at MULTIPART_THRESHOLD 5 MiB: two ranged GETs, each with the key.
    assert_eq!(gets.len(), 2);
    for r in &gets {
        assert!(keyed(r), "no SSE-C key on the restore's GET {}", r.target);
    }
}

#[tokio::test]
async fn the_catalog_records_encryption_and_links_refuse_sse_c_objects() {
    let env = TestEnv::new().await;
    env.write("plain.txt", b"plain");
    let plain = env.agent(env.settings_for("plain")).await;
    assert!(env.sync(&plain).await.converged());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"secret").unwrap();
    let mut s = env.settings_for("sse-c");
    s.sync_root = dir.path().to_path_buf();
    s.s3_prefix = "sse-c".into();
    s.s3_sse_customer_key = Some(Secret::new("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
    let sse_c = env.agent(s).await;
    assert!(env.sync(&sse_c).await.converged());

    let pool = env.db.pool.clone();
    let row = |path: &'static str| {
        let pool = pool.clone();
        async move {
            let (id, enc): (i64, Option<String>) =
                sqlx::query_as("select id, encryption from files where path = $1")
                    .bind(path)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (id, enc)
        }
    };
    let (plain_id, enc) = row("plain.txt").await;
    assert_eq!(enc, None);
    let (secret_id, enc) = row("secret.txt").await;
    assert_eq!(enc.as_deref(), Some("SSE-C"));

    let svc = env.spawn_url_service().await;
    let ok = svc
        .post(&format!("/v1/files/{plain_id}/url"), serde_json::json!({}))
        .await;
    assert_eq!(ok.status(), 201);
    for (path, body) in [
        (format!("/v1/files/{secret_id}/url"), serde_json::json!({})),
        (
            "/v1/links".to_string(),
            serde_json::json!({"file_id": secret_id}),
        ),
    ] {
        let r = svc.post(&path, body).await;
        let status = r.status();
        let err: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 409, "{path}: {err}");
        assert_eq!(err["error"], "file_sse_c", "{path}: {err}");
    }
}
