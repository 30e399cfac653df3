//! The pass entry: [`sync`] over a [`Scope`], everything (a full pass) or the paths of a watch
//! batch (`pass::batch`); and the full pass itself, as named steps in the order they run.
//!
//! In: an [`Agent`], a [`Scope`] and [`SyncOptions`]. Out: a [`SyncReport`] with every count,
//! every skipped entry and every failure, after S3 and the catalog have been brought in line
//! with the tree as far as the guards allow. `Err` only for what stops a whole run: the root
//! is missing, or the catalog cannot be reached.
//!
//! 1. `scan_merge_transfer`: the walk ([`crate::fs::scan`]) feeds the merge with the catalog
//!    ([`crate::pass::merge`]), whose work is hashed and stored ([`crate::pass::file`]) and
//!    recorded ([`crate::pass::record`]) while the walk goes on. New files wait when they might
//!    be renames.
//! 2. [`transfer_files`] for those new files, once every vanished row is known, so that a twin
//!    of a vanished file becomes a server-side copy.
//! 3. [`crate::pass::delete::delete_gone`], after every upload and copy, so a rename never loses
//!    its source, and only when no guard objects; then `retry_after_deletes`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::catalog::FileRow;
use anyhow::Context;
use chrono::Utc;
use futures::stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::Agent;
use crate::fs::scan::{self, ScanError, ScanOutcome};
use crate::model::report::{Stage, SyncReport};
use crate::model::tree::LocalFile;
use crate::pass::batch::{sync_targeted, Targeted};
use crate::pass::delete;
use crate::pass::file::{rename_sources, RenameSources};
use crate::pass::jobs::transfer_files;
use crate::pass::merge::{Entry, Merge, Work};
use crate::pass::progress::Progress;
use crate::pass::record::Recorder;
use crate::policy::delete_rules::DeleteContext;
use crate::policy::guard;

/// Files waiting in the channel from the walk to the merge.
const SCAN_QUEUE: usize = 4096;
/// Work items waiting for a transfer slot.
const WORK_QUEUE: usize = 1024;

/// How to run a pass.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Print the plan; change nothing in S3 or the catalog.
    pub dry_run: bool,
    /// Catalog rows read per page while merging them with the tree.
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

/// What one run of the pipeline covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Everything under SYNC_ROOT: the walk, merged with every row (a full pass).
    Everything,
    /// The paths watch mode names (a watch batch).
    Paths(Targeted),
}

/// The one entry of the pipeline, for a full pass and a watch batch alike (Syncthing's
/// `scanSubdirs`): the same stages, guards and recorder, over the scope given. `opts` apply to
/// a full pass (a watch batch is never a dry run and draws no progress).
pub async fn sync(agent: &Agent, scope: Scope, opts: &SyncOptions) -> anyhow::Result<SyncReport> {
    match scope {
        Scope::Everything => sync_everything(agent, opts).await,
        Scope::Paths(targeted) => sync_targeted(agent, targeted).await,
    }
}

/// Runs one full pass: [`sync`] over [`Scope::Everything`].
pub async fn sync_once(agent: &Agent, opts: &SyncOptions) -> anyhow::Result<SyncReport> {
    sync(agent, Scope::Everything, opts).await
}

/// The full pass: walk, merge, transfer, deferred renames, deletes, retries.
async fn sync_everything(agent: &Agent, opts: &SyncOptions) -> anyhow::Result<SyncReport> {
    let started = Instant::now();
    // Fail before anything else when the root is gone (an unmounted share).
    if !agent.root.is_dir() {
        return Err(ScanError::RootMissing(agent.root.clone()).into());
    }
    let mut rec = Recorder::new(agent);
    let _reporter = opts
        .progress
        .then(|| crate::pass::progress::report(rec.progress()));

    if !opts.dry_run {
        agent.guards.begin_full_pass();
        agent
            .guards
            .load_tripwire(guard::Tracked::Count)
            .await
            .context("reading the guards")?;
    }
    let merged = scan_merge_transfer(agent, opts, &mut rec).await?;
    if opts.dry_run {
        return dry_run_report(agent, merged, rec, started).await;
    }
    rec.unsyncable()
        .await
        .context("recording unsyncable names")?;

    let sources = rename_sources(&merged.gone);
    transfer_files(agent, stream::iter(merged.deferred), &sources, &mut rec).await?;
    rec.flush().await.context("writing the catalog")?;

    let ctx = merged.delete_context;
    delete::delete_gone(agent, merged.gone, &ctx, &mut rec).await?;
    if rec.report().deleted > 0 {
        retry_after_deletes(agent, &mut rec).await?;
    }
    agent.guards.settle().await.context("writing the guards")?;
    rec.finish(started).await
}

/// What the merge of the walk with the catalog found.
#[derive(Debug, Default)]
struct Merged {
    /// Rows (not yet `deleted`) whose file is gone.
    gone: Vec<FileRow>,
    /// New files held back until every vanished row is known.
    deferred: Vec<Work>,
    /// With --dry-run: what would be read.
    planned: Vec<String>,
    /// Files whose row vouched for them: not read.
    unchanged: u64,
    /// What the delete guards need: tracked rows, local files, scan failures.
    delete_context: DeleteContext,
}

