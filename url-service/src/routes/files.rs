//! `POST /v1/files/{id}/url`: a presigned GET URL for one synced file.
//!
//! In: the file id, and an optional JSON body `{"expires_in_seconds", "disposition",
//! "filename"}`. Out: 201 `{"url", "method": "GET", "expires_at"}`. A presign is local HMAC
//! work: no request reaches S3.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use portail_core::catalog::{self, FileQuery, FileStatus, FileWithBucket};
use serde::{Deserialize, Serialize};

use crate::audit::Client;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::{parse_json, split_page, IdParam};
use crate::AppState;

/// SigV4 allows presigned URLs to live at most 7 days.
pub const MAX_EXPIRY_SECONDS: u64 = 604_800;

/// How the browser should treat the download.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Display in the browser when possible.
    Inline,
    /// Save as a file.
    Attachment,
}

/// The optional body of `POST /v1/files/{id}/url`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRequest {
    /// Lifetime in seconds, 1 to 604800. Default: DEFAULT_URL_TTL.
    pub expires_in_seconds: Option<i64>,
    /// Sets `response-content-disposition`.
    pub disposition: Option<Disposition>,
    /// The file name offered to the browser. Default: the file's own name.
    pub filename: Option<String>,
    /// A past version to sign (an `id` from `GET /v1/files/{id}/versions`). Default: the
    /// current content.
    pub version_id: Option<i64>,
}

/// The answer: a URL anyone holding it can GET until `expires_at`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PresignedUrl {
    /// The presigned URL.
    pub url: String,
    /// Always `GET`.
    pub method: String,
    /// When the signature stops working.
    pub expires_at: DateTime<Utc>,
}

/// Longest search text of `GET /v1/files?q=`.
pub const MAX_QUERY_CHARS: usize = 256;

/// Largest page of `GET /v1/files`.
pub const MAX_PAGE: i64 = 1000;

/// Query parameters of `GET /v1/files`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only this agent's files.
    pub agent: Option<String>,
    /// Only paths starting with this (relative, '/'-separated).
    pub path_prefix: Option<String>,
    /// `synced` (default), `pending`, `deleted`, `error`, or `any`.
    pub status: Option<String>,
    /// Only paths containing this text, case-insensitively, anywhere (1 to 256 characters).
    pub q: Option<String>,
    /// Page size, 1 to 1000. Default 100.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of files.
