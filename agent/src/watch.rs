//! Stage 6, watch: live sync that never silently stops.
//!
//! In: an [`Agent`], file-system events from notify (inotify), and a shutdown signal.
//! Out: the same S3 objects and catalog rows a full pass would produce, within about
//! SETTLE_TIME of a change. The loop:
//! 1. runs a full pass at start (retrying with backoff while PostgreSQL or S3 are down);
//! 2. records each event's path as pending, due SETTLE_TIME after its latest event, so a file
//!    still being written is never synced half-way; a close after writing (IN_CLOSE_WRITE)
//!    means the writer is done, so that file is due almost at once (CLOSED_SETTLE);
//! 3. syncs settled paths as one targeted batch (the pipeline of a full pass, for just those
//!    paths); a directory that appeared is walked, so files written before its watch existed
//!    are found;
//! 4. holds vanished paths for DELETE_GRACE and deletes only those still absent, through the
//!    same guards as a full pass; a vanished row is a rename source meanwhile, so a move is a
//!    server-side copy and an atomic save (temp file renamed over the target) deletes nothing;
//! 5. runs a full reconcile every RESCAN_INTERVAL, and at once on a queue overflow, a rescan
//!    flag, an event with no path, or a watcher error;
//! 6. on failure (database, S3) puts the batch back with exponential backoff: nothing queued is
//!    lost, and `/readyz` says not ready meanwhile.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use portail_core::catalog::{self, FileRow, FileStatus};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::catalog::CatalogWriter;
use crate::plan::{self, Work};
use crate::progress::Progress;
use crate::scan::{self, PathState};
use crate::sync::{self, SyncOptions, SyncReport};
use crate::Agent;

/// Why watch mode ran a full reconcile (the `cause` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescanCause {
    /// The first pass.
    Startup,
    /// RESCAN_INTERVAL elapsed.
    Interval,
    /// The kernel queue overflowed, or an event carried the rescan flag or no path.
    Overflow,
    /// The watcher reported an error (e.g. out of inotify watches).
    WatchError,
    /// Asked for through [`WatchHandle::rescan`].
    Forced,
}

impl RescanCause {
    /// Every cause, so the metric exports a zero for each before one happens.
    pub const ALL: [RescanCause; 5] = [
        RescanCause::Startup,
        RescanCause::Interval,
        RescanCause::Overflow,
        RescanCause::WatchError,
        RescanCause::Forced,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RescanCause::Startup => "startup",
            RescanCause::Interval => "interval",
            RescanCause::Overflow => "overflow",
            RescanCause::WatchError => "watch_error",
            RescanCause::Forced => "forced",
        }
    }
}

/// What the notify callback (and tests) send to the loop.
#[derive(Debug)]
pub enum Signal {
    /// Something happened at these absolute paths.
    Paths(Vec<PathBuf>),
    /// A writer closed these files: they are settled unless another event follows.
    Closed(Vec<PathBuf>),
    /// Reconcile everything now.
    Rescan(RescanCause),
}

/// Liveness of the watcher, for `/readyz`.
#[derive(Debug, Default)]
pub struct WatchHealth {
    /// The inotify watch is in place and reporting.
    pub watcher_alive: AtomicBool,
    /// The last batch or pass reached PostgreSQL and S3.
    pub last_pass_ok: AtomicBool,
}

/// A handle on a running watch loop.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    tx: mpsc::UnboundedSender<Signal>,
    /// Shared health flags.
    pub health: Arc<WatchHealth>,
}

impl WatchHandle {
    /// Asks for an immediate full reconcile, as an overflow would.
    pub fn rescan(&self, cause: RescanCause) {
        let _ = self.tx.send(Signal::Rescan(cause));
    }
}

/// How long a file closed after writing waits for a further event before it is synced. The
/// close says the writer is done; this only gathers a burst of closes into one batch.
const CLOSED_SETTLE: Duration = Duration::from_millis(20);

/// One pending path: when it may be processed, and when it was first seen (for the lag).
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    since: Instant,
    attempts: u32,
}

