//! SQL on `files` (and the `file_events` row each change writes in the same statement).
//!
//! In: a pool and an agent id. Out: rows in bytewise path order for the merge, batched writes
//! (one round trip per batch, via `UNNEST`) for the recorder, and scoped listings for the
//! url-service.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::models::*;

/// Every file row of one agent, in path order (bytewise, so it matches the scan order).
pub async fn files_of_agent(pool: &PgPool, agent_id: i64) -> sqlx::Result<Vec<FileRow>> {
    sqlx::query_as::<_, FileRow>(
        r#"select * from files where agent_id = $1 order by path collate "C""#,
    )
    .bind(agent_id)
    .fetch_all(pool)
    .await
}

/// One batch of an agent's rows in bytewise path order, after `after_path` (keyset paging),
/// so a pass compares the tree with the catalog without holding the whole catalog.
pub async fn files_page(
    pool: &PgPool,
    agent_id: i64,
    after_path: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<FileRow>> {
    sqlx::query_as::<_, FileRow>(
        r#"select * from files
           where agent_id = $1 and ($2::text is null or path collate "C" > $2::text collate "C")
           order by path collate "C"
           limit $3"#,
    )
    .bind(agent_id)
    .bind(after_path)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether an agent has any row that is not `deleted` (if not, no file can be a rename).
pub async fn has_live_files(pool: &PgPool, agent_id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar::<_, bool>(
        "select exists (select 1 from files where agent_id = $1 and status <> 'deleted')",
    )
    .bind(agent_id)
    .fetch_one(pool)
    .await
}

/// One file by id, with its agent's bucket, for presigning.
pub async fn file_by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<FileWithBucket>> {
    sqlx::query_as::<_, FileWithBucket>(
        "select f.*, a.bucket, a.name as agent_name
         from files f join agents a on a.id = f.agent_id where f.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Records uploaded or re-verified files as `synced`, in one statement, with one event each.
pub async fn record_synced(
    pool: &PgPool,
    agent_id: i64,
    batch: &[SyncedFile],
) -> sqlx::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut path = Vec::with_capacity(batch.len());
    let mut key = Vec::with_capacity(batch.len());
    let mut size = Vec::with_capacity(batch.len());
    let mut mtime = Vec::with_capacity(batch.len());
    let mut md5 = Vec::with_capacity(batch.len());
    let mut etag = Vec::with_capacity(batch.len());
    let mut ctype = Vec::with_capacity(batch.len());
    let mut inode = Vec::with_capacity(batch.len());
    let mut ctime = Vec::with_capacity(batch.len());
    let mut kind = Vec::with_capacity(batch.len());
    let mut details = Vec::with_capacity(batch.len());
    let mut encryption = Vec::with_capacity(batch.len());
    for f in batch {
        path.push(f.path.as_str());
        key.push(f.s3_key.as_str());
        size.push(f.size_bytes);
        mtime.push(f.mtime);
        md5.push(f.md5.as_str());
        etag.push(f.etag.as_deref());
        ctype.push(f.content_type.as_str());
        inode.push(f.inode);
        ctime.push(f.ctime);
        kind.push(f.event.as_str());
        details.push(&f.details);
        encryption.push(f.encryption.as_deref());
    }
    let result = sqlx::query(
        "with input as (
             select * from unnest($2::text[], $3::text[], $4::int8[], $5::timestamptz[],
                                  $6::text[], $7::text[], $8::text[], $9::int8[],
                                  $10::timestamptz[], $11::text[], $12::jsonb[], $13::text[])
                 as t(path, s3_key, size_bytes, mtime, md5, etag, content_type, inode, ctime,
                      kind, details, encryption)
         ), up as (
             insert into files (agent_id, path, s3_key, size_bytes, mtime, md5, etag,
                                content_type, inode, ctime, encryption, status, last_error,
                                synced_at, deleted_at, updated_at)
             select $1, path, s3_key, size_bytes, mtime, md5, etag, content_type, inode, ctime,
                    encryption, 'synced', null, now(), null, now()
             from input
             on conflict (agent_id, path) do update set
                 s3_key = excluded.s3_key, size_bytes = excluded.size_bytes,
                 mtime = excluded.mtime, md5 = excluded.md5,
                 etag = coalesce(excluded.etag, files.etag),
                 content_type = excluded.content_type, inode = excluded.inode,
                 ctime = excluded.ctime, encryption = excluded.encryption,
                 status = 'synced', last_error = null,
                 synced_at = now(), deleted_at = null, updated_at = now()
             returning id, path
         )
         insert into file_events (file_id, kind, details)
         select up.id, input.kind, input.details from up join input using (path)",
    )
    .bind(agent_id)
    .bind(&path)
    .bind(&key)
    .bind(&size)
    .bind(&mtime)
    .bind(&md5)
    .bind(&etag)
    .bind(&ctype)
    .bind(&inode)
    .bind(&ctime)
    .bind(&kind)
    .bind(&details)
    .bind(&encryption)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Records files that could not be synced as `error` with their reason, one `failed` event
/// each. A row that was `synced` keeps its md5 and etag: the object in S3 is still the old one.
pub async fn record_failed(
    pool: &PgPool,
    agent_id: i64,
    batch: &[FailedFile],
) -> sqlx::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let path: Vec<&str> = batch.iter().map(|f| f.path.as_str()).collect();
    let key: Vec<&str> = batch.iter().map(|f| f.s3_key.as_str()).collect();
    let size: Vec<i64> = batch.iter().map(|f| f.size_bytes).collect();
    let mtime: Vec<_> = batch.iter().map(|f| f.mtime).collect();
    let error: Vec<&str> = batch.iter().map(|f| f.error.as_str()).collect();
    let stage: Vec<&str> = batch.iter().map(|f| f.stage).collect();
    let result = sqlx::query(
        "with input as (
             select * from unnest($2::text[], $3::text[], $4::int8[], $5::timestamptz[],
                                  $6::text[], $7::text[])
                 as t(path, s3_key, size_bytes, mtime, error, stage)
         ), up as (
             insert into files (agent_id, path, s3_key, size_bytes, mtime, status, last_error)
             select $1, path, s3_key, size_bytes, mtime, 'error', error from input
             on conflict (agent_id, path) do update set
                 status = 'error', last_error = excluded.last_error, updated_at = now()
             returning id, path
         )
         insert into file_events (file_id, kind, details)
         select up.id, 'failed', jsonb_build_object('error', input.error, 'stage', input.stage)
         from up join input using (path)",
    )
    .bind(agent_id)
    .bind(&path)
    .bind(&key)
    .bind(&size)
    .bind(&mtime)
    .bind(&error)
    .bind(&stage)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Marks files `pending` with no MD5 (creating their rows if needed), so a row never claims
/// content S3 may not hold, yet every object written stays tracked: the next pass re-uploads
/// the file, or deletes the object if the file is gone.
pub async fn record_pending(
    pool: &PgPool,
    agent_id: i64,
    batch: &[PendingFile],
) -> sqlx::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let path: Vec<&str> = batch.iter().map(|f| f.path.as_str()).collect();
    let key: Vec<&str> = batch.iter().map(|f| f.s3_key.as_str()).collect();
    let size: Vec<i64> = batch.iter().map(|f| f.size_bytes).collect();
    let mtime: Vec<DateTime<Utc>> = batch.iter().map(|f| f.mtime).collect();
    let reason: Vec<&str> = batch.iter().map(|f| f.reason.as_str()).collect();
    let result = sqlx::query(
        "insert into files (agent_id, path, s3_key, size_bytes, mtime, status, last_error)
         select $1, i.path, i.key, i.size, i.mtime, 'pending', i.reason
         from unnest($2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::text[])
              as i(path, key, size, mtime, reason)
         on conflict (agent_id, path) do update set
             status = 'pending', md5 = null, etag = null, s3_key = excluded.s3_key,
             last_error = excluded.last_error, deleted_at = null, updated_at = now()",
    )
    .bind(agent_id)
    .bind(&path)
    .bind(&key)
    .bind(&size)
    .bind(&mtime)
    .bind(&reason)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Marks rows as `deleted` (keeping them for history), one event each with its details.
pub async fn record_deleted(
    pool: &PgPool,
    agent_id: i64,
    batch: &[(String, serde_json::Value)],
) -> sqlx::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let path: Vec<&str> = batch.iter().map(|(p, _)| p.as_str()).collect();
    let details: Vec<&serde_json::Value> = batch.iter().map(|(_, d)| d).collect();
    let result = sqlx::query(
        "with input as (
             select * from unnest($2::text[], $3::jsonb[]) as t(path, details)
         ), up as (
             update files f set status = 'deleted', deleted_at = now(), updated_at = now()
             from input where f.agent_id = $1 and f.path = input.path
             returning f.id, f.path
         )
         insert into file_events (file_id, kind, details)
         select up.id, 'deleted', input.details from up join input using (path)",
    )
    .bind(agent_id)
    .bind(&path)
    .bind(&details)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Counts and bytes of one agent's rows, for the gauges.
pub async fn agent_totals(pool: &PgPool, agent_id: i64) -> sqlx::Result<AgentTotals> {
    sqlx::query_as::<_, AgentTotals>(
        "select count(*) filter (where status = 'synced') as synced_files,
                coalesce(sum(size_bytes) filter (where status = 'synced'), 0)::int8 as synced_bytes,
                count(*) filter (where status in ('pending', 'error')) as unsynced_files
         from files where agent_id = $1",
    )
    .bind(agent_id)
    .fetch_one(pool)
    .await
}

/// A page of files, in id order (stable while files are added), for `GET /v1/files`.
/// Every filter is optional; `scope_*` come from the caller's token and always apply.
pub async fn list_files(pool: &PgPool, q: &FileQuery<'_>) -> sqlx::Result<Vec<FileWithBucket>> {
    sqlx::query_as::<_, FileWithBucket>(
        "select f.*, a.bucket, a.name as agent_name
         from files f join agents a on a.id = f.agent_id
         where ($1::text is null or a.name = $1)
           and ($2::text is null or starts_with(f.path, $2))
           and ($3::text is null or a.name = $3)
           and ($4::text is null or starts_with(f.path, $4))
           and ($5::text is null or f.status = $5)
           and f.id > $6
         order by f.id
         limit $7",
    )
    .bind(q.agent)
    .bind(q.path_prefix)
    .bind(q.scope_agent)
    .bind(q.scope_prefix)
    .bind(q.status)
    .bind(q.after_id)
    .bind(q.limit)
    .fetch_all(pool)
    .await
}

/// Which of these keys some agent's non-deleted row claims (for `verify`'s orphan check).
pub async fn claimed_keys(pool: &PgPool, keys: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar::<_, String>(
        "select distinct s3_key from files where s3_key = any($1) and status <> 'deleted'",
    )
    .bind(keys)
    .fetch_all(pool)
    .await
}

/// An agent's rows for these paths.
pub async fn rows_by_paths(
    pool: &PgPool,
    agent_id: i64,
    paths: &[String],
) -> sqlx::Result<Vec<FileRow>> {
    sqlx::query_as::<_, FileRow>("select * from files where agent_id = $1 and path = any($2)")
        .bind(agent_id)
        .bind(paths)
        .fetch_all(pool)
        .await
}

/// An agent's live (not `deleted`) rows below a directory (`dir` without a trailing '/').
pub async fn live_rows_under(
    pool: &PgPool,
    agent_id: i64,
    dir: &str,
) -> sqlx::Result<Vec<FileRow>> {
    sqlx::query_as::<_, FileRow>(
        "select * from files where agent_id = $1 and status <> 'deleted' and starts_with(path, $2)",
    )
    .bind(agent_id)
    .bind(format!("{dir}/"))
    .fetch_all(pool)
    .await
}
