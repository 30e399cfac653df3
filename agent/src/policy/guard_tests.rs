//! The guard session on a ledger and holds in memory: deletes counted over the window, a
//! sticky hold, a release's allowance, a raised limit; the tripwire's share, its trip and its
//! release. `tests/tests/guards.rs` runs the same paths end to end, in watch mode.

use std::collections::HashMap;
use std::time::Instant;

use super::*;

/// The ledger and the holds, as the catalog keeps them (`core/src/catalog/guards.rs`).
#[derive(Debug, Default)]
struct MemoryGuardStore {
    ledger: Mutex<Vec<(Kind, Instant, u64, u64)>>,
    holds: Mutex<HashMap<&'static str, GuardHold>>,
    synced: u64,
}

impl MemoryGuardStore {
    fn tracking(synced: u64) -> Arc<Self> {
        Arc::new(MemoryGuardStore {
            synced,
            ..Self::default()
        })
    }

    fn held(&self, kind: Kind) -> Option<GuardHold> {
        self.holds.lock().unwrap().get(kind.label()).cloned()
    }

    /// What `release-deletes` / `release-changes` does: the held may pass once, the window
    /// starts afresh.
    fn release(&self, kind: Kind) {
        if let Some(h) = self.holds.lock().unwrap().get_mut(kind.label()) {
            h.allowance = h.held;
            h.released_at = Some(chrono::Utc::now());
        }
        self.ledger.lock().unwrap().retain(|e| e.0 != kind);
    }
}

fn ready<T: Send + 'static>(t: T) -> BoxFuture<'static, anyhow::Result<T>> {
    Box::pin(futures::future::ready(Ok(t)))
}

impl GuardStore for MemoryGuardStore {
    fn hold(&self, kind: Kind) -> BoxFuture<'_, anyhow::Result<Option<GuardHold>>> {
        ready(self.held(kind))
    }
    fn window(&self, kind: Kind, window: Duration) -> BoxFuture<'_, anyhow::Result<LedgerWindow>> {
        let ledger = self.ledger.lock().unwrap();
        let within: Vec<_> = ledger
            .iter()
            .filter(|e| e.0 == kind && e.1.elapsed() < window)
            .collect();
        ready(LedgerWindow {
            passed: within.iter().map(|e| e.2 as i64).sum(),
            base: within.first().map(|e| e.3 as i64),
            oldest_secs: within.first().map(|e| e.1.elapsed().as_secs_f64()),
        })
    }
    fn record_passed(
        &self,
        kind: Kind,
        count: u64,
        tracked: u64,
        window: Duration,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let mut ledger = self.ledger.lock().unwrap();
        ledger.retain(|e| e.0 != kind || e.1.elapsed() < window);
        ledger.push((kind, Instant::now(), count, tracked));
        ready(())
    }
    fn use_allowance(
        &self,
        kind: Kind,
        used: u64,
        still_held: u64,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let mut holds = self.holds.lock().unwrap();
        if let Some(h) = holds.get_mut(kind.label()) {
            h.allowance = (h.allowance - used as i64).max(0);
            h.held = still_held as i64;
        }
        holds.retain(|_, h| h.held != 0);
        ready(())
    }
    fn set_hold<'a>(&'a self, hold: &'a NewHold<'a>) -> BoxFuture<'a, anyhow::Result<()>> {
        let label = if hold.kind == "deletes" {
            "deletes"
        } else {
            "changes"
        };
        let mut holds = self.holds.lock().unwrap();
        let h = holds.entry(label).or_insert_with(|| GuardHold {
            guard: String::new(),
            guard_limit: None,
            held: 0,
            sample: Vec::new(),
            held_since: chrono::Utc::now(),
            released_at: None,
            released_by: None,
            allowance: 0,
        });
        h.guard = hold.guard.into();
        h.guard_limit = hold.guard_limit;
        h.held = hold.held;
        h.sample = hold.sample.to_vec();
        ready(())
    }
    fn synced_files(&self) -> BoxFuture<'_, anyhow::Result<u64>> {
        ready(self.synced)
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn deletes_at(max_delete_percent: u32) -> DeleteGuards {
    DeleteGuards {
        max_delete: None,
        max_delete_percent,
        allow_empty_root: false,
        window: HOUR,
    }
}

const TRIPWIRE: ChangeLimit = ChangeLimit {
    max_percent: 50,
    window: HOUR,
    min_files: 20,
};

fn guards(store: &Arc<MemoryGuardStore>, deletes: DeleteGuards) -> (Guards, ControlMetrics) {
    let metrics = crate::metrics::AgentMetrics::register(&prometheus::Registry::new()).unwrap();
    let controls = metrics.controls.clone();
    let g = Guards::new(store.clone(), metrics.controls, deletes, TRIPWIRE);
    (g, controls)
}

fn tree(tracked: u64) -> DeleteContext {
    DeleteContext {
        tracked,
        local_files: tracked,
        scan_failures: 0,
    }
}

fn paths(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("f{i:03}")).collect()
}

/// One batch of `n` deletes, as the delete executor runs it: checked, then done or held, then
/// settled.
async fn delete_batch(g: &Guards, names: Vec<String>) -> Result<DeletesPass, Blocked> {
    let verdict = g
        .check_deletes(&tree(20), names.len() as u64)
        .await
        .unwrap();
    match &verdict {
        Ok(pass) => g.deletes_done(*pass, &names).await.unwrap(),
        Err(b) => g.hold_deletes(b.guard, names.into_iter()),
    }
    g.settle().await.unwrap();
    verdict
}

