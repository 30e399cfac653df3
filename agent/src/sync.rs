//! The pass driver: scan → plan → hash → transfer → catalog → deletes.
//!
//! In: an [`Agent`](crate::Agent) and [`SyncOptions`]. Out: a [`SyncReport`] with every count,
//! every skipped entry and every failure, after S3 and the catalog have been brought in line
//! with the tree as far as the guards allow. `Err` only for what stops a whole pass: the root
//! is missing, or the catalog cannot be reached.
//!
//! Order matters for safety: deletes run after every upload and copy of the pass, so a rename
//! never loses its source, and only when no guard objects.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::stream::{self, StreamExt};
use portail_core::catalog::{
    self, EventKind, FailedFile, FileRow, FileStatus, PendingFile, SyncedFile,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::catalog::CatalogWriter;
use crate::config::DeleteMode;
use crate::hash::{self, HashError};
use crate::plan::{self, Decision, DeleteContext, Work};
use crate::progress::Progress;
use crate::scan::{self, FileMeta, Skipped};
use crate::transfer::{self, content_type_for, TransferError};
use crate::Agent;

/// Files up to this size are read into memory once, hashed and uploaded from that buffer.
const IN_MEMORY_LIMIT: u64 = 4 << 20;
/// Attempts per file when it keeps changing while being read or uploaded.
const ATTEMPTS: usize = 3;

/// How to run a pass.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Print the plan; change nothing in S3 or the catalog.
    pub dry_run: bool,
    /// Catalog rows read per batch while comparing with the tree.
    pub row_batch: i64,
    /// Show progress: a live line on a terminal, a log line every 10 s otherwise.
    pub progress: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            dry_run: false,
            row_batch: 5000,
            progress: false,
        }
    }
}

/// A file that could not be synced in this pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The relative path.
    pub path: String,
    /// The stage: `scan`, `hash`, `transfer`, `delete`.
    pub stage: &'static str,
    /// The error with its causes.
    pub error: String,
}

/// Everything one pass did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Regular files found.
    pub scanned: u64,
    /// Files whose metadata matched the catalog: not read.
    pub unchanged: u64,
    /// Files read and hashed.
    pub hashed: u64,
    /// Files whose bytes were uploaded.
    pub uploaded: u64,
    /// Files whose catalog row changed but whose content did not (a `touch`).
    pub metadata_only: u64,
    /// Files copied server-side from a vanished twin.
    pub renamed: u64,
    /// Rows marked deleted (objects deleted, or kept with DELETE_MODE=keep).
    pub deleted: u64,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Entries skipped on purpose.
    pub skipped: Vec<Skipped>,
    /// Files that could not be synced.
    pub failed: Vec<Failure>,
    /// Files that vanished between scan and read: the next pass handles them.
    pub vanished: Vec<String>,
    /// Why deletes were refused, if they were.
    pub deletes_blocked: Option<plan::Blocked>,
    /// With --dry-run: the actions a real pass would take, one per line.
    pub planned: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl SyncReport {
    /// Whether S3 and the catalog now match the tree: nothing failed, nothing refused, no
    /// name that could not be synced.
    pub fn converged(&self) -> bool {
        self.failed.is_empty()
            && self.deletes_blocked.is_none()
            && !self.skipped.iter().any(|s| s.reason.is_problem())
    }

    /// The one-line summary printed at the end of a pass.
    pub fn summary(&self) -> String {
        format!(
            "scanned {} unchanged {} hashed {} uploaded {} updated {} renamed {} deleted {} skipped {} failed {} bytes {} in {:.2}s",
            self.scanned,
            self.unchanged,
            self.hashed,
            self.uploaded,
            self.metadata_only,
            self.renamed,
            self.deleted,
            self.skipped.len(),
            self.failed.len(),
            self.bytes_uploaded,
            self.elapsed.as_secs_f64()
        )
    }
}

