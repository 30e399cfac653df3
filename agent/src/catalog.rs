//! The agent's handle on the catalog: one agent's rows in PostgreSQL.
//!
//! In: the pool and the agent's id. Out: the catalog calls the layers above need, named for
//! what they do, with the agent id filled in. It implements the store's multipart journal
//! ([`MultipartJournal`]) here, and the guards' ledger and holds (`GuardStore`, declared by its
//! consumer in [`crate::policy::guard`]).
//!
//! Every layer below the app reads and writes the catalog through it (`tests/tests/layers.rs`
//! checks that no other module of those layers calls `portail_core::catalog`). The app builds
//! it: it connects, migrates, registers the agent and looks agents up by name.

use futures::future::BoxFuture;
use portail_core::catalog;
use sqlx::PgPool;

use crate::store::MultipartJournal;

pub use portail_core::catalog::{
    AgentTotals, DeletedFile, EventKind, FailedFile, FileRow, FileStatus, GuardHold, LedgerWindow,
    NewHold, OpenMultipart, PendingFile, PosixIds, RebuiltVersion, SyncedFile, VersionQuery,
    VersionRow,
};

/// One agent's rows.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: PgPool,
    agent_id: i64,
}

impl Catalog {
    /// The handle on agent `agent_id`'s rows.
    pub fn new(pool: PgPool, agent_id: i64) -> Self {
        Catalog { pool, agent_id }
    }

    /// The agent's id.
    pub fn agent_id(&self) -> i64 {
        self.agent_id
    }

    /// Whether PostgreSQL answers.
    pub async fn ping(&self) -> sqlx::Result<()> {
        catalog::ping(&self.pool).await
    }

    /// Up to `limit` rows whose path sorts (bytewise) after `after`, in that order.
    pub async fn files_page(&self, after: Option<&str>, limit: i64) -> sqlx::Result<Vec<FileRow>> {
        catalog::files_page(&self.pool, self.agent_id, after, limit).await
    }

    /// Every row of the agent.
    pub async fn all_files(&self) -> sqlx::Result<Vec<FileRow>> {
        catalog::files_of_agent(&self.pool, self.agent_id).await
    }

    /// Whether any row is not `deleted` (then a new file may be a rename).
    pub async fn has_live_files(&self) -> sqlx::Result<bool> {
        catalog::has_live_files(&self.pool, self.agent_id).await
    }

    /// The rows of these paths.
    pub async fn rows_by_paths(&self, paths: &[String]) -> sqlx::Result<Vec<FileRow>> {
        catalog::rows_by_paths(&self.pool, self.agent_id, paths).await
    }

    /// The rows not `deleted` below directory `dir`.
    pub async fn live_rows_under(&self, dir: &str) -> sqlx::Result<Vec<FileRow>> {
        catalog::live_rows_under(&self.pool, self.agent_id, dir).await
    }

    /// Synced files and bytes, and unsynced files.
    pub async fn totals(&self) -> sqlx::Result<AgentTotals> {
        catalog::agent_totals(&self.pool, self.agent_id).await
    }

    /// Which of `keys` some row of any agent claims (what is left are orphans).
    pub async fn claimed_keys(&self, keys: &[String]) -> sqlx::Result<Vec<String>> {
        catalog::claimed_keys(&self.pool, keys).await
    }

    /// Records files S3 now holds, with their events and versions.
    pub async fn record_synced(&self, batch: &[SyncedFile]) -> sqlx::Result<u64> {
        catalog::record_synced(&self.pool, self.agent_id, batch).await
    }

    /// Records files that failed.
    pub async fn record_failed(&self, batch: &[FailedFile]) -> sqlx::Result<u64> {
        catalog::record_failed(&self.pool, self.agent_id, batch).await
    }

    /// Records files whose object no content vouches for (`pending`, no MD5).
    pub async fn record_pending(&self, batch: &[PendingFile]) -> sqlx::Result<u64> {
        catalog::record_pending(&self.pool, self.agent_id, batch).await
    }

    /// Marks rows `deleted`, ending their versions.
    pub async fn record_deleted(&self, batch: &[DeletedFile]) -> sqlx::Result<u64> {
        catalog::record_deleted(&self.pool, self.agent_id, batch).await
    }

