//! Issue 17: a SIGKILL while CreateMultipartUpload is in flight leaves nothing behind, even
//! with an empty S3_PREFIX. Runs on moto (s3s-fs cannot list multipart uploads), through the
//! fault proxy, which forwards the create and holds its answer back so the agent dies after
//! the store created the upload but before the agent learnt its id.

use std::sync::atomic::Ordering;
use std::time::Duration;

use portail_core::catalog;
use portail_tests::fault::{FaultProxy, Faults, Matcher};
use portail_tests::moto::spawn_moto;
use portail_tests::{eventually, TestEnv};

/// Open multipart uploads in the bucket, as `(key, upload id)`.
async fn open_uploads(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, String)> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("ListMultipartUploads");
    out.uploads()
        .iter()
        .map(|u| {
            let key = u.key().unwrap_or_default().to_string();
            (key, u.upload_id().unwrap_or_default().to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_kill_during_create_multipart_upload_leaves_no_upload_open() {
    let env = TestEnv::new().await;
    let moto = spawn_moto().await;
    let client = moto.bucket_client(&env).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.set(Faults {
        hold_answer: Some((Matcher::CreateMultipartUpload, Duration::from_secs(600))),
        ..Faults::default()
    });
    let body = vec![7u8; 6 << 20];
    env.write("big.bin", &body);
    let run = |endpoint: &str| {
        let mut cmd = env.agent_process("intent", &["sync"], false);
        cmd.env("AWS_ENDPOINT_URL", endpoint)
            .env("MULTIPART_THRESHOLD", "5MiB")
            .env("MULTIPART_PART_SIZE", "5MiB");
        cmd
    };

    // The agent sends CreateMultipartUpload; moto creates the upload; the answer is held.
    let mut first = run(&proxy.endpoint).spawn().expect("agent");
    eventually(60, "CreateMultipartUpload reached the store", || async {
        proxy.injected.held.load(Ordering::Relaxed) >= 1
    })
    .await;
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    let left = open_uploads(&client, &env.bucket).await;
    assert_eq!(
        left.len(),
        1,
        "the killed run left one upload open: {left:?}"
    );
    assert_eq!(left[0].0, "big.bin", "with an empty S3_PREFIX");
    let agent_id: i64 = sqlx::query_scalar("select id from agents where name = 'intent'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    let journal = catalog::open_multiparts(&env.db.pool, agent_id)
        .await
        .unwrap();
    assert_eq!(journal.len(), 1, "the intent was journaled: {journal:?}");
    assert_eq!(journal[0].upload_id, None, "before S3 answered");

    // Restarted: the intent names the key, the agent lists its uploads and aborts them.
    let status = run(&moto.endpoint).status().await.expect("agent");
    assert!(status.success(), "the run after the kill: {status}");
    let left = open_uploads(&client, &env.bucket).await;
    assert!(left.is_empty(), "uploads left open: {left:?}");
    assert!(catalog::open_multiparts(&env.db.pool, agent_id)
        .await
        .unwrap()
        .is_empty());
    let got = client
        .get_object()
        .bucket(&env.bucket)
        .key("big.bin")
        .send()
        .await
        .expect("uploaded")
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(got == body[..], "the file arrived whole");
}
