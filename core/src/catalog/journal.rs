//! SQL on `multipart_uploads`: the journal of multipart uploads in flight, so a crash never
//! leaves stored parts behind.

use sqlx::PgPool;

/// Journals a multipart upload before any part is sent.
pub async fn begin_multipart(
    pool: &PgPool,
    agent_id: i64,
    s3_key: &str,
    upload_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("insert into multipart_uploads (agent_id, s3_key, upload_id) values ($1, $2, $3)")
        .bind(agent_id)
        .bind(s3_key)
        .bind(upload_id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Removes a multipart upload from the journal once it completed or was aborted.
pub async fn end_multipart(pool: &PgPool, upload_id: &str) -> sqlx::Result<()> {
    sqlx::query("delete from multipart_uploads where upload_id = $1")
        .bind(upload_id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The journaled multipart uploads of an agent: `(s3_key, upload_id)`.
pub async fn open_multiparts(pool: &PgPool, agent_id: i64) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as::<_, (String, String)>(
        "select s3_key, upload_id from multipart_uploads where agent_id = $1 order by id",
    )
    .bind(agent_id)
    .fetch_all(pool)
    .await
}