#[derive(Debug, Serialize)]
pub struct FilePage {
    /// The files, in a stable order.
    pub files: Vec<FileWithBucket>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/files`.
pub async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FilePage>, ApiError> {
    let Query(p) = params?;
    check_filters(&p)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after_id =
        match p.cursor.as_deref() {
            None | Some("") => 0,
            Some(c) => c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::BadRequest("cursor is not one this API returned".into())
            })?,
        };
    let status = match p.status.as_deref().unwrap_or("synced") {
        "any" => None,
        s @ ("synced" | "pending" | "deleted" | "error") => Some(s),
        _ => {
            return Err(ApiError::BadRequest(
                "status must be one of synced, pending, deleted, error, any".into(),
            ))
        }
    };
    let q = FileQuery {
        agent: p.agent.as_deref(),
        path_prefix: p.path_prefix.as_deref(),
        scope_agent: caller.0.agent_name.as_deref(),
        scope_prefix: caller.0.path_prefix.as_deref(),
        status,
        q: p.q.as_deref().filter(|q| !q.is_empty()),
        after_id,
        limit: limit + 1,
    };
    let mut files = catalog::list_files(&state.pool, &q).await?;
    let next_cursor = split_page(&mut files, limit)
        .then(|| files.last().map(|f| f.file.id.to_string()))
        .flatten();
    Ok(Json(FilePage { files, next_cursor }))
}

/// Refuses filters that can never match, with a message saying why, rather than answering an
/// empty page: PostgreSQL text cannot hold NUL, and catalog paths are relative and normalised
/// (no leading `/`, no `..`), so `/docs` or `../` is a mistake worth reporting.
fn check_filters(p: &ListParams) -> Result<(), ApiError> {
    if p.q
        .as_deref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "q must be at most {MAX_QUERY_CHARS} characters"
        )));
    }
    for (name, value) in [
        ("agent", &p.agent),
        ("path_prefix", &p.path_prefix),
        ("q", &p.q),
    ] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(ApiError::BadRequest(format!("{name} must not contain NUL")));
        }
    }
    if let Some(prefix) = p.path_prefix.as_deref() {
        if prefix.starts_with('/') || prefix.split('/').any(|c| c == "..") {
            return Err(ApiError::BadRequest(
                "path_prefix is relative to the synced root, e.g. `docs/`; a leading `/` or a `..` component never matches".into(),
            ));
        }
    }
    Ok(())
}

/// Answer of `GET /v1/files/{id}`.
#[derive(Debug, Serialize)]
pub struct FileDetail {
    /// The catalog row.
    pub file: FileWithBucket,
    /// Its most recent events, newest first.
    pub events: Vec<catalog::FileEvent>,
}

/// How many events `GET /v1/files/{id}` returns.
pub const RECENT_EVENTS: i64 = 50;

/// `GET /v1/files/{id}`: the row and its recent history.
pub async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    IdParam(id): IdParam,
) -> Result<Json<FileDetail>, ApiError> {
    let file = visible_file(&state, &caller, id).await?;
    let events = catalog::events_of_file(&state.pool, id, RECENT_EVENTS).await?;
    Ok(Json(FileDetail { file, events }))
}

/// Loads a file the caller may see, or 404.
pub async fn visible_file(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<FileWithBucket, ApiError> {
    catalog::file_by_id(&state.pool, id)
        .await?
        .filter(|f| caller.can_see(f))
        .ok_or(ApiError::NotFound("file"))
}

/// The file's own name: the last segment of its path.
pub fn file_name(file: &FileWithBucket) -> &str {
    file.file.path.rsplit('/').next().unwrap_or_default()
}

/// The `Content-Disposition` value for a download, safe for any file name (RFC 6266/5987).
pub fn content_disposition(kind: Disposition, filename: &str) -> String {
    let kind = match kind {
        Disposition::Inline => "inline",
        Disposition::Attachment => "attachment",
    };
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Signs a GET for the file's object.
pub async fn presign(
    state: &AppState,
    file: &FileWithBucket,
    expires_in: Duration,
    disposition: Option<String>,
) -> Result<PresignedUrl, ApiError> {
    let object = (file.file.s3_key.clone(), None);
    presign_object(state, &file.bucket, &object, expires_in, disposition).await
}

/// Signs a GET for an object (at an S3 version, when given).
pub async fn presign_object(
    state: &AppState,
    bucket: &str,
    (key, version): &(String, Option<String>),
    expires_in: Duration,
    disposition: Option<String>,
) -> Result<PresignedUrl, ApiError> {
    let config = PresigningConfig::expires_in(expires_in)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let req = state
        .presigner
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.clone())
        .set_response_content_disposition(disposition)
        .presigned(config)
        .await
        .map_err(|e| {
            tracing::error!(%key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "presign failed");
            ApiError::Internal
        })?;
    state.metrics.presigned_issued.inc();
    Ok(PresignedUrl {
        url: req.uri().to_string(),
        method: "GET".into(),
        expires_at: Utc::now() + expires_in,
    })
}

/// Refuses files whose object cannot be served: not synced, deleted, or encrypted with a
/// customer key (SSE-C), which a browser cannot send and this service does not hold.
pub fn ensure_servable(file: &FileWithBucket) -> Result<(), ApiError> {
    if file.file.encryption.as_deref() == Some("SSE-C") {
        return Err(sse_c_conflict());
    }
    let class = file.file.storage_class.as_deref();
    if class.is_some_and(|c| catalog::ARCHIVE_CLASSES.contains(&c)) {
        return Err(ApiError::Conflict {
            code: "file_archived",
            message: "the object is in an archive storage class (GLACIER, DEEP_ARCHIVE); S3 serves it only after a RestoreObject".into(),
        });
    }
    match file.file.status {
        FileStatus::Synced => Ok(()),
        FileStatus::Deleted => Err(ApiError::Conflict {
            code: "file_deleted",
            message: "the file was deleted".into(),
        }),
        FileStatus::Pending | FileStatus::Error => Err(ApiError::Conflict {
            code: "file_not_synced",
            message: "the file is not synced yet".into(),
        }),
    }
}

/// The object to sign for one version of `file`: its history copy, or the object at its S3
/// version; the current version is the file's object. 404 for a version of another file;
/// 409 when its bytes were not kept, or are encrypted with SSE-C.
pub async fn version_object(
    state: &AppState,
    file: &FileWithBucket,
    version_id: i64,
) -> Result<(String, Option<String>), ApiError> {
    let v = catalog::version_by_id(&state.pool, version_id)
        .await?
        .filter(|v| v.file_id == file.file.id)
        .ok_or(ApiError::NotFound("version"))?;
    if v.encryption.as_deref() == Some("SSE-C") {
        return Err(sse_c_conflict());
    }
    match (v.valid_to, v.history_key, v.version_id) {
        (_, Some(h), _) => Ok((h, None)),
        (_, None, Some(s3v)) => Ok((v.s3_key, Some(s3v))),
        (None, None, None) => Ok((v.s3_key, None)),
        (Some(_), None, None) => Err(ApiError::Conflict {
            code: "version_not_kept",
            message: "this version's content was not kept (HISTORY=off, or purged after HISTORY_RETENTION)".into(),
        }),
    }
}

/// The 409 for an object encrypted with a customer key.
pub fn sse_c_conflict() -> ApiError {
    ApiError::Conflict {
        code: "file_sse_c",
        message: "the object is encrypted with a customer-provided key (SSE-C); a browser cannot send that key, so no link can open it; read it with a client that holds the key".into(),
    }
}

/// `POST /v1/files/{id}/url`. Every answer, refusals included, goes to the audit log (channel
/// `api`, actor the token's name); a request without a valid token never reaches here.
pub async fn create_url(
    State(state): State<AppState>,
    caller: Caller,
    client: Client,
    IdParam(id): IdParam,
    body: Bytes,
) -> Result<(StatusCode, Json<PresignedUrl>), ApiError> {
    let answer = sign_url(&state, &caller, id, &body).await;
    let outcome = audit_outcome(answer.as_ref().map(|_| "issued"));
    let entry = client.entry(Some(id), caller.0.name.clone(), "api", outcome);
    state.audit.record(entry).await;
    Ok((StatusCode::CREATED, Json(answer?)))
}

/// The audit log's `outcome` for an answer.
pub fn audit_outcome(answer: Result<&'static str, &ApiError>) -> &'static str {
    match answer {
        Ok(done) => done,
        Err(ApiError::NotFound(_)) => "not_found",
        Err(ApiError::Conflict { .. } | ApiError::BadRequest(_)) => "refused",
        Err(_) => "error",
    }
}

/// What `POST /v1/files/{id}/url` answers, before it is recorded.
async fn sign_url(
    state: &AppState,
    caller: &Caller,
    id: i64,
    body: &[u8],
) -> Result<PresignedUrl, ApiError> {
    let req: UrlRequest = if body.iter().all(u8::is_ascii_whitespace) {
        UrlRequest::default()
    } else {
        parse_json(body)?
    };
    let seconds = match req.expires_in_seconds {
        None => state.settings.default_url_ttl.0.as_secs(),
        Some(s) if (1..=MAX_EXPIRY_SECONDS as i64).contains(&s) => s as u64,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "expires_in_seconds must be between 1 and {MAX_EXPIRY_SECONDS}"
            )))
        }
    };
    let file = visible_file(state, caller, id).await?;
    // A past version can be served even once the file is deleted: that is what it is for.
    let object = match req.version_id {
        Some(v) => version_object(state, &file, v).await?,
        None => {
            ensure_servable(&file)?;
            (file.file.s3_key.clone(), None)
        }
    };
    let disposition = match (req.disposition, req.filename) {
        (None, None) => None,
        (kind, name) => {
            let name = name.unwrap_or_else(|| file_name(&file).to_string());
            Some(content_disposition(
                kind.unwrap_or(Disposition::Attachment),
                &name,
            ))
        }
    };
    let expires = Duration::from_secs(seconds);
    presign_object(state, &file.bucket, &object, expires, disposition).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_is_safe_for_any_name() {
        assert_eq!(
            content_disposition(Disposition::Attachment, "a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        let v = content_disposition(Disposition::Inline, "é\"\r\n.pdf");
        assert!(v.starts_with("inline; filename=\"____.pdf\""), "{v}");
        assert!(v.ends_with("%C3%A9%22%0D%0A.pdf"), "{v}");
        assert!(!v.contains('\n'));
    }
}
