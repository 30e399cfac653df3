//! Stage 5, catalog: batch the pass's results into PostgreSQL.
//!
//! In: per-file outcomes from the transfer stage, in any order. Out: rows written through
//! `portail_core::catalog` (which holds all SQL) in batches of [`BATCH`], so a pass costs one
//! round trip per batch rather than one per file. Each row change writes a `file_events` row.
//!
//! A full batch is written in the background while the pass goes on (one write in flight at a
//! time): awaiting it inline stalled every upload in flight for the length of the round trip,
//! since the uploads are only driven while the pass's loop polls them.

use portail_core::catalog::{self, FailedFile, PendingFile, SyncedFile};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// Rows per write.
pub const BATCH: usize = 500;

/// Buffers outcomes and writes them in batches.
#[derive(Debug)]
pub struct CatalogWriter {
    pool: PgPool,
    agent_id: i64,
    synced: Vec<SyncedFile>,
    failed: Vec<FailedFile>,
    pending: Vec<PendingFile>,
    /// The batch being written, if any.
    in_flight: Option<JoinHandle<sqlx::Result<()>>>,
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
            in_flight: None,
        }
    }

    /// Waits for the batch in flight and returns its error, if it failed.
    async fn settle(&mut self) -> sqlx::Result<()> {
        match self.in_flight.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(sqlx::Error::Protocol(format!("catalog write task: {e}")))),
            None => Ok(()),
        }
    }

    /// Starts writing a full batch once the previous one is done.
    async fn write_behind(
        &mut self,
        write: impl std::future::Future<Output = sqlx::Result<()>> + Send + 'static,
    ) -> sqlx::Result<()> {
        self.settle().await?;
        self.in_flight = Some(tokio::spawn(write));
        Ok(())
    }

    /// Queues a file that S3 now holds.
    pub async fn synced(&mut self, f: SyncedFile) -> sqlx::Result<()> {
        self.synced.push(f);
        if self.synced.len() >= BATCH {
            let (pool, id, batch) = (
                self.pool.clone(),
                self.agent_id,
                std::mem::take(&mut self.synced),
            );
            self.write_behind(
                async move { catalog::record_synced(&pool, id, &batch).await.map(drop) },
            )
            .await?;
        }
        Ok(())
    }

    /// Queues a file that failed.
    pub async fn failed(&mut self, f: FailedFile) -> sqlx::Result<()> {
        self.failed.push(f);
        if self.failed.len() >= BATCH {
            let (pool, id, batch) = (
                self.pool.clone(),
                self.agent_id,
                std::mem::take(&mut self.failed),
            );
            self.write_behind(
                async move { catalog::record_failed(&pool, id, &batch).await.map(drop) },
            )
            .await?;
        }
        Ok(())
    }

    /// Queues a file whose object may not match any content we can vouch for (it changed or
    /// vanished during upload): its row becomes `pending` with no MD5, so it never claims
    /// content S3 may not hold, yet the object stays tracked for the next pass.
    pub async fn pending(&mut self, f: PendingFile) -> sqlx::Result<()> {
        self.pending.push(f);
        if self.pending.len() >= BATCH {
            let (pool, id, batch) = (
                self.pool.clone(),
                self.agent_id,
                std::mem::take(&mut self.pending),
            );
            self.write_behind(
                async move { catalog::record_pending(&pool, id, &batch).await.map(drop) },
            )
            .await?;
        }
        Ok(())
    }

    /// Writes everything still buffered, after the batch in flight.
    pub async fn flush(&mut self) -> sqlx::Result<()> {
        self.settle().await?;
        catalog::record_synced(&self.pool, self.agent_id, &self.synced).await?;
        self.synced.clear();
        catalog::record_failed(&self.pool, self.agent_id, &self.failed).await?;
        self.failed.clear();
        catalog::record_pending(&self.pool, self.agent_id, &self.pending).await?;
        self.pending.clear();
        Ok(())
    }
}
