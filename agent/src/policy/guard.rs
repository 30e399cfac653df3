//! Guards over time: the delete guards counted over DELETE_WINDOW, and the mass-change
//! tripwire over CHANGE_WINDOW. Both hold what they refuse until an operator releases it.
//!
//! In: a batch's deletes or changed files (from a full pass or a watch batch, the same code),
//! the catalog's `guard_ledger` (what passed each guard lately, so a window survives restarts)
//! and `guard_holds` (what is held, and a release). Out: a verdict per batch or file, the
//! `portail_agent_{deletes,changes}_held` gauges, and the holds written back for `/readyz`,
//! the CLI and the next run.
//!
//! Why windows: a guard checked per batch lets any delete spread over time through (a slow
//! script removing one folder a second deletes everything, mc#2373 in slow motion). Why holds
//! are sticky: once a count guard tripped, nothing more of that kind goes until a person looks
//! (`portail-agent release-deletes` / `release-changes`); a rolling window alone would let the
//! same damage through an hour later. New files always upload.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::json;

use crate::catalog::{Catalog, GuardHold, LedgerWindow, NewHold};
use crate::metrics::ControlMetrics;
use crate::model::guard::{Blocked, Guard};
use crate::policy::delete_rules::{self, DeleteContext, DeleteGuards};

/// How many held paths a hold names (in the log, `/readyz` and the catalog).
const SAMPLE: usize = 10;

/// What a guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deletes of vanished files.
    Deletes,
    /// Uploads of files whose content changed.
    Changes,
}

impl Kind {
    /// The catalog's and the CLI's name.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Deletes => "deletes",
            Kind::Changes => "changes",
        }
    }
}

/// Where the guards keep what survives a restart: each kind's ledger (what passed lately) and
/// its hold. The catalog implements it ([`Catalog`]); the unit tests, a store in memory.
pub trait GuardStore: Send + Sync + std::fmt::Debug {
    /// The hold on `kind`, if a guard tripped.
    fn hold(&self, kind: Kind) -> BoxFuture<'_, anyhow::Result<Option<GuardHold>>>;
    /// What passed `kind`'s guard within `window` (not zero).
    fn window(&self, kind: Kind, window: Duration) -> BoxFuture<'_, anyhow::Result<LedgerWindow>>;
    /// Records that `count` files passed `kind`'s guard with `tracked` files tracked, and
    /// forgets what is older than `window`.
    fn record_passed(
        &self,
        kind: Kind,
        count: u64,
        tracked: u64,
        window: Duration,
    ) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Uses `used` of a release's allowance; `still_held` files stay held (none: the hold ends).
    fn use_allowance(
        &self,
        kind: Kind,
        used: u64,
        still_held: u64,
    ) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Records what a guard holds now, keeping when it began and any release.
    fn set_hold<'a>(&'a self, hold: &'a NewHold<'a>) -> BoxFuture<'a, anyhow::Result<()>>;
    /// How many files are tracked (`synced` rows) now.
    fn synced_files(&self) -> BoxFuture<'_, anyhow::Result<u64>>;
}

impl GuardStore for Catalog {
    fn hold(&self, kind: Kind) -> BoxFuture<'_, anyhow::Result<Option<GuardHold>>> {
        Box::pin(async move { Ok(self.guard_hold(kind.label()).await?) })
    }
    fn window(&self, kind: Kind, window: Duration) -> BoxFuture<'_, anyhow::Result<LedgerWindow>> {
        let secs = window.as_secs_f64();
        Box::pin(async move { Ok(self.ledger_window(kind.label(), secs).await?) })
    }
    fn record_passed(
        &self,
        kind: Kind,
        count: u64,
        tracked: u64,
        window: Duration,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let (n, base, secs) = (count as i64, tracked as i64, window.as_secs_f64());
        Box::pin(
            async move { Ok(Catalog::record_passed(self, kind.label(), n, base, secs).await?) },
        )
    }
    fn use_allowance(
        &self,
        kind: Kind,
        used: u64,
        still_held: u64,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let (used, held) = (used as i64, still_held as i64);
        Box::pin(async move { Ok(Catalog::use_allowance(self, kind.label(), used, held).await?) })
    }
    fn set_hold<'a>(&'a self, hold: &'a NewHold<'a>) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(Catalog::set_hold(self, hold).await?) })
    }
    fn synced_files(&self) -> BoxFuture<'_, anyhow::Result<u64>> {
        Box::pin(async move { Ok(Catalog::synced_files(self).await?.max(0) as u64) })
    }
}

/// The mass-change tripwire's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLimit {
    /// MAX_CHANGE_PERCENT; 100 disables the tripwire.
    pub max_percent: u32,
    /// CHANGE_WINDOW.
    pub window: Duration,
    /// CHANGE_MIN_FILES: never trips on fewer changes than this.
    pub min_files: u64,
}

