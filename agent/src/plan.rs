//! Stage 3, plan: a pure diff from the local tree and the catalog to actions.
//!
//! In: the scan's [`LocalFile`]s and the agent's catalog rows. Out: a [`Plan`]: which files must
//! be read (new, changed, or never verified), which are unchanged, and which catalog rows lost
//! their file. After a file is hashed, [`decide`] picks upload, metadata-only or server-side
//! copy. No I/O happens here, so every case is unit-tested below.

use std::collections::HashMap;

use portail_core::catalog::{FileRow, FileStatus};

use crate::scan::LocalFile;

/// A file that must be read, with what the catalog knew about its path.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The file as scanned.
    pub local: LocalFile,
    /// Its catalog row, if the path was known.
    pub previous: Option<FileRow>,
}

/// The outcome of comparing the tree with the catalog.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Files to read; what to do with them depends on their MD5 ([`decide`]).
    pub work: Vec<Work>,
    /// Files whose size, times, inode and key all match a `synced` row: not read at all.
    pub unchanged: u64,
    /// Rows (not yet `deleted`) whose file is no longer in the tree.
    pub gone: Vec<FileRow>,
}

/// What to do with a file once its MD5 is known.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// S3 already holds these bytes under this key: update the catalog row only (a `touch`).
    MetadataOnly,
    /// A vanished file had the same size and MD5: copy its object server-side (a rename).
    Copy {
        /// The row of the vanished file whose object is the copy source.
        from: Box<FileRow>,
    },
    /// Upload the bytes.
    Upload,
}

/// Whether a synced row still describes the local file without reading it.
pub fn is_unchanged(local: &LocalFile, row: &FileRow) -> bool {
    row.status == FileStatus::Synced
        && row.md5.is_some()
        && row.s3_key == local.key
        && row.size_bytes == local.meta.size as i64
        && row.mtime == local.meta.mtime
        && row.inode.is_none_or(|i| i == local.meta.inode)
        && row.ctime.is_none_or(|c| c == local.meta.ctime)
}

/// Compares one file with its catalog row (if any): `None` when it is unchanged, else the work.
pub fn classify(local: LocalFile, previous: Option<FileRow>) -> Option<Work> {
    match previous {
        Some(row) if is_unchanged(&local, &row) => None,
        previous => Some(Work { local, previous }),
    }
}

/// Compares the tree with the catalog. Both inputs may come in any order. (A pass streams
/// the same comparison in batches; this whole-slice form serves `verify` and the tests.)
pub fn plan(mut local: Vec<LocalFile>, mut catalog: Vec<FileRow>) -> Plan {
    local.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    catalog.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut out = Plan::default();
    let mut rows = catalog.into_iter().peekable();
    for file in local {
        // Rows before this path have no local file.
        while let Some(row) = rows.next_if(|r| r.path.as_bytes() < file.path.as_bytes()) {
            if row.status != FileStatus::Deleted {
                out.gone.push(row);
            }
        }
        let previous = rows.next_if(|r| r.path == file.path);
        match previous {
            Some(row) if is_unchanged(&file, &row) => out.unchanged += 1,
            previous => out.work.push(Work {
                local: file,
                previous,
            }),
        }
    }
    out.gone
        .extend(rows.filter(|r| r.status != FileStatus::Deleted));
    out
}

/// Indexes vanished rows by (size, md5), the key for rename detection. Only rows whose object
/// is known to hold that content (`synced`) can be copy sources.
pub fn rename_sources(gone: &[FileRow]) -> HashMap<(i64, String), FileRow> {
    let mut index = HashMap::new();
    for row in gone.iter().filter(|r| r.status == FileStatus::Synced) {
        if let Some(md5) = &row.md5 {
            index
                .entry((row.size_bytes, md5.clone()))
                .or_insert_with(|| row.clone());
        }
    }
    index
}

