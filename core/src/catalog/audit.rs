//! SQL on `audit_log`: one row per presigned URL issued and per share-link click.
//!
//! In: batches of [`NewAuditEntry`] from the url-service's audit writer. Out: pages of
//! [`AuditEntry`], newest first (keyset on `id`), and the purge of entries past retention.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::models::*;

/// Writes a batch of entries in one statement, which also adds their clicks to the
/// `downloads` of the links they count ([`NewAuditEntry::counts_click`]).
pub async fn record_audit(pool: &PgPool, batch: &[NewAuditEntry]) -> sqlx::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewAuditEntry) -> Option<String>| -> Vec<Option<String>> {
        batch.iter().map(f).collect()
    };
    sqlx::query(
        "with counted as (
             update share_links l set downloads = l.downloads + c.clicks
             from (select id, count(*) as clicks from unnest($8::int8[]) as u(id)
                   where id is not null group by id) c
             where l.id = c.id
         )
         insert into audit_log (at, file_id, actor, channel, outcome, client_ip, user_agent)
         select at, file_id, actor, channel, outcome, client_ip::inet, user_agent
         from unnest($1::timestamptz[], $2::int8[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[])
              as t(at, file_id, actor, channel, outcome, client_ip, user_agent)",
    )
    .bind(batch.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind(batch.iter().map(|e| e.file_id).collect::<Vec<_>>())
    .bind(col(|e| Some(e.actor.clone())))
    .bind(col(|e| Some(e.channel.to_string())))
    .bind(col(|e| Some(e.outcome.to_string())))
    .bind(col(|e| e.client_ip.map(|ip| ip.to_string())))
    .bind(col(|e| e.user_agent.clone()))
    .bind(batch.iter().map(|e| e.counts_click).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

/// A page of entries, newest first: those with an id below `before_id` (0: from the newest)
/// that match every filter given. A scoped token sees only entries about files in its scope
/// (so none about a link token that matched nothing).
pub async fn audit_page(pool: &PgPool, q: &AuditQuery<'_>) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as::<_, AuditEntry>(
        "select l.id, l.at, l.file_id, l.actor, l.channel, l.outcome,
                host(l.client_ip) as client_ip, l.user_agent
         from audit_log l
         left join files f on f.id = l.file_id
         left join agents a on a.id = f.agent_id
         where ($1::int8 is null or l.file_id = $1)
           and ($2::text is null or l.actor = $2)
           and ($3::timestamptz is null or l.at >= $3)
           and ($4::int8 = 0 or l.id < $4)
           and ($6::text is null or a.name = $6)
           and ($7::text is null or starts_with(f.path, $7))
         order by l.id desc
         limit $5",
    )
    .bind(q.file_id)
    .bind(q.actor)
    .bind(q.since)
    .bind(q.before_id)
    .bind(q.limit)
    .bind(q.scope_agent)
    .bind(q.scope_prefix)
    .fetch_all(pool)
    .await
}

/// Deletes the entries older than `before`; returns how many.
pub async fn purge_audit(pool: &PgPool, before: DateTime<Utc>) -> sqlx::Result<u64> {
    let r = sqlx::query("delete from audit_log where at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
