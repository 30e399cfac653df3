//! `portail-agent verify`: does S3 hold what the catalog says, and does the catalog describe
//! the tree?
//!
//! In: an [`Agent`]. Out: a [`VerifyReport`] listing every [`Drift`]: local files the catalog
//! does not describe, synced rows whose file is gone, objects that are missing or whose size or
//! MD5 (`md5chksum`, or a single-part ETag) differs, and objects under the prefix that no
//! catalog row claims. Read-only: it changes nothing.

use std::collections::HashMap;

use crate::catalog::{FileRow, FileStatus};
use anyhow::Context;
use futures::stream::{self, StreamExt};

use crate::agent::Agent;
use crate::fs::scan;
use crate::model::row::is_tracked;
use crate::model::tree::LocalFile;
use crate::pass::merge::{self, Entry};
use crate::policy::delete_rules::DeleteMode;
use crate::store::ListedObject;

/// One disagreement between the tree, the catalog and S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A local file with no row, or whose row is not synced yet.
    NotSynced(String),
    /// A local file whose metadata differs from its synced row.
    ChangedLocally(String),
    /// A row claims a file that is no longer in the tree.
    MissingLocally(String),
    /// The scan could not read an entry.
    Unreadable(String),
    /// A synced row's object is not in S3.
    MissingInS3 { path: String, key: String },
    /// A synced row's object has other content.
    ContentDiffers {
        path: String,
        key: String,
        why: String,
    },
    /// An object under the prefix that no catalog row claims.
    Orphan(String),
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::NotSynced(p) => write!(f, "not synced: {p}"),
            Drift::ChangedLocally(p) => write!(f, "changed locally: {p}"),
            Drift::MissingLocally(p) => write!(f, "missing locally: {p}"),
            Drift::Unreadable(p) => write!(f, "unreadable: {p}"),
            Drift::MissingInS3 { path, key } => write!(f, "missing in S3: {path} (key {key})"),
            Drift::ContentDiffers { path, key, why } => {
                write!(f, "S3 content differs: {path} (key {key}): {why}")
            }
            Drift::Orphan(k) => write!(f, "orphan object: {k}"),
        }
    }
}

/// The result of a verification.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Synced rows whose objects were checked.
    pub checked: u64,
    /// Everything that disagrees, in a stable order.
    pub drift: Vec<Drift>,
    /// Files that only grew since their last sync (their first bytes are still what S3 holds):
    /// a busy file between two syncs, not drift.
    pub changed_since: Vec<String>,
    /// Files whose object sits in an archive class (S3_STORAGE_CLASS=GLACIER, DEEP_ARCHIVE, or
    /// a lifecycle rule): intact, but a RestoreObject must come before any read. Not drift.
    pub archived: Vec<String>,
}

/// Compares the tree, the catalog and S3.
pub async fn verify(agent: &Agent) -> anyhow::Result<VerifyReport> {
    let rows = agent
        .catalog
        .all_files()
        .await
        .context("reading the catalog")?;
    let (drift, changed_since) = tree_drift(agent, rows.clone()).await?;
    let mut report = VerifyReport {
        checked: 0,
        drift,
        changed_since,
        archived: Vec::new(),
    };
    let objects = agent
        .transfer
        .list_objects(&agent.prefix)
        .await
        .context("listing the bucket")?;
    let synced: Vec<&FileRow> = rows.iter().filter(|r| is_tracked(r)).collect();
    report.checked = synced.len() as u64;
    report.archived = synced
        .iter()
        .filter(|r| objects.get(&r.s3_key).is_some_and(|o| o.archived()))
        .map(|r| r.path.clone())
        .collect();
    report.archived.sort();
    let checks = stream::iter(
        synced
            .iter()
            .map(|r| check_object(agent, r, objects.get(&r.s3_key))),
    )
    .buffer_unordered(agent.transfer.config().requests_in_flight)
    .filter_map(|d| async move { d })
    .collect::<Vec<_>>()
    .await;
    report.drift.extend(checks);
    report.drift.extend(orphans(agent, &rows, &objects).await?);
    report.drift.sort_by_key(|d| d.to_string());
    Ok(report)
}