impl ChangeLimit {
    /// How many changes the window allows over `base` tracked files.
    fn allowed(&self, base: u64) -> u64 {
        (base * u64::from(self.max_percent) / 100).max(self.min_files)
    }
}

/// The guards of one agent: their limits, what they hold in this process (shared by passes and
/// watch batches), and their catalog rows. Opened once by the app; a pass or batch begins with
/// [`Guards::load_tripwire`] and ends with [`Guards::settle`], and the stages in between are
/// handed this gate (a file job asks [`Guards::admit_change`], the delete executor
/// [`Guards::check_deletes`]). Nothing here calls back up into the pass.
#[derive(Debug)]
pub struct Guards {
    store: Arc<dyn GuardStore>,
    controls: ControlMetrics,
    delete_limits: DeleteGuards,
    change_limit: ChangeLimit,
    holds: Mutex<HoldState>,
    /// Synced rows at the end of the last full pass: a watch batch's tripwire base when its
    /// window is empty (counting a million rows per batch would cost more than the batch).
    last_pass_tracked: AtomicU64,
}

/// The first held paths, for the log, `/readyz` and the catalog.
fn sample(set: &BTreeSet<String>) -> Vec<String> {
    set.iter().take(SAMPLE).cloned().collect()
}

#[derive(Debug, Default)]
struct HoldState {
    deletes: BTreeSet<String>,
    delete_guard: Option<Guard>,
    changes: BTreeSet<String>,
    budget: Option<ChangeBudget>,
    /// How many held deletes `settle` last wrote, so a batch that changed nothing costs no
    /// query.
    written_deletes: Option<usize>,
}

/// The tripwire's state for one pass or batch, loaded at its start.
#[derive(Debug, Clone, Default)]
struct ChangeBudget {
    /// Changes the window allows; None when the tripwire is off.
    allowed: Option<u64>,
    /// Changes that passed within the window before and during this batch.
    passed: u64,
    /// Changes this batch let through (written to the ledger at the end).
    admitted: u64,
    /// Files tracked at the window's start.
    base: u64,
    /// Held files a release still lets through, and how many this batch used.
    allowance: u64,
    allowance_used: u64,
    /// Tripped: held since an earlier batch (sticky), or during this one.
    tripped: bool,
    /// The first files admitted in this batch, for the log when it trips.
    first: Vec<String>,
    /// Seconds from the window's oldest change to the batch's start, and the start: the rate.
    window_secs: f64,
    started: Option<std::time::Instant>,
}

/// How a batch of deletes may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletesPass {
    /// Deletes that count against the window (the rest ran on a release's allowance).
    counted: u64,
    /// Deletes a release let through.
    allowance_used: u64,
    /// Files tracked at the window's start.
    base: u64,
}

/// Where the tripwire's base comes from when its window is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// Count the catalog's synced rows now (a full pass: it reads every row anyway).
    Count,
    /// The count the last full pass noted ([`Guards::note_tracked`]; a watch batch: counting
    /// a million rows per batch would cost more than the batch).
    LastPass,
}

impl Guards {
    /// Opens the guards kept in `store` with these limits; nothing is held yet.
    pub fn new(
        store: Arc<dyn GuardStore>,
        controls: ControlMetrics,
        delete_limits: DeleteGuards,
        change_limit: ChangeLimit,
    ) -> Self {
        Guards {
            store,
            controls,
            delete_limits,
            change_limit,
            holds: Mutex::default(),
            last_pass_tracked: AtomicU64::new(0),
        }
    }

    /// A full pass ends with `tracked` synced rows: the base of later watch batches.
    pub fn note_tracked(&self, tracked: u64) {
        self.last_pass_tracked.store(tracked, Ordering::Relaxed);
    }

    /// The hold state, locked.
    fn state(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.holds.lock().expect("holds lock")
    }

    /// What the holds look like now, for `/readyz`.
    pub fn status(&self) -> serde_json::Value {
        let s = self.state();
        json!({
            "deletes": {"count": s.deletes.len(), "guard": s.delete_guard.map(|g| g.label()), "first": sample(&s.deletes)},
            "changes": {"count": s.changes.len(), "first": sample(&s.changes)},
        })
    }

    /// Whether anything is held (watch mode then polls for a release).
    pub fn holding(&self) -> bool {
        let s = self.state();
        !s.deletes.is_empty() || !s.changes.is_empty()
    }

    /// A full pass recomputes what is held: it forgets what earlier batches held.
    pub fn begin_full_pass(&self) {
        let mut s = self.state();
        s.deletes.clear();
        s.delete_guard = None;
        s.changes.clear();
    }

