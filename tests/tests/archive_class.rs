//! Issue 16: objects in an archive storage class are never read back silently: `verify` lists
//! them as needing RestoreObject, apart from drift, and `restore` reports each. On moto, since s3s-fs takes no archive
//! class (it accepts only STANDARD and REDUCED_REDUNDANCY).

use portail_tests::moto::spawn_moto;
use portail_tests::TestEnv;

#[tokio::test]
async fn verify_lists_archived_objects_apart_from_drift() {
    let env = TestEnv::new().await;
    let moto = spawn_moto().await;
    let client = moto.bucket_client(&env).await;
    env.write("cold/a.txt", b"archived a");
    env.write("cold/b.txt", b"archived b");
    let mut s = env.settings();
    s.s3_storage_class = Some("GLACIER".into());
    let registry = prometheus::Registry::new();
    let agent = env.agent_with_client(s, client.clone(), &registry).await;
    let r = env.sync(&agent).await;
    assert!(r.converged(), "{r:?}");
    let head = client
        .head_object()
        .bucket(&env.bucket)
        .key("cold/a.txt")
        .send()
        .await
        .expect("head");
    assert_eq!(head.storage_class().map(|c| c.as_str()), Some("GLACIER"));

    let report = portail_agent::ops::verify::verify(&agent)
        .await
        .expect("verify");
    assert_eq!(report.drift, vec![]);
    assert_eq!(report.archived, ["cold/a.txt", "cold/b.txt"]);

    // `restore` never reads them back silently either: each is named as needing RestoreObject,
    // and nothing is written under its name.
    let dir = tempfile::tempdir().expect("tempdir");
    let r = portail_agent::ops::restore::Restore {
        catalog: &agent.catalog,
        transfer: &agent.transfer,
        sync_root: env.root.path(),
    }
    .run(&portail_agent::ops::restore::RestoreOptions::new(
        dir.path(),
        chrono::Utc::now(),
    ))
    .await
    .expect("restore");
    assert_eq!(r.restored, 0, "{r:?}");
    assert_eq!(r.failed.len(), 2, "{r:?}");
    assert!(
        r.failed
            .iter()
            .all(|f| f.contains("archived") && f.contains("RestoreObject")),
        "{r:?}"
    );
    assert!(!dir.path().join("cold/a.txt").exists());

    // The catalog records the class, and the url-service refuses links to such objects.
    let rows = portail_core::catalog::files_of_agent(&env.db.pool, agent.id)
        .await
        .expect("rows");
    assert!(rows
        .iter()
        .all(|r| r.storage_class.as_deref() == Some("GLACIER")));
    let svc = env.spawn_url_service().await;
    let r = svc
        .post(
            &format!("/v1/files/{}/url", rows[0].id),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "file_archived", "{body}");
}
