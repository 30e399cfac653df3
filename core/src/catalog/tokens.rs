//! SQL on `api_tokens`: tokens are stored and looked up only by their SHA-256.

use sqlx::PgPool;

use super::models::*;

/// Stores a new API token by its hash. Fails with a unique violation if the name is taken.
pub async fn create_token(
    pool: &PgPool,
    name: &str,
    token_sha256: &str,
    path_prefix: Option<&str>,
    agent_name: Option<&str>,
) -> sqlx::Result<ApiToken> {
    sqlx::query_as::<_, ApiToken>(
        "insert into api_tokens (name, token_sha256, path_prefix, agent_name)
         values ($1, $2, $3, $4) returning *",
    )
    .bind(name)
    .bind(token_sha256)
    .bind(path_prefix)
    .bind(agent_name)
    .fetch_one(pool)
    .await
}

/// Every API token, oldest first.
pub async fn list_tokens(pool: &PgPool) -> sqlx::Result<Vec<ApiToken>> {
    sqlx::query_as::<_, ApiToken>("select * from api_tokens order by id")
        .fetch_all(pool)
        .await
}

/// Revokes a token by name. Returns whether a live token had that name.
pub async fn revoke_token(pool: &PgPool, name: &str) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "update api_tokens set revoked_at = now() where name = $1 and revoked_at is null",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The live (not revoked) token with this hash, if any.
pub async fn token_by_hash(pool: &PgPool, token_sha256: &str) -> sqlx::Result<Option<ApiToken>> {
    sqlx::query_as::<_, ApiToken>(
        "select * from api_tokens where token_sha256 = $1 and revoked_at is null",
    )
    .bind(token_sha256)
    .fetch_optional(pool)
    .await
}