/// What happened to one file.
enum Outcome {
    Synced {
        row: SyncedFile,
        uploaded_bytes: Option<u64>,
        renamed_from: Option<String>,
    },
    Failed(Failure, &'static str, Option<FileRow>, FileMeta),
    /// The file is gone. With a [`PendingFile`] when this pass had already written its object.
    Vanished(String, Option<PendingFile>),
    /// The file kept changing while read; its object may hold any of its versions.
    Unstable(PendingFile),
}

/// Runs one full pass.
pub async fn sync_once(agent: &Agent, opts: &SyncOptions) -> anyhow::Result<SyncReport> {
    let started = Instant::now();
    let settings = &agent.settings;
    let m = &agent.metrics;
    let mut report = SyncReport::default();

    // Fail before anything else when the root is gone (an unmounted share).
    if !settings.sync_root.is_dir() {
        return Err(scan::ScanError::RootMissing(settings.sync_root.clone()).into());
    }
    // Without live rows no new file can be a rename, so new files need not wait for the
    // whole comparison: an initial sync streams from the walk straight into uploads.
    let renames_possible = catalog::has_live_files(&agent.pool, agent.id)
        .await
        .context("reading the catalog")?;

    // The walk streams files, in bytewise path order, through a bounded channel.
    let (file_tx, mut file_rx) = mpsc::channel::<scan::LocalFile>(SCAN_QUEUE);
    let (root, prefix, excludes) = (
        settings.sync_root.clone(),
        agent.prefix.clone(),
        agent.excludes.clone(),
    );
    let scan_task = tokio::task::spawn_blocking(move || {
        scan::scan_with(&root, &prefix, &excludes, |f| {
            file_tx.blocking_send(f).is_ok()
        })
    });

    // Merge the walk with the catalog, read in batches in the same order. Work starts while the
    // merge goes on; new files wait for it only when they might be renames.
    let (work_tx, work_rx) = mpsc::channel::<Work>(WORK_QUEUE);
    let (dry_run, row_batch) = (opts.dry_run, opts.row_batch.max(1));
    let progress = Arc::new(Progress::default());
    let _reporter = opts
        .progress
        .then(|| crate::progress::report(progress.clone()));
    let merge_progress = progress.clone();
    let merge = async move {
        let mut merged = Merged::default();
        let mut rows = RowCursor::new(agent, row_batch);
        while let Some(file) = file_rx.recv().await {
            merged.local_files += 1;
            merge_progress.scanned.fetch_add(1, Ordering::Relaxed);
            while let Some(row) = rows.next_before(&file.path).await? {
                merged.gone_or_tracked(row);
            }
            let previous = rows.next_equal(&file.path).await?;
            if previous
                .as_ref()
                .is_some_and(|r| r.status == FileStatus::Synced)
            {
                merged.tracked += 1;
            }
            rows.merged_up_to(&file.path);
            match plan::classify(file, previous) {
                None => merged.unchanged += 1,
                Some(w) if dry_run => merged.planned.push(describe(&w)),
                Some(w) if w.previous.is_none() && renames_possible => merged.deferred.push(w),
                Some(w) => {
                    if work_tx.send(w).await.is_err() {
                        break;
                    }
                }
            }
        }
        while let Some(row) = rows.next_any().await? {
            merged.gone_or_tracked(row);
        }
        drop(work_tx);
        Ok::<_, anyhow::Error>(merged)
    };
    let mut writer = CatalogWriter::new(agent.pool.clone(), agent.id);
    let no_sources = HashMap::new();
    let streamed = process(
        agent,
        ReceiverStream::new(work_rx),
        &no_sources,
        &mut writer,
        &mut report,
        &progress,
    );
    let (merged, streamed) = tokio::join!(merge, streamed);
    let scanned = scan_task.await.context("the scan task panicked")??;
    let merged = merged.context("reading the catalog")?;
    streamed?;

    m.last_full_scan.set(Utc::now().timestamp());
    report.scanned = merged.local_files;
    report.unchanged = merged.unchanged;
    m.files_scanned.inc_by(report.scanned);
    for s in &scanned.skipped {
        m.files_skipped.with_label_values(&[s.reason.label()]).inc();
        if s.reason.is_problem() {
            tracing::warn!(path = %s.path, raw_hex = s.raw_hex.as_deref().unwrap_or(""), reason = s.reason.label(), "not synced");
        } else {
            tracing::debug!(path = %s.path, reason = s.reason.label(), "skipped");
        }
    }
    for f in &scanned.failures {
        m.errors.with_label_values(&["scan", "io"]).inc();
        tracing::error!(path = %f.path, error = %f.error, "cannot read entry");
        report.failed.push(Failure {
            path: f.path.clone(),
            stage: "scan",
            error: f.error.clone(),
        });
    }
    let scan_failures = scanned.failures.len() as u64;
    report.skipped = scanned.skipped;

    if opts.dry_run {
        report.planned = merged.planned;
        let ctx = DeleteContext {
            deletes: merged.gone.len() as u64,
            tracked: merged.tracked,
            local_files: merged.local_files,
            scan_failures,
        };
        match plan::check_deletes(&settings.delete_guards(), &ctx) {
            Ok(()) => report.planned.extend(merged.gone.iter().map(|r| {
                format!(
                    "delete {} -> {} (or rename, if a new file has its content)",
                    r.path, r.s3_key
                )
            })),
            Err(b) => report
                .planned
                .push(format!("deletes blocked: {}", b.message)),
        }
        report.elapsed = started.elapsed();
        return Ok(report);
    }

    let unsyncable: Vec<_> = report
        .skipped
        .iter()
        .filter(|s| s.reason.is_problem())
        .map(|s| (s.path.clone(), s.raw_hex.clone(), s.reason.label()))
        .collect();
    catalog::replace_unsyncable(&agent.pool, agent.id, &unsyncable)
        .await
        .context("recording unsyncable names")?;

    // New files, now that every vanished row is known: a twin of one is a rename.
    let sources = plan::rename_sources(&merged.gone);
    let copies = process(
        agent,
        stream::iter(merged.deferred),
        &sources,
        &mut writer,
        &mut report,
        &progress,
    )
    .await?;
    writer.flush().await.context("writing the catalog")?;

    delete_gone(
        agent,
        merged.gone,
        &copies,
        merged.tracked,
        merged.local_files,
        scan_failures,
        &mut report,
    )
    .await?;
    if report.deleted > 0 {
        retry_after_deletes(agent, &mut writer, &mut report, &progress).await?;
    }

    let totals = catalog::agent_totals(&agent.pool, agent.id).await?;
    m.tracked_files.set(totals.synced_files);
    m.tracked_bytes.set(totals.synced_bytes);
    m.pending_files.set(totals.unsynced_files);
    report.elapsed = started.elapsed();
    if report.converged() {
        m.last_success.set(Utc::now().timestamp());
    }
    Ok(report)
}

/// Gives the files whose transfer failed one more try once this pass's deletes are done.
///
/// Stores that keep objects as files (MinIO, s3s-fs) cannot hold key `x` while `x/a` exists,
/// nor `x/a` while `x` exists. Uploads run before deletes, so a directory replaced by a file
/// (or the reverse) fails its upload until the old keys are gone; without this retry it would
/// take a second pass.
async fn retry_after_deletes(
    agent: &Agent,
    writer: &mut CatalogWriter,
    report: &mut SyncReport,
    progress: &Progress,
) -> anyhow::Result<()> {
    let retry: Vec<String> = report
        .failed
        .iter()
        .filter(|f| f.stage == "transfer")
        .map(|f| f.path.clone())
        .collect();
    if retry.is_empty() {
        return Ok(());
    }
    let rows = catalog::rows_by_paths(&agent.pool, agent.id, &retry).await?;
    let mut work = Vec::new();
    for path in &retry {
        if let scan::PathState::File(local) = scan::inspect(
            &agent.settings.sync_root,
            path,
            &agent.prefix,
            &agent.excludes,
        ) {
            let previous = rows.iter().find(|r| &r.path == path).cloned();
            work.push(Work { local, previous });
        }
    }
    report
        .failed
        .retain(|f| !(f.stage == "transfer" && retry.contains(&f.path)));
    tracing::info!(
        files = work.len(),
        "retrying failed uploads after the deletes"
    );
    process(
        agent,
        stream::iter(work),
        &HashMap::new(),
        writer,
        report,
        progress,
    )
    .await?;
    writer.flush().await.context("writing the catalog")?;
    Ok(())
}

/// Files waiting in the channel from the walk to the merge.
const SCAN_QUEUE: usize = 4096;
/// Work items waiting for a transfer slot.
const WORK_QUEUE: usize = 1024;

/// What the merge of the walk with the catalog found.
#[derive(Default)]
struct Merged {
    local_files: u64,
    unchanged: u64,
    /// Rows `synced` before the pass (the base of MAX_DELETE_PERCENT).
    tracked: u64,
    /// Rows (not yet `deleted`) whose file is gone.
    gone: Vec<FileRow>,
    /// New files held back until every vanished row is known.
    deferred: Vec<Work>,
    /// With --dry-run: what would be read.
    planned: Vec<String>,
}

impl Merged {
    /// A row with no local file.
    fn gone_or_tracked(&mut self, row: FileRow) {
        if row.status == FileStatus::Synced {
            self.tracked += 1;
        }
        if row.status != FileStatus::Deleted {
            self.gone.push(row);
        }
    }
}

fn describe(w: &Work) -> String {
    let why = match &w.previous {
        None => "new",
        Some(r) if r.status == FileStatus::Synced => "changed",
        Some(_) => "not yet synced",
    };
    format!("read  {} ({why}) -> {}", w.local.path, w.local.key)
}

/// Reads an agent's catalog rows in bytewise path order, one batch at a time.
///
/// Uploads write rows while the cursor is still reading. Those rows are always at or behind the
/// merge, and the next batch is fetched only when the merge reaches the end of the current one,
/// so a fetch never returns them. The `floor` enforces the same independently of that fetch
/// timing: every pre-existing row up to the last merged path has been handed out already, so a
/// row at or below it can only be one this pass wrote, and treating it as vanished would
/// delete a fresh upload.
struct RowCursor<'a> {
    agent: &'a Agent,
    batch: std::collections::VecDeque<FileRow>,
    size: i64,
    last: Option<String>,
    floor: Option<String>,
    done: bool,
}

