//! Stage 2, merge: the one comparison of the tree with the catalog, in lock-step.
//!
//! In: local files in bytewise path order (the walk's order) and a [`RowSource`] that pages
//! through catalog rows in the same order (`collate "C"`). Out: one [`Entry`] per path, in
//! path order: [`Entry::Unchanged`] (not read at all), [`Entry::Work`] (read it: new, changed,
//! or never verified) or [`Entry::Gone`] (a live row whose file is missing).
//!
//! Like rclone's `fs/march`, both sides are walked once, side by side, so neither is held in
//! memory. A pass runs [`Merge`] over the walk and [`CatalogRows`]; `verify` and the property
//! tests below run the very same code over vectors ([`merge_all`], [`VecRows`]). No decision
//! about what to do with a file's bytes is taken here: that needs its MD5 ([`crate::pass::file`]).

use std::collections::VecDeque;
use std::future::Future;

use crate::catalog::{Catalog, FileRow, FileStatus};
use futures::{Stream, StreamExt};

use crate::model::tree::LocalFile;

/// A file that must be read, with what the catalog knew about its path.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The file as scanned.
    pub local: LocalFile,
    /// Its catalog row, if the path was known.
    pub previous: Option<FileRow>,
}

/// What the merge says about one path.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A file whose size, times, inode and key match its `synced` row: not read.
    Unchanged(LocalFile),
    /// A file to read: new, changed, or whose row cannot vouch for it.
    Work(Work),
    /// A row (not yet `deleted`) whose file is no longer in the tree.
    Gone(FileRow),
}

/// Whether a synced row still describes the local file without reading it.
pub fn is_unchanged(local: &LocalFile, row: &FileRow) -> bool {
    crate::model::row::vouched_md5(row, &local.key).is_some()
        && row.size_bytes == local.meta.size as i64
        && row.mtime == local.meta.mtime
        && row.inode.is_none_or(|i| i == local.meta.inode)
        && row.ctime.is_none_or(|c| c == local.meta.ctime)
}

/// Compares one file with its catalog row (if any). Watch mode uses it for the paths that
/// events name; the merge uses it for every file of the walk.
pub fn classify(local: LocalFile, previous: Option<FileRow>) -> Entry {
    match previous {
        Some(row) if is_unchanged(&local, &row) => Entry::Unchanged(local),
        previous => Entry::Work(Work { local, previous }),
    }
}

/// Pages through one agent's catalog rows in bytewise path order.
pub trait RowSource: Send {
    /// Up to `limit` rows whose path sorts (bytewise) after `after`, in that order.
    fn page(
        &mut self,
        after: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<Vec<FileRow>>> + Send;
}

/// The rows of one agent in PostgreSQL.
impl RowSource for Catalog {
    async fn page(&mut self, after: Option<&str>, limit: i64) -> anyhow::Result<Vec<FileRow>> {
        Ok(self.files_page(after, limit).await?)
    }
}

/// Rows held in memory (for `verify` and tests), paged like the catalog pages them.
#[derive(Debug, Clone)]
pub struct VecRows(Vec<FileRow>);

impl VecRows {
    /// Rows in any order; they are sorted bytewise by path.
    pub fn new(mut rows: Vec<FileRow>) -> Self {
        rows.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        VecRows(rows)
    }
}

impl RowSource for VecRows {
    async fn page(&mut self, after: Option<&str>, limit: i64) -> anyhow::Result<Vec<FileRow>> {
        let start = match after {
            Some(a) => self
                .0
                .partition_point(|r| r.path.as_bytes() <= a.as_bytes()),
            None => 0,
        };
        let end = (start + limit.max(0) as usize).min(self.0.len());
        Ok(self.0[start..end].to_vec())
    }
}

/// Reads rows from a [`RowSource`] one page at a time.
///
/// A pass writes rows while the cursor is still reading. Those rows are always at or behind
/// the merge, and the next page is fetched only when the merge reaches the end of the current
/// one, so a fetch never returns them. The `floor` enforces the same independently of that
/// fetch timing: every pre-existing row up to the last merged path has been handed out
/// already, so a row at or below it can only be one this pass wrote, and treating it as gone
/// would delete a fresh upload.
#[derive(Debug)]
struct RowCursor<S> {
    source: S,
    page: VecDeque<FileRow>,
    page_size: i64,
    last: Option<String>,
    floor: Option<String>,
    done: bool,
}

impl<S: RowSource> RowCursor<S> {
    fn new(source: S, page_size: i64) -> Self {
        RowCursor {
            source,
            page: VecDeque::new(),
            page_size: page_size.max(1),
            last: None,
            floor: None,
            done: false,
        }
    }

