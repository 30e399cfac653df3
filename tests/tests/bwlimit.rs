//! Issue 16, first part: BWLIMIT caps every upload together, and BWLIMIT_FILE changes the limit
//! without a restart. Real transfers to s3s-fs, real PostgreSQL.

use std::time::{Duration, Instant};

use portail_tests::{eventually, TestEnv};

#[tokio::test]
async fn eight_mib_under_one_mib_per_second_take_at_least_seven_seconds() {
    let env = TestEnv::new().await;
    // A single PUT and a multipart upload (a 5 MiB part and a 1 MiB one) share one budget.
    env.write("small.bin", &vec![1u8; 2 << 20]);
    env.write("big.bin", &vec![2u8; 6 << 20]);
    let mut s = env.settings();
    s.bwlimit = Some("1M".parse().unwrap());
    s.multipart_threshold = portail_core::config::ByteSize(5 << 20);
    let agent = env.agent(s).await;
    let bw = &agent.metrics.controls.bwlimit;
    eventually(5, "the gauge shows the limit", || async {
        bw.get() == 1 << 20
    })
    .await;

    let started = Instant::now();
    let r = env.sync(&agent).await;
    let took = started.elapsed();
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.bytes_uploaded, 8 << 20);
    // One second of burst, then 7 MiB at 1 MiB/s. The upper bound is loose: not a benchmark.
    assert!(
        took >= Duration::from_secs(7),
        "8 MiB at 1 MiB/s in {took:?}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    let id = agent.id;
    assert!(env.mirrored(id, "big.bin", &vec![2u8; 6 << 20]).await);
    assert!(env.mirrored(id, "small.bin", &vec![1u8; 2 << 20]).await);
}

#[tokio::test]
async fn bwlimit_file_changes_the_limit_without_a_restart_and_a_bad_edit_keeps_the_old_one() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bwlimit");
    std::fs::write(&file, "1M\n").unwrap();
    let mut s = env.settings();
    s.bwlimit_file = Some(file.clone());
    let agent = env.agent(s).await;
    let c = &agent.metrics.controls;
    eventually(5, "1 MiB/s from the file", || async {
        c.bwlimit.get() == 1 << 20
    })
    .await;

    std::fs::write(&file, "# weekends free\n Mon-00:00,3M\n").unwrap();
    eventually(10, "3 MiB/s after the edit", || async {
        c.bwlimit.get() == 3 << 20
    })
    .await;
    std::fs::write(&file, "08:00,fast").unwrap();
    eventually(10, "the bad edit is counted", || async {
        c.bwlimit_file_errors.get() == 1
    })
    .await;
    assert_eq!(c.bwlimit.get(), 3 << 20, "the previous limit stays");
    std::fs::write(&file, "off").unwrap();
    eventually(10, "no limit", || async { c.bwlimit.get() == 0 }).await;
    // That `off` really sends without waiting is a unit test of the bucket (paused clock).
}
