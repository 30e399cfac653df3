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

use crate::catalog::{DeletedFile, FileRow};
use serde_json::json;

use crate::agent::Agent;
use crate::metrics::HistoryMetrics;
use crate::pass::record::Recorder;
use crate::policy::delete_rules::{DeleteContext, DeleteMode};
use crate::policy::history::History;
use crate::store::Transfer;

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
    let objects = Objects {
        store: &agent.transfer,
        history: &agent.history,
        metrics: &agent.metrics.history,
    };
    let mut deleted = Vec::with_capacity(gone.len());
    for chunk in gone.chunks(1000) {
        let (kept, failed) = match keep {
            true => (HashMap::new(), HashMap::new()),
            false => objects.remove(chunk).await,
        };
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

/// What removing objects needs: the store, and history's keeper with its metrics.
struct Objects<'a> {
    store: &'a Transfer,
    history: &'a History,
    metrics: &'a HistoryMetrics,
}

/// History copies and deletes, by object key.
type ByKey = HashMap<String, String>;

impl Objects<'_> {
    /// Removes the objects of up to 1000 rows: history copies first, then one DeleteObjects
    /// of those whose copy went. Returns the history keys, and the failures (an object whose
    /// copy failed is kept), both by object key.
    async fn remove(&self, rows: &[FileRow]) -> (ByKey, ByKey) {
        let (kept, mut failed) = self.keep_history(rows).await;
        let doomed: Vec<&FileRow> = rows
            .iter()
            .filter(|r| !failed.contains_key(&r.s3_key))
            .collect();
        failed.extend(self.delete_objects(&doomed).await);
        (kept, failed)
    }

    /// With HISTORY=prefix, copies each object that holds a version (renamed ones too: the
    /// old path keeps its history) to its history key.
    async fn keep_history(&self, rows: &[FileRow]) -> (ByKey, ByKey) {
        let copies = rows
            .iter()
            .filter(|r| crate::model::row::holds_version(r, &r.s3_key))
            .map(|r| async move {
                let kept = self.history.keep(self.store, self.metrics, r).await;
                (r.s3_key.clone(), kept)
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
    async fn delete_objects(&self, rows: &[&FileRow]) -> Vec<(String, String)> {
        let keys: Vec<String> = rows.iter().map(|r| r.s3_key.clone()).collect();
        match self.store.delete_batch(&keys).await {
            Ok(errors) => errors,
            Err(e) => {
                let msg = e.to_string();
                keys.into_iter().map(|k| (k, msg.clone())).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::catalog::FileStatus;
    use chrono::Utc;

    use super::*;
    use crate::store::{FaultyClient, MemoryClient, ObjectClient, TransferConfig};

    fn row(path: &str) -> FileRow {
        let now = Utc::now();
        FileRow {
            id: 1,
            agent_id: 1,
            path: path.into(),
            s3_key: format!("p/{path}"),
            size_bytes: 1,
            mtime: now,
            md5: Some("0".repeat(32)),
            etag: None,
            content_type: None,
            status: FileStatus::Synced,
            last_error: None,
            synced_at: Some(now),
            deleted_at: None,
            created_at: now,
            updated_at: now,
            inode: None,
            ctime: None,
            encryption: None,
            storage_class: None,
            content_since: Some(now),
        }
    }

    /// A bucket holding `p/a.txt` and `p/b.txt`, and the rows of both.
    fn bucket() -> (Arc<MemoryClient>, Vec<FileRow>) {
        let mem = Arc::new(MemoryClient::new());
        mem.insert("p/a.txt", b"a", Default::default());
        mem.insert("p/b.txt", b"b", Default::default());
        (mem, vec![row("a.txt"), row("b.txt")])
    }

    async fn remove(
        client: Arc<dyn ObjectClient>,
        history: History,
        rows: &[FileRow],
    ) -> (ByKey, ByKey) {
        let config = TransferConfig {
            multipart_threshold: 1 << 20,
            part_size: 5 << 20,
            requests_in_flight: 4,
            parts_per_file: 2,
        };
        let store = Transfer::on(client, "b".into(), config);
        let metrics = crate::metrics::AgentMetrics::register(&prometheus::Registry::new()).unwrap();
        let objects = Objects {
            store: &store,
            history: &history,
            metrics: &metrics.history,
        };
        objects.remove(rows).await
    }

    #[tokio::test]
    async fn an_object_whose_history_copy_failed_is_kept_and_the_others_go() {
        let (mem, rows) = bucket();
        let faulty = Arc::new(FaultyClient::new(mem.clone()));
        faulty.fail("CopyObject", ".h/a.txt/", "AccessDenied", 1);
        let (kept, failed) = remove(faulty, History::Prefix("p/.h/".into()), &rows).await;
        assert_eq!(failed.keys().collect::<Vec<_>>(), ["p/a.txt"]);
        assert!(failed["p/a.txt"].contains("history copy failed, object kept"));
        let history_key = &kept["p/b.txt"];
        assert!(history_key.starts_with("p/.h/b.txt/"), "{history_key}");
        assert_eq!(
            mem.keys(),
            [history_key.as_str(), "p/a.txt"],
            "b's copy kept, b deleted, a untouched"
        );
    }

    #[tokio::test]
    async fn a_refused_delete_batch_fails_every_row_of_it_and_deletes_nothing() {
        let (mem, rows) = bucket();
        let faulty = Arc::new(FaultyClient::new(mem.clone()));
        faulty.fail("DeleteObjects", "", "AccessDenied", 1);
        let (_, failed) = remove(faulty, History::Off, &rows).await;
        assert_eq!(failed.len(), 2);
        assert!(failed["p/b.txt"].contains("AccessDenied"), "{failed:?}");
        assert_eq!(mem.keys(), ["p/a.txt", "p/b.txt"]);
    }

    #[tokio::test]
    async fn on_a_versioned_bucket_nothing_is_copied_and_the_old_bytes_stay_a_version() {
        let mem = Arc::new(MemoryClient::versioned());
        mem.insert("p/a.txt", b"a", Default::default());
        let (kept, failed) = remove(mem.clone(), History::Versioning, &[row("a.txt")]).await;
        assert!(kept.is_empty() && failed.is_empty());
        assert_eq!(mem.count("CopyObject"), 0);
        assert!(mem.object("p/a.txt").is_none());
        let versions = mem.versions_of("p/a.txt");
        assert_eq!(versions.len(), 2, "the content and a delete marker");
        assert_eq!(versions[0].bytes, &b"a"[..]);
    }
}