/// Picks the action for a hashed file.
pub fn decide(work: &Work, md5_hex: &str, sources: &HashMap<(i64, String), FileRow>) -> Decision {
    if let Some(prev) = &work.previous {
        if prev.status == FileStatus::Synced
            && prev.md5.as_deref() == Some(md5_hex)
            && prev.s3_key == work.local.key
            && prev.size_bytes == work.local.meta.size as i64
        {
            return Decision::MetadataOnly;
        }
    }
    // An empty file costs nothing to upload; copying it would only invent a rename.
    if work.local.meta.size > 0 {
        if let Some(from) = sources.get(&(work.local.meta.size as i64, md5_hex.to_string())) {
            return Decision::Copy {
                from: Box::new(from.clone()),
            };
        }
    }
    Decision::Upload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::FileMeta;
    use chrono::{DateTime, Utc};
    use std::collections::HashSet;

    const MD5_A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const MD5_B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn local(path: &str, size: u64, mtime: i64) -> LocalFile {
        LocalFile {
            path: path.into(),
            key: format!("p/{path}"),
            meta: FileMeta {
                size,
                mtime: t(mtime),
                inode: 7,
                ctime: t(mtime),
            },
        }
    }

    fn row(path: &str, size: i64, mtime: i64, status: FileStatus, md5: Option<&str>) -> FileRow {
        FileRow {
            id: 1,
            agent_id: 1,
            path: path.into(),
            s3_key: format!("p/{path}"),
            size_bytes: size,
            mtime: t(mtime),
            md5: md5.map(String::from),
            etag: None,
            content_type: None,
            status,
            last_error: None,
            synced_at: None,
            deleted_at: None,
            created_at: t(0),
            updated_at: t(0),
            inode: Some(7),
            ctime: Some(t(mtime)),
        }
    }

    fn synced(path: &str, size: i64, mtime: i64, md5: &str) -> FileRow {
        row(path, size, mtime, FileStatus::Synced, Some(md5))
    }

    #[test]
    fn new_file_is_work_without_previous() {
        let p = plan(vec![local("a", 1, 10)], vec![]);
        assert_eq!(p.work.len(), 1);
        assert_eq!(p.work[0].previous, None);
        assert_eq!((p.unchanged, p.gone.len()), (0, 0));
    }

    #[test]
    fn unchanged_synced_file_is_not_read() {
        let p = plan(vec![local("a", 1, 10)], vec![synced("a", 1, 10, MD5_A)]);
        assert_eq!((p.work.len(), p.unchanged, p.gone.len()), (0, 1, 0));
    }

    #[test]
    fn any_metadata_difference_means_read_again() {
        let base = local("a", 1, 10);
        let mut cases = vec![];
        let mut r = synced("a", 2, 10, MD5_A); // size
        cases.push(r.clone());
        r = synced("a", 1, 11, MD5_A); // mtime
        cases.push(r.clone());
        r = synced("a", 1, 10, MD5_A);
        r.inode = Some(8); // inode
        cases.push(r.clone());
        r = synced("a", 1, 10, MD5_A);
        r.ctime = Some(t(99)); // ctime (chmod, or a rename onto the path)
        cases.push(r.clone());
        r = synced("a", 1, 10, MD5_A);
        r.s3_key = "other/a".into(); // S3_PREFIX changed
        cases.push(r.clone());
        for row in cases {
            let p = plan(vec![base.clone()], vec![row.clone()]);
            assert_eq!(p.work.len(), 1, "{row:?}");
            assert_eq!(p.work[0].previous.as_ref(), Some(&row));
        }
    }

    #[test]
    fn rows_that_are_not_synced_are_always_read() {
        for status in [FileStatus::Pending, FileStatus::Error, FileStatus::Deleted] {
            let p = plan(
                vec![local("a", 1, 10)],
                vec![row("a", 1, 10, status, Some(MD5_A))],
            );
            assert_eq!(p.work.len(), 1, "{status:?}");
            assert!(p.gone.is_empty());
        }
        // A synced row without an MD5 cannot vouch for the content either.
        let p = plan(
            vec![local("a", 1, 10)],
            vec![row("a", 1, 10, FileStatus::Synced, None)],
        );
        assert_eq!(p.work.len(), 1);
    }

    #[test]
    fn null_inode_and_ctime_do_not_force_a_read() {
        let mut r = synced("a", 1, 10, MD5_A);
        r.inode = None;
        r.ctime = None;
        assert_eq!(plan(vec![local("a", 1, 10)], vec![r]).unchanged, 1);
    }

    #[test]
    fn vanished_rows_are_gone_unless_already_deleted() {
        let rows = vec![
            synced("a", 1, 10, MD5_A),
            row("b", 1, 10, FileStatus::Pending, None),
            row("c", 1, 10, FileStatus::Error, None),
            row("d", 1, 10, FileStatus::Deleted, Some(MD5_A)),
            synced("z", 1, 10, MD5_A),
        ];
        let p = plan(vec![local("m", 1, 10)], rows);
        let gone: Vec<&str> = p.gone.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(gone, vec!["a", "b", "c", "z"]);
        assert_eq!(p.work.len(), 1);
    }

    #[test]
    fn inputs_in_any_order_give_one_entry_per_path() {
        let locals = vec![local("b", 1, 10), local("a/x", 1, 10), local("a-y", 1, 10)];
        let rows = vec![
            synced("a-y", 1, 10, MD5_A),
            synced("a/x", 1, 10, MD5_A),
            synced("q", 1, 1, MD5_A),
        ];
        let p = plan(locals, rows);
        assert_eq!(p.unchanged, 2);
        assert_eq!(
            p.work
                .iter()
                .map(|w| w.local.path.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
        assert_eq!(
            p.gone.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            vec!["q"]
        );
    }

    #[test]
    fn decide_metadata_only_when_content_is_the_same() {
        let w = Work {
            local: local("a", 1, 11),
            previous: Some(synced("a", 1, 10, MD5_A)),
        };
        assert_eq!(decide(&w, MD5_A, &HashMap::new()), Decision::MetadataOnly);
        assert_eq!(decide(&w, MD5_B, &HashMap::new()), Decision::Upload);
    }

    #[test]
    fn decide_uploads_when_previous_row_cannot_vouch() {
        for status in [FileStatus::Pending, FileStatus::Error, FileStatus::Deleted] {
            let w = Work {
                local: local("a", 1, 11),
                previous: Some(row("a", 1, 10, status, Some(MD5_A))),
            };
            assert_eq!(
                decide(&w, MD5_A, &HashMap::new()),
                Decision::Upload,
                "{status:?}"
            );
        }
        let mut prev = synced("a", 1, 10, MD5_A);
        prev.s3_key = "old-prefix/a".into();
        let w = Work {
            local: local("a", 1, 11),
            previous: Some(prev),
        };
        assert_eq!(decide(&w, MD5_A, &HashMap::new()), Decision::Upload);
    }

    #[test]
    fn decide_copy_for_a_vanished_twin() {
        let gone = vec![
            synced("old", 5, 10, MD5_A),
            row("pend", 5, 10, FileStatus::Pending, Some(MD5_B)),
        ];
        let sources = rename_sources(&gone);
        assert_eq!(sources.len(), 1, "only synced rows are copy sources");
        let w = Work {
            local: local("new", 5, 20),
            previous: None,
        };
        assert_eq!(
            decide(&w, MD5_A, &sources),
            Decision::Copy {
                from: Box::new(gone[0].clone())
            }
        );
        assert_eq!(decide(&w, MD5_B, &sources), Decision::Upload);
        let other_size = Work {
            local: local("new", 6, 20),
            previous: None,
        };
        assert_eq!(decide(&other_size, MD5_A, &sources), Decision::Upload);
    }

    #[test]
    fn empty_files_are_uploaded_not_copied() {
        let empty_md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sources = rename_sources(&[synced("old", 0, 10, empty_md5)]);
        let w = Work {
            local: local("new", 0, 20),
            previous: None,
        };
        assert_eq!(decide(&w, empty_md5, &sources), Decision::Upload);
    }

    /// Random trees and catalogs over a tiny path alphabet, so paths collide often.
    fn arb_local() -> impl proptest::strategy::Strategy<Value = Vec<LocalFile>> {
        use proptest::prelude::*;
        proptest::collection::vec(("[abc]{1,3}", 0u64..3, 0i64..3), 0..12).prop_map(|v| {
            v.into_iter()
                .map(|(p, size, mtime)| local(&p, size, mtime))
                .collect::<Vec<_>>()
        })
    }

    fn arb_catalog() -> impl proptest::strategy::Strategy<Value = Vec<FileRow>> {
        use proptest::prelude::*;
        let status = prop_oneof![
            Just(FileStatus::Synced),
            Just(FileStatus::Pending),
            Just(FileStatus::Deleted),
            Just(FileStatus::Error),
        ];
        proptest::collection::vec(
            ("[abc]{1,3}", 0i64..3, 0i64..3, status, proptest::bool::ANY),
            0..12,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(p, size, mtime, st, has_md5)| {
                    row(&p, size, mtime, st, has_md5.then_some(MD5_A))
                })
                .collect::<Vec<_>>()
        })
    }

    /// A tree has one file per path and the catalog one row per path (a unique index).
    fn dedup_local(mut v: Vec<LocalFile>) -> Vec<LocalFile> {
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v.dedup_by(|a, b| a.path == b.path);
        v
    }

    fn dedup_rows(mut v: Vec<FileRow>) -> Vec<FileRow> {
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v.dedup_by(|a, b| a.path == b.path);
        v
    }

    proptest::proptest! {
        #[test]
        fn plan_never_deletes_local_files_never_redoes_unchanged_ones_and_acts_once_per_path(
            local_files in arb_local(),
            rows in arb_catalog(),
        ) {
            let local_files = dedup_local(local_files);
            let rows = dedup_rows(rows);
            let p = plan(local_files.clone(), rows.clone());
            let local_paths: HashSet<&str> = local_files.iter().map(|f| f.path.as_str()).collect();
            // Never deletes what exists locally, and only rows that are not already deleted.
            for g in &p.gone {
                proptest::prop_assert!(!local_paths.contains(g.path.as_str()), "deletes {}", g.path);
                proptest::prop_assert!(g.status != FileStatus::Deleted);
            }
            // Never uploads (or even reads) what is unchanged.
            for w in &p.work {
                if let Some(prev) = &w.previous {
                    proptest::prop_assert!(!is_unchanged(&w.local, prev), "re-reads {}", w.local.path);
                    proptest::prop_assert_eq!(&prev.path, &w.local.path);
                }
            }
            // Every local file is accounted for exactly once.
            proptest::prop_assert_eq!(p.work.len() as u64 + p.unchanged, local_files.len() as u64);
            // Never two actions for one path.
            let mut seen = HashSet::new();
            for path in p.work.iter().map(|w| &w.local.path).chain(p.gone.iter().map(|g| &g.path)) {
                proptest::prop_assert!(seen.insert(path.clone()), "two actions for {}", path);
            }
            // Every live row without a local file is gone.
            let live_missing = rows
                .iter()
                .filter(|r| r.status != FileStatus::Deleted && !local_paths.contains(r.path.as_str()))
                .count();
            proptest::prop_assert_eq!(p.gone.len(), live_missing);
        }

        #[test]
        fn same_bytes_under_the_same_key_are_never_uploaded_again(
            size in 0u64..3, mtime in 0i64..3, row_mtime in 0i64..3,
        ) {
            let w = Work {
                local: local("a", size, mtime),
                previous: Some(synced("a", size as i64, row_mtime, MD5_A)),
            };
            proptest::prop_assert_eq!(decide(&w, MD5_A, &HashMap::new()), Decision::MetadataOnly);
            proptest::prop_assert_eq!(decide(&w, MD5_B, &HashMap::new()), Decision::Upload);
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
}

/// What the guards look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteContext {
    /// Rows the pass would delete (renames excluded: their content lives on).
    pub deletes: u64,
    /// Rows `synced` before the pass.
    pub tracked: u64,
    /// Regular files the scan found.
    pub local_files: u64,
    /// Entries the scan could not read.
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

/// A refusal, with the message that tells the operator how to override it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The guard.
    pub guard: Guard,
    /// What happened and how to proceed.
    pub message: String,
}

/// Checks a pass's deletes against the guards. Guards are checked from the most to the
/// least alarming, and the first that trips is reported.
pub fn check_deletes(g: &DeleteGuards, c: &DeleteContext) -> Result<(), Blocked> {
    if c.deletes == 0 {
        return Ok(());
    }
    let n = c.deletes;
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
    };

    fn ctx(deletes: u64, tracked: u64, local_files: u64, scan_failures: u64) -> DeleteContext {
        DeleteContext {
            deletes,
            tracked,
            local_files,
            scan_failures,
        }
    }

    fn guard(g: &DeleteGuards, c: DeleteContext) -> Option<Guard> {
        check_deletes(g, &c).err().map(|b| b.guard)
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
        for (c, hint) in cases {
            let msg = check_deletes(&DEFAULT, &c).unwrap_err().message;
            assert!(msg.contains(hint), "{msg}");
        }
        let g = DeleteGuards {
            max_delete: Some(1),
            ..DEFAULT
        };
        assert!(check_deletes(&g, &ctx(2, 100, 98, 0))
            .unwrap_err()
            .message
            .contains("raise MAX_DELETE"));
    }
}
