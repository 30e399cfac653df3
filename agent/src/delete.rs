//! Stage 6, delete: after every upload and copy of the pass, the rows whose file is gone are
//! deleted from S3 (or, with DELETE_MODE=keep, only marked), and only if no guard objects.
//!
//! In: the gone rows, the renames the pass did (their sources live on under a new key) and a
//! [`DeleteContext`] (what the pass, or watch mode, knows about the tree). Out: objects deleted
//! in batches of 1000, rows marked `deleted` through the [`Recorder`], or a [`Blocked`] refusal
//! with the message that tells the operator how to proceed.
//!
//! The guards, most alarming first: the scan hit unreadable entries; the root is empty but files
//! are tracked (an unmounted share); more than MAX_DELETE; more than MAX_DELETE_PERCENT of the
//! tracked files. rclone's rules, plus the empty-root check the peers' trackers ask for.

use std::collections::HashMap;

use portail_core::catalog::{DeletedFile, FileRow};
use serde_json::json;

use crate::config::DeleteMode;
use crate::guard;
use crate::history;
use crate::record::Recorder;
use crate::Agent;

/// Deletes (or, with DELETE_MODE=keep, only marks) the rows whose file is gone, if the guards
/// allow. Rename sources (in [`Recorder::renamed`]) are handled here too: their content lives on
/// under the new key, so they do not count against the limits.
pub async fn delete_gone(
    agent: &Agent,
    gone: Vec<FileRow>,
    ctx: &DeleteContext,
    rec: &mut Recorder<'_>,
) -> anyhow::Result<()> {
    if gone.is_empty() {
        return Ok(());
    }
    let plain: Vec<String> = gone
        .iter()
        .filter(|r| !rec.renamed().contains_key(&r.path))
        .map(|r| r.path.clone())
        .collect();
    let pass = match guard::check_deletes(agent, ctx, plain.len() as u64).await? {
        Ok(pass) => pass,
        Err(blocked) => {
            guard::hold_deletes(agent, blocked.guard, plain.into_iter());
            rec.deletes_blocked(blocked);
            return Ok(());
        }
    };
    let keep = agent.settings.delete_mode == DeleteMode::Keep;
    let mut deleted = Vec::with_capacity(gone.len());
    for chunk in gone.chunks(1000) {
        let (kept, mut failed) = if keep {
            (HashMap::new(), HashMap::new())
        } else {
            keep_history(agent, chunk).await
        };
        if !keep {
            let doomed: Vec<&FileRow> = chunk
                .iter()
                .filter(|r| !failed.contains_key(&r.s3_key))
                .collect();
            failed.extend(delete_objects(agent, &doomed).await);
        }
        let mut done = Vec::with_capacity(chunk.len());
        for row in chunk {
            if let Some(err) = failed.get(&row.s3_key) {
                rec.delete_failed(row, err);
                continue;
            }
            let details = match rec.renamed().get(&row.path) {
                Some(to) => json!({"renamed_to": to, "object_kept": keep}),
                None => json!({"object_kept": keep}),
            };
            let history_key = kept.get(&row.s3_key).cloned();
            done.push(DeletedFile {
                path: row.path.clone(),
                details,
                history_key,
            });
        }
        deleted.extend(done.iter().map(|f| f.path.clone()));
        rec.deleted(&done).await?;
    }
    // Once for the whole batch: the ledger and the allowance count it once, however many
    // DeleteObjects calls it took.
    guard::deletes_done(agent, pass, &deleted).await
}

/// With HISTORY=prefix, copies each object that holds a version (renamed ones too: the old
/// path keeps its history) to its history key. Returns the history keys by object key, and the
/// objects that could not be copied, which must not be deleted.
async fn keep_history(
    agent: &Agent,
    rows: &[FileRow],
) -> (HashMap<String, String>, HashMap<String, String>) {
    let copies = rows
        .iter()
        .filter(|r| history::holds_version(r, &r.s3_key))
        .map(|r| async move { (r.s3_key.clone(), history::keep(agent, r).await) });
    let results = futures::future::join_all(copies).await;
    let (mut kept, mut failed) = (HashMap::new(), HashMap::new());
    for (key, result) in results {
        match result {
            Ok(Some(h)) => {
                kept.insert(key, h);
            }
            Ok(None) => {}
            Err(e) => {
                failed.insert(key, format!("history copy failed, object kept: {e}"));
            }
        }
    }
    (kept, failed)
}

/// Deletes the objects of up to 1000 rows; returns `(key, reason)` for each that failed.
async fn delete_objects(agent: &Agent, rows: &[&FileRow]) -> Vec<(String, String)> {
    let keys: Vec<String> = rows.iter().map(|r| r.s3_key.clone()).collect();
    match agent.transfer.delete_batch(&keys).await {
        Ok(errors) => errors,
        Err(e) => {
            let msg = e.to_string();
            keys.into_iter().map(|k| (k, msg.clone())).collect()
        }
    }
}

