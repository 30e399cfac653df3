//! Issue 13: `portail-agent restore` and `history` as an operator runs them: exit codes,
//! refusals (exit 2, nothing written), a restore killed with SIGKILL that completes when run
//! again, and a full disk that leaves no half-written file under its final name.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::process::Output;
use std::time::Duration;

use portail_agent::ops::restore::{Restore, RestoreOptions};
use portail_tests::TestEnv;

async fn run(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = env.agent_process("cli", args, false);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Files the restore wrote, temporary names included.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn restore_and_history_from_the_command_line() {
    let env = TestEnv::new().await;
    for i in 0..40 {
        env.write(&format!("d/f{i:02}.bin"), &vec![i as u8; 8192]);
    }
    let out = run(&env, &["sync"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.write("d/f00.bin", b"changed");
    assert_eq!(run(&env, &["sync"], &[]).await.status.code(), Some(0));

    let out = run(&env, &["history", "d/f00.bin"], &[]).await;
    let listed = text(&out);
    assert_eq!(out.status.code(), Some(0), "{listed}");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.lines().next().unwrap().contains("7 bytes"),
        "newest first: {listed}"
    );
    assert!(
        listed.contains("kept at .portail-history/d/f00.bin/"),
        "{listed}"
    );

    // Refusals: exit 2, and nothing written.
    let target = tempfile::tempdir().unwrap();
    let to = target.path().join("r");
    let to = to.to_str().unwrap();
    let inside = env.root.path().join("restored");
    for (args, says) in [
        (
            vec!["restore", "--to", inside.to_str().unwrap()],
            "inside SYNC_ROOT",
        ),
        (
            vec!["restore", "--to", to, "--at", "2001-01-01T00:00:00Z"],
            "before the first sync",
        ),
        (
            vec!["restore", "--to", to, "no/such/file"],
            "no file was ever synced",
        ),
        (
            vec!["restore", "--to", to, "--at", "last tuesday"],
            "RFC 3339",
        ),
        (vec!["restore"], "--to"),
    ] {
        let out = run(&env, &args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert!(!inside.exists() && !target.path().join("r").exists());
    let out = run(&env, &["sync"], &[("HISTORY", "versioning")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("HISTORY"), "{}", text(&out));

    // SIGKILL half-way through a slow restore (BWLIMIT 16 KiB/s for 320 KiB), then the same
    // command again: it completes, and nothing temporary is left.
    let mut slow = env.agent_process("cli", &["restore", "--to", to], false);
    slow.env("BWLIMIT", "16k");
    let mut child = slow.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let partial = files_in(&target.path().join("r"));
    assert!(partial.len() < 40, "killed before the end: {partial:?}");
    let out = run(&env, &["restore", "--to", to], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let done = files_in(&target.path().join("r"));
    assert_eq!(done.len(), 40, "{done:?}");
    assert!(
        done.iter().all(|f| !f.contains("portail-restore")),
        "{done:?}"
    );
    assert_eq!(
        std::fs::read(target.path().join("r/d/f00.bin")).unwrap(),
        b"changed"
    );
    assert_eq!(
        std::fs::read(target.path().join("r/d/f01.bin")).unwrap(),
        vec![1u8; 8192]
    );
    let again = run(&env, &["restore", "--to", to], &[]).await;
    assert!(
        text(&again).contains("0 files restored (0 bytes), 40 already in place"),
        "{}",
        text(&again)
    );
}

#[tokio::test]
async fn a_full_disk_fails_cleanly_and_leaves_no_half_written_file() {
    let env = TestEnv::new().await;
    env.write("small.txt", b"fits");
    env.write("big.bin", &vec![7u8; 256 << 10]);
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());

    // A 64 KiB file system: the small file fits, the large one cannot.
    let disk = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs, which needs root"
    );
    let r = Restore {
        catalog: &agent.catalog,
        transfer: &agent.transfer,
        sync_root: env.root.path(),
    }
    .run(&RestoreOptions::new(disk.path(), chrono::Utc::now()))
    .await
    .unwrap();
    let left = files_in(disk.path());
    let _ = std::process::Command::new("umount")
        .arg(disk.path())
        .status();
    assert_eq!(r.restored, 1, "{r:?}");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(
        r.failed[0].starts_with("big.bin: ") && r.failed[0].contains("No space left"),
        "{r:?}"
    );
    assert_eq!(
        left,
        vec!["small.txt"],
        "no partial file, no temporary name"
    );
}