impl<'a> RowCursor<'a> {
    fn new(agent: &'a Agent, size: i64) -> Self {
        RowCursor {
            agent,
            batch: Default::default(),
            size,
            last: None,
            floor: None,
            done: false,
        }
    }

    /// Records that every local path up to `path` has been merged.
    fn merged_up_to(&mut self, path: &str) {
        self.floor = Some(path.to_string());
    }

    async fn peek(&mut self) -> sqlx::Result<Option<&FileRow>> {
        loop {
            if let Some(floor) = &self.floor {
                while self
                    .batch
                    .front()
                    .is_some_and(|r| r.path.as_bytes() <= floor.as_bytes())
                {
                    self.batch.pop_front();
                }
            }
            if !self.batch.is_empty() || self.done {
                return Ok(self.batch.front());
            }
            let page = catalog::files_page(
                &self.agent.pool,
                self.agent.id,
                self.last.as_deref(),
                self.size,
            )
            .await?;
            self.done = (page.len() as i64) < self.size;
            self.last = page.last().map(|r| r.path.clone()).or(self.last.take());
            self.batch.extend(page);
        }
    }

    /// The next row if its path sorts before `path`.
    async fn next_before(&mut self, path: &str) -> sqlx::Result<Option<FileRow>> {
        let before = self
            .peek()
            .await?
            .is_some_and(|r| r.path.as_bytes() < path.as_bytes());
        Ok(if before { self.batch.pop_front() } else { None })
    }

