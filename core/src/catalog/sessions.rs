//! SQL on `ui_sessions`: the web pages' sign-in sessions.
//!
//! In: a session cookie's SHA-256, the API token it was opened with. Out: the session's token
//! and CSRF secret while the session is unexpired and its token unrevoked.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::models::*;

/// Opens a session for a token.
pub async fn create_session(
    pool: &PgPool,
    id_sha256: &str,
    token_id: i64,
    csrf: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into ui_sessions (id_sha256, token_id, csrf, expires_at) values ($1, $2, $3, $4)",
    )
    .bind(id_sha256)
    .bind(token_id)
    .bind(csrf)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The live session with this hash: unexpired, and its token not revoked.
pub async fn live_session(pool: &PgPool, id_sha256: &str) -> sqlx::Result<Option<UiSession>> {
    sqlx::query_as::<_, UiSession>(
        "select s.csrf, t.*
         from ui_sessions s join api_tokens t on t.id = s.token_id
         where s.id_sha256 = $1 and s.expires_at > now() and t.revoked_at is null",
    )
    .bind(id_sha256)
    .fetch_optional(pool)
    .await
}

/// Ends a session (sign out).
pub async fn delete_session(pool: &PgPool, id_sha256: &str) -> sqlx::Result<()> {
    sqlx::query("delete from ui_sessions where id_sha256 = $1")
        .bind(id_sha256)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes expired sessions; returns how many.
pub async fn purge_sessions(pool: &PgPool) -> sqlx::Result<u64> {
    let r = sqlx::query("delete from ui_sessions where expires_at <= now()")
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
