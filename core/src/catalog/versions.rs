//! SQL on `file_versions`: what restore, `history PATH`, the purge and the url-service read.
//! (The rows are written with the `files` rows, in `files.rs`.)
//!
//! In: a pool, an agent id, a time. Out: versions, in path order for a restore (keyset pages,
//! so a restore of a million files holds one page), newest first for one file.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::models::VersionRow;

/// Which versions a restore selects.
#[derive(Debug, Clone)]
pub struct VersionQuery<'a> {
    /// The agent.
    pub agent_id: i64,
    /// The time the tree is restored as of.
    pub at: DateTime<Utc>,
    /// Paths, or directories (everything below them); empty: the whole tree.
    pub paths: &'a [String],
    /// Keyset cursor: only paths after this one (bytewise).
    pub after_path: Option<&'a str>,
    /// Page size.
    pub limit: i64,
}

/// One page of the versions current at `q.at`, one per path, in bytewise path order.
///
/// Two indexed parts: the versions still current (the partial index on current versions, in
/// path order), and those that ended after `at` (the index on `valid_to`), so the cost follows
/// the tree's size plus the changes since `at`, never the whole history.
pub async fn versions_at(pool: &PgPool, q: &VersionQuery<'_>) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as::<_, VersionRow>(
        r#"select * from (
               select * from file_versions
               where agent_id = $1 and valid_to is null and valid_from <= $2
                 and ($3::text is null or path collate "C" > $3::text collate "C")
               union all
               select * from file_versions
               where agent_id = $1 and valid_to > $2 and valid_from <= $2
                 and ($3::text is null or path collate "C" > $3::text collate "C")
           ) v
           where cardinality($4::text[]) = 0 or path = any($4)
              or exists (select 1 from unnest($4::text[]) p where starts_with(v.path, p || '/'))
           order by path collate "C"
           limit $5"#,
    )
    .bind(q.agent_id)
    .bind(q.at)
    .bind(q.after_path)
    .bind(q.paths)
    .bind(q.limit)
    .fetch_all(pool)
    .await
}

/// When the agent's first version began (None: nothing was ever synced).
pub async fn first_version_at(pool: &PgPool, agent_id: i64) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
        "select min(valid_from) from file_versions where agent_id = $1",
    )
    .bind(agent_id)
    .fetch_one(pool)
    .await
}

/// Whether any version ever had this path, or a path below it (a directory).
pub async fn path_ever_existed(pool: &PgPool, agent_id: i64, path: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar::<_, bool>(
        r#"select exists (select 1 from files where agent_id = $1
                          and (path = $2 or starts_with(path, $2 || '/')))"#,
    )
    .bind(agent_id)
    .bind(path)
    .fetch_one(pool)
    .await
}

/// Every version of one path of an agent, newest first.
pub async fn versions_of_path(
    pool: &PgPool,
    agent_id: i64,
    path: &str,
) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as::<_, VersionRow>(
        "select v.* from file_versions v join files f on f.id = v.file_id
         where f.agent_id = $1 and f.path = $2 order by v.valid_from desc, v.id desc",
    )
    .bind(agent_id)
    .bind(path)
    .fetch_all(pool)
    .await
}

/// Every version of one file row, newest first.
pub async fn versions_of_file(pool: &PgPool, file_id: i64) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as::<_, VersionRow>(
        "select * from file_versions where file_id = $1 order by valid_from desc, id desc",
    )
    .bind(file_id)
    .fetch_all(pool)
    .await
}