    /// Replaces the list of what the last pass could not sync because of its name.
    pub async fn replace_unsyncable(
        &self,
        entries: &[(String, Option<String>, &'static str)],
    ) -> sqlx::Result<()> {
        catalog::replace_unsyncable(&self.pool, self.agent_id, entries).await
    }

    /// Writes versions read back from the bucket (`rebuild-catalog`).
    pub async fn record_rebuilt(
        &self,
        status: &str,
        batch: &[RebuiltVersion],
    ) -> sqlx::Result<u64> {
        catalog::record_rebuilt(&self.pool, self.agent_id, status, batch).await
    }

    /// A page of the versions current at a time (`q.agent_id` must be this agent's).
    pub async fn versions_at(&self, q: &VersionQuery<'_>) -> sqlx::Result<Vec<VersionRow>> {
        debug_assert_eq!(q.agent_id, self.agent_id);
        catalog::versions_at(&self.pool, q).await
    }

    /// The history key a metadata-only version shares with the version whose bytes it has.
    pub async fn shared_history_key(&self, v: &VersionRow) -> sqlx::Result<Option<String>> {
        catalog::shared_history_key(&self.pool, v).await
    }

    /// When the agent's first version began.
    pub async fn first_version_at(&self) -> sqlx::Result<Option<chrono::DateTime<chrono::Utc>>> {
        catalog::first_version_at(&self.pool, self.agent_id).await
    }

    /// Whether a version was ever recorded at `path`, or below it.
    pub async fn path_ever_existed(&self, path: &str) -> sqlx::Result<bool> {
        catalog::path_ever_existed(&self.pool, self.agent_id, path).await
    }

    /// Every version of one path, newest first.
    pub async fn versions_of_path(&self, path: &str) -> sqlx::Result<Vec<VersionRow>> {
        catalog::versions_of_path(&self.pool, self.agent_id, path).await
    }

    /// Up to `limit` versions that ended before `cutoff`.
    pub async fn expired_versions(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<VersionRow>> {
        catalog::expired_versions(&self.pool, self.agent_id, cutoff, limit).await
    }

    /// Forgets versions by id.
    pub async fn delete_versions(&self, ids: &[i64]) -> sqlx::Result<u64> {
        catalog::delete_versions(&self.pool, ids).await
    }

    /// The hold on `kind` (`deletes`, `changes`), if a guard tripped.
    pub async fn guard_hold(&self, kind: &str) -> sqlx::Result<Option<GuardHold>> {
        catalog::guard_hold(&self.pool, self.agent_id, kind).await
    }

    /// What passed `kind`'s guard within the last `window_secs`.
    pub async fn ledger_window(&self, kind: &str, window_secs: f64) -> sqlx::Result<LedgerWindow> {
        catalog::ledger_window(&self.pool, self.agent_id, kind, window_secs).await
    }

    /// Records that `count` files passed `kind`'s guard with `tracked` files tracked.
    pub async fn record_passed(
        &self,
        kind: &str,
        count: i64,
        tracked: i64,
        window_secs: f64,
    ) -> sqlx::Result<()> {
        let id = self.agent_id;
        catalog::record_passed(&self.pool, id, kind, count, tracked, window_secs).await
    }

    /// Uses `n` of a release's allowance; `still_held` files stay held (none: the hold ends).
    pub async fn use_allowance(&self, kind: &str, n: i64, still_held: i64) -> sqlx::Result<()> {
        catalog::use_allowance(&self.pool, self.agent_id, kind, n, still_held).await
    }

    /// Records what a guard holds now.
    pub async fn set_hold(&self, hold: &NewHold<'_>) -> sqlx::Result<()> {
        catalog::set_hold(&self.pool, self.agent_id, hold).await
    }

    /// How many of the agent's rows are `synced`.
    pub async fn synced_files(&self) -> sqlx::Result<i64> {
        let totals = catalog::agent_totals(&self.pool, self.agent_id).await?;
        Ok(totals.synced_files)
    }
}

/// The multipart journal, kept in the catalog's `multipart_uploads` table.
impl MultipartJournal for Catalog {
    fn intend<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<i64>> {
        Box::pin(
            async move { Ok(catalog::intend_multipart(&self.pool, self.agent_id, key).await?) },
        )
    }

    fn begin<'a>(&'a self, entry: i64, upload_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(catalog::begin_multipart(&self.pool, entry, upload_id).await?) })
    }

    fn end(&self, entry: i64) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { Ok(catalog::end_multipart(&self.pool, entry).await?) })
    }

    fn open(&self) -> BoxFuture<'_, anyhow::Result<Vec<OpenMultipart>>> {
        Box::pin(async move { Ok(catalog::open_multiparts(&self.pool, self.agent_id).await?) })
    }
}
