//! SQL on `share_links`: revocable links, counted atomically per click.

use sqlx::PgPool;

use super::models::*;

/// Creates a share link for a file.
pub async fn create_link(
    pool: &PgPool,
    file_id: i64,
    token_sha256: &str,
    created_by: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
    max_downloads: Option<i32>,
) -> sqlx::Result<ShareLink> {
    sqlx::query_as::<_, ShareLink>(
        "insert into share_links (file_id, token_sha256, created_by, expires_at, max_downloads)
         values ($1, $2, $3, $4, $5) returning *",
    )
    .bind(file_id)
    .bind(token_sha256)
    .bind(created_by)
    .bind(expires_at)
    .bind(max_downloads)
    .fetch_one(pool)
    .await
}

/// The links of one file, newest first.
pub async fn links_of_file(pool: &PgPool, file_id: i64) -> sqlx::Result<Vec<ShareLink>> {
    sqlx::query_as::<_, ShareLink>("select * from share_links where file_id = $1 order by id desc")
        .bind(file_id)
        .fetch_all(pool)
        .await
}

/// One link by id.
pub async fn link_by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<ShareLink>> {
    sqlx::query_as::<_, ShareLink>("select * from share_links where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Revokes a link. Returns false if it was already revoked.
pub async fn revoke_link(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "update share_links set revoked_at = now() where id = $1 and revoked_at is null",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// What makes a link servable, for a query with the link as `l` and its file as `f`: the file
/// is synced, the link neither revoked nor expired. One definition for both ways a click is
/// counted ([`click_link`], [`open_unlimited_link`]).
macro_rules! live_link {
    () => {
        "f.status = 'synced' and l.revoked_at is null and l.expires_at > now()"
    };
}

/// Counts one download of a live link, atomically: the row is updated only while the link is
/// not revoked, not expired, not used up, and its file is synced. Returns the link's id and the
/// file to serve, or None when the click must be refused (see [`link_by_hash`] for why).
pub async fn click_link(pool: &PgPool, token_sha256: &str) -> sqlx::Result<Option<ClickedLink>> {
    sqlx::query_as::<_, ClickedLink>(concat!(
        "with clicked as (
             update share_links l set downloads = l.downloads + 1
             from files f
             where l.token_sha256 = $1 and f.id = l.file_id and ",
        live_link!(),
        "
               and (l.max_downloads is null or l.downloads < l.max_downloads)
             returning l.id as link_id, l.file_id
         )
         select c.link_id, f.*, a.bucket, a.name as agent_name
         from clicked c join files f on f.id = c.file_id join agents a on a.id = f.agent_id",
    ))
    .bind(token_sha256)
    .fetch_optional(pool)
    .await
}

/// A live link without a download limit, and its synced file, read without a write: its
/// click is counted later, with its audit entry ([`NewAuditEntry::counts_click`]). Every
/// click of a popular link used to update the same row, one after the other; `None` for any
/// other link (then [`click_link`] decides).
pub async fn open_unlimited_link(
    pool: &PgPool,
    token_sha256: &str,
) -> sqlx::Result<Option<ClickedLink>> {
    sqlx::query_as::<_, ClickedLink>(concat!(
        "select l.id as link_id, f.*, a.bucket, a.name as agent_name
         from share_links l join files f on f.id = l.file_id join agents a on a.id = f.agent_id
         where l.token_sha256 = $1 and l.max_downloads is null and ",
        live_link!(),
    ))
    .bind(token_sha256)
    .fetch_optional(pool)
    .await
}

/// A link by its token's hash, whatever its state.
pub async fn link_by_hash(pool: &PgPool, token_sha256: &str) -> sqlx::Result<Option<ShareLink>> {
    sqlx::query_as::<_, ShareLink>("select * from share_links where token_sha256 = $1")
        .bind(token_sha256)
        .fetch_optional(pool)
        .await
}
