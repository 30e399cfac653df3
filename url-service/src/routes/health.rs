//! `GET /healthz` (the process answers) and `GET /readyz` (PostgreSQL and S3 answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// Always 200 while the process serves requests.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the database and the bucket answer, 503 otherwise, with which one failed.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db = portail_core::catalog::ping(&state.pool).await.is_ok();
    let s3 = state
        .s3
        .head_bucket()
        .bucket(&state.bucket)
        .send()
        .await
        .is_ok();
    let status = if db && s3 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": db, "s3": s3})))
}