/// Runs watch mode until `shutdown` resolves. Returns after in-flight work finished or
/// SHUTDOWN_TIMEOUT passed.
pub async fn run(
    agent: &Agent,
    shutdown: impl std::future::Future<Output = ()>,
    on_start: impl FnOnce(WatchHandle),
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Signal>();
    let health = Arc::new(WatchHealth::default());
    on_start(WatchHandle {
        tx: tx.clone(),
        health: health.clone(),
    });
    let root = agent.settings.sync_root.clone();
    let settle = agent.settings.settle_time.0;
    let grace = agent.settings.delete_grace.0;
    let mut shutdown = std::pin::pin!(shutdown);

    // The watcher starts before the first pass, so nothing written during it is missed.
    let _watcher = start_watcher(&root, tx.clone(), &health);
    let mut state = State {
        pending: HashMap::new(),
        vanished: HashMap::new(),
        full_due: Some((Instant::now(), RescanCause::Startup)),
        backoff: Duration::ZERO,
    };
    let mut interval = tokio::time::interval_at(
        Instant::now() + agent.settings.rescan_interval.0,
        agent.settings.rescan_interval.0,
    );
    let tick = (settle / 4).clamp(Duration::from_millis(10), CLOSED_SETTLE);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(sig) = rx.recv() => match sig {
                Signal::Paths(paths) => state.touched(&root, paths, settle),
                Signal::Closed(paths) => state.touched(&root, paths, settle.min(CLOSED_SETTLE)),
                Signal::Rescan(cause) => {
                    tracing::warn!(cause = cause.label(), "full reconcile requested");
                    state.full_due.get_or_insert((Instant::now(), cause));
                }
            },
            _ = interval.tick() => { state.full_due.get_or_insert((Instant::now(), RescanCause::Interval)); }
            _ = ticker.tick() => {
                let Some(work) = state.next_work(Instant::now()) else {
                    agent.metrics.sync_lag.set(state.lag_seconds());
                    continue;
                };
                let stop = {
                    let mut fut = std::pin::pin!(state.run_work(agent, work, grace));
                    tokio::select! {
                        _ = &mut fut => false,
                        _ = &mut shutdown => {
                            tracing::info!("shutting down: finishing in-flight work");
                            if tokio::time::timeout(agent.settings.shutdown_timeout.0, &mut fut).await.is_err() {
                                tracing::warn!("in-flight work did not finish within SHUTDOWN_TIMEOUT; exiting anyway");
                            }
                            true
                        }
                    }
                };
                if stop {
                    break;
                }
                health.last_pass_ok.store(state.backoff.is_zero(), Ordering::Relaxed);
                agent.metrics.sync_lag.set(state.lag_seconds());
            }
        }
    }
    tracing::info!("watch mode stopped");
    Ok(())
}

/// Starts the recursive inotify watch. On failure (no watches left, root missing) the agent
/// keeps going on periodic full reconciles, and says so once, with the fix.
fn start_watcher(
    root: &Path,
    tx: mpsc::UnboundedSender<Signal>,
    health: &Arc<WatchHealth>,
) -> Option<notify::RecommendedWatcher> {
    let cb_health = health.clone();
    let cb_tx = tx.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let sig = match res {
            // Reads (open, close-without-write) change nothing; the agent's own hashing and
            // every download from the file server would otherwise queue needless re-checks.
            // A writer closed the file: it is complete now, no need to wait SETTLE_TIME.
            Ok(ev)
                if matches!(
                    ev.kind,
                    notify::EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write
                    ))
                ) && !ev.need_rescan() =>
            {
                Signal::Closed(ev.paths)
            }
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) && !ev.need_rescan() => {
                return;
            }
            Ok(ev) if ev.need_rescan() || ev.paths.is_empty() => {
                Signal::Rescan(RescanCause::Overflow)
            }
            Ok(ev) => Signal::Paths(ev.paths),
            // Out of watches: say it once, with the fix, and rescan once. Every new directory
            // repeats this error; answering each with a full reconcile would be a spin.
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                if !cb_health.watcher_alive.swap(false, Ordering::Relaxed) {
                    return;
                }
                report_watch_error(&e);
                Signal::Rescan(RescanCause::WatchError)
            }
            Err(e) => {
                report_watch_error(&e);
                Signal::Rescan(RescanCause::WatchError)
            }
        };
        let _ = cb_tx.send(sig);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            report_watch_error(&e);
            return None;
        }
    };
    match watcher.watch(root, RecursiveMode::Recursive) {
        Ok(()) => {
            health.watcher_alive.store(true, Ordering::Relaxed);
            Some(watcher)
        }
        Err(e) => {
            report_watch_error(&e);
            None
        }
    }
}

fn report_watch_error(e: &notify::Error) {
    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
        tracing::error!(
            "out of inotify watches: changes are now picked up only by the periodic full reconcile (RESCAN_INTERVAL). Fix: raise the limit, e.g. `sysctl fs.inotify.max_user_watches=1048576` (persist it in /etc/sysctl.d/)"
        );
    } else {
        tracing::error!(error = %e, "file watcher error; running a full reconcile");
    }
}

/// What to do on a tick.
enum Tick {
    Full(RescanCause),
    Batch {
        paths: Vec<(String, Due)>,
        deletes: Vec<(String, Due)>,
    },
}

