//! History: the content an overwrite or a delete replaces stays restorable for
//! HISTORY_RETENTION.
//!
//! In: HISTORY, the bucket's versioning state, a row about to be replaced. Out: the mode the
//! agent runs with ([`History`]); for HISTORY=prefix, a server-side copy of the replaced object
//! at its history key, which the catalog records on the version that ends; and the purge of
//! history older than the retention.
//!
//! A history key is `S3_PREFIX + HISTORY_PREFIX + path + "/" + valid_from`, the time the
//! content became current (`20261124T101500.123456Z`), so a listing of the bucket alone tells
//! every path's past contents apart (`restore --from-bucket`). With HISTORY=versioning the
//! bucket keeps the old bytes itself and the catalog records each upload's VersionId.

use chrono::{DateTime, Utc};
use std::sync::Arc;

use crate::catalog::{Catalog, FileRow, VersionRow};

use portail_core::config::ConfigError;
use serde::Deserialize;

use crate::metrics::HistoryMetrics;
use crate::store::{Transfer, TransferError};

/// HISTORY: how replaced content is kept (see [`History`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistorySetting {
    /// `versioning` if the bucket has it Enabled, else `prefix`.
    Auto,
    /// The bucket's own versions; refused at start unless versioning is Enabled.
    Versioning,
    /// Server-side copies under HISTORY_PREFIX.
    Prefix,
    /// No history: an overwrite or a delete loses the old content.
    Off,
}

/// How replaced content is kept, as resolved when the agent starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// The bucket keeps every version.
    Versioning,
    /// Copies under this key prefix (S3_PREFIX + HISTORY_PREFIX).
    Prefix(String),
    /// Nothing is kept.
    Off,
}

/// The `valid_from` stamp in a history key.
const STAMP: &str = "%Y%m%dT%H%M%S%.6fZ";

impl History {
    /// Resolves HISTORY against the bucket. HISTORY=versioning on a bucket without versioning
    /// Enabled is refused, naming the variable; `auto` falls back to `prefix` when the store
    /// does not say (s3s-fs has no versioning call).
    pub async fn resolve(
        setting: HistorySetting,
        transfer: &Transfer,
        dir: String,
    ) -> anyhow::Result<History> {
        let enabled = match setting {
            HistorySetting::Off => return Ok(History::Off),
            HistorySetting::Prefix => return Ok(History::Prefix(dir)),
            HistorySetting::Auto | HistorySetting::Versioning => {
                transfer.versioning_enabled().await
            }
        };
        let refuse = |reason: String| ConfigError::Invalid {
            var: "HISTORY".into(),
            reason,
        };
        match (setting, enabled) {
            (_, Ok(true)) => Ok(History::Versioning),
            (HistorySetting::Versioning, Ok(false)) => Err(refuse(format!(
                "is versioning, but bucket {} does not have versioning Enabled (enable it, or set HISTORY=prefix)",
                transfer.bucket()
            ))
            .into()),
            (HistorySetting::Versioning, Err(e)) => Err(refuse(format!(
                "is versioning, but the bucket's versioning state cannot be read: {e}"
            ))
            .into()),
            (_, Ok(false)) => Ok(History::Prefix(dir)),
            (_, Err(e)) => {
                tracing::info!(error = %e, "bucket versioning unknown; HISTORY=auto uses prefix");
                Ok(History::Prefix(dir))
            }
        }
    }

    /// The value for logs and `/readyz`.
    pub fn label(&self) -> &'static str {
        match self {
            History::Versioning => "versioning",
            History::Prefix(_) => "prefix",
            History::Off => "off",
        }
    }

    /// The history key of a path's content that became current at `since`.
    pub fn key(dir: &str, path: &str, since: DateTime<Utc>) -> String {
        format!("{dir}{path}/{}", since.format(STAMP))
    }

    /// Splits a history key (below `dir`) into its path and `valid_from`.
    pub fn parse_key(dir: &str, key: &str) -> Option<(String, DateTime<Utc>)> {
        let rest = key.strip_prefix(dir)?;
        let (path, stamp) = rest.rsplit_once('/')?;
        let t = chrono::NaiveDateTime::parse_from_str(stamp, STAMP).ok()?;
        (!path.is_empty()).then(|| (path.to_string(), t.and_utc()))
    }
}

impl History {
    /// With HISTORY=prefix, copies the object of `row` to its history key before it is
    /// overwritten or deleted, and returns that key. `None` in the other modes.
    pub async fn keep(
        &self,
        store: &Transfer,
        metrics: &HistoryMetrics,
        row: &FileRow,
    ) -> Result<Option<String>, TransferError> {
        let History::Prefix(dir) = self else {
            return Ok(None);
        };
        let since = row
            .content_since
            .or(row.synced_at)
            .unwrap_or(row.updated_at);
        let key = History::key(dir, &row.path, since);
        store.copy(&row.s3_key, &key, None).await?;
        metrics.copies.inc();
        Ok(Some(key))
    }
}