/// One version by id.
pub async fn version_by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<VersionRow>> {
    sqlx::query_as::<_, VersionRow>("select * from file_versions where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Up to `limit` versions of an agent that ended before `cutoff` (expired history).
pub async fn expired_versions(
    pool: &PgPool,
    agent_id: i64,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as::<_, VersionRow>(
        "select * from file_versions
         where agent_id = $1 and valid_to is not null and valid_to < $2
         order by valid_to limit $3",
    )
    .bind(agent_id)
    .bind(cutoff)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Forgets versions (their bytes are gone).
pub async fn delete_versions(pool: &PgPool, ids: &[i64]) -> sqlx::Result<u64> {
    let r = sqlx::query("delete from file_versions where id = any($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// Where the bytes of an ended version without a copy of its own are: the history copy of the
/// first later version of the same file with the same MD5. A version ended by a change of mtime
/// or mode alone shares its bytes with the next, and only the last one is copied aside.
pub async fn shared_history_key(pool: &PgPool, v: &VersionRow) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar::<_, String>(
        "select history_key from file_versions
         where file_id = $1 and md5 = $2 and valid_from > $3 and history_key is not null
         order by valid_from limit 1",
    )
    .bind(v.file_id)
    .bind(&v.md5)
    .bind(v.valid_from)
    .fetch_optional(pool)
    .await
}

/// Writes versions read back from the bucket into an empty catalog (`rebuild-catalog`): each
/// path's `files` row (with `status`: `synced` for current objects, `deleted` for a path that
/// only has history; an existing row is kept), and one version per entry.
// Long by design: one statement (unnest, then files, then file_versions, as CTEs) whose SQL
// is most of its length; a split would need a transaction around what one statement does.
pub async fn record_rebuilt(
    pool: &PgPool,
    agent_id: i64,
    status: &str,
    batch: &[super::RebuiltVersion],
) -> sqlx::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&super::RebuiltVersion) -> Option<String>| -> Vec<Option<String>> {
        batch.iter().map(f).collect()
    };
    let r = sqlx::query(
        r#"with input as (
               select * from unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int8[],
                                    $8::text[], $9::timestamptz[], $10::int4[], $11::int8[],
                                    $12::int8[], $13::timestamptz[], $14::timestamptz[], $15::text[],
                                    $16::text[])
                   as t(path, s3_key, history_key, content_type, size_bytes, md5, mtime, mode,
                        uid, gid, valid_from, valid_to, etag, version_id)
           ), ins as (
               insert into files (agent_id, path, s3_key, size_bytes, mtime, md5, etag,
                                  content_type, status, synced_at, deleted_at, content_since)
               select distinct on (path) $1, path,
                      s3_key, size_bytes, mtime, md5,
                      etag, content_type, $2, valid_from,
                      case when $2 = 'deleted' then valid_to end, valid_from
               from input order by path, valid_from desc
               on conflict (agent_id, path) do nothing
               returning id, path
           ), ids as (
               select id, path from ins
               union all
               select f.id, f.path from files f
               where f.agent_id = $1 and f.path in (select path from input)
           )
           insert into file_versions (file_id, agent_id, path, valid_from, valid_to, size_bytes,
                                      md5, mtime, mode, uid, gid, s3_key, history_key, version_id,
                                      event, ended_by)
           select ids.id, $1, input.path, input.valid_from, input.valid_to, input.size_bytes,
                  input.md5, input.mtime, input.mode, input.uid, input.gid,
                  input.s3_key, input.history_key, input.version_id, 'rebuilt',
                  case when input.valid_to is not null then 'overwritten' end
           from input join ids using (path)"#,
    )
    .bind(agent_id)
    .bind(status)
    .bind(col(|v| Some(v.path.clone())))
    .bind(col(|v| Some(v.s3_key.clone())))
    .bind(col(|v| v.history_key.clone()))
    .bind(col(|v| Some(v.content_type.clone())))
    .bind(batch.iter().map(|v| v.size_bytes).collect::<Vec<_>>())
    .bind(col(|v| Some(v.md5.clone())))
    .bind(batch.iter().map(|v| v.mtime).collect::<Vec<_>>())
    .bind(batch.iter().map(|v| v.mode).collect::<Vec<_>>())
    .bind(batch.iter().map(|v| v.uid).collect::<Vec<_>>())
    .bind(batch.iter().map(|v| v.gid).collect::<Vec<_>>())
    .bind(batch.iter().map(|v| v.valid_from).collect::<Vec<_>>())
    .bind(batch.iter().map(|v| v.valid_to).collect::<Vec<_>>())
    .bind(col(|v| v.etag.clone()))
    .bind(col(|v| v.version_id.clone()))
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