/// The safety limits on deletes. All on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteGuards {
    /// MAX_DELETE: at most this many deletes per pass. None: no absolute cap.
    pub max_delete: Option<u64>,
    /// MAX_DELETE_PERCENT: at most this share of the tracked files per pass. 100 disables.
    pub max_delete_percent: u32,
    /// ALLOW_EMPTY_ROOT: let an empty root delete everything.
    pub allow_empty_root: bool,
    /// DELETE_WINDOW: the two limits above count every delete within this rolling window.
    /// Zero: per pass or batch only.
    pub window: std::time::Duration,
}

impl DeleteGuards {
    /// Whether MAX_DELETE or MAX_DELETE_PERCENT is on.
    pub fn counts_on(&self) -> bool {
        self.max_delete.is_some() || self.max_delete_percent < 100
    }
}

/// What the guards look at: the same in a full pass and in watch mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteContext {
    /// Rows `synced` before the deletes.
    pub tracked: u64,
    /// Regular files in the tree (found by the pass's walk, or counted by watch mode).
    pub local_files: u64,
    /// Entries the walk could not read.
    pub scan_failures: u64,
}

/// Which guard refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The scan hit I/O errors: what looks gone may just be unreadable.
    ScanErrors,
    /// The root is empty but the catalog tracks files: an unmounted or wiped share.
    EmptyRoot,
    /// More deletes than MAX_DELETE.
    MaxDelete,
    /// More deletes than MAX_DELETE_PERCENT of the tracked files.
    MaxDeletePercent,
}

impl Guard {
    /// Every guard, so the metric exports a zero for each before one fires.
    pub const ALL: [Guard; 4] = [
        Guard::ScanErrors,
        Guard::EmptyRoot,
        Guard::MaxDelete,
        Guard::MaxDeletePercent,
    ];

    /// The guard a metric label names.
    pub fn from_label(label: &str) -> Option<Guard> {
        Guard::ALL.into_iter().find(|g| g.label() == label)
    }

    /// Whether the guard counts deletes (MAX_DELETE, MAX_DELETE_PERCENT): those hold until
    /// released or raised. The others hold while the tree looks wrong.
    pub fn counts(self) -> bool {
        matches!(self, Guard::MaxDelete | Guard::MaxDeletePercent)
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Guard::ScanErrors => "scan_errors",
            Guard::EmptyRoot => "empty_root",
            Guard::MaxDelete => "max_delete",
            Guard::MaxDeletePercent => "max_delete_percent",
        }
    }
}

/// A counting guard's limit under `g` (None: off, or not a counting guard).
pub fn limit(g: &DeleteGuards, guard: Guard) -> Option<i64> {
    match guard {
        Guard::MaxDelete => g.max_delete.map(|m| m as i64),
        Guard::MaxDeletePercent => {
            (g.max_delete_percent < 100).then_some(g.max_delete_percent.into())
        }
        Guard::ScanErrors | Guard::EmptyRoot => None,
    }
}

/// Whether `g` raised (or turned off) `guard` since it tripped at limit `was`.
pub fn raised(g: &DeleteGuards, guard: Guard, was: Option<i64>) -> bool {
    match (limit(g, guard), was) {
        (None, _) => true,
        (Some(now), Some(was)) => now > was,
        (Some(_), None) => false,
    }
}

/// A refusal, with the message that tells the operator how to override it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The guard.
    pub guard: Guard,
    /// What happened and how to proceed.
    pub message: String,
}

/// Checks `n` deletes (renames excluded: their content lives on) against the guards. Guards are
/// checked from the most to the least alarming, and the first that trips is reported.
pub fn check_deletes(g: &DeleteGuards, c: &DeleteContext, n: u64) -> Result<(), Blocked> {
    check_tree(g, c, n)?;
    check_counts(g, c, n)
}

/// The guards on the state of the tree: unreadable entries, an empty root.
pub fn check_tree(g: &DeleteGuards, c: &DeleteContext, n: u64) -> Result<(), Blocked> {
    if n == 0 {
        return Ok(());
    }
    if c.scan_failures > 0 {
        return Err(Blocked {
            guard: Guard::ScanErrors,
            message: format!(
                "refusing {n} deletes: the scan hit {} unreadable entries, so missing files may only be unreadable; fix them or EXCLUDE them, and the next pass deletes",
                c.scan_failures
            ),
        });
    }
    if c.local_files == 0 && c.tracked > 0 && !g.allow_empty_root {
        return Err(Blocked {
            guard: Guard::EmptyRoot,
            message: format!(
                "refusing {n} deletes: SYNC_ROOT is empty but {} files are tracked (unmounted share?); set ALLOW_EMPTY_ROOT=true to delete them",
                c.tracked
            ),
        });
    }
    Ok(())
}

