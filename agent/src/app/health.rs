//! The agent's HTTP side in watch mode, on METRICS_ADDR.
//!
//! In: the agent, its metrics registry and the watch loop's health flags. Out: `GET /metrics`,
//! `GET /healthz` (200 while the process runs) and `GET /readyz` (200 only when PostgreSQL and
//! the bucket answer and the file watcher is alive; 503 with which one is not). `/readyz` also
//! lists what the guards hold (`held`), without changing its status: a hold needs a person,
//! not a restart, and a failing probe would take the whole pod out of service.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::agent::Agent;
use crate::watch::WatchHandle;

/// The health and metrics router.
pub fn router(
    agent: Agent,
    registry: prometheus::Registry,
    watch: Arc<OnceLock<WatchHandle>>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let agent = agent.clone();
                let watch = watch.clone();
                async move {
                    let db = agent.catalog.ping().await.is_ok();
                    let s3 = agent.transfer.bucket_reachable().await;
                    let watcher = watch
                        .get()
                        .is_some_and(|h| h.health.watcher_alive.load(Ordering::Relaxed));
                    let status = if db && s3 && watcher {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        Json(json!({
                            "database": db,
                            "s3": s3,
                            "watcher": watcher,
                            "held": agent.guards.status(),
                        })),
                    )
                }
            }),
        )
        .merge(portail_core::metrics::router(registry))
}