    /// Records that every local path up to `path` has been merged.
    fn merged_up_to(&mut self, path: &str) {
        self.floor = Some(path.to_string());
    }

    async fn peek(&mut self) -> anyhow::Result<Option<&FileRow>> {
        loop {
            if let Some(floor) = &self.floor {
                while self
                    .page
                    .front()
                    .is_some_and(|r| r.path.as_bytes() <= floor.as_bytes())
                {
                    self.page.pop_front();
                }
            }
            if !self.page.is_empty() || self.done {
                return Ok(self.page.front());
            }
            let page = self
                .source
                .page(self.last.as_deref(), self.page_size)
                .await?;
            self.done = (page.len() as i64) < self.page_size;
            self.last = page.last().map(|r| r.path.clone()).or(self.last.take());
            self.page.extend(page);
        }
    }

    /// The next row if its path sorts before `path`.
    async fn next_before(&mut self, path: &str) -> anyhow::Result<Option<FileRow>> {
        let before = self
            .peek()
            .await?
            .is_some_and(|r| r.path.as_bytes() < path.as_bytes());
        Ok(if before { self.page.pop_front() } else { None })
    }

    /// The next row if its path is `path`.
    async fn next_equal(&mut self, path: &str) -> anyhow::Result<Option<FileRow>> {
        let equal = self.peek().await?.is_some_and(|r| r.path == path);
        Ok(if equal { self.page.pop_front() } else { None })
    }

