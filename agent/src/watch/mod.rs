//! Watch mode: live sync that never silently stops.
//!
//! In: an [`Agent`], file-system events from notify (inotify), and a shutdown signal.
//! Out: the same S3 objects and catalog rows a full pass would produce, within about
//! SETTLE_TIME of a change. It runs the pass's stages (merge's `classify`, then hash →
//! transfer → record → delete) for just the paths events name. The loop:
//! 1. runs a full pass at start (retrying with backoff while PostgreSQL or S3 are down);
//! 2. records each event's path as pending, due SETTLE_TIME after its latest event, so a file
//!    still being written is never synced half-way; a close after writing (IN_CLOSE_WRITE)
//!    means the writer is done, so that file is due almost at once (CLOSED_SETTLE); so is a
//!    path moved away or deleted, which has nothing left to settle: it is a rename source
//!    before the move's destination settles (`mkdir d && mv f d/` raises the directory's
//!    event first, and walking `d` before `f` was known gone would upload `d/f`, not copy it);
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

mod events;
mod release;
mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::model::report::{FailureKind, Stage};
use crate::pass::batch::{self, Targeted};
use crate::pass::run::{self as pass, Scope, SyncOptions};

use events::{relative, spawn_watcher, CLOSED_SETTLE};
pub use events::{RescanCause, Signal};
use release::ReleasePoll;
use schedule::{Due, State, Tick};

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
    let mut shutdown = std::pin::pin!(shutdown);
    // The watcher starts before the first pass, so nothing written during it is missed.
    let _watcher = spawn_watcher(&agent.root, &tx, &health).await?;
    let mut state = State::new(Instant::now(), agent.options.watch.max_sync_delay);
    let mut clocks = Clocks::new(agent);
    let purge = crate::policy::history::spawn_purge(agent.purger());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(sig) = rx.recv() => state.signal(agent, sig),
            _ = clocks.rescan.tick() => state.want_full(RescanCause::Interval),
            _ = clocks.release.interval.tick(), if agent.guards.holding() => {
                if clocks.release.released(agent).await {
                    state.want_full(RescanCause::Release);
                }
            }
            _ = clocks.work.tick() => if state.tick(agent, &mut shutdown).await {
                break;
            } else {
                health.last_pass_ok.store(state.backoff.is_zero(), Ordering::Relaxed);
            },
        }
    }
    purge.abort();
    tracing::info!("watch mode stopped");
    Ok(())
}

/// The loop's clocks: the periodic full reconcile, the work tick, the release poll.
struct Clocks {
    rescan: tokio::time::Interval,
    work: tokio::time::Interval,
    release: ReleasePoll,
}

impl Clocks {
    fn new(agent: &Agent) -> Self {
        let w = &agent.options.watch;
        let rescan =
            tokio::time::interval_at(Instant::now() + w.rescan_interval, w.rescan_interval);
        // Often enough that a path is looked at soon after it settles, never a busy spin.
        let every = (w.settle / 4).clamp(Duration::from_millis(10), CLOSED_SETTLE);
        let mut work = tokio::time::interval(every);
        work.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Clocks {
            rescan,
            work,
            release: ReleasePoll::new(),
        }
    }
}

/// What a signal and a tick do to the loop's state.
impl State {
    /// Records what the watcher said: paths to settle, or a full reconcile wanted.
    fn signal(&mut self, agent: &Agent, sig: Signal) {
        let (root, settle) = (&agent.root, agent.options.watch.settle);
        match sig {
            Signal::Paths(paths) => self.touched(relative(root, paths), Instant::now(), settle),
            Signal::Closed(paths) | Signal::Gone(paths) => {
                let settle = settle.min(CLOSED_SETTLE);
                self.touched(relative(root, paths), Instant::now(), settle)
            }
            Signal::Rescan(cause) => {
                tracing::warn!(cause = cause.label(), "full reconcile requested");
                self.want_full(cause);
            }
        }
    }

    /// A full reconcile is wanted now, unless one already is.
    fn want_full(&mut self, cause: RescanCause) {
        self.full_due.get_or_insert((Instant::now(), cause));
    }

    /// Runs the work due now, if any, and sets the gauges. Returns true when `shutdown`
    /// came meanwhile: the work got SHUTDOWN_TIMEOUT to finish, and the loop must stop.
    async fn tick(
        &mut self,
        agent: &Agent,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        let Some(work) = self.next_work(Instant::now()) else {
            agent.metrics.sync_lag.set(self.lag_seconds(Instant::now()));
            agent.metrics.busy_files.set(self.busy.len() as i64);
            return false;
        };
        let grace = agent.options.watch.delete_grace;
        let stop = {
            let mut fut = std::pin::pin!(self.run_work(agent, work, grace));
            tokio::select! {
                _ = &mut fut => false,
                _ = shutdown => {
                    tracing::info!("shutting down: finishing in-flight work");
                    let limit = agent.options.watch.shutdown_timeout;
                    if tokio::time::timeout(limit, &mut fut).await.is_err() {
                        tracing::warn!("in-flight work did not finish within SHUTDOWN_TIMEOUT; exiting anyway");
                    }
                    true
                }
            }
        };
        agent.metrics.sync_lag.set(self.lag_seconds(Instant::now()));
        stop
    }
}