    /// The next row if its path is `path`.
    async fn next_equal(&mut self, path: &str) -> sqlx::Result<Option<FileRow>> {
        let equal = self.peek().await?.is_some_and(|r| r.path == path);
        Ok(if equal { self.batch.pop_front() } else { None })
    }

    /// The next row, whatever its path.
    async fn next_any(&mut self) -> sqlx::Result<Option<FileRow>> {
        self.peek().await?;
        Ok(self.batch.pop_front())
    }
}

/// Syncs a stream of work items with bounded concurrency, records each outcome and adds it to
/// the report. Returns the renames done: vanished path -> new path.
pub(crate) async fn process(
    agent: &Agent,
    work: impl futures::Stream<Item = Work>,
    sources: &HashMap<(i64, String), FileRow>,
    writer: &mut CatalogWriter,
    report: &mut SyncReport,
    progress: &Progress,
) -> anyhow::Result<HashMap<String, String>> {
    let m = &agent.metrics;
    let mut copies = HashMap::new();
    let mut outcomes = std::pin::pin!(work
        .map(|w| sync_file(agent, w, sources))
        .buffer_unordered(agent.settings.upload_concurrency));
    while let Some((hashed, outcome)) = outcomes.next().await {
        report.hashed += hashed;
        progress.done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Synced {
                row,
                uploaded_bytes,
                renamed_from,
            } => {
                match (uploaded_bytes, &renamed_from) {
                    (Some(n), _) => {
                        progress.bytes.fetch_add(n, Ordering::Relaxed);
                        report.uploaded += 1;
                        report.bytes_uploaded += n;
                        m.files_uploaded.inc();
                        m.bytes_uploaded.inc_by(n);
                    }
                    (None, Some(from)) => {
                        report.renamed += 1;
                        m.files_renamed.inc();
                        copies.insert(from.clone(), row.path.clone());
                    }
                    (None, None) => report.metadata_only += 1,
                }
                writer.synced(row).await?;
            }
            Outcome::Failed(failure, kind, previous, meta) => {
                m.errors.with_label_values(&[failure.stage, kind]).inc();
                tracing::error!(path = %failure.path, stage = failure.stage, error = %failure.error, "sync failed");
                let key = format!("{}{}", agent.prefix, failure.path);
                writer
                    .failed(FailedFile {
                        path: failure.path.clone(),
                        s3_key: previous.as_ref().map(|p| p.s3_key.clone()).unwrap_or(key),
                        size_bytes: meta.size as i64,
                        mtime: meta.mtime,
                        error: failure.error.clone(),
                        stage: failure.stage,
                    })
                    .await?;
                report.failed.push(failure);
            }
            Outcome::Vanished(path, written) => {
                if let Some(p) = written {
                    // Its object was just written: keep it tracked so the next pass deletes it.
                    tracing::info!(path = %path, key = %p.s3_key, "vanished right after upload; left pending");
                    writer.pending(p).await?;
                }
                report.vanished.push(path);
            }
            Outcome::Unstable(mut p) => {
                m.errors.with_label_values(&["transfer", "changing"]).inc();
                p.reason = format!(
                    "kept changing during {ATTEMPTS} attempts; left pending for the next pass"
                );
                tracing::warn!(path = %p.path, "{}", p.reason);
                report.failed.push(Failure {
                    path: p.path.clone(),
                    stage: "transfer",
                    error: p.reason.clone(),
                });
                writer.pending(p).await?;
            }
        }
    }
    Ok(copies)
}