/// What the purge of expired history works with: one agent's rows, its store, and
/// HISTORY_RETENTION.
#[derive(Debug, Clone)]
pub struct Purger {
    /// The catalog of the agent whose history is purged.
    pub catalog: Arc<Catalog>,
    /// The S3 side, which deletes the kept bytes.
    pub store: Transfer,
    /// HISTORY_RETENTION: history that ended longer ago goes.
    pub retention: std::time::Duration,
    /// Counts what was purged.
    pub metrics: HistoryMetrics,
}

/// How often watch mode purges expired history.
pub const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Purges expired history every [`PURGE_EVERY`] while watch mode runs, the first time at
/// start. A failed purge is logged and tried again at the next tick.
pub fn spawn_purge(purger: Purger) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PURGE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match purger.purge().await {
                Ok(p) if p.versions > 0 => {
                    tracing::info!(
                        versions = p.versions,
                        objects = p.objects,
                        failed = p.failed,
                        "history purged"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "history purge failed"),
            }
        }
    })
}

/// One line per version for `history PATH`: since, until, size, MD5, how it began and ended,
/// and where its bytes are.
pub fn describe(versions: &[VersionRow]) -> Vec<String> {
    versions
        .iter()
        .map(|v| {
            let until = v.valid_to.map_or("now".to_string(), |t| t.to_rfc3339());
            let ended = v.ended_by.as_deref().unwrap_or("current");
            let kept = match (&v.history_key, &v.version_id, v.valid_to) {
                (_, _, None) => "restorable".to_string(),
                (Some(h), _, _) => format!("kept at {h}"),
                (None, Some(id), _) => format!("kept as version {id}"),
                (None, None, _) => "not kept".to_string(),
            };
            format!(
                "{}  until {until}  {} bytes  md5 {}  {} -> {ended}  ({kept})",
                v.valid_from.to_rfc3339(),
                v.size_bytes,
                v.md5,
                v.event
            )
        })
        .collect()
}

/// What a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Versions forgotten.
    pub versions: u64,
    /// Objects (history copies, or noncurrent S3 versions) deleted.
    pub objects: u64,
    /// Objects that could not be deleted (their versions stay, to be tried again).
    pub failed: u64,
}

impl Purger {
    /// Deletes the history that ended more than HISTORY_RETENTION ago: its bytes, then its rows.
    pub async fn purge(&self) -> anyhow::Result<Purged> {
        let retention = chrono::Duration::from_std(self.retention)?;
        let cutoff = Utc::now() - retention;
        let mut purged = Purged::default();
        loop {
            let batch = self.catalog.expired_versions(cutoff, 1000).await?;
            if batch.is_empty() {
                break;
            }
            let done = self.purge_batch(&batch, &mut purged).await;
            if done.is_empty() {
                break; // every delete failed: try again next time
            }
            purged.versions += self.catalog.delete_versions(&done).await?;
        }
        self.metrics.purged.inc_by(purged.objects);
        Ok(purged)
    }

