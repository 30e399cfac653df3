//! The API's error type: every failure becomes `{"error": "<code>", "message": "..."}` with the
//! right status. Internal details (SQL, causes) are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one that is unknown or revoked: 401.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The thing does not exist, or is outside the token's scope: 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed or out of range: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The file exists but cannot be served in its state (deleted, not yet synced): 409.
    #[error("{message}")]
    Conflict {
        /// A stable code, e.g. `file_not_synced`.
        code: &'static str,
        /// For humans.
        message: String,
    },
    /// A dependency (PostgreSQL, S3) is unavailable: 503.
    #[error("service unavailable, try again later")]
    Unavailable,
    /// A bug: 500. The cause is logged, not returned.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut resp = (
            status,
            Json(json!({"error": code, "message": self.to_string()})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            e => {
                tracing::error!(error = %portail_core::telemetry::chain(&e), "database error");
                ApiError::Internal
            }
        }
    }
}