    /// The next row, whatever its path.
    async fn next_any(&mut self) -> anyhow::Result<Option<FileRow>> {
        self.peek().await?;
        Ok(self.page.pop_front())
    }
}

/// The merge of a stream of local files with a source of rows, one [`Entry`] at a time.
#[derive(Debug)]
pub struct Merge<F, S> {
    files: F,
    rows: RowCursor<S>,
    /// The local file waiting while the rows before it come out as `Gone`.
    current: Option<LocalFile>,
}

impl<F, S> Merge<F, S>
where
    F: Stream<Item = LocalFile> + Unpin + Send,
    S: RowSource,
{
    /// Merges `files` (bytewise path order) with `rows`, read `page_size` rows at a time.
    pub fn new(files: F, rows: S, page_size: i64) -> Self {
        Merge {
            files,
            rows: RowCursor::new(rows, page_size),
            current: None,
        }
    }

    /// The next entry in path order; `None` once both sides are exhausted.
    pub async fn next(&mut self) -> anyhow::Result<Option<Entry>> {
        loop {
            if self.current.is_none() {
                self.current = self.files.next().await;
            }
            let Some(file) = self.current.take() else {
                // The walk is over: every row still left has no file.
                match self.rows.next_any().await? {
                    Some(row) if row.status != FileStatus::Deleted => {
                        return Ok(Some(Entry::Gone(row)))
                    }
                    Some(_) => continue,
                    None => return Ok(None),
                }
            };
            // Rows before this path have no local file.
            if let Some(row) = self.rows.next_before(&file.path).await? {
                self.current = Some(file);
                if row.status != FileStatus::Deleted {
                    return Ok(Some(Entry::Gone(row)));
                }
                continue;
            }
            let previous = self.rows.next_equal(&file.path).await?;
            self.rows.merged_up_to(&file.path);
            return Ok(Some(classify(file, previous)));
        }
    }
}

/// The whole merge over in-memory inputs, in any order (they are sorted first).
pub async fn merge_all(
    mut local: Vec<LocalFile>,
    rows: Vec<FileRow>,
    page_size: i64,
) -> anyhow::Result<Vec<Entry>> {
    local.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut merge = Merge::new(futures::stream::iter(local), VecRows::new(rows), page_size);
    let mut out = Vec::new();
    while let Some(entry) = merge.next().await? {
        out.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::tree::FileMeta;
    use chrono::{DateTime, Utc};
    use std::collections::{HashMap, HashSet};

    pub const MD5_A: &str = "0cc175b9c0f1b6a831c399e269772661";

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    pub fn local(path: &str, size: u64, mtime: i64) -> LocalFile {
        LocalFile {
            path: path.into(),
            key: format!("p/{path}"),
            meta: FileMeta {
                size,
                mtime: t(mtime),
                inode: 7,
                ctime: t(mtime),
                mode: 0o100644,
                uid: 1000,
                gid: 1000,
            },
        }
    }

    pub fn row(
        path: &str,
        size: i64,
        mtime: i64,
        status: FileStatus,
        md5: Option<&str>,
    ) -> FileRow {
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
            encryption: None,
            ctime: Some(t(mtime)),
            content_since: None,
            storage_class: None,
        }
    }

    pub fn synced(path: &str, size: i64, mtime: i64, md5: &str) -> FileRow {
        row(path, size, mtime, FileStatus::Synced, Some(md5))
    }

    /// The merge's answer, split by kind: (work, unchanged paths, gone rows).
    struct Split {
        work: Vec<Work>,
        unchanged: Vec<String>,
        gone: Vec<FileRow>,
    }

    fn merged(local: Vec<LocalFile>, rows: Vec<FileRow>, page: i64) -> Split {
        let entries = futures::executor::block_on(merge_all(local, rows, page)).unwrap();
        let mut s = Split {
            work: vec![],
            unchanged: vec![],
            gone: vec![],
        };
        for e in entries {
            match e {
                Entry::Work(w) => s.work.push(w),
                Entry::Unchanged(f) => s.unchanged.push(f.path),
                Entry::Gone(r) => s.gone.push(r),
            }
        }
        s
    }

    fn plan(local: Vec<LocalFile>, rows: Vec<FileRow>) -> Split {
        merged(local, rows, 5000)
    }

    #[test]
    fn new_file_is_work_without_previous() {
        let p = plan(vec![local("a", 1, 10)], vec![]);
        assert_eq!(p.work.len(), 1);
        assert_eq!(p.work[0].previous, None);
        assert_eq!((p.unchanged.len(), p.gone.len()), (0, 0));
    }

    #[test]
    fn unchanged_synced_file_is_not_read() {
        let p = plan(vec![local("a", 1, 10)], vec![synced("a", 1, 10, MD5_A)]);
        assert_eq!((p.work.len(), p.unchanged.len(), p.gone.len()), (0, 1, 0));
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
        assert_eq!(plan(vec![local("a", 1, 10)], vec![r]).unchanged.len(), 1);
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
        assert_eq!(p.unchanged.len(), 2);
        let work: Vec<&str> = p.work.iter().map(|w| w.local.path.as_str()).collect();
        assert_eq!(work, vec!["b"]);
        let gone: Vec<&str> = p.gone.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(gone, vec!["q"]);
    }

    #[test]
    fn rows_written_behind_the_merge_are_never_handed_out() {
        futures::executor::block_on(async {
            let source = VecRows::new(vec![synced("a", 1, 1, MD5_A), synced("z", 1, 1, MD5_A)]);
            let mut cursor = RowCursor::new(source, 1);
            assert_eq!(cursor.next_equal("a").await.unwrap().unwrap().path, "a");
            cursor.merged_up_to("c");
            // The pass uploads "b" (merged already) and writes its row before the next page.
            cursor.source = VecRows::new(vec![
                synced("a", 1, 1, MD5_A),
                synced("b", 1, 1, MD5_A),
                synced("z", 1, 1, MD5_A),
            ]);
            let next = cursor.next_any().await.unwrap().unwrap();
            assert_eq!(next.path, "z", "a row at or below the floor was handed out");
            assert!(cursor.next_any().await.unwrap().is_none());
        });
    }

    #[test]
    fn the_cursor_pages_through_every_row_once() {
        futures::executor::block_on(async {
            let rows: Vec<FileRow> = ["a", "b", "c", "d", "e"]
                .iter()
                .map(|p| synced(p, 1, 1, MD5_A))
                .collect();
            for page in 1..=6 {
                let mut cursor = RowCursor::new(VecRows::new(rows.clone()), page);
                let mut seen = vec![];
                while let Some(r) = cursor.next_any().await.unwrap() {
                    seen.push(r.path);
                }
                assert_eq!(seen, ["a", "b", "c", "d", "e"], "page {page}");
            }
        });
    }

    #[test]
    fn pages_of_every_size_give_the_same_answer() {
        let locals: Vec<LocalFile> = ["a", "b/c", "b/d", "e"]
            .iter()
            .map(|p| local(p, 1, 1))
            .collect();
        let rows = vec![
            synced("0", 1, 1, MD5_A),
            synced("b/c", 1, 1, MD5_A),
            row("b/x", 1, 1, FileStatus::Deleted, None),
            synced("e", 2, 1, MD5_A),
            synced("f", 1, 1, MD5_A),
        ];
        let reference = futures::executor::block_on(merge_all(locals.clone(), rows.clone(), 5000));
        for page in 1..=6 {
            let got = futures::executor::block_on(merge_all(locals.clone(), rows.clone(), page));
            assert_eq!(got.unwrap(), *reference.as_ref().unwrap(), "page {page}");
        }
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
        /// The invariants of the merge every pass runs, over pages of any size.
        #[test]
        fn merge_never_deletes_local_files_never_redoes_unchanged_ones_and_acts_once_per_path(
            local_files in arb_local(),
            rows in arb_catalog(),
            page in 1i64..6,
        ) {
            let local_files = dedup_local(local_files);
            let rows = dedup_rows(rows);
            let p = merged(local_files.clone(), rows.clone(), page);
            let local_paths: HashSet<&str> = local_files.iter().map(|f| f.path.as_str()).collect();
            // Never deletes what exists locally, and only rows that are not already deleted.
            for g in &p.gone {
                proptest::prop_assert!(!local_paths.contains(g.path.as_str()), "deletes {}", g.path);
                proptest::prop_assert!(g.status != FileStatus::Deleted);
            }
            // Never reads again what is unchanged: every file its row vouches for is Unchanged.
            let by_path: HashMap<&str, &FileRow> = rows.iter().map(|r| (r.path.as_str(), r)).collect();
            for f in &local_files {
                let vouched = by_path.get(f.path.as_str()).is_some_and(|r| is_unchanged(f, r));
                proptest::prop_assert_eq!(vouched, p.unchanged.contains(&f.path), "{}", f.path);
            }
            for w in &p.work {
                if let Some(prev) = &w.previous {
                    proptest::prop_assert_eq!(&prev.path, &w.local.path);
                }
            }
            // Every local file is accounted for exactly once.
            proptest::prop_assert_eq!(p.work.len() + p.unchanged.len(), local_files.len());
            // Never two actions for one path.
            let mut seen = HashSet::new();
            let paths = p.work.iter().map(|w| &w.local.path).chain(p.gone.iter().map(|g| &g.path)).chain(p.unchanged.iter());
            for path in paths {
                proptest::prop_assert!(seen.insert(path.clone()), "two actions for {}", path);
            }
            // Every live row without a local file is gone.
            let live_missing = rows
                .iter()
                .filter(|r| r.status != FileStatus::Deleted && !local_paths.contains(r.path.as_str()))
                .count();
            proptest::prop_assert_eq!(p.gone.len(), live_missing);
        }
    }
}
