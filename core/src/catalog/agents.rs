//! SQL on `agents`: one row per agent name (AGENT_ID), refreshed at every start.

use sqlx::PgPool;

use super::models::*;

/// Registers an agent by name, or refreshes its settings and `last_seen_at` if it exists.
pub async fn register_agent(pool: &PgPool, agent: &NewAgent<'_>) -> sqlx::Result<AgentRow> {
    sqlx::query_as::<_, AgentRow>(
        "insert into agents (name, hostname, root, bucket, prefix)
         values ($1, $2, $3, $4, $5)
         on conflict (name) do update set
             hostname = excluded.hostname, root = excluded.root, bucket = excluded.bucket,
             prefix = excluded.prefix, last_seen_at = now()
         returning *",
    )
    .bind(agent.name)
    .bind(agent.hostname)
    .bind(agent.root)
    .bind(agent.bucket)
    .bind(agent.prefix)
    .fetch_one(pool)
    .await
}

/// An agent's row id by name, without registering it (restore, history).
pub async fn agent_id_by_name(pool: &PgPool, name: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar::<_, i64>("select id from agents where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Every agent's name, in order.
pub async fn agent_names(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select name from agents order by name")
        .fetch_all(pool)
        .await
}
