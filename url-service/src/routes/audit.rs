//! `GET /v1/audit?file_id=&actor=&since=&limit=&cursor=`: the audit log, newest first.
//!
//! In: optional filters (a file id, an actor: a token name or `link:<id>`, an RFC 3339 time),
//! a page size (1 to 1000, default 100) and the previous page's `next_cursor`. Out:
//! `{"entries": [...], "next_cursor"}`; keyset pagination on the entry id, so a page costs the
//! same at any depth. A scoped token sees only entries about files in its scope.

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use portail_core::catalog::{self, AuditEntry, AuditQuery};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::files::MAX_PAGE;
use crate::routes::split_page;
use crate::AppState;

/// Query parameters of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only entries about this file.
    pub file_id: Option<i64>,
    /// Only entries by this actor (an API token's name, or `link:<id>`).
    pub actor: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000. Default 100.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditPage {
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/audit`.
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(p) = params?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    if p.actor.as_deref().is_some_and(|a| a.contains('\0')) {
        return Err(ApiError::BadRequest("actor must not contain NUL".into()));
    }
    let before_id =
        match p.cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::BadRequest("cursor is not one this API returned".into())
            })?,
        };
    let q = AuditQuery {
        file_id: p.file_id,
        actor: p.actor.as_deref(),
        since: p.since,
        scope_agent: caller.0.agent_name.as_deref(),
        scope_prefix: caller.0.path_prefix.as_deref(),
        before_id,
        limit: limit + 1,
    };
    let mut entries = catalog::audit_page(&state.pool, &q).await?;
    let next_cursor = split_page(&mut entries, limit)
        .then(|| entries.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}