struct State {
    /// Paths with events, due once settled (or after a retry backoff).
    pending: HashMap<String, Due>,
    /// Paths found missing, due for deletion after DELETE_GRACE.
    vanished: HashMap<String, Due>,
    /// A full reconcile is wanted, since when and why.
    full_due: Option<(Instant, RescanCause)>,
    /// Current retry backoff after a failure; zero when healthy.
    backoff: Duration,
}

impl State {
    /// Marks paths as changed, due `settle` from now (a later event pushes it back again).
    fn touched(&mut self, root: &Path, paths: Vec<PathBuf>, settle: Duration) {
        let now = Instant::now();
        for p in paths {
            if let Some(rel) = scan::relative_utf8(root, &p) {
                let since = self.pending.get(&rel).map_or(now, |d| d.since);
                self.pending.insert(
                    rel,
                    Due {
                        at: now + settle,
                        since,
                        attempts: 0,
                    },
                );
            }
        }
    }

    /// The work due now: a full reconcile (which covers everything else), or the batch of
    /// settled paths and expired delete graces.
    fn next_work(&mut self, now: Instant) -> Option<Tick> {
        if let Some((at, cause)) = self.full_due {
            if at <= now {
                self.full_due = None;
                return Some(Tick::Full(cause));
            }
        }
        let take = |map: &mut HashMap<String, Due>| {
            let ready: Vec<String> = map
                .iter()
                .filter(|(_, d)| d.at <= now)
                .map(|(p, _)| p.clone())
                .collect();
            ready
                .into_iter()
                .filter_map(|p| map.remove_entry(&p))
                .collect::<Vec<_>>()
        };
        let paths = take(&mut self.pending);
        let deletes = take(&mut self.vanished);
        (!paths.is_empty() || !deletes.is_empty()).then_some(Tick::Batch { paths, deletes })
    }

    fn lag_seconds(&self) -> f64 {
        let now = Instant::now();
        self.pending
            .values()
            .map(|d| now.duration_since(d.since).as_secs_f64())
            .fold(0.0, f64::max)
    }

    fn failed(&mut self, paths: Vec<(String, Due)>, deletes: Vec<(String, Due)>) {
        self.backoff =
            (self.backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(60));
        let at = Instant::now() + self.backoff;
        for (p, d) in paths {
            self.pending.entry(p).or_insert(Due {
                at,
                since: d.since,
                attempts: d.attempts + 1,
            });
        }
        for (p, d) in deletes {
            self.vanished.entry(p).or_insert(Due {
                at,
                since: d.since,
                attempts: d.attempts + 1,
            });
        }
    }

    async fn run_work(&mut self, agent: &Agent, work: Tick, grace: Duration) {
        match work {
            Tick::Full(cause) => {
                agent
                    .metrics
                    .watch_rescans
                    .with_label_values(&[cause.label()])
                    .inc();
                let opts = SyncOptions::default();
                match sync::sync_once(agent, &opts).await {
                    Ok(report) => {
                        self.backoff = Duration::ZERO;
                        tracing::info!(
                            cause = cause.label(),
                            converged = report.converged(),
                            "{}",
                            report.summary()
                        );
                        // The full pass handled every deletion and every pending path.
                        self.vanished.clear();
                    }
                    Err(e) => {
                        agent
                            .metrics
                            .errors
                            .with_label_values(&["pass", "full_reconcile"])
                            .inc();
                        self.backoff = (self.backoff * 2)
                            .clamp(Duration::from_millis(500), Duration::from_secs(60));
                        tracing::error!(error = %format!("{e:#}"), retry_in = ?self.backoff, "full reconcile failed");
                        self.full_due = Some((Instant::now() + self.backoff, cause));
                    }
                }
            }
            Tick::Batch { paths, deletes } => {
                let kept = (paths.clone(), deletes.clone());
                match self.batch(agent, paths, deletes, grace).await {
                    // Failed files were requeued with the grown backoff; keep it.
                    Ok(had_failures) if had_failures => {}
                    Ok(_) => self.backoff = Duration::ZERO,
                    Err(e) => {
                        agent
                            .metrics
                            .errors
                            .with_label_values(&["pass", "batch"])
                            .inc();
                        tracing::error!(error = %format!("{e:#}"), "watch batch failed; will retry");
                        self.failed(kept.0, kept.1);
                    }
                }
            }
        }
    }

