//! Rows of the catalog tables, and the inputs of the batched writes.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The state of a file row. Stored as text, checked by the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Seen locally, not yet in S3 with its current content.
    Pending,
    /// S3 holds exactly the content described by the row.
    Synced,
    /// Gone locally; the object was deleted (or kept, with DELETE_MODE=keep).
    Deleted,
    /// The last attempt failed; `last_error` says why.
    Error,
}

/// A row of `agents` (the running agent is `portail_agent::Agent`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AgentRow {
    pub id: i64,
    pub name: String,
    pub hostname: String,
    pub root: String,
    pub bucket: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// What an agent says about itself when it starts.
#[derive(Debug, Clone)]
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub hostname: &'a str,
    pub root: &'a str,
    pub bucket: &'a str,
    pub prefix: &'a str,
}

/// A row of `files`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct FileRow {
    pub id: i64,
    pub agent_id: i64,
    pub path: String,
    pub s3_key: String,
    pub size_bytes: i64,
    pub mtime: DateTime<Utc>,
    pub md5: Option<String>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub status: FileStatus,
    pub last_error: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub inode: Option<i64>,
    pub ctime: Option<DateTime<Utc>>,
    /// How the object is encrypted at rest: None (bucket default), `AES256`, `aws:kms`, `SSE-C`.
    #[sqlx(default)]
    pub encryption: Option<String>,
    /// The storage class the object was written in (None: the bucket's default).
    #[sqlx(default)]
    pub storage_class: Option<String>,
    /// When the current bytes were first recorded under this key (kept across changes of
    /// mtime or mode alone): the time in a history copy's key.
    #[sqlx(default)]
    pub content_since: Option<DateTime<Utc>>,
}

/// A file row joined with its agent's bucket and name.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FileWithBucket {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub file: FileRow,
    pub bucket: String,
    pub agent_name: String,
}

/// A share link just clicked, and the file it serves.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClickedLink {
    pub link_id: i64,
    #[sqlx(flatten)]
    pub file: FileWithBucket,
}

/// A row of `file_events`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FileEvent {
    pub id: i64,
    pub file_id: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub details: serde_json::Value,
}

/// The kind of a `file_events` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// New content reached S3 for a path seen for the first time (or again after a delete).
    Uploaded,
    /// Changed content reached S3, or only the metadata changed.
    Updated,
    /// The file is gone locally and its object was handled per DELETE_MODE.
    Deleted,
    /// The object was copied to a new key server-side.
    Renamed,
    /// An attempt failed.
    Failed,
}

impl EventKind {
    /// The value stored in `file_events.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Uploaded => "uploaded",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
            EventKind::Renamed => "renamed",
            EventKind::Failed => "failed",
        }
    }
}

/// One file whose content S3 now holds, for [`super::record_synced`].
#[derive(Debug, Clone)]
pub struct SyncedFile {
    pub path: String,
    pub s3_key: String,
    pub size_bytes: i64,
    pub mtime: DateTime<Utc>,
    pub md5: String,
    /// None when only the metadata changed: the stored ETag stays.
    pub etag: Option<String>,
    pub content_type: String,
    pub inode: Option<i64>,
    pub ctime: Option<DateTime<Utc>>,
    /// How the object is encrypted at rest (kept from the row when only metadata changed).
    pub encryption: Option<String>,
    pub event: EventKind,
    pub details: serde_json::Value,
    /// `st_mode`, uid and gid, for the version.
    pub posix: Option<PosixIds>,
    /// The S3 VersionId of the new object, when the bucket keeps versions.
    pub version_id: Option<String>,
    /// Where the replaced content was copied (HISTORY=prefix), for the version it ends.
    pub history_key: Option<String>,
    /// The storage class the object is in (kept from the row when only metadata changed and
    /// nothing was written).
    pub storage_class: Option<String>,
}

/// Storage classes whose objects S3 serves only after a RestoreObject.
pub const ARCHIVE_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE"];

/// A file's mode and owner, as the versions keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosixIds {
    /// `st_mode`, type bits included.
    pub mode: i32,
    pub uid: i64,
    pub gid: i64,
}

/// A file gone locally whose row becomes `deleted`, for [`super::record_deleted`].
#[derive(Debug, Clone)]
pub struct DeletedFile {
    pub path: String,
    pub details: serde_json::Value,
    /// Where its content was copied (HISTORY=prefix) before the object was deleted.
    pub history_key: Option<String>,
}

/// A version read back from the bucket, for [`super::record_rebuilt`].
#[derive(Debug, Clone)]
pub struct RebuiltVersion {
    pub path: String,
    /// The path's key (where a current version's bytes are).
    pub s3_key: String,
    /// A past version's HISTORY=prefix copy.
    pub history_key: Option<String>,
    /// The S3 version holding the bytes, when the bucket keeps versions.
    pub version_id: Option<String>,
    pub content_type: String,
    pub size_bytes: i64,
    pub md5: String,
    pub mtime: DateTime<Utc>,
    pub mode: Option<i32>,
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub etag: Option<String>,
}

