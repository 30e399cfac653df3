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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::event::{ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};
use portail_core::catalog;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::fs::scan;
use crate::model::report::{FailureKind, Stage};
use crate::pass::batch::{self, Targeted};
use crate::pass::run::{self as pass, Scope, SyncOptions};
use crate::policy::guard;

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
    /// An operator released what a guard held (`portail-agent release-deletes` /
    /// `release-changes`): the full pass lets it through.
    Release,
}

impl RescanCause {
    /// Every cause, so the metric exports a zero for each before one happens.
    pub const ALL: [RescanCause; 6] = [
        RescanCause::Startup,
        RescanCause::Interval,
        RescanCause::Overflow,
        RescanCause::WatchError,
        RescanCause::Forced,
        RescanCause::Release,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RescanCause::Startup => "startup",
            RescanCause::Interval => "interval",
            RescanCause::Overflow => "overflow",
            RescanCause::WatchError => "watch_error",
            RescanCause::Forced => "forced",
            RescanCause::Release => "release",
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
    /// These paths were moved away or deleted: nothing is left to settle.
    Gone(Vec<PathBuf>),
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

/// How often watch mode looks for a release while a guard holds something.
const RELEASE_POLL: Duration = Duration::from_secs(2);

/// Looks for an operator's release while a guard holds something.
struct ReleasePoll {
    interval: tokio::time::Interval,
    /// Each release starts one full pass, however long what it released stays held otherwise.
    last: Option<chrono::DateTime<chrono::Utc>>,
}

impl ReleasePoll {
    fn new() -> Self {
        let mut interval = tokio::time::interval(RELEASE_POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ReleasePoll {
            interval,
            last: None,
        }
    }

    /// Whether a release newer than the last one acted on waits, with allowance to use.
    async fn released(&mut self, agent: &Agent) -> bool {
        for kind in [guard::Kind::Deletes, guard::Kind::Changes] {
            match catalog::guard_hold(&agent.pool, agent.id, kind.label()).await {
                Ok(Some(h)) if h.allowance > 0 && h.released_at != self.last => {
                    tracing::warn!(kind = kind.label(), held = h.held, by = ?h.released_by, "released by an operator; letting the held files through");
                    self.last = h.released_at;
                    return true;
                }
                Ok(_) => {}
                // The next batch reports a catalog outage; here it only delays the release.
                Err(e) => tracing::debug!(error = %e, "cannot read the guard holds"),
            }
        }
        false
    }
}

/// How long a file closed after writing waits for a further event before it is synced. The
/// close says the writer is done; this only gathers a burst of closes into one batch.
const CLOSED_SETTLE: Duration = Duration::from_millis(20);

/// A path moved away (IN_MOVED_FROM) or deleted (IN_DELETE).
fn is_gone(kind: &notify::EventKind) -> bool {
    matches!(
        kind,
        notify::EventKind::Remove(_)
            | notify::EventKind::Modify(ModifyKind::Name(RenameMode::From))
    )
}

/// Both ends of one rename in one event, which notify adds after reporting each end alone.
fn is_rename_pair(kind: &notify::EventKind) -> bool {
    matches!(
        kind,
        notify::EventKind::Modify(ModifyKind::Name(RenameMode::Both))
    )
}

/// One pending path: when it may be processed, and when it was first seen (for the lag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Instant,
    since: Instant,
    attempts: u32,
    /// Due because MAX_SYNC_DELAY is up, not because it settled: read it as a busy file.
    forced: bool,
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
    let root = agent.root.clone();
    let settle = agent.options.watch.settle;
    let grace = agent.options.watch.delete_grace;
    let mut shutdown = std::pin::pin!(shutdown);

    // The watcher starts before the first pass, so nothing written during it is missed.
    let _watcher = spawn_watcher(&root, &tx, &health).await?;
    let mut state = State::new(Instant::now(), agent.options.watch.max_sync_delay);
    let mut interval = tokio::time::interval_at(
        Instant::now() + agent.options.watch.rescan_interval,
        agent.options.watch.rescan_interval,
    );
    let tick = (settle / 4).clamp(Duration::from_millis(10), CLOSED_SETTLE);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut release = ReleasePoll::new();
    let purge = crate::policy::history::spawn_purge(agent.purger());

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(sig) = rx.recv() => match sig {
                Signal::Paths(paths) => state.touched(relative(&root, paths), Instant::now(), settle),
                Signal::Closed(paths) | Signal::Gone(paths) => {
                    state.touched(relative(&root, paths), Instant::now(), settle.min(CLOSED_SETTLE))
                }
                Signal::Rescan(cause) => {
                    tracing::warn!(cause = cause.label(), "full reconcile requested");
                    state.full_due.get_or_insert((Instant::now(), cause));
                }
            },
            _ = interval.tick() => { state.full_due.get_or_insert((Instant::now(), RescanCause::Interval)); }
            _ = release.interval.tick(), if agent.guards.holding() => if release.released(agent).await {
                state.full_due.get_or_insert((Instant::now(), RescanCause::Release));
            },
            _ = ticker.tick() => {
                let Some(work) = state.next_work(Instant::now()) else {
                    agent.metrics.sync_lag.set(state.lag_seconds(Instant::now()));
                    agent.metrics.busy_files.set(state.busy.len() as i64);
                    continue;
                };
                let stop = {
                    let mut fut = std::pin::pin!(state.run_work(agent, work, grace));
                    tokio::select! {
                        _ = &mut fut => false,
                        _ = &mut shutdown => {
                            tracing::info!("shutting down: finishing in-flight work");
                            if tokio::time::timeout(agent.options.watch.shutdown_timeout, &mut fut).await.is_err() {
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
                agent.metrics.sync_lag.set(state.lag_seconds(Instant::now()));
            }
        }
    }
    purge.abort();
    tracing::info!("watch mode stopped");
    Ok(())
}

/// [`start_watcher`] on the blocking pool: adding a watch per directory walks the whole tree,
/// which must not hold the async thread (the health endpoints answer on it).
async fn spawn_watcher(
    root: &Path,
    tx: &mpsc::UnboundedSender<Signal>,
    health: &Arc<WatchHealth>,
) -> anyhow::Result<Option<notify::RecommendedWatcher>> {
    let (root, tx, health) = (root.to_path_buf(), tx.clone(), health.clone());
    tokio::task::spawn_blocking(move || start_watcher(&root, tx, &health))
        .await
        .context("the watcher's start panicked")
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
            Ok(ev) if is_gone(&ev.kind) => Signal::Gone(ev.paths),
            // inotify reports each end of a rename alone as well (From, then To); the pair
            // would only push the source's due back to the destination's settle.
            Ok(ev) if is_rename_pair(&ev.kind) => return,
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

/// The relative UTF-8 paths of absolute ones under the root (others are not ours).
fn relative(root: &Path, paths: Vec<PathBuf>) -> impl Iterator<Item = String> + '_ {
    paths
        .into_iter()
        .filter_map(move |p| scan::relative_utf8(root, &p))
}

/// What to do on a tick.
#[derive(Debug, PartialEq)]
enum Tick {
    Full(RescanCause),
    Batch {
        paths: Vec<(String, Due)>,
        deletes: Vec<(String, Due)>,
    },
}

/// What the loop is waiting for: pure bookkeeping, no I/O, so it is unit-tested below.
#[derive(Debug)]
struct State {
    /// Paths with events, due once settled (or after a retry backoff).
    pending: HashMap<String, Due>,
    /// Paths found missing, due for deletion after DELETE_GRACE. Meanwhile each is a rename
    /// source, so a move becomes a copy and an atomic save deletes nothing.
    vanished: HashMap<String, Due>,
    /// A full reconcile is wanted, since when and why.
    full_due: Option<(Instant, RescanCause)>,
    /// Current retry backoff after a failure; zero when healthy.
    backoff: Duration,
    /// MAX_SYNC_DELAY: the longest a changing file waits to be synced.
    max_delay: Duration,
    /// Files whose last sync was forced by MAX_SYNC_DELAY (the `busy_files` gauge); a file
    /// leaves once it is synced settled, or is gone.
    busy: HashSet<String>,
}

/// The shortest and longest wait after a failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));

impl State {
    /// A loop that starts with a full reconcile.
    fn new(now: Instant, max_delay: Duration) -> Self {
        State {
            pending: HashMap::new(),
            vanished: HashMap::new(),
            full_due: Some((now, RescanCause::Startup)),
            backoff: Duration::ZERO,
            max_delay,
            busy: HashSet::new(),
        }
    }

    /// Marks paths as changed, due `settle` from `now` (a later event pushes it back again),
    /// but never later than MAX_SYNC_DELAY after the first event: then it is due as busy.
    fn touched(&mut self, paths: impl Iterator<Item = String>, now: Instant, settle: Duration) {
        for rel in paths {
            let since = self.pending.get(&rel).map_or(now, |d| d.since);
            let (settled, bound) = (now + settle, since + self.max_delay);
            let due = Due {
                at: settled.min(bound),
                since,
                attempts: 0,
                forced: bound < settled,
            };
            self.pending.insert(rel, due);
        }
    }

    /// Records which paths of a batch are busy, and returns them: a forced sync keeps a path
    /// busy, a settled one (or its absence) ends it.
    fn synced(&mut self, paths: &[(String, Due)]) -> HashSet<String> {
        let mut forced = HashSet::new();
        for (p, d) in paths {
            if d.forced {
                self.busy.insert(p.clone());
                forced.insert(p.clone());
            } else {
                self.busy.remove(p);
            }
        }
        forced
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

    /// Age of the oldest change seen but not synced.
    fn lag_seconds(&self, now: Instant) -> f64 {
        self.pending
            .values()
            .map(|d| now.duration_since(d.since).as_secs_f64())
            .fold(0.0, f64::max)
    }

    /// Grows the backoff after a failure and returns when to try again.
    fn back_off(&mut self, now: Instant) -> Instant {
        self.backoff = (self.backoff * 2).clamp(BACKOFF.0, BACKOFF.1);
        now + self.backoff
    }

    /// Puts work that failed back, due after the grown backoff, keeping when it was first
    /// seen (so the lag keeps growing). Newer events for a path win.
    fn failed(&mut self, paths: Vec<(String, Due)>, deletes: Vec<(String, Due)>, now: Instant) {
        let at = self.back_off(now);
        let retry = |d: Due| Due {
            at,
            since: d.since,
            attempts: d.attempts + 1,
            forced: d.forced,
        };
        for (p, d) in paths {
            self.pending.entry(p).or_insert(retry(d));
        }
        for (p, d) in deletes {
            self.vanished.entry(p).or_insert(retry(d));
        }
    }

    /// Holds missing paths for `grace`; an earlier hold keeps its deadline.
    fn hold_vanished(
        &mut self,
        paths: impl Iterator<Item = (String, Instant)>,
        now: Instant,
        grace: Duration,
    ) {
        for (path, since) in paths {
            let due = Due {
                at: now + grace,
                since,
                attempts: 0,
                forced: false,
            };
            self.busy.remove(&path);
            self.vanished.entry(path).or_insert(due);
        }
    }

    /// Paths that exist again (an atomic save, a move back) are no longer due for deletion.
    fn present<'a>(&mut self, paths: impl Iterator<Item = &'a str>) {
        for p in paths {
            self.vanished.remove(p);
        }
    }

    /// The vanished paths still waiting out their grace: the rename sources of a batch.
    fn rename_candidates(&self) -> Vec<String> {
        self.vanished.keys().cloned().collect()
    }

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
            let below = catalog::live_rows_under(&agent.pool, agent.id, rel).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(500);
    const GRACE: Duration = Duration::from_secs(30);

    fn paths(p: &[&str]) -> impl Iterator<Item = String> {
        p.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn batch_paths(t: Option<Tick>) -> (Vec<String>, Vec<String>) {
        match t {
            Some(Tick::Batch { paths, deletes }) => {
                let mut p: Vec<String> = paths.into_iter().map(|(p, _)| p).collect();
                let mut d: Vec<String> = deletes.into_iter().map(|(p, _)| p).collect();
                p.sort();
                d.sort();
                (p, d)
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    const MAX_DELAY: Duration = Duration::from_secs(60);

    /// A state past its startup reconcile.
    fn started(t0: Instant) -> State {
        let mut s = State::new(t0, MAX_DELAY);
        assert_eq!(s.next_work(t0), Some(Tick::Full(RescanCause::Startup)));
        s
    }

    #[test]
    fn a_path_is_due_only_once_settled_and_each_event_pushes_it_back() {
        let t0 = Instant::now();
        let mut s = started(t0);
        s.touched(paths(&["a"]), t0, SETTLE);
        assert_eq!(s.next_work(t0 + SETTLE / 2), None);
        s.touched(paths(&["a"]), t0 + SETTLE / 2, SETTLE);
        assert_eq!(
            s.next_work(t0 + SETTLE),
            None,
            "the second event pushed it back"
        );
        let (p, d) = batch_paths(s.next_work(t0 + SETTLE * 3 / 2));
        assert_eq!((p, d), (vec!["a".to_string()], vec![]));
        assert_eq!(s.next_work(t0 + SETTLE * 10), None, "handed out once");
    }

    #[test]
    fn a_file_that_never_settles_is_due_as_busy_at_max_sync_delay() {
        let t0 = Instant::now();
        let mut s = started(t0);
        let step = Duration::from_millis(100);
        let mut now = t0;
        // An event every 100 ms: never quiet for SETTLE_TIME.
        while now < t0 + MAX_DELAY - step {
            s.touched(paths(&["log"]), now, SETTLE);
            assert_eq!(
                s.next_work(now),
                None,
                "due before the bound at {:?}",
                now - t0
            );
            now += step;
        }
        s.touched(paths(&["log"]), now, SETTLE);
        let Some(Tick::Batch { paths: p, .. }) = s.next_work(t0 + MAX_DELAY) else {
            panic!("not due at MAX_SYNC_DELAY")
        };
        assert!(p[0].1.forced, "due by the bound, so read as busy");
        s.synced(&p);
        assert_eq!(s.busy.len(), 1);
        // The writer stops: the next sync is a settled one, and the file is no longer busy.
        s.touched(paths(&["log"]), now + step, SETTLE);
        let Some(Tick::Batch { paths: p, .. }) = s.next_work(now + step + SETTLE) else {
            panic!("not settled")
        };
        assert!(!p[0].1.forced);
        s.synced(&p);
        assert!(s.busy.is_empty());
    }

    #[test]
    fn the_lag_counts_from_the_first_event() {
        let t0 = Instant::now();
        let mut s = started(t0);
        s.touched(paths(&["a"]), t0, SETTLE);
        s.touched(paths(&["a"]), t0 + Duration::from_secs(2), SETTLE);
        let lag = s.lag_seconds(t0 + Duration::from_secs(3));
        assert!((lag - 3.0).abs() < 1e-6, "{lag}");
    }

    #[test]
    fn a_full_reconcile_comes_before_any_batch() {
        let t0 = Instant::now();
        let mut s = started(t0);
        s.touched(paths(&["a"]), t0, Duration::ZERO);
        s.full_due = Some((t0, RescanCause::Overflow));
        assert_eq!(s.next_work(t0), Some(Tick::Full(RescanCause::Overflow)));
        let (p, _) = batch_paths(s.next_work(t0));
        assert_eq!(p, ["a"]);
    }

    #[test]
    fn a_vanished_path_is_deleted_only_after_the_grace() {
        let t0 = Instant::now();
        let mut s = started(t0);
        s.hold_vanished([("gone".to_string(), t0)].into_iter(), t0, GRACE);
        assert_eq!(s.next_work(t0 + GRACE / 2), None);
        // Held again later (another event): the first deadline stands.
        s.hold_vanished(
            [("gone".to_string(), t0)].into_iter(),
            t0 + GRACE / 2,
            GRACE,
        );
        let (p, d) = batch_paths(s.next_work(t0 + GRACE));
        assert_eq!((p.len(), d), (0, vec!["gone".to_string()]));
    }

    #[test]
    fn a_path_that_comes_back_is_not_deleted_and_a_held_one_is_a_rename_source() {
        let t0 = Instant::now();
        let mut s = started(t0);
        let held = [("a".to_string(), t0), ("b".to_string(), t0)];
        s.hold_vanished(held.into_iter(), t0, GRACE);
        let mut sources = s.rename_candidates();
        sources.sort();
        assert_eq!(sources, ["a", "b"], "held paths are rename sources");
        // An atomic save: "a" is back.
        s.present(["a"].into_iter());
        assert_eq!(s.rename_candidates(), ["b"]);
        let (_, d) = batch_paths(s.next_work(t0 + GRACE));
        assert_eq!(d, ["b"]);
    }

    #[test]
    fn failures_back_off_exponentially_and_keep_the_first_seen_time() {
        let t0 = Instant::now();
        let mut s = started(t0);
        s.touched(paths(&["a"]), t0, Duration::ZERO);
        let Some(Tick::Batch { paths: p, .. }) = s.next_work(t0) else {
            panic!("no batch")
        };
        s.failed(p, vec![], t0);
        assert_eq!(s.backoff, BACKOFF.0);
        assert_eq!(
            s.next_work(t0 + BACKOFF.0 / 2),
            None,
            "waits for the backoff"
        );
        let Some(Tick::Batch { paths: p, .. }) = s.next_work(t0 + BACKOFF.0) else {
            panic!("no retry")
        };
        assert_eq!((p[0].1.since, p[0].1.attempts), (t0, 1));
        s.failed(p, vec![], t0);
        assert_eq!(s.backoff, BACKOFF.0 * 2, "doubles");
        for _ in 0..20 {
            s.back_off(t0);
        }
        assert_eq!(s.backoff, BACKOFF.1, "capped");
    }

    #[test]
    fn a_newer_event_wins_over_a_failed_retry() {
        let t0 = Instant::now();
        let mut s = started(t0);
        s.touched(paths(&["a"]), t0, Duration::ZERO);
        let Some(Tick::Batch { paths: p, .. }) = s.next_work(t0) else {
            panic!("no batch")
        };
        s.touched(paths(&["a"]), t0, SETTLE);
        s.failed(p, vec![], t0);
        assert_eq!(s.pending["a"].attempts, 0, "the fresh event stays");
    }

    #[test]
    fn a_path_moved_away_or_deleted_is_gone_and_a_rename_pair_is_dropped() {
        use notify::event::{CreateKind, DataChange, RemoveKind};
        use notify::EventKind as K;
        let name = |m| K::Modify(ModifyKind::Name(m));
        assert!(is_gone(&name(RenameMode::From)));
        assert!(is_gone(&K::Remove(RemoveKind::File)));
        assert!(is_gone(&K::Remove(RemoveKind::Folder)));
        for kind in [
            name(RenameMode::To),
            name(RenameMode::Both),
            K::Create(CreateKind::File),
            K::Modify(ModifyKind::Data(DataChange::Any)),
        ] {
            assert!(!is_gone(&kind), "{kind:?} leaves something to settle");
        }
        assert!(is_rename_pair(&name(RenameMode::Both)));
        assert!(!is_rename_pair(&name(RenameMode::From)));
        assert!(!is_rename_pair(&name(RenameMode::To)));
    }
}
