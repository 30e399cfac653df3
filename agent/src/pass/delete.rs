//! Stage 6, delete: after every upload and copy of the pass, the rows whose file is gone are
//! deleted from S3 (or, with DELETE_MODE=keep, only marked), and only if no guard objects.
//!
//! In: the gone rows, the renames the pass did (their sources live on under a new key) and a
//! [`DeleteContext`] (what the pass, or watch mode, knows about the tree). Out: objects deleted
//! in batches of 1000, rows marked `deleted` through the [`Recorder`], or a [`Blocked`](crate::model::guard::Blocked) refusal
//! with the message that tells the operator how to proceed.
//!
//! The guards, most alarming first: the scan hit unreadable entries; the root is empty but files
//! are tracked (an unmounted share); more than MAX_DELETE; more than MAX_DELETE_PERCENT of the
//! tracked files. rclone's rules, plus the empty-root check the peers' trackers ask for.

use std::collections::HashMap;

use portail_core::catalog::{DeletedFile, FileRow};
use serde_json::json;

use crate::agent::Agent;
use crate::pass::record::Recorder;
use crate::policy::delete_rules::{DeleteContext, DeleteMode};
use crate::policy::history;

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
    let pass = match agent.guards.check_deletes(ctx, plain.len() as u64).await? {
        Ok(pass) => pass,
        Err(blocked) => {
            agent.guards.hold_deletes(blocked.guard, plain.into_iter());
            rec.deletes_blocked(blocked);
            return Ok(());
        }
    };
    let keep = agent.options.delete_mode == DeleteMode::Keep;
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
    agent.guards.deletes_done(pass, &deleted).await
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
        .map(|r| async move {
            (
                r.s3_key.clone(),
                agent
                    .history
                    .keep(&agent.transfer, &agent.metrics.history, r)
                    .await,
            )
        });
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
