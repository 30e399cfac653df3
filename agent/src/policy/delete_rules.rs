//! The delete rules: pure checks of a batch of deletes against DeleteGuards.
//!
//! In: the limits ([`DeleteGuards`]), what is known of the tree ([`DeleteContext`]) and how
//! many deletes a batch (and the window before it) holds. Out: `Ok`, or the first [`Blocked`]
//! refusal, most alarming first: the scan hit unreadable entries; the root is empty but files
//! are tracked (an unmounted share); more than MAX_DELETE; more than MAX_DELETE_PERCENT of the
//! tracked files. rclone's rules, plus the empty-root check the peers' trackers ask for. The
//! guard session (`policy::guard`) applies them over DELETE_WINDOW.

use serde::Deserialize;

use crate::model::guard::{Blocked, Guard};

/// What happens to the object of a file that is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Delete the object.
    Delete,
    /// Keep the object; only the catalog row is marked deleted.
    Keep,
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

/// The guards on how many: MAX_DELETE, MAX_DELETE_PERCENT of `c.tracked`, for `n` more
/// deletes after the `so_far` that went within DELETE_WINDOW. The message says what this batch
/// adds, and the window's total when there is one.
pub fn check_counts(
    g: &DeleteGuards,
    c: &DeleteContext,
    so_far: u64,
    n: u64,
) -> Result<(), Blocked> {
    if n == 0 {
        return Ok(());
    }
    let total = so_far + n;
    let refusing = if so_far > 0 {
        let window = humantime::format_duration(g.window);
        format!("refusing {n} deletes ({so_far} already deleted within DELETE_WINDOW={window}, {total} in all)")
    } else {
        format!("refusing {n} deletes")
    };
    if let Some(max) = g.max_delete {
        if total > max {
            return Err(Blocked {
                guard: Guard::MaxDelete,
                message: format!(
                    "{refusing}: more than MAX_DELETE={max}; raise MAX_DELETE to proceed"
                ),
            });
        }
    }
    if g.max_delete_percent < 100 && total * 100 > c.tracked * u64::from(g.max_delete_percent) {
        return Err(Blocked {
            guard: Guard::MaxDeletePercent,
            message: format!(
                "{refusing}: more than MAX_DELETE_PERCENT={}% of {} tracked files; raise MAX_DELETE_PERCENT (100 disables) to proceed",
                g.max_delete_percent, c.tracked
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    /// Both rules in the order the guard session applies them, with no window before.
    fn check_deletes(g: &DeleteGuards, c: &DeleteContext, n: u64) -> Result<(), Blocked> {
        check_tree(g, c, n)?;
        check_counts(g, c, 0, n)
    }

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

    #[test]
    fn a_refusal_within_the_window_says_what_this_batch_adds_and_the_total() {
        let g = DeleteGuards {
            window: std::time::Duration::from_secs(3600),
            ..DEFAULT
        };
        let c = DeleteContext {
            tracked: 1000,
            local_files: 500,
            scan_failures: 0,
        };
        assert_eq!(
            check_counts(&g, &c, 450, 50),
            Ok(()),
            "500 of 1000 is the limit"
        );
        let b = check_counts(&g, &c, 500, 50).unwrap_err();
        assert_eq!(b.guard, Guard::MaxDeletePercent);
        assert!(
            b.message.starts_with(
                "refusing 50 deletes (500 already deleted within DELETE_WINDOW=1h, 550 in all): more than MAX_DELETE_PERCENT=50% of 1000 tracked files"
            ),
            "{}",
            b.message
        );
        let capped = DeleteGuards {
            max_delete: Some(10),
            ..g
        };
        let b = check_counts(&capped, &c, 8, 3).unwrap_err();
        assert!(
            b.message.starts_with("refusing 3 deletes (8 already"),
            "{}",
            b.message
        );
    }
}