/// The tree against the catalog: the same merge a pass runs, read-only. Returns the drift and
/// the files that only grew since their last sync.
async fn tree_drift(
    agent: &Agent,
    rows: Vec<FileRow>,
) -> anyhow::Result<(Vec<Drift>, Vec<String>)> {
    let scanned = agent.on_tree(scan::scan).await??;
    let mut drift: Vec<Drift> = scanned
        .failures
        .iter()
        .map(|f| Drift::Unreadable(f.path.clone()))
        .collect();
    let mut grown = Vec::new();
    for entry in merge::merge_all(scanned.files, rows, PAGE).await? {
        drift.push(match entry {
            Entry::Unchanged(_) => continue,
            Entry::Work(w) => match w.previous.filter(is_tracked) {
                Some(row) if only_grew(agent, &w.local, &row).await => {
                    grown.push(w.local.path);
                    continue;
                }
                Some(_) => Drift::ChangedLocally(w.local.path),
                None => Drift::NotSynced(w.local.path),
            },
            Entry::Gone(r) => Drift::MissingLocally(r.path),
        });
    }
    Ok((drift, grown))
}

/// Whether a file is longer than its synced row and starts with exactly the bytes S3 holds
/// (their MD5 is the row's): it only grew since, like a busy log between two syncs.
async fn only_grew(agent: &Agent, local: &LocalFile, row: &FileRow) -> bool {
    let Some(want) = row.md5.clone() else {
        return false;
    };
    if local.meta.size <= row.size_bytes.max(0) as u64 {
        return false;
    }
    let (abs, len) = (agent.root.join(&local.path), row.size_bytes as u64);
    tokio::task::spawn_blocking(move || crate::fs::hash::prefix_md5(&abs, len))
        .await
        .is_ok_and(|md5| md5.is_ok_and(|m| hex::encode(m) == want))
}

/// Rows per page of the in-memory merge.
const PAGE: i64 = 5000;

/// Objects under the prefix that no row claims (a deleted row claims nothing unless
/// DELETE_MODE=keep left its object on purpose).
async fn orphans(
    agent: &Agent,
    rows: &[FileRow],
    objects: &HashMap<String, ListedObject>,
) -> anyhow::Result<Vec<Drift>> {
    let keep = agent.options.delete_mode == DeleteMode::Keep;
    let mine: HashMap<&str, &FileRow> = rows.iter().map(|r| (r.s3_key.as_str(), r)).collect();
    // History copies are the history's, not orphans (the catalog's versions track them).
    let history = &agent.history_prefix;
    let unclaimed: Vec<String> = objects
        .keys()
        .filter(|k| !k.starts_with(history.as_str()))
        .filter(|k| match mine.get(k.as_str()) {
            Some(r) => r.status == FileStatus::Deleted && !keep,
            None => true,
        })
        .cloned()
        .collect();
    // Another agent's row may claim an object in a shared bucket or prefix.
    let claimed = agent.catalog.claimed_keys(&unclaimed).await?;
    Ok(unclaimed
        .into_iter()
        .filter(|k| !claimed.contains(k))
        .map(Drift::Orphan)
        .collect())
}

/// One synced row against its object: present, same size, same MD5 (a single-part ETag is
/// the MD5; otherwise the object's `md5chksum`, read with a HEAD).
async fn check_object(
    agent: &Agent,
    row: &FileRow,
    listed: Option<&ListedObject>,
) -> Option<Drift> {
    let (path, key) = (row.path.clone(), row.s3_key.clone());
    let differs = |why: String| {
        Some(Drift::ContentDiffers {
            path: path.clone(),
            key: key.clone(),
            why,
        })
    };
    let Some(listed) = listed else {
        return Some(Drift::MissingInS3 { path, key });
    };
    if listed.size != row.size_bytes {
        return differs(format!(
            "size {}, catalog says {}",
            listed.size, row.size_bytes
        ));
    }
    let want = row.md5.clone().unwrap_or_default();
    // A single-part ETag is usually the MD5. Under SSE-KMS or SSE-C it is not, and only
    // `md5chksum` can tell: so a mismatch is confirmed with a HEAD before it is called drift.
    if listed.etag_md5() == Some(want.as_str()) {
        return None;
    }
    let actual = match agent.transfer.head_md5(&key).await {
        Ok(Some(md5)) => md5,
        Ok(None) => return differs("no md5chksum metadata".into()),
        Err(e) => return differs(format!("HEAD failed: {e}")),
    };
    (actual != want)
        .then(|| format!("MD5 {actual}, catalog says {want}"))
        .and_then(differs)
}
