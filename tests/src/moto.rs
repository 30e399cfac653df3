//! moto's S3 server, for the few cases s3s-fs cannot serve (it lists no multipart uploads and
//! keeps no versions). moto checks no signatures, so everything that can run on s3s-fs does.
//!
//! In: `PORTAIL_MOTO_SERVER`, the path of a `moto_server` executable (`scripts/test` installs
//! `moto[server]` in a virtualenv and sets it), or `moto_server` on `PATH`. Out: a [`Moto`]
//! listening on a loopback port, stopped when dropped. No moto is a loud failure, never a skip.

use std::time::Duration;

use tokio::process::{Child, Command};

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _child: Child,
}

impl Moto {
    /// A client for `env`'s bucket on this server, built as the services build theirs, the
    /// bucket created.
    pub async fn bucket_client(&self, env: &crate::TestEnv) -> aws_sdk_s3::Client {
        let client = env.client_via(&self.endpoint, 3).await;
        client
            .create_bucket()
            .bucket(&env.bucket)
            .send()
            .await
            .expect("create bucket on moto");
        client
    }
}

/// Starts moto on a free loopback port and waits until it answers.
pub async fn spawn_moto() -> Moto {
    let bin = std::env::var("PORTAIL_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let addr = crate::free_addr();
    let port = addr.rsplit(':').next().expect("port").to_string();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin} ({e}): run scripts/test, which installs moto[server], or set PORTAIL_MOTO_SERVER")
        });
    let endpoint = format!("http://{addr}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto {
        endpoint,
        _child: child,
    }
}