/// Reads, hashes and stores one file. Returns the number of hashes computed and the outcome.
async fn sync_file(
    agent: &Agent,
    work: Work,
    sources: &HashMap<(i64, String), FileRow>,
) -> (u64, Outcome) {
    let abs = transfer::absolute(&agent.settings.sync_root, &work.local.path);
    let path = work.local.path.clone();
    let failed = |stage, kind, error: String, meta| {
        Outcome::Failed(
            Failure {
                path: path.clone(),
                stage,
                error,
            },
            kind,
            work.previous.clone(),
            meta,
        )
    };
    let mut hashes = 0;
    // Set once an attempt wrote the object: from then on the key must stay tracked.
    let mut wrote = false;
    let pending = || PendingFile {
        path: path.clone(),
        s3_key: work.local.key.clone(),
        size_bytes: work.local.meta.size as i64,
        mtime: work.local.meta.mtime,
        reason: "vanished after its upload".into(),
    };
    for _ in 0..ATTEMPTS {
        let p = abs.clone();
        let hashed =
            match tokio::task::spawn_blocking(move || hash::hash_file(&p, IN_MEMORY_LIMIT)).await {
                Ok(Ok(h)) => h,
                Ok(Err(HashError::Changed)) => continue,
                Ok(Err(HashError::Vanished)) => {
                    return (hashes, Outcome::Vanished(path.clone(), wrote.then(pending)))
                }
                Ok(Err(e)) => {
                    return (
                        hashes,
                        failed("hash", e.kind(), e.to_string(), work.local.meta),
                    )
                }
                Err(e) => {
                    return (
                        hashes,
                        failed("hash", "panic", e.to_string(), work.local.meta),
                    )
                }
            };
        hashes += 1;
        agent.metrics.hash_bytes.inc_by(hashed.meta.size);
        let md5_hex = hex::encode(hashed.md5);
        let content_type = content_type_for(&work.local.path);
        let decision = plan::decide(&work, &md5_hex, sources);
        let key = &work.local.key;
        let timer = std::time::Instant::now();
        let stored: Result<Option<transfer::Stored>, TransferError> = match &decision {
            Decision::MetadataOnly => Ok(None),
            Decision::Copy { from } => agent.transfer.copy(&from.s3_key, key).await.map(Some),
            Decision::Upload => match hashed.bytes {
                Some(body) => agent
                    .transfer
                    .put_bytes(key, body, &hashed.md5, &content_type)
                    .await
                    .map(Some),
                None => agent
                    .transfer
                    .put_file(key, &abs, hashed.meta.size, &hashed.md5, &content_type)
                    .await
                    .map(Some),
            },
        };
        let stored = match stored {
            Ok(s) => {
                wrote |= s.is_some();
                s
            }
            Err(e) => {
                return (
                    hashes,
                    failed("transfer", e.kind(), e.to_string(), hashed.meta),
                )
            }
        };
        if decision == Decision::Upload {
            agent
                .metrics
                .upload_duration
                .observe(timer.elapsed().as_secs_f64());
        }
        // The bytes S3 holds are the ones we hashed only if the file still looks the same.
        let now = std::fs::symlink_metadata(&abs).map(|m| FileMeta::from_metadata(&m));
        if now.as_ref().ok() != Some(&hashed.meta) {
            if now.is_err() {
                return (hashes, Outcome::Vanished(path.clone(), wrote.then(pending)));
            }
            continue;
        }
        let first = work
            .previous
            .as_ref()
            .is_none_or(|p| p.status == FileStatus::Deleted);
        let (event, details, renamed_from) = match &decision {
            Decision::MetadataOnly => (
                EventKind::Updated,
                json!({"metadata_only": true, "size": hashed.meta.size}),
                None,
            ),
            Decision::Copy { from } => (
                EventKind::Renamed,
                json!({"from": from.path, "md5": md5_hex}),
                Some(from.path.clone()),
            ),
            Decision::Upload => (
                if first {
                    EventKind::Uploaded
                } else {
                    EventKind::Updated
                },
                json!({"size": hashed.meta.size, "md5": md5_hex, "etag": stored.as_ref().and_then(|s| s.etag.clone()), "multipart": stored.as_ref().is_some_and(|s| s.multipart)}),
                None,
            ),
        };
        let uploaded_bytes = (decision == Decision::Upload).then_some(hashed.meta.size);
        let row = SyncedFile {
            path: work.local.path.clone(),
            s3_key: key.clone(),
            size_bytes: hashed.meta.size as i64,
            mtime: hashed.meta.mtime,
            md5: md5_hex,
            etag: stored.and_then(|s| s.etag),
            content_type,
            inode: Some(hashed.meta.inode),
            ctime: Some(hashed.meta.ctime),
            event,
            details,
        };
        return (
            hashes,
            Outcome::Synced {
                row,
                uploaded_bytes,
                renamed_from,
            },
        );
    }
    (hashes, Outcome::Unstable(pending()))
}