    /// Checks `plain` deletes (renames excluded) against the guards: the tree guards first, then a
    /// release's allowance, a sticky hold, and the count guards over DELETE_WINDOW.
    pub async fn check_deletes(
        &self,
        ctx: &DeleteContext,
        plain: u64,
    ) -> anyhow::Result<Result<DeletesPass, Blocked>> {
        let g = self.delete_limits;
        if let Err(b) = delete_rules::check_tree(&g, ctx, plain) {
            return Ok(Err(b));
        }
        let hold = self.store.hold(Kind::Deletes).await?;
        let allowance = hold.as_ref().map_or(0, |h| h.allowance.max(0) as u64);
        let counted = plain.saturating_sub(allowance);
        let mut pass = DeletesPass {
            counted,
            allowance_used: plain - counted,
            base: ctx.tracked,
        };
        if counted == 0 || !g.counts_on() {
            return Ok(Ok(pass));
        }
        let sticky = |h: &GuardHold| {
            let tripped = Guard::from_label(&h.guard).filter(|g| g.counts());
            h.allowance == 0 && tripped.is_some_and(|t| !delete_rules::raised(&g, t, h.guard_limit))
        };
        if let Some(h) = hold.filter(sticky) {
            return Ok(Err(Blocked {
                guard: Guard::from_label(&h.guard).unwrap_or(Guard::MaxDeletePercent),
                message: format!(
                    "holding {plain} deletes: guard {} tripped at {} and holds {} deletes; if they are wanted, run `portail-agent release-deletes` (or raise the limit)",
                    h.guard, h.held_since, h.held
                ),
            }));
        }
        let w = self.ledger(Kind::Deletes, g.window).await?;
        pass.base = w.base.map_or(ctx.tracked, |b| b.max(0) as u64);
        let window_ctx = DeleteContext {
            tracked: pass.base,
            ..*ctx
        };
        let so_far = w.passed.max(0) as u64;
        Ok(delete_rules::check_counts(&g, &window_ctx, so_far, counted)
            .map(|()| pass)
            .map_err(|mut b| {
                b.message
                    .push_str("; or run `portail-agent release-deletes`");
                b
            }))
    }

    /// Records deletes that went: in the window's ledger, against a release's allowance, and out of
    /// the holds.
    pub async fn deletes_done(&self, pass: DeletesPass, paths: &[String]) -> anyhow::Result<()> {
        let window = self.delete_limits.window;
        if pass.counted > 0 && !window.is_zero() {
            (self.store)
                .record_passed(Kind::Deletes, pass.counted, pass.base, window)
                .await?;
        }
        let still = self.present(paths.iter().map(String::as_str)) as u64;
        if pass.allowance_used > 0 {
            (self.store)
                .use_allowance(Kind::Deletes, pass.allowance_used, still)
                .await?;
        }
        Ok(())
    }

    /// Holds deletes a guard refused.
    pub fn hold_deletes(&self, guard: Guard, paths: impl Iterator<Item = String>) {
        let mut s = self.state();
        s.deletes.extend(paths);
        s.delete_guard = Some(guard);
    }

