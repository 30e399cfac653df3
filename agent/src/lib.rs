//! portail-agent: mirrors a local directory tree to S3 and records every file in PostgreSQL.
//!
//! The pipeline has one module per stage — [`scan`], [`hash`], [`plan`], [`transfer`],
//! [`catalog`] — driven by [`sync_once`] in [`mod@sync`]. [`Agent::start`] wires the stages to
//! real servers; [`cli`] is what `main.rs` runs.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod hash;
pub mod health;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod scan;
pub mod sync;
pub mod transfer;
pub mod verify;
pub mod watch;

use anyhow::Context;
use portail_core::catalog::NewAgent;
use sqlx::PgPool;

pub use config::{AgentConfig, AgentSettings};
pub use sync::{sync_once, SyncOptions, SyncReport};

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
    /// The S3 side.
    pub transfer: transfer::Transfer,
    /// Metric handles.
    pub metrics: metrics::AgentMetrics,
    /// Compiled EXCLUDE patterns.
    pub excludes: scan::Excludes,
}

impl Agent {
    /// Connects the stages: registers the agent in the catalog (running migrations first) and
    /// registers its metrics. Fails if the database is unreachable.
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
        let name = settings.agent_name();
        let prefix = settings.key_prefix();
        let hostname = config::hostname_or_unknown();
        let root = settings.sync_root.to_string_lossy().into_owned();
        let row = portail_core::catalog::register_agent(
            &pool,
            &NewAgent {
                name: &name,
                hostname: &hostname,
                root: &root,
                bucket: &bucket,
                prefix: &prefix,
            },
        )
        .await
        .context("registering the agent")?;
        let excludes = scan::Excludes::new(&settings.exclude)?;
        let metrics = metrics::AgentMetrics::register(registry)?;
        let transfer = transfer::Transfer::new(
            portail_core::s3::count_retries(&s3, metrics.s3_retries.clone()),
            bucket,
            settings.multipart_threshold.0,
            settings.multipart_part_size.0,
            settings.upload_concurrency,
        )
        .with_journal(transfer::Journal {
            pool: pool.clone(),
            agent_id: row.id,
        });
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
        })
    }
}