/// Deletes (or, with DELETE_MODE=keep, only marks) the rows whose file is gone, if the guards
/// allow. Rename sources are handled here too: their content lives on under the new key.
pub(crate) async fn delete_gone(
    agent: &Agent,
    gone: Vec<FileRow>,
    renamed: &HashMap<String, String>,
    tracked: u64,
    local_files: u64,
    scan_failures: u64,
    report: &mut SyncReport,
) -> anyhow::Result<()> {
    if gone.is_empty() {
        return Ok(());
    }
    let plain = gone
        .iter()
        .filter(|r| !renamed.contains_key(&r.path))
        .count() as u64;
    let ctx = DeleteContext {
        deletes: plain,
        tracked,
        local_files,
        scan_failures,
    };
    if let Err(blocked) = plan::check_deletes(&agent.settings.delete_guards(), &ctx) {
        agent
            .metrics
            .deletes_blocked
            .with_label_values(&[blocked.guard.label()])
            .inc();
        tracing::error!(guard = blocked.guard.label(), "{}", blocked.message);
        report.deletes_blocked = Some(blocked);
        return Ok(());
    }
    let keep = agent.settings.delete_mode == DeleteMode::Keep;
    for chunk in gone.chunks(1000) {
        let mut failed_keys: HashMap<String, String> = HashMap::new();
        if !keep {
            let keys: Vec<String> = chunk.iter().map(|r| r.s3_key.clone()).collect();
            match agent.transfer.delete_batch(&keys).await {
                Ok(errors) => failed_keys.extend(errors),
                Err(e) => {
                    let msg = e.to_string();
                    failed_keys.extend(keys.into_iter().map(|k| (k, msg.clone())));
                }
            }
        }
        let mut done = Vec::with_capacity(chunk.len());
        for row in chunk {
            if let Some(err) = failed_keys.get(&row.s3_key) {
                agent
                    .metrics
                    .errors
                    .with_label_values(&["delete", "s3_error"])
                    .inc();
                tracing::error!(path = %row.path, key = %row.s3_key, error = %err, "delete failed");
                report.failed.push(Failure {
                    path: row.path.clone(),
                    stage: "delete",
                    error: err.clone(),
                });
                continue;
            }
            let details = match renamed.get(&row.path) {
                Some(to) => json!({"renamed_to": to, "object_kept": keep}),
                None => json!({"object_kept": keep}),
            };
            done.push((row.path.clone(), details));
        }
        catalog::record_deleted(&agent.pool, agent.id, &done).await?;
        let plain_done = done
            .iter()
            .filter(|(p, _)| !renamed.contains_key(p))
            .count() as u64;
        report.deleted += plain_done;
        agent.metrics.files_deleted.inc_by(plain_done);
    }
    Ok(())
}
