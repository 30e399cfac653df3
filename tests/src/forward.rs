//! A TCP forwarder on loopback: a second address for the same server (the "public" S3
//! endpoint of a deployment whose services use an internal one), counting the bytes it passes
//! from the server back to clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection on `addr` to an upstream address until dropped.
#[derive(Debug)]
pub struct Forwarder {
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
    down: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forwarder {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let down = Arc::new(AtomicU64::new(0));
        let (up, count) = (upstream.to_string(), down.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (up, count) = (up.clone(), count.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&up).await {
                        pipe(client, server, count).await;
                    }
                });
            }
        });
        Forwarder { addr, down, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes passed from the upstream server to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }
}

/// Copies both ways until either side closes; counts server-to-client bytes as they pass.
async fn pipe(client: TcpStream, server: TcpStream, count: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = cw.shutdown().await;
    };
    // When the client goes away, the downstream write fails and both halves end.
    tokio::join!(up, down);
}
