//! The wired agent: the handles a pass, a watch batch and the operations work with.
//!
//! In: ready values from the app layer (`app::start` builds an [`Agent`] from the
//! configuration). Out: the catalog pool and the agent's id, the S3 side, the metric handles,
//! the guard session, the history mode and the typed options the stages need. It holds no logic
//! beyond handing those out: the stages below it (fs, store, policy) never see an `Agent`, they
//! are handed the one handle they need.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::fs::scan::Excludes;
use crate::metrics::AgentMetrics;
use crate::policy::delete_rules::DeleteMode;
use crate::policy::guard::Guards;
use crate::policy::history::{History, Purger};
use crate::store::Transfer;

/// A running agent: its catalog identity, its connections and its policy handles.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The agent's row id in `agents`.
    pub id: i64,
    /// The agent's name in the catalog (AGENT_ID, else the host name).
    pub name: String,
    /// SYNC_ROOT.
    pub root: PathBuf,
    /// The normalised key prefix (S3_PREFIX).
    pub prefix: String,
    /// Where history copies live: S3_PREFIX + HISTORY_PREFIX, built once.
    pub history_prefix: String,
    /// The agent's rows: the only way down to the catalog.
    pub catalog: Arc<Catalog>,
    /// The S3 side: the only holder of the S3 client.
    pub transfer: Transfer,
    /// Metric handles.
    pub metrics: AgentMetrics,
    /// Compiled EXCLUDE patterns.
    pub excludes: Excludes,
    /// The guard session: delete guards and the tripwire, and what they hold.
    pub guards: Arc<Guards>,
    /// How replaced content is kept (HISTORY, resolved against the bucket).
    pub history: History,
    /// The typed options of the stages above the store.
    pub options: Options,
}

/// What the pass, watch mode and the operations are told by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// DELETE_MODE.
    pub delete_mode: DeleteMode,
    /// HISTORY_RETENTION.
    pub history_retention: Duration,
    /// The watch-mode timings.
    pub watch: WatchTimings,
}

/// The timings of watch mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchTimings {
    /// SETTLE_TIME: a path is due this long after its latest event.
    pub settle: Duration,
    /// DELETE_GRACE: a vanished path is deleted only if still absent after this.
    pub delete_grace: Duration,
    /// MAX_SYNC_DELAY: a file that never settles is synced after this anyway.
    pub max_sync_delay: Duration,
    /// RESCAN_INTERVAL: a full reconcile this often.
    pub rescan_interval: Duration,
    /// SHUTDOWN_TIMEOUT: how long in-flight work may take after SIGTERM.
    pub shutdown_timeout: Duration,
}

impl Agent {
    /// Runs `f` on a blocking thread with what a walk of the tree needs: the root, the key prefix
    /// and the EXCLUDE patterns. Walks, `lstat`s and reads block, so they never run on the async
    /// threads.
    pub fn on_tree<T, F>(&self, f: F) -> tokio::task::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &str, &Excludes) -> T + Send + 'static,
    {
        let (root, prefix) = (self.root.clone(), self.prefix.clone());
        let excludes = self.excludes.clone();
        tokio::task::spawn_blocking(move || f(&root, &prefix, &excludes))
    }

    /// The purge of this agent's expired history (`history --purge`, and hourly in watch mode).
    pub fn purger(&self) -> Purger {
        Purger {
            catalog: self.catalog.clone(),
            store: self.transfer.clone(),
            retention: self.options.history_retention,
            metrics: self.metrics.history.clone(),
        }
    }
}
