//! Revocable share links.
//!
//! - `POST /v1/links` `{"file_id", "expires_in_seconds"?, "max_downloads"?}` → 201
//!   `{"id", "url": "<PUBLIC_BASE_URL>/l/<token>", "expires_at", "max_downloads"}`. The token is
//!   shown only here; the database keeps its SHA-256.
//! - `GET /v1/links?file_id=` → `{"links": [...]}`; `DELETE /v1/links/{id}` → 204.
//! - `GET /l/{token}` (no API token: the link token is the secret) → 302 to a presigned URL valid
//!   for LINK_PRESIGN_TTL (or, with DOWNLOAD_MODE=proxy, the object streamed); 404 for an
//!   unknown token; 410 for a revoked, expired or used-up link,
//!   or one whose file was deleted. A click is counted by one conditional UPDATE, so
//!   `max_downloads` holds under concurrent clicks. Every click, whatever its outcome, goes to
//!   the audit log (actor `link:<id>`, or `link:unknown`).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use portail_core::catalog::{self, FileWithBucket, ShareLink};
use serde::{Deserialize, Serialize};

use crate::audit::Client;
use crate::auth::{self, Caller};
use crate::config::DownloadMode;
use crate::error::ApiError;
use crate::routes::content::{redirect, stream_object};
use crate::routes::files::{ensure_servable, presign, visible_file};
use crate::routes::{parse_json, IdParam};
use crate::AppState;

/// The longest a share link may live: one year. Each click still gets a short-lived URL.
pub const MAX_LINK_SECONDS: i64 = 365 * 86_400;

/// Body of `POST /v1/links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    /// The file to share.
    pub file_id: i64,
    /// Lifetime of the link, 1 s to 1 year. Default DEFAULT_LINK_TTL.
    pub expires_in_seconds: Option<i64>,
    /// How many clicks it serves, at least 1. Default: unlimited.
    pub max_downloads: Option<i64>,
}

/// A link as created: the only time its URL (and so its token) is shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedLink {
    /// The link's id, for listing and revoking.
    pub id: i64,
    /// `<PUBLIC_BASE_URL>/l/<token>`.
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Its download cap, if any.
    pub max_downloads: Option<i32>,
}

/// `POST /v1/links`.
pub async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedLink>), ApiError> {
    let req: NewLink = parse_json(&body)?;
    let seconds = match req.expires_in_seconds {
        None => state.settings.default_link_ttl.0.as_secs() as i64,
        Some(s) if (1..=MAX_LINK_SECONDS).contains(&s) => s,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "expires_in_seconds must be between 1 and {MAX_LINK_SECONDS}"
            )))
        }
    };
    let max_downloads = match req.max_downloads {
        None => None,
        Some(n) if (1..=i64::from(i32::MAX)).contains(&n) => Some(n as i32),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "max_downloads must be at least 1".into(),
            ))
        }
    };
    let Issued { link, url, .. } =
        issue_link(&state, &caller, req.file_id, seconds, max_downloads).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedLink {
            id: link.id,
            url,
            expires_at: link.expires_at,
            max_downloads: link.max_downloads,
        }),
    ))
}

/// A link just made, with the one copy of its URL (the token is not stored).
#[derive(Debug)]
pub struct Issued {
    /// The shared file.
    pub file: FileWithBucket,
    /// The stored link.
    pub link: ShareLink,
    /// `<PUBLIC_BASE_URL>/l/<token>`.
    pub url: String,
}

/// Makes a link to a file the caller sees and that can be served, for `seconds` and at most
/// `max_downloads` clicks (already validated). The API and the page's share form both use it.
pub async fn issue_link(
    state: &AppState,
    caller: &Caller,
    file_id: i64,
    seconds: i64,
    max_downloads: Option<i32>,
) -> Result<Issued, ApiError> {
    let file = visible_file(state, caller, file_id).await?;
    ensure_servable(&file)?;
    let token = auth::generate_link_token();
    let expires_at = Utc::now() + chrono::Duration::seconds(seconds);
    let hash = auth::token_hash(&token);
    let (pool, name) = (&state.pool, &caller.0.name);
    let link =
        catalog::create_link(pool, file.file.id, &hash, name, expires_at, max_downloads).await?;
    let url = format!("{}/l/{token}", state.settings.public_base_url());
    Ok(Issued { file, link, url })
}

/// Query of `GET /v1/links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkQuery {
    /// The file whose links to list.
    pub file_id: i64,
}

/// Answer of `GET /v1/links`.
#[derive(Debug, Serialize)]
pub struct LinkList {
    /// The file's links, newest first (never their tokens).
    pub links: Vec<ShareLink>,
}

