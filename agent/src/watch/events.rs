//! Events: what the file system says, in the loop's words.
//!
//! In: notify's (inotify's) events and errors for the tree. Out: [`Signal`]s on the loop's
//! channel: paths touched, closed after writing, gone, or a full reconcile wanted, with its
//! [`RescanCause`]. Reads are dropped here; a rename reported as a pair is dropped too (each
//! end also comes alone). Nothing here decides when a path is synced: that is [`super::schedule`].

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::event::{ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::WatchHealth;
use crate::fs::scan;

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

/// How long a file closed after writing waits for a further event before it is synced. The
/// close says the writer is done; this only gathers a burst of closes into one batch.
pub(super) const CLOSED_SETTLE: Duration = Duration::from_millis(20);

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

/// [`start_watcher`] on the blocking pool: adding a watch per directory walks the whole tree,
/// which must not hold the async thread (the health endpoints answer on it).
pub(super) async fn spawn_watcher(
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
    let handler = move |res: notify::Result<notify::Event>| {
        if let Some(sig) = signal_for(res, &cb_health) {
            let _ = tx.send(sig);
        }
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

/// What one notify event or error tells the loop; None for what changes nothing.
fn signal_for(res: notify::Result<notify::Event>, health: &WatchHealth) -> Option<Signal> {
    use notify::event::{AccessKind, AccessMode};
    use notify::EventKind;
    Some(match res {
        // A writer closed the file: it is complete now, no need to wait SETTLE_TIME.
        Ok(ev)
            if matches!(
                ev.kind,
                EventKind::Access(AccessKind::Close(AccessMode::Write))
            ) && !ev.need_rescan() =>
        {
            Signal::Closed(ev.paths)
        }
        // Reads (open, close-without-write) change nothing; the agent's own hashing and every
        // download from the file server would otherwise queue needless re-checks.
        Ok(ev) if matches!(ev.kind, EventKind::Access(_)) && !ev.need_rescan() => return None,
        Ok(ev) if ev.need_rescan() || ev.paths.is_empty() => Signal::Rescan(RescanCause::Overflow),
        Ok(ev) if is_gone(&ev.kind) => Signal::Gone(ev.paths),
        // inotify reports each end of a rename alone as well (From, then To); the pair would
        // only push the source's due back to the destination's settle.
        Ok(ev) if is_rename_pair(&ev.kind) => return None,
        Ok(ev) => Signal::Paths(ev.paths),
        // Out of watches: say it once, with the fix, and rescan once. Every new directory
        // repeats this error; answering each with a full reconcile would be a spin.
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
            if !health.watcher_alive.swap(false, Ordering::Relaxed) {
                return None;
            }
            report_watch_error(&e);
            Signal::Rescan(RescanCause::WatchError)
        }
        Err(e) => {
            report_watch_error(&e);
            Signal::Rescan(RescanCause::WatchError)
        }
    })
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
pub(super) fn relative(root: &Path, paths: Vec<PathBuf>) -> impl Iterator<Item = String> + '_ {
    paths
        .into_iter()
        .filter_map(move |p| scan::relative_utf8(root, &p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_rename_pairs_say_nothing_closes_and_removals_say_what_they_are() {
        use notify::event::{AccessKind, AccessMode, CreateKind, RemoveKind};
        use notify::{Event, EventKind as K};
        let health = WatchHealth::default();
        let ev = |kind| Ok(Event::new(kind).add_path("/r/a".into()));
        let read = K::Access(AccessKind::Close(AccessMode::Read));
        assert!(signal_for(ev(read), &health).is_none());
        let pair = K::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(signal_for(ev(pair), &health).is_none());
        let closed = K::Access(AccessKind::Close(AccessMode::Write));
        assert!(matches!(
            signal_for(ev(closed), &health),
            Some(Signal::Closed(_))
        ));
        let removed = K::Remove(RemoveKind::File);
        assert!(matches!(
            signal_for(ev(removed), &health),
            Some(Signal::Gone(_))
        ));
        let created = K::Create(CreateKind::File);
        assert!(matches!(
            signal_for(ev(created), &health),
            Some(Signal::Paths(_))
        ));
        let no_path = Ok(Event::new(K::Any));
        let rescan = signal_for(no_path, &health);
        assert!(matches!(
            rescan,
            Some(Signal::Rescan(RescanCause::Overflow))
        ));
        // Out of watches: one rescan while the watcher was alive, then silence.
        health.watcher_alive.store(true, Ordering::Relaxed);
        let full = || Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        let first = signal_for(full(), &health);
        assert!(matches!(
            first,
            Some(Signal::Rescan(RescanCause::WatchError))
        ));
        assert!(signal_for(full(), &health).is_none(), "no rescan spin");
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
