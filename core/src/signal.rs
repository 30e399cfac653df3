//! Process shutdown for both services.
//!
//! In: the process's signals. Out: a future that resolves on the first SIGINT or SIGTERM (the
//! latter is what systemd, Docker and Kubernetes send), so each service can stop cleanly.

/// Resolves on SIGINT or SIGTERM. If the SIGTERM handler cannot be installed, SIGINT still works.
pub async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return tokio::signal::ctrl_c().await.unwrap_or(()),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("signal received, stopping");
}
