//! The app layer: the only reader of the configuration. It turns [`AgentConfig`] into ready
//! values and wires them into an [`Agent`]; the CLI and the health endpoint live here too.
//!
//! In: the environment (through [`config`]), a PostgreSQL pool and an S3 client. Out: an
//! [`Agent`] whose stages hold typed values only, with its metrics registered (a zero exported
//! for every known label) and the multipart uploads an earlier run left behind aborted.

pub mod cli;
pub mod config;
pub mod health;

use std::sync::Arc;

use anyhow::Context;
use portail_core::catalog::NewAgent;
use sqlx::PgPool;

use crate::agent::{Agent, Options, WatchTimings};
use crate::fs::hash::HashError;
use crate::fs::scan::Excludes;
use crate::metrics::AgentMetrics;
use crate::model::report::{FailureKind, Stage};
use crate::policy::guard::{Guards, Kind};
use crate::policy::history::History;
use crate::store::{self, Transfer};
use config::{AgentConfig, AgentSettings};

/// The BWLIMIT budget, kept current (timetable, BWLIMIT_FILE) by a task, if a limit is set.
fn bandwidth(
    settings: &AgentSettings,
    metrics: &AgentMetrics,
) -> anyhow::Result<Option<Arc<store::Bandwidth>>> {
    let Some(table) = settings.bandwidth()? else {
        return Ok(None);
    };
    let bw = Arc::new(store::Bandwidth::new(table));
    let file = settings
        .bwlimit_file
        .clone()
        .map(|path| store::LimitFile { path });
    let c = &metrics.controls;
    store::bandwidth::spawn_refresh(&bw, file, c.bwlimit.clone(), c.bwlimit_file_errors.clone());
    Ok(Some(bw))
}

/// The S3 side as the settings describe it: write options (the SSE-C key too) and BWLIMIT.
fn build_transfer(
    settings: &AgentSettings,
    s3: aws_sdk_s3::Client,
    bucket: String,
    metrics: &AgentMetrics,
) -> anyhow::Result<Transfer> {
    let mut transfer = Transfer::new(s3, bucket, settings.transfer())
        .with_write_options(settings.write_options()?);
    if let Some(bw) = bandwidth(settings, metrics)? {
        transfer = transfer.with_bandwidth(bw);
    }
    Ok(transfer)
}

/// The S3 side alone, for the commands that need neither an agent row nor SYNC_ROOT (restore
/// onto a new machine): the same client, write options and BWLIMIT as the agent's.
pub async fn transfer_for(cfg: &AgentConfig) -> anyhow::Result<Transfer> {
    let s3 = portail_core::s3::build_client(&cfg.s3).await;
    let metrics = AgentMetrics::register(&prometheus::Registry::new())?;
    build_transfer(&cfg.agent, s3, cfg.s3.aws_bucket_name.clone(), &metrics)
}

/// The typed options of the stages, from the settings.
fn options(settings: &AgentSettings) -> Options {
    Options {
        delete_mode: settings.delete_mode,
        history_retention: settings.history_retention.0,
        watch: WatchTimings {
            settle: settings.settle_time.0,
            delete_grace: settings.delete_grace.0,
            max_sync_delay: settings.max_sync_delay.0,
            rescan_interval: settings.rescan_interval.0,
            shutdown_timeout: settings.shutdown_timeout.0,
        },
    }
}

/// Exports a zero for every known label set, so dashboards and alerts see a series (and
/// `increase()` sees the first event) before anything happens. The app knows every layer's
/// words; the metrics module knows none.
fn zero_known_labels(m: &AgentMetrics) {
    for g in crate::model::guard::Guard::ALL {
        m.deletes_blocked.with_label_values(&[g.label()]);
    }
    for c in crate::watch::RescanCause::ALL {
        m.watch_rescans.with_label_values(&[c.label()]);
    }
    for r in crate::model::tree::SkipReason::ALL {
        m.files_skipped.with_label_values(&[r.label()]);
    }
    for (stage, kind) in known_errors() {
        m.errors.with_label_values(&[stage.label(), kind.label()]);
    }
}

/// Every `(stage, kind)` pair the agent can count: those of no single error type, then what
/// `HashError` and `TransferError` declare.
fn known_errors() -> impl Iterator<Item = (Stage, FailureKind)> {
    [
        (Stage::Scan, FailureKind::Io),
        (Stage::Transfer, FailureKind::Changing),
        (Stage::Delete, FailureKind::S3Error),
    ]
    .into_iter()
    .chain(HashError::KINDS.map(|k| (Stage::Hash, k)))
    .chain(store::TransferError::KINDS.map(|k| (Stage::Transfer, k)))
    .chain([FailureKind::FullReconcile, FailureKind::Batch].map(|k| (Stage::Pass, k)))
}