    /// Files that exist again (a folder moved back), or whose delete went, are no longer held for
    /// deletion. Returns how many deletes stay held.
    pub fn present<'a>(&self, paths: impl Iterator<Item = &'a str>) -> usize {
        let mut s = self.state();
        for p in paths {
            s.deletes.remove(p);
        }
        s.deletes.len()
    }

    /// What passed a guard within `window` (nothing when the window is zero).
    async fn ledger(&self, kind: Kind, window: Duration) -> anyhow::Result<LedgerWindow> {
        if window.is_zero() {
            return Ok(LedgerWindow {
                passed: 0,
                base: None,
                oldest_secs: None,
            });
        }
        self.store.window(kind, window).await
    }

    /// Loads the tripwire's state for a pass or batch: what passed within CHANGE_WINDOW, the base,
    /// a sticky hold and a release's allowance.
    pub async fn load_tripwire(&self, tracked: Tracked) -> anyhow::Result<()> {
        let limit = self.change_limit;
        let mut budget = ChangeBudget::default();
        if limit.max_percent < 100 {
            let hold = self.store.hold(Kind::Changes).await?;
            let w = self.ledger(Kind::Changes, limit.window).await?;
            budget.base = match (w.base, tracked) {
                (Some(b), _) => b.max(0) as u64,
                (None, Tracked::LastPass) => self.last_pass_tracked.load(Ordering::Relaxed),
                (None, Tracked::Count) => self.store.synced_files().await?,
            };
            budget.allowed = Some(limit.allowed(budget.base));
            budget.passed = w.passed.max(0) as u64;
            budget.window_secs = w.oldest_secs.unwrap_or(0.0);
            budget.started = Some(std::time::Instant::now());
            budget.allowance = hold.as_ref().map_or(0, |h| h.allowance.max(0) as u64);
            // Sticky until released, or until MAX_CHANGE_PERCENT is raised past the tripped limit.
            let raised = |h: &GuardHold| {
                h.guard_limit
                    .is_some_and(|l| i64::from(limit.max_percent) > l)
            };
            budget.tripped = hold.is_some_and(|h| h.allowance == 0 && !raised(&h));
        }
        self.state().budget = Some(budget);
        Ok(())
    }

    /// Whether a tracked file whose content changed may upload now. False: the tripwire holds it.
    pub fn admit_change(&self, path: &str) -> bool {
        let mut s = self.state();
        let HoldState {
            changes, budget, ..
        } = &mut *s;
        let Some(b) = budget.as_mut() else {
            return true;
        };
        let Some(allowed) = b.allowed else {
            return true;
        };
        if b.allowance > b.allowance_used {
            b.allowance_used += 1;
            changes.remove(path);
            return true;
        }
        if !b.tripped && b.passed < allowed {
            b.passed += 1;
            b.admitted += 1;
            if b.first.len() < SAMPLE {
                b.first.push(path.to_string());
            }
            return true;
        }
        if !b.tripped {
            b.tripped = true;
            self.controls.tripwire_trips.inc();
            let limit = self.change_limit;
            let elapsed = b.window_secs + b.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            let per_min = b.passed as f64 * 60.0 / elapsed.max(1.0);
            tracing::error!(
                changed = b.passed,
                tracked = b.base,
                per_minute = format!("{per_min:.0}"),
                first_changed = ?b.first,
                first_held = path,
                "mass-change tripwire: more than MAX_CHANGE_PERCENT={}% of {} tracked files changed content within CHANGE_WINDOW={:?}; holding uploads of changed files (new files still upload); if the changes are wanted, run `portail-agent release-changes`",
                limit.max_percent, b.base, limit.window
            );
        }
        changes.insert(path.to_string());
        false
    }

    /// Ends a pass or batch: writes what passed to the ledgers, what is held to the catalog and
    /// the gauges.
    pub async fn settle(&self) -> anyhow::Result<()> {
        let (budget, deletes, delete_guard, changes, written) = {
            let mut s = self.state();
            let held_deletes = s.deletes.len();
            (
                s.budget.take(),
                (held_deletes, sample(&s.deletes)),
                s.delete_guard,
                (s.changes.len(), sample(&s.changes)),
                s.written_deletes.replace(held_deletes),
            )
        };
        self.controls.deletes_held.set(deletes.0 as i64);
        self.controls.changes_held.set(changes.0 as i64);
        if written != Some(deletes.0) {
            let g = self.delete_limits;
            let guard =
                delete_guard.map_or(("none", None), |d| (d.label(), delete_rules::limit(&g, d)));
            if let Err(e) = self.write_hold(Kind::Deletes, guard, deletes).await {
                // Written next time, then.
                self.state().written_deletes = None;
                return Err(e);
            }
        }
        let Some(b) = budget else {
            return Ok(());
        };
        let limit = self.change_limit;
        if b.admitted > 0 {
            (self.store)
                .record_passed(Kind::Changes, b.admitted, b.base, limit.window)
                .await?;
        }
        if b.allowance_used > 0 {
            (self.store)
                .use_allowance(Kind::Changes, b.allowance_used, changes.0 as u64)
                .await?;
        }
        if b.tripped || changes.0 > 0 {
            let guard = ("max_change_percent", Some(i64::from(limit.max_percent)));
            self.write_hold(Kind::Changes, guard, changes).await?;
        }
        Ok(())
    }

    /// Writes what a guard holds (its label and limit), or ends a hold that holds nothing.
    async fn write_hold(
        &self,
        kind: Kind,
        (guard, guard_limit): (&str, Option<i64>),
        (held, sample): (usize, Vec<String>),
    ) -> anyhow::Result<()> {
        if held == 0 {
            return self.store.use_allowance(kind, 0, 0).await;
        }
        let hold = NewHold {
            kind: kind.label(),
            guard,
            guard_limit,
            held: held as i64,
            sample: &sample,
        };
        self.store.set_hold(&hold).await
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod memory_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tripwire_allows_its_share_but_never_fewer_than_the_floor() {
        let l = ChangeLimit {
            max_percent: 50,
            window: Duration::from_secs(600),
            min_files: 20,
        };
        assert_eq!(l.allowed(1000), 500);
        assert_eq!(
            l.allowed(10),
            20,
            "a small tree is never tripped by editing"
        );
        assert_eq!(l.allowed(0), 20);
    }
}
