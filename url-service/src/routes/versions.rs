//! `GET /v1/files/{id}/versions`: a file's stored contents, newest first; and which object a
//! presign of one of them (`POST /v1/files/{id}/url` with `"version_id"`) signs.
//!
//! In: a file id the caller may see, a version id of that file. Out: the versions (no S3 keys:
//! where the bytes live is the agent's business), or the object key and S3 version to sign.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use portail_core::catalog::{self, VersionRow};
use serde::Serialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::files::visible_file;
use crate::routes::IdParam;
use crate::AppState;

/// One version as the API shows it.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// Pass as `version_id` to `POST /v1/files/{id}/url`.
    pub id: i64,
    /// When this content became current.
    pub valid_from: DateTime<Utc>,
    /// When it stopped being current; null for the current one.
    pub valid_to: Option<DateTime<Utc>>,
    pub size_bytes: i64,
    pub md5: String,
    pub mtime: DateTime<Utc>,
    /// `st_mode`, when known.
    pub mode: Option<i32>,
    /// How it began: `uploaded`, `updated`, `renamed`, `rebuilt`.
    pub event: String,
    /// How it ended: `overwritten`, `deleted`; null for the current one.
    pub ended_by: Option<String>,
    /// Whether its bytes are still kept (current, or history not yet purged).
    pub restorable: bool,
}

impl From<VersionRow> for VersionView {
    fn from(v: VersionRow) -> Self {
        let restorable = v.valid_to.is_none() || v.history_key.is_some() || v.version_id.is_some();
        VersionView {
            id: v.id,
            valid_from: v.valid_from,
            valid_to: v.valid_to,
            size_bytes: v.size_bytes,
            md5: v.md5,
            mtime: v.mtime,
            mode: v.mode,
            event: v.event,
            ended_by: v.ended_by,
            restorable,
        }
    }
}

/// Answer of `GET /v1/files/{id}/versions`.
#[derive(Debug, Serialize)]
pub struct VersionList {
    /// Newest first.
    pub versions: Vec<VersionView>,
}

/// `GET /v1/files/{id}/versions`.
pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    IdParam(id): IdParam,
) -> Result<Json<VersionList>, ApiError> {
    visible_file(&state, &caller, id).await?;
    let rows = catalog::versions_of_file(&state.pool, id).await?;
    Ok(Json(VersionList {
        versions: rows.into_iter().map(VersionView::from).collect(),
    }))
}
