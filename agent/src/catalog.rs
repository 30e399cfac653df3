//! Stage 5, catalog: batch the pass's results into PostgreSQL.
//!
//! In: per-file outcomes from the transfer stage, in any order. Out: rows written through
//! `portail_core::catalog` (which holds all SQL) in batches of [`BATCH`], so a pass costs one
//! round trip per batch rather than one per file. Each row change writes a `file_events` row.

use portail_core::catalog::{self, FailedFile, SyncedFile};
use sqlx::PgPool;

/// Rows per write.
pub const BATCH: usize = 500;

/// Buffers outcomes and writes them in batches.
#[derive(Debug)]
pub struct CatalogWriter {
    pool: PgPool,
    agent_id: i64,
    synced: Vec<SyncedFile>,
    failed: Vec<FailedFile>,
    pending: Vec<(String, String)>,
}

impl CatalogWriter {
    /// A writer for one agent's rows.
    pub fn new(pool: PgPool, agent_id: i64) -> Self {
        CatalogWriter {
            pool,
            agent_id,
            synced: Vec::new(),
            failed: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Queues a file that S3 now holds.
    pub async fn synced(&mut self, f: SyncedFile) -> sqlx::Result<()> {
        self.synced.push(f);
        if self.synced.len() >= BATCH {
            catalog::record_synced(&self.pool, self.agent_id, &self.synced).await?;
            self.synced.clear();
        }
        Ok(())
    }

    /// Queues a file that failed.
    pub async fn failed(&mut self, f: FailedFile) -> sqlx::Result<()> {
        self.failed.push(f);
        if self.failed.len() >= BATCH {
            catalog::record_failed(&self.pool, self.agent_id, &self.failed).await?;
            self.failed.clear();
        }
        Ok(())
    }

    /// Queues a path whose object may no longer match its row (it changed during upload):
    /// the row becomes `pending` with no MD5, so it never claims content S3 may not hold.
    pub async fn pending(&mut self, path: String, reason: String) -> sqlx::Result<()> {
        self.pending.push((path, reason));
        if self.pending.len() >= BATCH {
            catalog::record_pending(&self.pool, self.agent_id, &self.pending).await?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes everything still buffered.
    pub async fn flush(&mut self) -> sqlx::Result<()> {
        catalog::record_synced(&self.pool, self.agent_id, &self.synced).await?;
        self.synced.clear();
        catalog::record_failed(&self.pool, self.agent_id, &self.failed).await?;
        self.failed.clear();
        catalog::record_pending(&self.pool, self.agent_id, &self.pending).await?;
        self.pending.clear();
        Ok(())
    }
}
