//! Scheduling: which paths are due, and when. Pure bookkeeping, no I/O, unit-tested below.
//!
//! In: touched paths with the time of each event, SETTLE_TIME, MAX_SYNC_DELAY, DELETE_GRACE,
//! and what each batch did (synced, failed, found missing). Out: the next [`Tick`]: a full
//! reconcile (which covers everything), or the batch of settled paths and expired delete
//! graces; the lag and busy-file counts for the gauges; and the backoff after a failure.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::events::RescanCause;

/// One pending path: when it may be processed, and when it was first seen (for the lag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Due {
    pub(super) at: Instant,
    pub(super) since: Instant,
    pub(super) attempts: u32,
    /// Due because MAX_SYNC_DELAY is up, not because it settled: read it as a busy file.
    pub(super) forced: bool,
}

/// What to do on a tick.
#[derive(Debug, PartialEq)]
pub(super) enum Tick {
    Full(RescanCause),
    Batch {
        paths: Vec<(String, Due)>,
        deletes: Vec<(String, Due)>,
    },
}

/// What the loop is waiting for: pure bookkeeping, no I/O, so it is unit-tested below.
#[derive(Debug)]
pub(super) struct State {
    /// Paths with events, due once settled (or after a retry backoff).
    pub(super) pending: HashMap<String, Due>,
    /// Paths found missing, due for deletion after DELETE_GRACE. Meanwhile each is a rename
    /// source, so a move becomes a copy and an atomic save deletes nothing.
    pub(super) vanished: HashMap<String, Due>,
    /// A full reconcile is wanted, since when and why.
    pub(super) full_due: Option<(Instant, RescanCause)>,
    /// Current retry backoff after a failure; zero when healthy.
    pub(super) backoff: Duration,
    /// MAX_SYNC_DELAY: the longest a changing file waits to be synced.
    pub(super) max_delay: Duration,
    /// Files whose last sync was forced by MAX_SYNC_DELAY (the `busy_files` gauge); a file
    /// leaves once it is synced settled, or is gone.
    pub(super) busy: HashSet<String>,
}

/// The shortest and longest wait after a failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));

impl State {
    /// A loop that starts with a full reconcile.
    pub(super) fn new(now: Instant, max_delay: Duration) -> Self {
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
    pub(super) fn touched(
        &mut self,
        paths: impl Iterator<Item = String>,
        now: Instant,
        settle: Duration,
    ) {
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
    pub(super) fn synced(&mut self, paths: &[(String, Due)]) -> HashSet<String> {
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
    pub(super) fn next_work(&mut self, now: Instant) -> Option<Tick> {
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
    pub(super) fn lag_seconds(&self, now: Instant) -> f64 {
        self.pending
            .values()
            .map(|d| now.duration_since(d.since).as_secs_f64())
            .fold(0.0, f64::max)
    }

    /// Grows the backoff after a failure and returns when to try again.
    pub(super) fn back_off(&mut self, now: Instant) -> Instant {
        self.backoff = (self.backoff * 2).clamp(BACKOFF.0, BACKOFF.1);
        now + self.backoff
    }

    /// Puts work that failed back, due after the grown backoff, keeping when it was first
    /// seen (so the lag keeps growing). Newer events for a path win.
    pub(super) fn failed(
        &mut self,
        paths: Vec<(String, Due)>,
        deletes: Vec<(String, Due)>,
        now: Instant,
    ) {
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
    pub(super) fn hold_vanished(
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
    pub(super) fn present<'a>(&mut self, paths: impl Iterator<Item = &'a str>) {
        for p in paths {
            self.vanished.remove(p);
        }
    }

    /// The vanished paths still waiting out their grace: the rename sources of a batch.
    pub(super) fn rename_candidates(&self) -> Vec<String> {
        self.vanished.keys().cloned().collect()
    }
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
}
