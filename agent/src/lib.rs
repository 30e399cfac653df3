//! portail-agent: mirrors a local directory tree to S3 and records every file in PostgreSQL.
//!
//! A pass ([`sync_once`], in [`mod@pass`]) runs the pipeline, one module per stage, in this
//! order:
//!
//! 1. [`scan`]: walk SYNC_ROOT; regular files come out in bytewise path order;
//! 2. [`merge`]: the one lock-step merge of the walk with the catalog's rows, into
//!    `Unchanged | Work | Gone`;
//! 3. [`hash`]: read each file of the work once, for its MD5;
//! 4. [`transfer`]: write to S3 (upload, multipart, or a server-side copy for a rename);
//! 5. [`record`]: turn each file's outcome into metrics, a log line, the report and a batched
//!    catalog write;
//! 6. [`delete`]: after every upload, delete what is gone, behind the guards.
//!
//! [`file`] is one file's way through stages 3 and 4 (hash → decide → store → confirm → row).
//! [`watch`] runs the same stages for the paths that inotify names; [`verify`] runs the merge
//! read-only and compares with S3. [`Agent::start`] wires the stages to real servers; [`cli`] is
//! what `main.rs` runs; [`report`] holds the words a pass reports in.

pub mod cli;
pub mod config;
pub mod delete;
pub mod file;
pub mod guard;
pub mod hash;
pub mod health;
pub mod history;
pub mod merge;
pub mod metrics;
pub mod pass;
pub mod progress;
pub mod record;
pub mod recover;
pub mod report;
pub mod restore;
pub mod scan;
pub mod transfer;
pub mod verify;
pub mod watch;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use portail_core::catalog::NewAgent;
use sqlx::PgPool;

pub use config::{AgentConfig, AgentSettings};
pub use pass::{sync_once, SyncOptions};
pub use report::SyncReport;

/// A running agent: its settings, its catalog identity and its connections.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The agent's settings.
    pub settings: AgentSettings,
    /// The agent's row id in `agents`.
    pub id: i64,
    /// The normalised key prefix.
    pub prefix: String,
    /// The catalog pool.
    pub pool: PgPool,
    /// The S3 side: the only holder of the S3 client.
    pub transfer: transfer::Transfer,
    /// Metric handles.
    pub metrics: metrics::AgentMetrics,
    /// Compiled EXCLUDE patterns.
    pub excludes: scan::Excludes,
    /// What the guards over time hold (deletes, changed files), shared by passes and batches.
    pub holds: Arc<guard::Holds>,
    /// How replaced content is kept (HISTORY, resolved against the bucket).
    pub history: history::History,
}

/// The BWLIMIT budget, kept current (timetable, BWLIMIT_FILE) by a task, if a limit is set.
fn bandwidth(
    settings: &AgentSettings,
    metrics: &metrics::AgentMetrics,
) -> anyhow::Result<Option<Arc<transfer::Bandwidth>>> {
    let Some(table) = settings.bandwidth()? else {
        return Ok(None);
    };
    let bw = Arc::new(transfer::Bandwidth::new(table));
    let file = settings
        .bwlimit_file
        .clone()
        .map(|path| transfer::LimitFile { path });
    let c = &metrics.controls;
    transfer::bandwidth::spawn_refresh(&bw, file, c.bwlimit.clone(), c.bwlimit_file_errors.clone());
    Ok(Some(bw))
}

/// The S3 side as the settings describe it: write options (the SSE-C key too) and BWLIMIT.
fn build_transfer(
    settings: &AgentSettings,
    s3: aws_sdk_s3::Client,
    bucket: String,
    metrics: &metrics::AgentMetrics,
) -> anyhow::Result<transfer::Transfer> {
    let mut transfer = transfer::Transfer::new(s3, bucket, settings.transfer())
        .with_write_options(settings.write_options()?);
    if let Some(bw) = bandwidth(settings, metrics)? {
        transfer = transfer.with_bandwidth(bw);
    }
    Ok(transfer)
}

/// The S3 side alone, for the commands that need neither an agent row nor SYNC_ROOT (restore
/// onto a new machine): the same client, write options and BWLIMIT as the agent's.
pub async fn transfer_for(cfg: &AgentConfig) -> anyhow::Result<transfer::Transfer> {
    let s3 = portail_core::s3::build_client(&cfg.s3).await;
    let metrics = metrics::AgentMetrics::register(&prometheus::Registry::new())?;
    build_transfer(&cfg.agent, s3, cfg.s3.aws_bucket_name.clone(), &metrics)
}

impl Agent {
    /// Connects the stages: registers the agent in the catalog (running migrations first),
    /// registers its metrics, and aborts the multipart uploads an earlier run left behind.
    /// Fails if the database is unreachable.
    pub async fn start(
        settings: AgentSettings,
        pool: PgPool,
        s3: aws_sdk_s3::Client,
        bucket: String,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        portail_core::catalog::migrate(&pool)
            .await
            .context("running migrations")?;
        let prefix = settings.key_prefix();
        let row = portail_core::catalog::register_agent(
            &pool,
            &NewAgent {
                name: &settings.agent_name(),
                hostname: &config::hostname_or_unknown(),
                root: &settings.sync_root.to_string_lossy(),
                bucket: &bucket,
                prefix: &prefix,
            },
        )
        .await
        .context("registering the agent")?;
        // Local files where history lives in S3 would collide with it: never synced.
        let mut exclude = settings.exclude.clone();
        exclude.push(format!("/{}**", globset::escape(&settings.history_dir())));
        let excludes = scan::Excludes::new(&exclude)?;
        let metrics = metrics::AgentMetrics::register(registry)?;
        let s3 = portail_core::s3::count_retries(&s3, metrics.s3_retries.clone());
        let journal = record::CatalogJournal {
            pool: pool.clone(),
            agent_id: row.id,
        };
        let transfer =
            build_transfer(&settings, s3, bucket, &metrics)?.with_journal(Arc::new(journal));
        let history_dir = format!("{prefix}{}", settings.history_dir());
        let history = history::History::resolve(settings.history, &transfer, history_dir).await?;
        tracing::info!(history = history.label(), "history of replaced content");
        let stale = transfer.abort_stale_multiparts(&prefix).await?;
        if stale > 0 {
            tracing::warn!(
                count = stale,
                "aborted multipart uploads left by an earlier run"
            );
        }
        Ok(Agent {
            id: row.id,
            prefix,
            pool,
            transfer,
            metrics,
            excludes,
            settings,
            holds: Arc::default(),
            history,
        })
    }

    /// Runs `f` on a blocking thread with what a walk of the tree needs: the root, the key prefix
    /// and the EXCLUDE patterns. Walks, `lstat`s and reads block, so they never run on the async
    /// threads.
    pub fn on_tree<T, F>(&self, f: F) -> tokio::task::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &str, &scan::Excludes) -> T + Send + 'static,
    {
        let (root, prefix) = (self.settings.sync_root.clone(), self.prefix.clone());
        let excludes = self.excludes.clone();
        tokio::task::spawn_blocking(move || f(&root, &prefix, &excludes))
    }
}