/// `GET /v1/links?file_id=`.
pub async fn list_links(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LinkList>, ApiError> {
    let Query(q) = query?;
    let file = visible_file(&state, &caller, q.file_id).await?;
    Ok(Json(LinkList {
        links: catalog::links_of_file(&state.pool, file.file.id).await?,
    }))
}

/// `DELETE /v1/links/{id}`: revokes the link (idempotent).
pub async fn revoke_link(
    State(state): State<AppState>,
    caller: Caller,
    IdParam(id): IdParam,
) -> Result<StatusCode, ApiError> {
    revoke_visible_link(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a link to a file the caller sees (again is fine), and returns it. A link to a file
/// outside the caller's scope does not exist for the caller.
pub async fn revoke_visible_link(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<ShareLink, ApiError> {
    let link = catalog::link_by_id(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("link"))?;
    visible_file(state, caller, link.file_id)
        .await
        .map_err(|_| ApiError::NotFound("link"))?;
    catalog::revoke_link(&state.pool, id).await?;
    Ok(link)
}

/// `GET /l/{token}`: follows a share link: a 302 to a fresh presigned URL, or in proxy mode
/// the object itself. Every request counts as a click, whatever the mode (in proxy mode a
/// resumed download's range request counts too).
pub async fn follow_link(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
    client: Client,
    headers: HeaderMap,
) -> Response {
    let proxy = state.settings.download_mode == DownloadMode::Proxy;
    let (link, clicked) = click(&state, &token).await;
    // A file re-uploaded with SSE-C since the link was made cannot be opened either.
    let clicked = clicked.and_then(|f| ensure_servable(&f).map(|()| f));
    let outcome = match clicked {
        Ok(file) if proxy => stream_object(&state, &file, &headers).await,
        Ok(file) => presign(&state, &file, state.settings.link_presign_ttl.0, None)
            .await
            .map(|u| redirect(u.url)),
        Err(e) => Err(e),
    };
    let label = match &outcome {
        Ok(_) if proxy => "proxied",
        Ok(_) => "redirected",
        Err(ApiError::NotFound(_)) => "not_found",
        Err(ApiError::Conflict { .. }) => "gone",
        Err(_) => "error",
    };
    state
        .metrics
        .link_redirects
        .with_label_values(&[label])
        .inc();
    let actor = link.map_or("link:unknown".into(), |l| format!("link:{}", l.link_id));
    let mut entry = client.entry(link.map(|l| l.file_id), actor, "link", label);
    entry.counts_click = link.filter(|l| l.count_later).map(|l| l.link_id);
    state.audit.record(entry).await;
    match outcome {
        Ok(resp) => resp,
        Err(ApiError::Conflict { message, .. }) => (
            StatusCode::GONE,
            Json(serde_json::json!({"error": "gone", "message": message})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The link a token named, for the audit log.
#[derive(Debug, Clone, Copy)]
struct Named {
    link_id: i64,
    file_id: i64,
    /// The click is still to be counted, with the audit entry (a link without a limit).
    count_later: bool,
}

/// Counts one click of a live link (a link without a download limit: later, with its audit
/// entry) and returns its file; 404 for an unknown token, 409 (410 to the client) for a
/// revoked, expired or used-up link or a deleted file. Also returns the link the token names,
/// if any, for the audit log.
async fn click(state: &AppState, token: &str) -> (Option<Named>, Result<FileWithBucket, ApiError>) {
    // Anything that is not a well-formed token cannot match: skip the database.
    if !auth::is_link_token(token) {
        return (None, Err(ApiError::NotFound("link")));
    }
    let hash = auth::token_hash(token);
    let named = |link_id, file_id, count_later| {
        Some(Named {
            link_id,
            file_id,
            count_later,
        })
    };
    match catalog::open_unlimited_link(&state.pool, &hash).await {
        Ok(Some(c)) => return (named(c.link_id, c.file.file.id, true), Ok(c.file)),
        Ok(None) => {}
        Err(e) => return (None, Err(e.into())),
    }
    let clicked = match catalog::click_link(&state.pool, &hash).await {
        Ok(c) => c,
        Err(e) => return (None, Err(e.into())),
    };
    if let Some(c) = clicked {
        return (named(c.link_id, c.file.file.id, false), Ok(c.file));
    }
    match catalog::link_by_hash(&state.pool, &hash).await {
        Err(e) => (None, Err(e.into())),
        Ok(None) => (None, Err(ApiError::NotFound("link"))),
        Ok(Some(link)) => (
            named(link.id, link.file_id, false),
            Err(ApiError::Conflict {
                code: "gone",
                message: "this link was revoked, has expired, was used up, or its file was deleted"
                    .into(),
            }),
        ),
    }
}
