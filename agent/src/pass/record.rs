//! Stage 5, record: every result of a pass lands in one place.
//!
//! In: each file's [`Outcome`], what the walk skipped or could not read, and what the delete
//! stage did. Out, for each, in one place ([`Recorder`]): the metrics, a log line, the
//! [`SyncReport`], and the catalog write. Rows are written through [`RowBatcher`] in batches
//! of [`BATCH`] (one round trip per batch rather than one per file; each row change also writes
//! a `file_events` row). All SQL lives in `portail_core::catalog`, reached through [`crate::catalog::Catalog`].
//!
//! A full batch is written in the background while the pass goes on (one write in flight at a
//! time): awaiting it inline stalled every upload in flight for the length of the round trip,
//! since the uploads are only driven while the pass's loop polls them.
//!

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::catalog::{Catalog, DeletedFile, FailedFile, FileRow, PendingFile, SyncedFile};
use chrono::Utc;
use tokio::task::JoinHandle;

use crate::agent::Agent;
use crate::fs::scan::ScanOutcome;
use crate::model::guard::Blocked;
use crate::model::report::{Failure, FailureKind, Stage, SyncReport};
use crate::pass::file::{Outcome, ATTEMPTS};
use crate::pass::progress::Progress;

/// Rows per write.
pub const BATCH: usize = 500;

/// Turns the results of a pass (or a watch batch) into metrics, logs, the report and rows.
#[derive(Debug)]
pub struct Recorder<'a> {
    agent: &'a Agent,
    batcher: RowBatcher,
    report: SyncReport,
    progress: Arc<Progress>,
    /// Renames done: vanished path -> new path. Their sources are not plain deletes.
    renamed: HashMap<String, String>,
}

impl<'a> Recorder<'a> {
    /// A recorder for one pass or batch of `agent`.
    pub fn new(agent: &'a Agent) -> Self {
        Recorder {
            agent,
            batcher: RowBatcher::new(agent.catalog.clone()),
            report: SyncReport::default(),
            progress: Arc::default(),
            renamed: HashMap::new(),
        }
    }

    /// The live counters a progress reporter shows.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The report so far.
    pub fn report(&mut self) -> &mut SyncReport {
        &mut self.report
    }

    /// Renames done so far: vanished path -> new path.
    pub fn renamed(&self) -> &HashMap<String, String> {
        &self.renamed
    }

