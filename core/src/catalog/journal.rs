//! SQL on `multipart_uploads`: the journal of multipart uploads in flight, so a crash never
//! leaves stored parts behind. A row is written before CreateMultipartUpload is sent (the
//! intent, no upload id yet), given the upload id once S3 answers, and removed once the upload
//! completed or was aborted.

use sqlx::PgPool;

/// A journal row a previous run left: an upload to abort, or only the intent to create one.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenMultipart {
    /// The row.
    pub id: i64,
    /// The object key.
    pub s3_key: String,
    /// None: the run stopped while CreateMultipartUpload was in flight.
    pub upload_id: Option<String>,
}

/// Journals the intent to create a multipart upload for `s3_key`; returns the row id.
pub async fn intend_multipart(pool: &PgPool, agent_id: i64, s3_key: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into multipart_uploads (agent_id, s3_key) values ($1, $2) returning id",
    )
    .bind(agent_id)
    .bind(s3_key)
    .fetch_one(pool)
    .await
}

/// Records the upload id S3 gave an intent, before any part is sent.
pub async fn begin_multipart(pool: &PgPool, id: i64, upload_id: &str) -> sqlx::Result<()> {
    sqlx::query("update multipart_uploads set upload_id = $2 where id = $1")
        .bind(id)
        .bind(upload_id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Removes a journal row once its upload completed or was aborted.
pub async fn end_multipart(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("delete from multipart_uploads where id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The journal rows of an agent, oldest first.
pub async fn open_multiparts(pool: &PgPool, agent_id: i64) -> sqlx::Result<Vec<OpenMultipart>> {
    sqlx::query_as::<_, OpenMultipart>(
        "select id, s3_key, upload_id from multipart_uploads where agent_id = $1 order by id",
    )
    .bind(agent_id)
    .fetch_all(pool)
    .await
}