/// Meets the schema (the owner migrates; an agent's role checks it is current), checks that the
/// role may run this agent, and registers the agent in the catalog; returns its row id.
async fn register(
    pool: &PgPool,
    settings: &AgentSettings,
    bucket: &str,
    prefix: &str,
    name: &str,
) -> anyhow::Result<i64> {
    portail_core::catalog::prepare_schema(pool).await?;
    refuse_another_agents_role(pool, name).await?;
    let row = portail_core::catalog::register_agent(
        pool,
        &NewAgent {
            name,
            hostname: &config::hostname_or_unknown(),
            root: &settings.sync_root.to_string_lossy(),
            bucket,
            prefix,
        },
    )
    .await
    .context("registering the agent")?;
    Ok(row.id)
}

/// An agent's role runs only the agent it is bound to, whatever AGENT_ID says: a host that
/// holds one agent's DATABASE_URL cannot act as another (and delete its files). The owner's
/// role is bound to none.
pub async fn refuse_another_agents_role(pool: &PgPool, name: &str) -> anyhow::Result<()> {
    let bound = portail_core::catalog::bound_agent(pool)
        .await
        .context("reading the role's agent")?;
    match bound {
        Some(bound) if bound != name => anyhow::bail!(portail_core::config::ConfigError::Invalid {
            var: "AGENT_ID".into(),
            reason: format!(
                "is {name:?}, but this DATABASE_URL's role is bound to agent {bound:?}; an agent's role runs only that agent"
            ),
        }),
        _ => Ok(()),
    }
}

/// Aborts the multipart uploads an earlier run left behind (their intents are in the journal).
async fn abort_stale(transfer: &Transfer, prefix: &str) -> anyhow::Result<()> {
    let stale = transfer.abort_stale_multiparts(prefix).await?;
    if stale > 0 {
        tracing::warn!(
            count = stale,
            "aborted multipart uploads left by an earlier run"
        );
    }
    Ok(())
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
        let prefix = settings.key_prefix();
        let name = settings.agent_name();
        let id = register(&pool, &settings, &bucket, &prefix, &name).await?;
        // Local files where history lives in S3 would collide with it: never synced.
        let mut exclude = settings.exclude.clone();
        exclude.push(format!("/{}**", globset::escape(&settings.history_dir())));
        let excludes = Excludes::new(&exclude)?;
        let metrics = AgentMetrics::register(registry)?;
        zero_known_labels(&metrics);
        let s3 = portail_core::s3::count_retries(&s3, metrics.s3_retries.clone());
        let catalog = Arc::new(crate::catalog::Catalog::new(pool.clone(), id));
        let transfer =
            build_transfer(&settings, s3, bucket, &metrics)?.with_journal(catalog.clone());
        let history_prefix = settings.history_key_prefix();
        let history = History::resolve(settings.history, &transfer, history_prefix.clone()).await?;
        tracing::info!(history = history.label(), "history of replaced content");
        let guards = Guards::new(
            catalog.clone(),
            metrics.controls.clone(),
            settings.delete_guards(),
            settings.change_tripwire(),
        );
        abort_stale(&transfer, &prefix).await?;
        Ok(Agent {
            id,
            name,
            root: settings.sync_root.clone(),
            prefix,
            history_prefix,
            catalog,
            transfer,
            metrics,
            excludes,
            guards: Arc::new(guards),
            history,
            options: options(&settings),
        })
    }
}

/// The catalog handle of the agent named `name` (AGENT_ID), which must exist: for the commands
/// that need no running agent (restore, history).
pub async fn catalog_of(pool: &PgPool, name: &str) -> anyhow::Result<crate::catalog::Catalog> {
    refuse_another_agents_role(pool, name).await?;
    let id = portail_core::catalog::agent_id_by_name(pool, name)
        .await?
        .with_context(|| format!("no agent named {name:?} in the catalog (AGENT_ID)"))?;
    Ok(crate::catalog::Catalog::new(pool.clone(), id))
}

/// Releases what `kind`'s guard holds for this agent (the CLI's `release-*`): prints what was
/// released, or that nothing was held.
pub async fn release(pool: &PgPool, agent_name: &str, kind: Kind) -> anyhow::Result<String> {
    // Who released it, for the record: the login, else the uid (a container has no USER).
    let uid = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or("unknown".into(), |m| format!("uid {}", m.uid()))
    };
    let by = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| uid());
    Ok(
        match portail_core::catalog::release_hold(pool, agent_name, kind.label(), &by).await? {
            Some(h) => format!(
                "released {} held {} of agent {agent_name} (guard {}, held since {}; first: {}). The agent lets them through within seconds in watch mode, or at its next pass; the window starts afresh",
                h.held,
                kind.label(),
                h.guard,
                h.held_since,
                h.sample.join(", ")
            ),
            None => format!("agent {agent_name} holds no {}", kind.label()),
        },
    )
}