    /// Deletes the bytes of expired versions; returns the ids whose bytes are gone.
    async fn purge_batch(&self, batch: &[VersionRow], purged: &mut Purged) -> Vec<i64> {
        // The transfer stage's semaphore caps the deletes in flight.
        let results = futures::future::join_all(batch.iter().map(|v| async move {
            let result = match (&v.history_key, &v.version_id) {
                (Some(h), _) => self.store.delete_object(h, None).await,
                (None, Some(id)) => self.store.delete_object(&v.s3_key, Some(id)).await,
                (None, None) => Ok(false), // nothing was kept: only the row goes
            };
            (v.id, result)
        }))
        .await;
        let mut done = Vec::with_capacity(results.len());
        for (id, result) in results {
            match result {
                Ok(deleted) => {
                    purged.objects += u64::from(deleted);
                    done.push(id);
                }
                Err(e) => {
                    purged.failed += 1;
                    tracing::warn!(version = id, error = %e, "could not purge a history object");
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{FaultyClient, MemoryClient, ObjectClient, TransferConfig};

    fn store(client: Arc<dyn ObjectClient>) -> Transfer {
        let config = TransferConfig {
            multipart_threshold: 1 << 20,
            part_size: 5 << 20,
            requests_in_flight: 4,
            parts_per_file: 2,
        };
        Transfer::on(client, "b".into(), config)
    }

    fn metrics() -> HistoryMetrics {
        crate::metrics::AgentMetrics::register(&prometheus::Registry::new())
            .unwrap()
            .history
    }

    fn row(path: &str, since: DateTime<Utc>) -> FileRow {
        FileRow {
            id: 1,
            agent_id: 1,
            path: path.into(),
            s3_key: format!("p/{path}"),
            size_bytes: 3,
            mtime: since,
            md5: Some(hex::encode(md5::Md5::digest(b"old"))),
            etag: None,
            content_type: None,
            status: crate::catalog::FileStatus::Synced,
            last_error: None,
            synced_at: Some(since),
            deleted_at: None,
            created_at: since,
            updated_at: since,
            inode: None,
            ctime: None,
            encryption: None,
            storage_class: None,
            content_since: Some(since),
        }
    }

    use md5::Digest;

    #[tokio::test]
    async fn prefix_history_copies_the_object_to_its_key_before_it_is_replaced() {
        let mem = Arc::new(MemoryClient::new());
        let since = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        mem.insert("p/a.txt", b"old", [("md5chksum".into(), "x".into())].into());
        let (history, m) = (History::Prefix("p/.h/".into()), metrics());
        let key = history
            .keep(&store(mem.clone()), &m, &row("a.txt", since))
            .await
            .unwrap();
        assert_eq!(key.as_deref(), Some("p/.h/a.txt/20251124T160000.000000Z"));
        let copy = mem.object(key.as_deref().unwrap()).unwrap();
        assert_eq!(copy.bytes, &b"old"[..]);
        assert_eq!(
            copy.metadata.get("md5chksum").unwrap(),
            "x",
            "the copy keeps the metadata"
        );
        assert_eq!(m.copies.get(), 1);
    }

    #[tokio::test]
    async fn a_history_copy_that_fails_is_an_error_so_nothing_is_overwritten() {
        let mem = Arc::new(MemoryClient::new());
        mem.insert("p/a.txt", b"old", Default::default());
        let faulty = Arc::new(FaultyClient::new(mem.clone()));
        faulty.fail("CopyObject", ".h/", "AccessDenied", 1);
        let (history, m) = (History::Prefix("p/.h/".into()), metrics());
        let since = Utc::now();
        let err = history
            .keep(&store(faulty), &m, &row("a.txt", since))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::model::report::FailureKind::Denied);
        assert_eq!(m.copies.get(), 0);
        assert_eq!(mem.keys(), ["p/a.txt"]);
    }

    #[tokio::test]
    async fn versioning_and_off_copy_nothing() {
        let mem = Arc::new(MemoryClient::versioned());
        mem.insert("p/a.txt", b"old", Default::default());
        for history in [History::Versioning, History::Off] {
            let (t, m, r) = (store(mem.clone()), metrics(), row("a.txt", Utc::now()));
            assert_eq!(history.keep(&t, &m, &r).await.unwrap(), None);
        }
        assert_eq!(mem.count("CopyObject"), 0);
    }

    #[tokio::test]
    async fn auto_follows_the_bucket_and_versioning_is_refused_without_it() {
        let plain = store(Arc::new(MemoryClient::new()));
        let versioned = store(Arc::new(MemoryClient::versioned()));
        let dir = || "p/.h/".to_string();
        let auto = History::resolve(HistorySetting::Auto, &plain, dir())
            .await
            .unwrap();
        assert_eq!(auto, History::Prefix(dir()));
        let auto = History::resolve(HistorySetting::Auto, &versioned, dir())
            .await
            .unwrap();
        assert_eq!(auto, History::Versioning);
        let refused = History::resolve(HistorySetting::Versioning, &plain, dir()).await;
        assert!(refused.unwrap_err().to_string().contains("HISTORY"));
        let faulty = Arc::new(FaultyClient::new(Arc::new(MemoryClient::versioned())));
        faulty.fail("GetBucketVersioning", "", "NotImplemented", 1);
        let unknown = History::resolve(HistorySetting::Auto, &store(faulty), dir()).await;
        assert_eq!(
            unknown.unwrap(),
            History::Prefix(dir()),
            "auto falls back to prefix"
        );
    }

    #[test]
    fn history_keys_round_trip_even_for_odd_paths() {
        let t = DateTime::from_timestamp(1_764_000_000, 123_456_000).unwrap();
        for path in ["a.txt", "dir/sub/b c+d", "x/20261124T101500.123456Z"] {
            let key = History::key("p/.portail-history/", path, t);
            assert_eq!(
                History::parse_key("p/.portail-history/", &key),
                Some((path.to_string(), t)),
                "{key}"
            );
        }
        assert_eq!(
            History::key("h/", "a", t),
            "h/a/20251124T160000.123456Z",
            "the stamp is UTC, to the microsecond"
        );
        assert_eq!(History::parse_key("h/", "h/a/not-a-stamp"), None);
        assert_eq!(
            History::parse_key("h/", "other/a/20251124T160000.123456Z"),
            None
        );
    }
}