    /// Syncs settled paths and deletes the vanished ones whose grace is over. Returns whether
    /// some files failed (they are requeued after the backoff).
    async fn batch(
        &mut self,
        agent: &Agent,
        paths: Vec<(String, Due)>,
        deletes: Vec<(String, Due)>,
        grace: Duration,
    ) -> anyhow::Result<bool> {
        let root = agent.settings.sync_root.clone();
        let inspected = {
            let rels: Vec<String> = paths.iter().map(|(p, _)| p.clone()).collect();
            let (root, prefix, excludes) =
                (root.clone(), agent.prefix.clone(), agent.excludes.clone());
            tokio::task::spawn_blocking(move || {
                let mut files = Vec::new();
                let mut missing = Vec::new();
                for rel in rels {
                    match scan::inspect(&root, &rel, &prefix, &excludes) {
                        PathState::File(f) => files.push(f),
                        PathState::Dir => {
                            scan::scan_subtree(&root, &rel, &prefix, &excludes, |f| {
                                files.push(f);
                                true
                            });
                        }
                        PathState::Missing => missing.push(rel),
                        PathState::Skipped(s) => {
                            tracing::debug!(path = %s.path, reason = s.reason.label(), "skipped");
                            // A file replaced by a link or FIFO is gone as far as S3 goes.
                            missing.push(rel);
                        }
                        PathState::Failed(f) => {
                            tracing::warn!(path = %f.path, error = %f.error, "cannot inspect")
                        }
                    }
                }
                (files, missing)
            })
            .await?
        };
        let (mut files, missing) = inspected;
        // A directory walk and the file's own event can name the same path: one work item each.
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        let since: HashMap<&str, Due> = paths.iter().map(|(p, d)| (p.as_str(), *d)).collect();
        let now = Instant::now();

        // Vanished paths (and, for a vanished directory, every live row below it) wait out the grace.
        for rel in &missing {
            let due = Due {
                at: now + grace,
                since: since.get(rel.as_str()).map_or(now, |d| d.since),
                attempts: 0,
            };
            self.vanished.entry(rel.clone()).or_insert(due);
            for row in catalog::live_rows_under(&agent.pool, agent.id, rel).await? {
                self.vanished.entry(row.path).or_insert(due);
            }
        }
        // A path that is back (an atomic save) is no longer due for deletion.
        for f in &files {
            self.vanished.remove(&f.path);
        }

        let mut report = SyncReport::default();
        let progress = Progress::default();
        let mut writer = CatalogWriter::new(agent.pool.clone(), agent.id);
        if !files.is_empty() {
            let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
            let mut rows: HashMap<String, FileRow> =
                catalog::rows_by_paths(&agent.pool, agent.id, &paths)
                    .await?
                    .into_iter()
                    .map(|r| (r.path.clone(), r))
                    .collect();
            let work: Vec<Work> = files
                .into_iter()
                .filter_map(|f| {
                    let prev = rows.remove(&f.path);
                    plan::classify(f, prev)
                })
                .collect();
            // Files waiting out their grace are rename sources: a move becomes a copy.
            let vanished: Vec<String> = self.vanished.keys().cloned().collect();
            let gone_rows = catalog::rows_by_paths(&agent.pool, agent.id, &vanished).await?;
            let sources = plan::rename_sources(&gone_rows);
            sync::process(
                agent,
                futures::stream::iter(work),
                &sources,
                &mut writer,
                &mut report,
                &progress,
            )
            .await?;
            writer.flush().await?;
            // Transfer failures (S3 down) come back after a backoff, like a failed batch.
            let failed: HashSet<String> = report.failed.iter().map(|f| f.path.clone()).collect();
            if !failed.is_empty() {
                self.failed(
                    failed
                        .into_iter()
                        .map(|p| {
                            // Keep the first-seen time, so the sync lag keeps growing.
                            let first = since.get(p.as_str()).copied();
                            (
                                p,
                                Due {
                                    at: now,
                                    since: first.map_or(now, |d| d.since),
                                    attempts: first.map_or(0, |d| d.attempts),
                                },
                            )
                        })
                        .collect(),
                    Vec::new(),
                );
            }
        }

        let due_deletes: Vec<String> = deletes
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| {
                !root.join(p).exists()
                    || std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| !m.is_file())
            })
            .collect();
        if !due_deletes.is_empty() {
            if !root.is_dir() {
                anyhow::bail!(
                    "SYNC_ROOT {} is missing (is the share mounted?); deletes held",
                    root.display()
                );
            }
            let rows: Vec<FileRow> = catalog::rows_by_paths(&agent.pool, agent.id, &due_deletes)
                .await?
                .into_iter()
                .filter(|r| r.status != FileStatus::Deleted)
                .collect();
            let totals = catalog::agent_totals(&agent.pool, agent.id)
                .await
                .context("reading totals")?;
            let root_has_files = std::fs::read_dir(&root)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            sync::delete_gone(
                agent,
                rows,
                &HashMap::new(),
                totals.synced_files as u64,
                u64::from(root_has_files),
                0,
                &mut report,
            )
            .await?;
        }
        if !report.failed.is_empty() || report.deletes_blocked.is_some() {
            tracing::warn!("{}", report.summary());
        } else {
            tracing::debug!("{}", report.summary());
        }
        Ok(!report.failed.is_empty())
    }
}
