//! The pipeline for a scope of named paths (a watch batch): the same stages as a full pass,
//! for just the paths watch mode names.
//!
//! In: an [`Agent`] and a [`Targeted`] scope: the files present now, which of them are busy,
//! the paths whose rows are rename sources, and the vanished paths whose grace is over. Out: a
//! [`SyncReport`] over those paths, after the merge's `classify`, the file jobs, the record and
//! the delete executor ran, behind the same guard session as a full pass. [`inspect_paths`]
//! turns named paths into files and missing paths for the caller that builds the scope.

use std::collections::{HashMap, HashSet};

use crate::catalog::{FileRow, FileStatus};
use anyhow::Context;

use crate::agent::Agent;
use crate::fs::scan::{self, PathState};
use crate::model::report::SyncReport;
use crate::model::tree::LocalFile;
use crate::pass::delete;
use crate::pass::file::rename_sources;
use crate::pass::jobs::transfer_files_busy;
use crate::pass::merge::{self, Entry, Work};
use crate::pass::record::Recorder;
use crate::policy::delete_rules::DeleteContext;
use crate::policy::guard;

/// The paths one watch batch covers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Targeted {
    /// Files present now (a directory that appeared already walked).
    pub present: Vec<LocalFile>,
    /// Of those, the ones synced by MAX_SYNC_DELAY while still changing (read as busy).
    pub busy: HashSet<String>,
    /// Paths waiting out DELETE_GRACE: their rows are rename sources, so a move is a copy.
    pub rename_candidates: Vec<String>,
    /// Vanished paths whose grace is over: deleted if still absent.
    pub expired: Vec<String>,
}

/// Runs the pipeline over a targeted scope: present files first, then the deletes, then the
/// guards are settled. Called through [`crate::pass::run::sync`].
pub(crate) async fn sync_targeted(agent: &Agent, scope: Targeted) -> anyhow::Result<SyncReport> {
    let mut rec = Recorder::new(agent);
    if !scope.present.is_empty() {
        agent.guards.load_tripwire(guard::Tracked::LastPass).await?;
        let sources = agent
            .catalog
            .rows_by_paths(&scope.rename_candidates)
            .await
            .map(|gone| rename_sources(&gone))?;
        let work = work_for(agent, scope.present).await?;
        let work = futures::stream::iter(work);
        transfer_files_busy(agent, work, &sources, &scope.busy, &mut rec).await?;
        rec.flush().await?;
    }
    delete_expired(agent, scope.expired, &mut rec).await?;
    agent.guards.settle().await?;
    Ok(rec.into_report().await?)
}

/// The present files merged with their rows: what changed.
async fn work_for(agent: &Agent, files: Vec<LocalFile>) -> anyhow::Result<Vec<Work>> {
    let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let mut rows: HashMap<String, FileRow> = agent
        .catalog
        .rows_by_paths(&paths)
        .await?
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    Ok(files
        .into_iter()
        .filter_map(|f| {
            let previous = rows.remove(&f.path);
            match merge::classify(f, previous) {
                Entry::Work(w) => Some(w),
                _ => None,
            }
        })
        .collect())
}

/// What the named paths are now: files to sync (a new directory is walked, so files written
/// before its watch existed are found), and paths that are missing. Blocking work, on a
/// blocking thread.
pub async fn inspect_paths(
    agent: &Agent,
    rels: Vec<String>,
) -> anyhow::Result<(Vec<LocalFile>, Vec<String>)> {
    let (mut files, missing) = agent
        .on_tree(move |root, prefix, excludes| {
            let mut files = Vec::new();
            let mut missing = Vec::new();
            for rel in rels {
                match scan::inspect(root, &rel, prefix, excludes) {
                    PathState::File(f) => files.push(f),
                    PathState::Dir => {
                        scan::scan_subtree(root, &rel, prefix, excludes, |f| {
                            files.push(f);
                            true
                        });
                    }
                    PathState::Missing => missing.push(rel),
                    PathState::Skipped(s) => {
                        tracing::debug!(path = %s.path, reason = s.reason.label(), "skipped");
                        // A file replaced by a link or FIFO is gone as far as S3 goes.
                        missing.push(rel);
                    }
                    PathState::Failed(f) => {
                        tracing::warn!(path = %f.path, error = %f.error, "cannot inspect")
                    }
                }
            }
            (files, missing)
        })
        .await?;
    // A directory walk and the file's own event can name the same path: one work item each.
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok((files, missing))
}

/// Deletes the expired paths that are still absent, through the same guards as a full pass.
/// The guards see the tree as a pass would: the regular files a walk finds now, and the
/// entries it cannot read.
async fn delete_expired(
    agent: &Agent,
    expired: Vec<String>,
    rec: &mut Recorder<'_>,
) -> anyhow::Result<()> {
    let root = &agent.root;
    let due: Vec<String> = expired
        .into_iter()
        .filter(|p| !std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_file()))
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    if !root.is_dir() {
        anyhow::bail!(
            "SYNC_ROOT {} is missing (is the share mounted?); deletes held",
            root.display()
        );
    }
    let rows: Vec<FileRow> = agent
        .catalog
        .rows_by_paths(&due)
        .await?
        .into_iter()
        .filter(|r| r.status != FileStatus::Deleted)
        .collect();
    let totals = agent.catalog.totals().await.context("reading totals")?;
    let tree = agent.on_tree(scan::count).await?;
    let ctx = DeleteContext {
        tracked: totals.synced_files as u64,
        local_files: tree.files,
        scan_failures: tree.failures,
    };
    delete::delete_gone(agent, rows, &ctx, rec).await
}
