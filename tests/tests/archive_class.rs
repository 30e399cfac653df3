//! Issue 16: objects in an archive storage class are never read back silently: `verify` lists
//! them as needing RestoreObject, apart from drift. On moto, since s3s-fs takes no archive
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

    let report = portail_agent::verify::verify(&agent).await.expect("verify");
    assert_eq!(report.drift, vec![]);
    assert_eq!(report.archived, ["cold/a.txt", "cold/b.txt"]);
}