    /// Records one file's outcome.
    pub async fn file(&mut self, hashes: u64, outcome: Outcome) -> sqlx::Result<()> {
        self.report.hashed += hashes;
        self.progress.done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Synced {
                row,
                uploaded_bytes,
                renamed_from,
            } => self.synced(row, uploaded_bytes, renamed_from).await,
            Outcome::Failed {
                failure,
                kind,
                previous,
                meta,
            } => {
                let key = previous
                    .map(|p| p.s3_key)
                    .unwrap_or_else(|| format!("{}{}", self.agent.prefix, failure.path));
                let row = FailedFile {
                    path: failure.path.clone(),
                    s3_key: key,
                    size_bytes: meta.size as i64,
                    mtime: meta.mtime,
                    error: failure.error.clone(),
                    stage: failure.stage.label(),
                };
                self.failure(failure, kind);
                self.batcher.failed(row).await
            }
            Outcome::Vanished(path, written) => {
                if let Some(p) = written {
                    // Its object was just written: keep it tracked so the next pass deletes it.
                    tracing::info!(path = %path, key = %p.s3_key, "vanished right after upload; left pending");
                    self.batcher.pending(p).await?;
                }
                self.report.vanished.push(path);
                Ok(())
            }
            Outcome::Held(path) => {
                tracing::debug!(path = %path, "changed content held by the tripwire");
                self.report.changes_held += 1;
                Ok(())
            }
            Outcome::Unstable(mut p) => {
                p.reason = format!(
                    "kept changing during {ATTEMPTS} attempts; left pending for the next pass"
                );
                let failure = Failure {
                    path: p.path.clone(),
                    stage: Stage::Transfer,
                    error: p.reason.clone(),
                };
                self.failure(failure, FailureKind::Changing);
                self.batcher.pending(p).await
            }
        }
    }

    async fn synced(
        &mut self,
        row: SyncedFile,
        uploaded_bytes: Option<u64>,
        renamed_from: Option<String>,
    ) -> sqlx::Result<()> {
        let m = &self.agent.metrics;
        match (uploaded_bytes, renamed_from) {
            (Some(n), _) => {
                self.progress.bytes.fetch_add(n, Ordering::Relaxed);
                self.report.uploaded += 1;
                self.report.bytes_uploaded += n;
                m.files_uploaded.inc();
                m.bytes_uploaded.inc_by(n);
            }
            (None, Some(from)) => {
                self.report.renamed += 1;
                m.files_renamed.inc();
                self.renamed.insert(from, row.path.clone());
            }
            (None, None) => self.report.metadata_only += 1,
        }
        self.batcher.synced(row).await
    }

    /// Counts, logs and reports a failure (the caller writes its row, if it has one).
    fn failure(&mut self, failure: Failure, kind: FailureKind) {
        self.agent
            .metrics
            .errors
            .with_label_values(&[failure.stage.label(), kind.label()])
            .inc();
        tracing::error!(path = %failure.path, stage = %failure.stage, error = %failure.error, "sync failed");
        self.report.failed.push(failure);
    }

    /// Records what the walk skipped on purpose and what it could not read.
    pub fn scan(&mut self, scanned: ScanOutcome) {
        let m = &self.agent.metrics;
        for s in &scanned.skipped {
            m.files_skipped.with_label_values(&[s.reason.label()]).inc();
            if s.reason.is_problem() {
                tracing::warn!(path = %s.path, raw_hex = s.raw_hex.as_deref().unwrap_or(""), reason = s.reason.label(), "not synced");
            } else {
                tracing::debug!(path = %s.path, reason = s.reason.label(), "skipped");
            }
        }
        for f in scanned.failures {
            tracing::error!(path = %f.path, error = %f.error, "cannot read entry");
            m.errors
                .with_label_values(&[Stage::Scan.label(), FailureKind::Io.label()])
                .inc();
            self.report.failed.push(Failure {
                path: f.path,
                stage: Stage::Scan,
                error: f.error,
            });
        }
        self.report.skipped = scanned.skipped;
    }

    /// Stores this pass's names that cannot be synced (they replace the last pass's).
    pub async fn unsyncable(&mut self) -> sqlx::Result<()> {
        let unsyncable: Vec<_> = self
            .report
            .skipped
            .iter()
            .filter(|s| s.reason.is_problem())
            .map(|s| (s.path.clone(), s.raw_hex.clone(), s.reason.label()))
            .collect();
        self.agent.catalog.replace_unsyncable(&unsyncable).await
    }

    /// A guard refused this pass's deletes.
    pub fn deletes_blocked(&mut self, blocked: Blocked) {
        self.agent
            .metrics
            .deletes_blocked
            .with_label_values(&[blocked.guard.label()])
            .inc();
        tracing::error!(guard = blocked.guard.label(), "{}", blocked.message);
        self.report.deletes_blocked = Some(blocked);
    }

    /// S3 refused to delete a row's object.
    pub fn delete_failed(&mut self, row: &FileRow, error: &str) {
        tracing::error!(path = %row.path, key = %row.s3_key, error = %error, "delete failed");
        self.agent
            .metrics
            .errors
            .with_label_values(&[Stage::Delete.label(), FailureKind::S3Error.label()])
            .inc();
        self.report.failed.push(Failure {
            path: row.path.clone(),
            stage: Stage::Delete,
            error: error.to_string(),
        });
    }

    /// Marks rows deleted; renamed sources do not count as deletes.
    pub async fn deleted(&mut self, done: &[DeletedFile]) -> sqlx::Result<()> {
        self.agent.catalog.record_deleted(done).await?;
        let plain = done
            .iter()
            .filter(|f| !self.renamed.contains_key(&f.path))
            .count() as u64;
        self.report.deleted += plain;
        self.agent.metrics.files_deleted.inc_by(plain);
        Ok(())
    }

    /// Writes every buffered row.
    pub async fn flush(&mut self) -> sqlx::Result<()> {
        self.batcher.flush().await
    }

    /// Writes what is buffered and hands over the report.
    pub async fn into_report(mut self) -> sqlx::Result<SyncReport> {
        self.flush().await?;
        Ok(self.report)
    }

    /// Ends a full pass: the gauges and the guards' base from the catalog's totals, and the time
    /// of success.
    pub async fn finish(mut self, started: std::time::Instant) -> anyhow::Result<SyncReport> {
        self.flush().await?;
        let m = &self.agent.metrics;
        let totals = self.agent.catalog.totals().await?;
        m.tracked_files.set(totals.synced_files);
        // The tripwire's base for the watch batches until the next full pass.
        self.agent
            .guards
            .note_tracked(totals.synced_files.max(0) as u64);
        m.tracked_bytes.set(totals.synced_bytes);
        m.pending_files.set(totals.unsynced_files);
        self.report.elapsed = started.elapsed();
        if self.report.converged() {
            m.last_success.set(Utc::now().timestamp());
        }
        Ok(self.report)
    }
}

/// Buffers rows and writes them in batches of [`BATCH`], one batch in flight at a time.
#[derive(Debug)]
pub struct RowBatcher {
    catalog: Arc<Catalog>,
    synced: Vec<SyncedFile>,
    failed: Vec<FailedFile>,
    pending: Vec<PendingFile>,
    /// The batch being written, if any.
    in_flight: Option<JoinHandle<sqlx::Result<()>>>,
}

impl RowBatcher {
    /// A batcher for one agent's rows.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        RowBatcher {
            catalog,
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
        if self.synced.len() < BATCH {
            return Ok(());
        }
        let (catalog, batch) = (self.catalog.clone(), std::mem::take(&mut self.synced));
        self.write_behind(async move { catalog.record_synced(&batch).await.map(drop) })
            .await
    }

    /// Queues a file that failed.
    pub async fn failed(&mut self, f: FailedFile) -> sqlx::Result<()> {
        self.failed.push(f);
        if self.failed.len() < BATCH {
            return Ok(());
        }
        let (catalog, batch) = (self.catalog.clone(), std::mem::take(&mut self.failed));
        self.write_behind(async move { catalog.record_failed(&batch).await.map(drop) })
            .await
    }

    /// Queues a file whose object may not match any content we can vouch for (it changed or
    /// vanished during upload): its row becomes `pending` with no MD5, so it never claims
    /// content S3 may not hold, yet the object stays tracked for the next pass.
    pub async fn pending(&mut self, f: PendingFile) -> sqlx::Result<()> {
        self.pending.push(f);
        if self.pending.len() < BATCH {
            return Ok(());
        }
        let (catalog, batch) = (self.catalog.clone(), std::mem::take(&mut self.pending));
        self.write_behind(async move { catalog.record_pending(&batch).await.map(drop) })
            .await
    }

    /// Writes everything still buffered, after the batch in flight.
    pub async fn flush(&mut self) -> sqlx::Result<()> {
        self.settle().await?;
        self.catalog.record_synced(&self.synced).await?;
        self.synced.clear();
        self.catalog.record_failed(&self.failed).await?;
        self.failed.clear();
        self.catalog.record_pending(&self.pending).await?;
        self.pending.clear();
        Ok(())
    }
}