/// A row of `file_versions`: one stored content of a path and when it was current.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct VersionRow {
    pub id: i64,
    pub file_id: i64,
    pub agent_id: i64,
    pub path: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub size_bytes: i64,
    pub md5: String,
    pub mtime: DateTime<Utc>,
    pub mode: Option<i32>,
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub s3_key: String,
    pub version_id: Option<String>,
    pub history_key: Option<String>,
    pub encryption: Option<String>,
    pub event: String,
    pub ended_by: Option<String>,
}

/// One file that could not be synced, for [`super::record_failed`].
#[derive(Debug, Clone)]
pub struct FailedFile {
    pub path: String,
    pub s3_key: String,
    pub size_bytes: i64,
    pub mtime: DateTime<Utc>,
    pub error: String,
    /// The pipeline stage that failed: `hash`, `transfer`, ...
    pub stage: &'static str,
}

/// A file whose object may not match any content we can vouch for (it changed or vanished
/// while being uploaded), for [`super::record_pending`]: the row is kept (or created) as
/// `pending` with no MD5, so the object stays tracked and the next pass re-uploads or deletes it.
#[derive(Debug, Clone)]
pub struct PendingFile {
    pub path: String,
    pub s3_key: String,
    pub size_bytes: i64,
    pub mtime: DateTime<Utc>,
    pub reason: String,
    /// Whether an object was written over the key: the current version (if any) ends.
    pub wrote: bool,
    /// Where the replaced content was copied (HISTORY=prefix), for the version it ends.
    pub history_key: Option<String>,
}

/// Aggregates over one agent's rows.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct AgentTotals {
    /// Rows with status `synced`.
    pub synced_files: i64,
    /// Their total size.
    pub synced_bytes: i64,
    /// Rows with status `pending` or `error`.
    pub unsynced_files: i64,
}

/// A row of `api_tokens` (the token itself is never stored).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    #[serde(skip)]
    pub token_sha256: String,
    pub path_prefix: Option<String>,
    pub agent_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Filters for [`super::list_files`].
#[derive(Debug, Clone, Default)]
pub struct FileQuery<'a> {
    /// Only this agent's files.
    pub agent: Option<&'a str>,
    /// Only paths starting with this.
    pub path_prefix: Option<&'a str>,
    /// The token's agent scope.
    pub scope_agent: Option<&'a str>,
    /// The token's path scope.
    pub scope_prefix: Option<&'a str>,
    /// Only this status (`pending`, `synced`, `deleted`, `error`); None: any.
    pub status: Option<&'a str>,
    /// Only paths containing this, case-insensitively (a trigram index serves it).
    pub q: Option<&'a str>,
    /// Keyset cursor: only ids above this.
    pub after_id: i64,
    /// Page size.
    pub limit: i64,
}

/// A row of `share_links` (the link token itself is never stored).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ShareLink {
    pub id: i64,
    pub file_id: i64,
    #[serde(skip)]
    pub token_sha256: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_downloads: Option<i32>,
    pub downloads: i32,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An audit entry to write: a presigned URL issued, or a share-link click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The file, once known (an unknown link names none).
    pub file_id: Option<i64>,
    /// The API token's name, or `link:<id>`.
    pub actor: String,
    /// `api`, `ui` or `link`.
    pub channel: &'static str,
    /// What was answered: issued, redirected, proxied, not_found, gone, refused, error.
    pub outcome: &'static str,
    /// The client's address (X-Forwarded-For only from TRUSTED_PROXIES).
    pub client_ip: Option<std::net::IpAddr>,
    /// The User-Agent header, cut to 512 bytes.
    pub user_agent: Option<String>,
    /// A share link whose `downloads` this entry adds one to, in the batch that writes it:
    /// how clicks of links without `max_downloads` are counted (a link with a limit is
    /// counted atomically at the click, so that the limit holds).
    pub counts_click: Option<i64>,
}

/// A row of `audit_log`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub file_id: Option<i64>,
    pub actor: String,
    pub channel: String,
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Filters and page of [`super::audit_page`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery<'a> {
    /// Only entries about this file.
    pub file_id: Option<i64>,
    /// Only entries by this actor.
    pub actor: Option<&'a str>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// The token's agent scope.
    pub scope_agent: Option<&'a str>,
    /// The token's path scope.
    pub scope_prefix: Option<&'a str>,
    /// Keyset cursor: only ids below this (0: none).
    pub before_id: i64,
    /// Page size.
    pub limit: i64,
}

/// A live web session: the CSRF secret its forms carry, and the API token it acts as.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UiSession {
    pub csrf: String,
    #[sqlx(flatten)]
    pub token: ApiToken,
}

/// One page of a folder, for the web pages.
#[derive(Debug, Clone, Default)]
pub struct FolderQuery<'a> {
    /// The agent.
    pub agent_id: i64,
    /// The folder: '' (the root) or a path ending in '/'.
    pub dir: &'a str,
    /// The token's path scope.
    pub scope_prefix: Option<&'a str>,
    /// `name`, `size` (largest first) or `time` (newest first).
    pub sort: &'a str,
    /// Keyset cursor: the last row of the previous page (its sort key and id).
    pub after: Option<(String, i64)>,
    /// Page size.
    pub limit: i64,
}
