//! SQL on `file_events`: a file's history, newest first. (Events are written together with
//! their `files` change, in [`super::files`].)

use sqlx::PgPool;

use super::models::*;

/// The most recent events of one file, newest first.
pub async fn events_of_file(
    pool: &PgPool,
    file_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<FileEvent>> {
    sqlx::query_as::<_, FileEvent>(
        "select * from file_events where file_id = $1 order by at desc, id desc limit $2",
    )
    .bind(file_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