#[tokio::test]
async fn deletes_spread_over_batches_are_counted_over_the_window_and_held_once_past_the_limit() {
    let store = MemoryGuardStore::tracking(20);
    let (g, controls) = guards(&store, deletes_at(50));
    assert!(
        delete_batch(&g, paths(0..6)).await.is_ok(),
        "6 of 20: under 50%"
    );
    let blocked = delete_batch(&g, paths(6..12)).await.unwrap_err();
    assert_eq!(blocked.guard, Guard::MaxDeletePercent);
    assert!(
        blocked.message.contains("6 already deleted"),
        "{}",
        blocked.message
    );
    assert_eq!(controls.deletes_held.get(), 6);
    let hold = store.held(Kind::Deletes).unwrap();
    assert_eq!((hold.guard.as_str(), hold.held), ("max_delete_percent", 6));
    assert_eq!(hold.guard_limit, Some(50));
    assert!(g.holding());
}

#[tokio::test]
async fn a_tripped_hold_is_sticky_until_released_and_the_release_lets_the_held_through_once() {
    let store = MemoryGuardStore::tracking(20);
    let (g, controls) = guards(&store, deletes_at(50));
    delete_batch(&g, paths(0..6)).await.unwrap();
    delete_batch(&g, paths(6..12)).await.unwrap_err();
    // Even one more delete, well under the limit on its own, waits for a person.
    let sticky = delete_batch(&g, paths(12..13)).await.unwrap_err();
    assert!(
        sticky.message.contains("release-deletes"),
        "{}",
        sticky.message
    );
    store.release(Kind::Deletes);
    let (g, controls2) = guards(&store, deletes_at(50)); // a restart keeps the hold and release
    let pass = delete_batch(&g, paths(6..13)).await.unwrap();
    assert_eq!((pass.allowance_used, pass.counted), (7, 0));
    assert!(
        store.held(Kind::Deletes).is_none(),
        "the hold ends once nothing is held"
    );
    assert_eq!(controls2.deletes_held.get(), 0);
    assert_eq!(
        controls.deletes_held.get(),
        7,
        "the first session saw 7 held"
    );
}

#[tokio::test]
async fn a_raised_limit_lifts_a_sticky_hold_a_lower_one_does_not() {
    let store = MemoryGuardStore::tracking(20);
    let (g, _) = guards(&store, deletes_at(50));
    delete_batch(&g, paths(0..6)).await.unwrap();
    delete_batch(&g, paths(6..12)).await.unwrap_err();
    let (lower, _) = guards(&store, deletes_at(40));
    assert!(delete_batch(&lower, paths(6..7)).await.is_err());
    let (raised, _) = guards(&store, deletes_at(80));
    let pass = delete_batch(&raised, paths(6..12)).await.unwrap();
    assert_eq!(
        pass.counted, 6,
        "checked over the window as usual: 12 of 20 under 80%"
    );
}

#[tokio::test]
async fn the_tree_guards_hold_only_while_the_tree_looks_wrong() {
    let store = MemoryGuardStore::tracking(20);
    let (g, _) = guards(&store, deletes_at(100));
    let empty = DeleteContext {
        local_files: 0,
        ..tree(20)
    };
    let verdict = g.check_deletes(&empty, 20).await.unwrap();
    assert_eq!(verdict.unwrap_err().guard, Guard::EmptyRoot);
    let unreadable = DeleteContext {
        scan_failures: 1,
        ..tree(20)
    };
    let verdict = g.check_deletes(&unreadable, 1).await.unwrap();
    assert_eq!(verdict.unwrap_err().guard, Guard::ScanErrors);
    assert!(g.check_deletes(&tree(20), 20).await.unwrap().is_ok());
}

#[tokio::test]
async fn the_tripwire_admits_its_share_of_changes_then_holds_the_rest_until_released() {
    let store = MemoryGuardStore::tracking(100);
    let (g, controls) = guards(&store, deletes_at(50));
    g.load_tripwire(Tracked::Count).await.unwrap();
    let admitted = (0..60).filter(|i| g.admit_change(&format!("f{i}"))).count();
    assert_eq!(admitted, 50, "50% of 100 tracked files");
    assert_eq!(controls.tripwire_trips.get(), 1);
    assert!(!g.admit_change("new-batch-file"));
    g.settle().await.unwrap();
    assert_eq!(controls.changes_held.get(), 11);
    let hold = store.held(Kind::Changes).unwrap();
    assert_eq!((hold.held, hold.guard_limit), (11, Some(50)));
    // The next batch (or a restart) is still tripped.
    g.load_tripwire(Tracked::LastPass).await.unwrap();
    assert!(!g.admit_change("f70"));
    g.settle().await.unwrap();
    store.release(Kind::Changes);
    g.load_tripwire(Tracked::LastPass).await.unwrap();
    let released = (50..62)
        .filter(|i| g.admit_change(&format!("f{i}")))
        .count();
    assert_eq!(released, 12, "the 12 held pass once");
    assert_eq!(
        controls.tripwire_trips.get(),
        1,
        "no new trip while the release lasts"
    );
}

#[tokio::test]
async fn a_small_tree_is_never_tripped_by_editing_most_of_it() {
    let store = MemoryGuardStore::tracking(10);
    let (g, controls) = guards(&store, deletes_at(50));
    g.load_tripwire(Tracked::Count).await.unwrap();
    assert!((0..20).all(|i| g.admit_change(&format!("f{i}"))));
    assert!(
        !g.admit_change("f20"),
        "CHANGE_MIN_FILES is the floor, not a free pass"
    );
    assert_eq!(controls.tripwire_trips.get(), 1);
}