/// The guards on how many: MAX_DELETE, MAX_DELETE_PERCENT of `c.tracked`.
pub fn check_counts(g: &DeleteGuards, c: &DeleteContext, n: u64) -> Result<(), Blocked> {
    if n == 0 {
        return Ok(());
    }
    if let Some(max) = g.max_delete {
        if n > max {
            return Err(Blocked {
                guard: Guard::MaxDelete,
                message: format!(
                    "refusing {n} deletes: more than MAX_DELETE={max}; raise MAX_DELETE to proceed"
                ),
            });
        }
    }
    if g.max_delete_percent < 100 && n * 100 > c.tracked * u64::from(g.max_delete_percent) {
        return Err(Blocked {
            guard: Guard::MaxDeletePercent,
            message: format!(
                "refusing {n} deletes: more than MAX_DELETE_PERCENT={}% of {} tracked files; raise MAX_DELETE_PERCENT (100 disables) to proceed",
                g.max_delete_percent, c.tracked
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    const DEFAULT: DeleteGuards = DeleteGuards {
        max_delete: None,
        max_delete_percent: 50,
        allow_empty_root: false,
        window: std::time::Duration::ZERO,
    };

    fn ctx(
        deletes: u64,
        tracked: u64,
        local_files: u64,
        scan_failures: u64,
    ) -> (DeleteContext, u64) {
        let c = DeleteContext {
            tracked,
            local_files,
            scan_failures,
        };
        (c, deletes)
    }

    fn guard(g: &DeleteGuards, (c, n): (DeleteContext, u64)) -> Option<Guard> {
        check_deletes(g, &c, n).err().map(|b| b.guard)
    }

    #[test]
    fn nothing_to_delete_always_passes() {
        assert_eq!(guard(&DEFAULT, ctx(0, 10, 0, 5)), None);
    }

    #[test]
    fn a_few_deletes_pass() {
        assert_eq!(guard(&DEFAULT, ctx(5, 10, 5, 0)), None);
    }

    #[test]
    fn scan_errors_block_every_delete_first() {
        assert_eq!(guard(&DEFAULT, ctx(1, 100, 99, 1)), Some(Guard::ScanErrors));
        let all_off = DeleteGuards {
            max_delete: None,
            max_delete_percent: 100,
            allow_empty_root: true,
            ..DEFAULT
        };
        assert_eq!(guard(&all_off, ctx(1, 100, 0, 1)), Some(Guard::ScanErrors));
    }

    #[test]
    fn empty_root_blocks_unless_allowed() {
        assert_eq!(guard(&DEFAULT, ctx(3, 3, 0, 0)), Some(Guard::EmptyRoot));
        let allow = DeleteGuards {
            allow_empty_root: true,
            max_delete_percent: 100,
            ..DEFAULT
        };
        assert_eq!(guard(&allow, ctx(3, 3, 0, 0)), None);
        // Allowing an empty root does not switch off the percentage guard.
        let allow_only = DeleteGuards {
            allow_empty_root: true,
            ..DEFAULT
        };
        assert_eq!(
            guard(&allow_only, ctx(3, 3, 0, 0)),
            Some(Guard::MaxDeletePercent)
        );
    }

    #[test]
    fn absolute_cap() {
        let g = DeleteGuards {
            max_delete: Some(2),
            ..DEFAULT
        };
        assert_eq!(guard(&g, ctx(2, 100, 98, 0)), None);
        assert_eq!(guard(&g, ctx(3, 100, 97, 0)), Some(Guard::MaxDelete));
    }

    #[test]
    fn percentage_cap_is_exclusive_at_the_limit() {
        assert_eq!(guard(&DEFAULT, ctx(50, 100, 50, 0)), None);
        assert_eq!(
            guard(&DEFAULT, ctx(51, 100, 49, 0)),
            Some(Guard::MaxDeletePercent)
        );
        let off = DeleteGuards {
            max_delete_percent: 100,
            ..DEFAULT
        };
        assert_eq!(guard(&off, ctx(100, 100, 1, 0)), None);
    }

    #[test]
    fn messages_say_how_to_override() {
        let cases = [
            (ctx(1, 9, 8, 1), "EXCLUDE"),
            (ctx(3, 3, 0, 0), "ALLOW_EMPTY_ROOT=true"),
            (ctx(9, 10, 1, 0), "MAX_DELETE_PERCENT"),
        ];
        for ((c, n), hint) in cases {
            let msg = check_deletes(&DEFAULT, &c, n).unwrap_err().message;
            assert!(msg.contains(hint), "{msg}");
        }
        let g = DeleteGuards {
            max_delete: Some(1),
            ..DEFAULT
        };
        let (c, n) = ctx(2, 100, 98, 0);
        assert!(check_deletes(&g, &c, n)
            .unwrap_err()
            .message
            .contains("raise MAX_DELETE"));
    }

    #[test]
    fn a_hold_is_lifted_only_by_a_higher_or_disabled_limit() {
        let g = DeleteGuards {
            max_delete: Some(10),
            ..DEFAULT
        };
        assert!(!raised(&g, Guard::MaxDeletePercent, Some(50)), "same limit");
        assert!(!raised(&g, Guard::MaxDelete, Some(10)));
        assert!(raised(&g, Guard::MaxDelete, Some(5)), "raised");
        let off = DeleteGuards {
            max_delete_percent: 100,
            ..DEFAULT
        };
        assert!(
            raised(&off, Guard::MaxDeletePercent, Some(50)),
            "turned off"
        );
        assert!(raised(&off, Guard::MaxDelete, Some(5)), "no cap now");
    }
}