/// The loop's work, which needs the agent: a full pass, a batch, and the vanished rows below a
/// vanished directory.
impl State {
    async fn run_work(&mut self, agent: &Agent, work: Tick, grace: Duration) {
        match work {
            Tick::Full(cause) => self.full_reconcile(agent, cause).await,
            Tick::Batch { paths, deletes } => {
                let kept = (paths.clone(), deletes.clone());
                match self.batch(agent, paths, deletes, grace).await {
                    // Failed files were requeued with the grown backoff; keep it.
                    Ok(had_failures) if had_failures => {}
                    Ok(_) => self.backoff = Duration::ZERO,
                    Err(e) => {
                        count_pass_error(agent, FailureKind::Batch);
                        tracing::error!(error = %format!("{e:#}"), "watch batch failed; will retry");
                        self.failed(kept.0, kept.1, Instant::now());
                    }
                }
            }
        }
    }

    /// A full pass; on failure it is due again after the backoff.
    async fn full_reconcile(&mut self, agent: &Agent, cause: RescanCause) {
        agent
            .metrics
            .watch_rescans
            .with_label_values(&[cause.label()])
            .inc();
        match pass::sync_once(agent, &SyncOptions::default()).await {
            Ok(report) => {
                self.backoff = Duration::ZERO;
                let converged = report.converged();
                tracing::info!(cause = cause.label(), converged, "{}", report.summary());
                // The full pass handled every deletion and every pending path.
                self.vanished.clear();
            }
            Err(e) => {
                count_pass_error(agent, FailureKind::FullReconcile);
                let at = self.back_off(Instant::now());
                tracing::error!(error = %format!("{e:#}"), retry_in = ?self.backoff, "full reconcile failed");
                self.full_due = Some((at, cause));
            }
        }
    }

    /// Syncs settled paths and deletes the vanished ones whose grace is over, through the
    /// pass's one entry over a targeted scope. Returns whether some files failed (they are
    /// requeued after the backoff).
    async fn batch(
        &mut self,
        agent: &Agent,
        paths: Vec<(String, Due)>,
        deletes: Vec<(String, Due)>,
        grace: Duration,
    ) -> anyhow::Result<bool> {
        let rels: Vec<String> = paths.iter().map(|(p, _)| p.clone()).collect();
        let (files, missing) = batch::inspect_paths(agent, rels).await?;
        let since: HashMap<&str, Due> = paths.iter().map(|(p, d)| (p.as_str(), *d)).collect();
        let now = Instant::now();
        self.hold_missing(agent, &missing, &since, now, grace)
            .await?;
        self.present(files.iter().map(|f| f.path.as_str()));
        agent.guards.present(files.iter().map(|f| f.path.as_str()));
        let scope = Targeted {
            present: files,
            busy: self.synced(&paths),
            rename_candidates: self.rename_candidates(),
            expired: deletes.into_iter().map(|(p, _)| p).collect(),
        };
        let report = pass::sync(agent, Scope::Paths(scope), &SyncOptions::default()).await?;
        // Failed files (S3 down) come back after a backoff, like a failed batch; a failed
        // delete is tried again by the next full pass.
        let retry: Vec<(String, Due)> = report
            .failed
            .iter()
            .filter(|f| f.stage != Stage::Delete)
            .map(|f| {
                let first = since.get(f.path.as_str()).copied();
                let due = first.unwrap_or(Due {
                    at: now,
                    since: now,
                    attempts: 0,
                    forced: false,
                });
                (f.path.clone(), due)
            })
            .collect();
        if !retry.is_empty() {
            self.failed(retry, Vec::new(), now);
        }
        if !report.failed.is_empty() || report.deletes_blocked.is_some() || report.changes_held > 0
        {
            tracing::warn!("{}", report.summary());
        } else {
            tracing::debug!("{}", report.summary());
        }
        Ok(!report.failed.is_empty())
    }

    /// Vanished paths, and for a vanished directory every live row below it, wait out the grace.
    async fn hold_missing(
        &mut self,
        agent: &Agent,
        missing: &[String],
        since: &HashMap<&str, Due>,
        now: Instant,
        grace: Duration,
    ) -> anyhow::Result<()> {
        for rel in missing {
            let first = since.get(rel.as_str()).map_or(now, |d| d.since);
            let below = agent.catalog.live_rows_under(rel).await?;
            let held = std::iter::once(rel.clone()).chain(below.into_iter().map(|r| r.path));
            self.hold_vanished(held.map(|p| (p, first)), now, grace);
        }
        Ok(())
    }
}

fn count_pass_error(agent: &Agent, kind: FailureKind) {
    agent
        .metrics
        .errors
        .with_label_values(&[Stage::Pass.label(), kind.label()])
        .inc();
}
