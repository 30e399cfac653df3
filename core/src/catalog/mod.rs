//! The catalog: models and every SQL statement portail runs.
//!
//! In: a PostgreSQL pool. Out: typed rows ([`Agent`], [`FileRow`], [`FileEvent`]) and writes
//! that are batched (one round trip per batch, via `UNNEST`), each change writing a
//! `file_events` row in the same statement.
//!
//! All queries use `sqlx::query`/`query_as` rather than the macros, so builds need no database.

mod models;

pub use models::*;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The schema in `migrations/`, embedded at build time. Both services run it at start.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. One direct connection is tried first, within 10 s, so that a database that
/// is down fails with its real cause (refused, auth, unknown database) rather than a pool
/// timeout, and never hangs.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    use sqlx::{ConnectOptions, Connection};
    let opts = cfg.connect_options()?;
    let target = format!("{}:{}", opts.get_host(), opts.get_port());
    let probe = tokio::time::timeout(Duration::from_secs(10), opts.connect())
        .await
        .map_err(|_| anyhow::anyhow!("timed out after 10s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
    probe.close().await.ok();
    Ok(PgPoolOptions::new()
        .max_connections(cfg.db_max_connections)
        .acquire_timeout(cfg.db_acquire_timeout.0)
        .connect_lazy_with(opts))
}

/// Applies pending migrations. Safe to run from several processes at once (sqlx takes an
/// advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Registers an agent by name, or refreshes its settings and `last_seen_at` if it exists.
pub async fn register_agent(pool: &PgPool, agent: &NewAgent<'_>) -> sqlx::Result<Agent> {
    sqlx::query_as::<_, Agent>(
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
    }
    let result = sqlx::query(
        "with input as (
             select * from unnest($2::text[], $3::text[], $4::int8[], $5::timestamptz[],
                                  $6::text[], $7::text[], $8::text[], $9::int8[],
                                  $10::timestamptz[], $11::text[], $12::jsonb[])
                 as t(path, s3_key, size_bytes, mtime, md5, etag, content_type, inode, ctime,
                      kind, details)
         ), up as (
             insert into files (agent_id, path, s3_key, size_bytes, mtime, md5, etag,
                                content_type, inode, ctime, status, last_error, synced_at,
                                deleted_at, updated_at)
             select $1, path, s3_key, size_bytes, mtime, md5, etag, content_type, inode, ctime,
                    'synced', null, now(), null, now()
             from input
             on conflict (agent_id, path) do update set
                 s3_key = excluded.s3_key, size_bytes = excluded.size_bytes,
                 mtime = excluded.mtime, md5 = excluded.md5,
                 etag = coalesce(excluded.etag, files.etag),
                 content_type = excluded.content_type, inode = excluded.inode,
                 ctime = excluded.ctime, status = 'synced', last_error = null,
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

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("select 1").execute(pool).await.map(|_| ())
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

/// Which of these keys some agent's non-deleted row claims (for `verify`'s orphan check).
pub async fn claimed_keys(pool: &PgPool, keys: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar::<_, String>(
        "select distinct s3_key from files where s3_key = any($1) and status <> 'deleted'",
    )
    .bind(keys)
    .fetch_all(pool)
    .await
}

/// Creates a share link for a file.
pub async fn create_link(
    pool: &PgPool,
    file_id: i64,
    token_sha256: &str,
    created_by: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
    max_downloads: Option<i32>,
) -> sqlx::Result<ShareLink> {
    sqlx::query_as::<_, ShareLink>(
        "insert into share_links (file_id, token_sha256, created_by, expires_at, max_downloads)
         values ($1, $2, $3, $4, $5) returning *",
    )
    .bind(file_id)
    .bind(token_sha256)
    .bind(created_by)
    .bind(expires_at)
    .bind(max_downloads)
    .fetch_one(pool)
    .await
}

/// The links of one file, newest first.
pub async fn links_of_file(pool: &PgPool, file_id: i64) -> sqlx::Result<Vec<ShareLink>> {
    sqlx::query_as::<_, ShareLink>("select * from share_links where file_id = $1 order by id desc")
        .bind(file_id)
        .fetch_all(pool)
        .await
}

/// One link by id.
pub async fn link_by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<ShareLink>> {
    sqlx::query_as::<_, ShareLink>("select * from share_links where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Revokes a link. Returns false if it was already revoked.
pub async fn revoke_link(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "update share_links set revoked_at = now() where id = $1 and revoked_at is null",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Counts one download of a live link, atomically: the row is updated only while the link is
/// not revoked, not expired, not used up, and its file is synced. Returns the file to serve, or
/// None when the click must be refused (see [`link_by_hash`] for why).
pub async fn click_link(pool: &PgPool, token_sha256: &str) -> sqlx::Result<Option<FileWithBucket>> {
    sqlx::query_as::<_, FileWithBucket>(
        "with clicked as (
             update share_links l set downloads = l.downloads + 1
             from files f
             where l.token_sha256 = $1 and f.id = l.file_id and f.status = 'synced'
               and l.revoked_at is null and l.expires_at > now()
               and (l.max_downloads is null or l.downloads < l.max_downloads)
             returning l.file_id
         )
         select f.*, a.bucket, a.name as agent_name
         from clicked c join files f on f.id = c.file_id join agents a on a.id = f.agent_id",
    )
    .bind(token_sha256)
    .fetch_optional(pool)
    .await
}

/// A link by its token's hash, whatever its state.
pub async fn link_by_hash(pool: &PgPool, token_sha256: &str) -> sqlx::Result<Option<ShareLink>> {
    sqlx::query_as::<_, ShareLink>("select * from share_links where token_sha256 = $1")
        .bind(token_sha256)
        .fetch_optional(pool)
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