/// Scan → merge → hash → transfer → record, streamed: uploads start while the walk goes on.
/// Without live rows no new file can be a rename, so on a first sync no file waits.
async fn scan_merge_transfer(
    agent: &Agent,
    opts: &SyncOptions,
    rec: &mut Recorder<'_>,
) -> anyhow::Result<Merged> {
    let renames_possible = agent
        .catalog
        .has_live_files()
        .await
        .context("reading the catalog")?;
    let (walk, files) = start_walk(agent);
    let (work_tx, work_rx) = mpsc::channel::<Work>(WORK_QUEUE);
    let merge = merge_tree(
        agent,
        files,
        work_tx,
        renames_possible,
        opts,
        rec.progress(),
    );
    let no_sources = RenameSources::new();
    let transfers = transfer_files(agent, ReceiverStream::new(work_rx), &no_sources, rec);
    let (merged, transferred) = tokio::join!(merge, transfers);
    let scanned = walk.await.context("the scan task panicked")??;
    let mut merged = merged.context("reading the catalog")?;
    transferred?;

    agent.metrics.last_full_scan.set(Utc::now().timestamp());
    agent
        .metrics
        .files_scanned
        .inc_by(merged.delete_context.local_files);
    merged.delete_context.scan_failures = scanned.failures.len() as u64;
    let report = rec.report();
    report.scanned = merged.delete_context.local_files;
    report.unchanged = merged.unchanged;
    rec.scan(scanned);
    Ok(merged)
}

/// Starts the walk on a blocking thread; its files come through a bounded channel, in
/// bytewise path order.
fn start_walk(
    agent: &Agent,
) -> (
    JoinHandle<Result<ScanOutcome, ScanError>>,
    mpsc::Receiver<LocalFile>,
) {
    let (tx, rx) = mpsc::channel::<LocalFile>(SCAN_QUEUE);
    let walk = agent.on_tree(move |root, prefix, excludes| {
        scan::scan_with(root, prefix, excludes, |f| tx.blocking_send(f).is_ok())
    });
    (walk, rx)
}

/// Merges the walk with the catalog: sends work on `work` as it is found (new files are held
/// back when `hold_new` is set, since they might be renames), and sums up the rest.
async fn merge_tree(
    agent: &Agent,
    files: mpsc::Receiver<LocalFile>,
    work: mpsc::Sender<Work>,
    hold_new: bool,
    opts: &SyncOptions,
    progress: Arc<Progress>,
) -> anyhow::Result<Merged> {
    let rows = (*agent.catalog).clone();
    let mut merge = Merge::new(ReceiverStream::new(files), rows, opts.row_batch);
    let mut m = Merged::default();
    while let Some(entry) = merge.next().await? {
        let ctx = &mut m.delete_context;
        let w = match entry {
            Entry::Gone(row) => {
                ctx.tracked += u64::from(crate::model::row::is_tracked(&row));
                m.gone.push(row);
                continue;
            }
            Entry::Unchanged(_) => {
                ctx.tracked += 1;
                ctx.local_files += 1;
                m.unchanged += 1;
                progress.scanned.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Entry::Work(w) => w,
        };
        ctx.tracked += u64::from(
            w.previous
                .as_ref()
                .is_some_and(crate::model::row::is_tracked),
        );
        ctx.local_files += 1;
        progress.scanned.fetch_add(1, Ordering::Relaxed);
        if opts.dry_run {
            m.planned.push(describe(&w));
        } else if w.previous.is_none() && hold_new {
            m.deferred.push(w);
        } else if work.send(w).await.is_err() {
            break;
        }
    }
    Ok(m)
}

/// One line of `--dry-run` output.
fn describe(w: &Work) -> String {
    let why = match &w.previous {
        None => "new",
        Some(r) if crate::model::row::is_tracked(r) => "changed",
        Some(_) => "not yet synced",
    };
    format!("read  {} ({why}) -> {}", w.local.path, w.local.key)
}

/// The report of a dry run: what would be read, and what would be deleted (or why not).
/// The plan of a dry run: the guards (over their window, holds included: they only read) say
/// whether the deletes would go.
async fn dry_run_report(
    agent: &Agent,
    merged: Merged,
    mut rec: Recorder<'_>,
    started: Instant,
) -> anyhow::Result<SyncReport> {
    let mut report = std::mem::take(rec.report());
    report.planned = merged.planned;
    let n = merged.gone.len() as u64;
    match agent
        .guards
        .check_deletes(&merged.delete_context, n)
        .await?
    {
        Ok(_) => report.planned.extend(merged.gone.iter().map(|r| {
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
    Ok(report)
}

/// Gives the files whose transfer failed one more try once this pass's deletes are done.
///
/// Stores that keep objects as files (MinIO, s3s-fs) cannot hold key `x` while `x/a` exists,
/// nor `x/a` while `x` exists. Uploads run before deletes, so a directory replaced by a file
/// (or the reverse) fails its upload until the old keys are gone; without this retry it would
/// take a second pass.
async fn retry_after_deletes(agent: &Agent, rec: &mut Recorder<'_>) -> anyhow::Result<()> {
    let failed = &mut rec.report().failed;
    let retry: Vec<String> = failed
        .iter()
        .filter(|f| f.stage == Stage::Transfer)
        .map(|f| f.path.clone())
        .collect();
    if retry.is_empty() {
        return Ok(());
    }
    failed.retain(|f| !(f.stage == Stage::Transfer && retry.contains(&f.path)));
    let rows = agent.catalog.rows_by_paths(&retry).await?;
    let mut work = Vec::new();
    for path in &retry {
        if let scan::PathState::File(local) =
            scan::inspect(&agent.root, path, &agent.prefix, &agent.excludes)
        {
            let previous = rows.iter().find(|r| &r.path == path).cloned();
            work.push(Work { local, previous });
        }
    }
    tracing::info!(
        files = work.len(),
        "retrying failed uploads after the deletes"
    );
    transfer_files(agent, stream::iter(work), &RenameSources::new(), rec).await?;
    rec.flush().await.context("writing the catalog")?;
    Ok(())
}
