//! SQL on `unsyncable_entries`: what the last pass could not sync because of its name.

use sqlx::PgPool;

/// Replaces an agent's list of unsyncable entries with this pass's: `(path, raw_hex, reason)`.
pub async fn replace_unsyncable(
    pool: &PgPool,
    agent_id: i64,
    entries: &[(String, Option<String>, &'static str)],
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("delete from unsyncable_entries where agent_id = $1")
        .bind(agent_id)
        .execute(&mut *tx)
        .await?;
    if !entries.is_empty() {
        let path: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let hex: Vec<Option<&str>> = entries.iter().map(|e| e.1.as_deref()).collect();
        let reason: Vec<&str> = entries.iter().map(|e| e.2).collect();
        sqlx::query(
            "insert into unsyncable_entries (agent_id, path, raw_hex, reason)
             select $1, * from unnest($2::text[], $3::text[], $4::text[])",
        )
        .bind(agent_id)
        .bind(&path)
        .bind(&hex)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// An agent's unsyncable entries: `(path, raw_hex, reason)`.
pub async fn unsyncable_entries(
    pool: &PgPool,
    agent_id: i64,
) -> sqlx::Result<Vec<(String, Option<String>, String)>> {
    sqlx::query_as::<_, (String, Option<String>, String)>(
        "select path, raw_hex, reason from unsyncable_entries where agent_id = $1 order by id",
    )
    .bind(agent_id)
    .fetch_all(pool)
    .await
}
