//! The agent's handle on the catalog: one agent's rows in PostgreSQL.
//!
//! In: the pool and the agent's id. Out: the catalog calls the layers above need, named for
//! what they do, with the agent id filled in. It implements the store's multipart journal
//! ([`MultipartJournal`]) here, and the guards' ledger and holds (`GuardStore`, declared by its
//! consumer in [`crate::policy::guard`]).
//!
//! The journal and the guards go through it today; the pass, watch mode and the operations
//! still call `portail_core::catalog` with the pool, and move here one table at a time.

use futures::future::BoxFuture;
use portail_core::catalog;
use sqlx::PgPool;

use crate::store::MultipartJournal;

pub use portail_core::catalog::{GuardHold, LedgerWindow, NewHold, OpenMultipart};

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
