//! `portail-agent verify`: does S3 hold what the catalog says, and does the catalog describe
//! the tree?
//!
//! In: an [`Agent`]. Out: a [`VerifyReport`] listing every [`Drift`]: local files the catalog
//! does not describe, synced rows whose file is gone, objects that are missing or whose size or
//! MD5 (`md5chksum`, or a single-part ETag) differs, and objects under the prefix that no
//! catalog row claims. Read-only: it changes nothing.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_s3::error::DisplayErrorContext;
use base64::Engine;
use futures::stream::{self, StreamExt};
use portail_core::catalog::{self, FileRow, FileStatus};

use crate::config::DeleteMode;
use crate::{plan, scan, Agent};

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
}

/// Compares the tree, the catalog and S3.
pub async fn verify(agent: &Agent) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let (root, prefix, excludes) = (
        agent.settings.sync_root.clone(),
        agent.prefix.clone(),
        agent.excludes.clone(),
    );
    let scanned =
        tokio::task::spawn_blocking(move || scan::scan(&root, &prefix, &excludes)).await??;
    report.drift.extend(
        scanned
            .failures
            .iter()
            .map(|f| Drift::Unreadable(f.path.clone())),
    );
    let rows = catalog::files_of_agent(&agent.pool, agent.id)
        .await
        .context("reading the catalog")?;
    let planned = plan::plan(scanned.files, rows.clone());
    for w in &planned.work {
        report.drift.push(match &w.previous {
            Some(r) if r.status == FileStatus::Synced => {
                Drift::ChangedLocally(w.local.path.clone())
            }
            _ => Drift::NotSynced(w.local.path.clone()),
        });
    }
    report.drift.extend(
        planned
            .gone
            .iter()
            .map(|r| Drift::MissingLocally(r.path.clone())),
    );

    // What S3 holds under the prefix: key -> (size, etag).
    let client = agent.transfer.client();
    let mut objects: HashMap<String, (i64, String)> = HashMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(agent.transfer.bucket())
        .prefix(&agent.prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| anyhow::anyhow!("listing the bucket: {}", DisplayErrorContext(&e)))?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                objects.insert(
                    k.to_string(),
                    (
                        o.size().unwrap_or(-1),
                        o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
                    ),
                );
            }
        }
    }

    let synced: Vec<&FileRow> = rows
        .iter()
        .filter(|r| r.status == FileStatus::Synced)
        .collect();
    report.checked = synced.len() as u64;
    let checks = stream::iter(
        synced
            .iter()
            .map(|r| check_object(agent, r, objects.get(&r.s3_key))),
    )
    .buffer_unordered(agent.settings.upload_concurrency)
    .filter_map(|d| async move { d })
    .collect::<Vec<_>>()
    .await;
    report.drift.extend(checks);

    let keep = agent.settings.delete_mode == DeleteMode::Keep;
    let mine: HashMap<&str, &FileRow> = rows.iter().map(|r| (r.s3_key.as_str(), r)).collect();
    let unclaimed: Vec<String> = objects
        .keys()
        .filter(|k| match mine.get(k.as_str()) {
            Some(r) => r.status == FileStatus::Deleted && !keep,
            None => true,
        })
        .cloned()
        .collect();
    // Another agent's row may claim an object in a shared bucket or prefix.
    let claimed = catalog::claimed_keys(&agent.pool, &unclaimed).await?;
    report.drift.extend(
        unclaimed
            .into_iter()
            .filter(|k| !claimed.contains(k))
            .map(Drift::Orphan),
    );
    report.drift.sort_by_key(|d| d.to_string());
    Ok(report)
}

async fn check_object(
    agent: &Agent,
    row: &FileRow,
    listed: Option<&(i64, String)>,
) -> Option<Drift> {
    let (path, key) = (row.path.clone(), row.s3_key.clone());
    let Some((size, etag)) = listed else {
        return Some(Drift::MissingInS3 { path, key });
    };
    let want = row.md5.clone().unwrap_or_default();
    if *size != row.size_bytes {
        return Some(Drift::ContentDiffers {
            path,
            key,
            why: format!("size {size}, catalog says {}", row.size_bytes),
        });
    }
    // A single-part ETag is the MD5; a multipart one is not, so ask for md5chksum.
    let actual = if etag.len() == 32 && !etag.contains('-') {
        etag.clone()
    } else {
        let head = agent
            .transfer
            .client()
            .head_object()
            .bucket(agent.transfer.bucket())
            .key(&key)
            .send()
            .await;
        match head {
            Ok(h) => match h.metadata().and_then(|m| m.get("md5chksum")) {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map(hex::encode)
                    .unwrap_or_default(),
                None => {
                    return Some(Drift::ContentDiffers {
                        path,
                        key,
                        why: "no md5chksum metadata".into(),
                    })
                }
            },
            Err(e) => {
                return Some(Drift::ContentDiffers {
                    path,
                    key,
                    why: format!("HEAD failed: {}", DisplayErrorContext(&e)),
                })
            }
        }
    };
    (actual != want).then(|| Drift::ContentDiffers {
        path,
        key,
        why: format!("MD5 {actual}, catalog says {want}"),
    })
}
