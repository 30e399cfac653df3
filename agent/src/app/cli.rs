//! The command line: `portail-agent [sync [--dry-run] | verify | watch | release-deletes |
//! release-changes | restore | history]`.
//!
//! In: arguments and the environment. Out: an exit code — 0 converged, 1 some files could not
//! be synced, 2 configuration error (also for a missing SYNC_ROOT, an unmounted share).

use std::process::ExitCode;

use std::sync::{Arc, OnceLock};

use clap::{Parser, Subcommand};
use portail_core::config::ConfigError;

use crate::agent::Agent;
use crate::app::config::AgentConfig;
use crate::pass::run::{sync_once, SyncOptions};

/// Exit code: everything converged.
pub const EXIT_OK: u8 = 0;
/// Exit code: some files could not be synced (the summary names them).
pub const EXIT_INCOMPLETE: u8 = 1;
/// Exit code: configuration error.
pub const EXIT_CONFIG: u8 = 2;

/// Mirrors SYNC_ROOT to S3 and records every file in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "portail-agent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one full pass, then exit.
    Sync {
        /// Print the planned actions; change nothing in S3 or the catalog.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the catalog, the local tree and S3; print every drift; exit 1 on any.
    Verify,
    /// Full pass, then live sync of every change (the default with no subcommand).
    Watch,
    /// Let through the deletes a guard holds (MAX_DELETE, MAX_DELETE_PERCENT over
    /// DELETE_WINDOW), once; the window starts afresh. A running agent acts within seconds.
    ReleaseDeletes,
    /// Let through the uploads of changed files the mass-change tripwire holds, once; the
    /// window starts afresh. A running agent acts within seconds.
    ReleaseChanges,
    /// Write files as they were at a time (default: now) into a directory: MD5-checked, with
    /// mtime and mode (and owner, as root). Files already in place are skipped, so it resumes.
    Restore(RestoreArgs),
    /// List the versions of one path, newest first; or `history purge`.
    History(HistoryArgs),
    /// After the catalog was lost: recreate this agent's rows (and HISTORY=prefix history)
    /// from the bucket and each object's metadata, so the next sync uploads nothing unchanged.
    RebuildCatalog,
}

/// `restore [--to DIR] [--at TIME] [PATH_OR_DIR ...]`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Where to write the files. Required unless --in-place.
    #[arg(long)]
    pub to: Option<std::path::PathBuf>,
    /// The time to restore as of: RFC 3339 (2026-11-20T10:00:00Z) or an age (3h, 2d).
    /// Default: now.
    #[arg(long, value_parser = crate::ops::restore::parse_at)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Only list what would be restored.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace files in the target whose content differs (default: refuse them).
    #[arg(long)]
    pub overwrite: bool,
    /// Allow writing into SYNC_ROOT (the default target then).
    #[arg(long)]
    pub in_place: bool,
    /// Downloads in flight. Default 32: small files are bound by each request's latency, not
    /// by bandwidth (at 16, 5000 × 4 KiB restored at 488 files/s here; rclone at 32, 772).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Use no catalog: read what to restore from the bucket (objects and HISTORY=prefix
    /// copies) and each object's metadata.
    #[arg(long)]
    pub from_bucket: bool,
    /// Paths or directories, relative to SYNC_ROOT. Default: everything.
    pub paths: Vec<String>,
}

/// `history PATH` or `history purge`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    /// `purge`: delete history older than HISTORY_RETENTION now.
    #[command(subcommand)]
    pub action: Option<HistoryAction>,
    /// The path whose versions to list (a file named `purge`: `history -- purge`).
    pub path: Option<String>,
}

/// What `history` can do besides listing.
#[derive(Debug, Subcommand)]
pub enum HistoryAction {
    /// Delete the history that ended more than HISTORY_RETENTION ago.
    Purge,
}

/// Runs the CLI and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Watch);
    let cfg = match AgentConfig::from_env() {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    let _guard = match portail_core::telemetry::init(&cfg.log, "portail-agent") {
        Ok(g) => g,
        Err(e) => {
            eprintln!("portail-agent: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let echo_summary = cfg.log.log_method != portail_core::config::LogMethod::Stdout;
    let result = match command {
        Command::Sync { dry_run } => sync(cfg, dry_run, echo_summary).await,
        Command::Verify => verify(cfg).await,
        Command::Watch => watch(cfg).await,
        Command::ReleaseDeletes => release(cfg, crate::policy::guard::Kind::Deletes).await,
        Command::ReleaseChanges => release(cfg, crate::policy::guard::Kind::Changes).await,
        Command::Restore(args) => restore(cfg, args).await,
        Command::History(args) => history(cfg, args).await,
        Command::RebuildCatalog => rebuild_catalog(cfg).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "failed");
            eprintln!("portail-agent: {e:#}");
            // A missing root (an unmounted share) is a configuration problem, as is a setting
            // the servers refuse (HISTORY=versioning on a bucket without it).
            let missing_root = e.downcast_ref::<crate::fs::scan::ScanError>().is_some()
                || e.downcast_ref::<ConfigError>().is_some();
            ExitCode::from(if missing_root {
                EXIT_CONFIG
            } else {
                EXIT_INCOMPLETE
            })
        }
    }
}

async fn connect(cfg: AgentConfig) -> anyhow::Result<Agent> {
    connect_with(cfg, &prometheus::Registry::new()).await
}

async fn connect_with(cfg: AgentConfig, registry: &prometheus::Registry) -> anyhow::Result<Agent> {
    // Say so before touching the network.
    if !cfg.agent.sync_root.is_dir() {
        return Err(crate::fs::scan::ScanError::RootMissing(cfg.agent.sync_root.clone()).into());
    }
    portail_core::metrics::register_build_info(registry, "portail-agent")?;
    let pool = portail_core::catalog::connect(&cfg.db).await?;
    let s3 = portail_core::s3::build_client(&cfg.s3).await;
    Agent::start(cfg.agent, pool, s3, cfg.s3.aws_bucket_name, registry).await
}

/// Watch mode: serves `/metrics`, `/healthz`, `/readyz` on METRICS_ADDR and syncs every change
/// until SIGTERM or SIGINT, then exits 0.
async fn watch(cfg: AgentConfig) -> anyhow::Result<u8> {
    use anyhow::Context;
    let addr = cfg.agent.metrics_addr.clone();
    let registry = prometheus::Registry::new();
    let agent = connect_with(cfg, &registry).await?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("METRICS_ADDR {addr} cannot be bound"))?;
    tracing::info!(addr = %listener.local_addr()?, "health and metrics listening");
    let health: Arc<OnceLock<crate::watch::WatchHandle>> = Arc::default();
    let app = crate::app::health::router(agent.clone(), registry, health.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let slot = health.clone();
    crate::watch::run(&agent, portail_core::signal::shutdown(), move |h| {
        let _ = slot.set(h);
    })
    .await?;
    server.abort();
    Ok(EXIT_OK)
}

/// `release-deletes` / `release-changes`: needs only the catalog.
async fn release(cfg: AgentConfig, kind: crate::policy::guard::Kind) -> anyhow::Result<u8> {
    let pool = portail_core::catalog::connect(&cfg.db).await?;
    let name = cfg.agent.agent_name();
    println!("{}", super::release(&pool, &name, kind).await?);
    Ok(EXIT_OK)
}

/// `restore`: needs the catalog and S3, not SYNC_ROOT (a new machine may have none yet).
async fn restore(mut cfg: AgentConfig, args: RestoreArgs) -> anyhow::Result<u8> {
    let to = match (&args.to, args.in_place) {
        (Some(to), _) => to.clone(),
        (None, true) => cfg.agent.sync_root.clone(),
        (None, false) => anyhow::bail!(ConfigError::Invalid {
            var: "--to".into(),
            reason: "is required (or --in-place to restore into SYNC_ROOT)".into(),
        }),
    };
    cfg.agent.upload_concurrency = usize::from(args.concurrency);
    let transfer = crate::app::transfer_for(&cfg).await?;
    let opts = crate::ops::restore::RestoreOptions {
        to,
        at: args.at.unwrap_or_else(chrono::Utc::now),
        paths: args
            .paths
            .iter()
            .map(|p| p.trim_matches('/').to_string())
            .collect(),
        dry_run: args.dry_run,
        overwrite: args.overwrite,
        in_place: args.in_place,
        concurrency: usize::from(args.concurrency),
    };
    let report = if args.from_bucket {
        let prefix = cfg.agent.key_prefix();
        let history_dir = cfg.agent.history_key_prefix();
        let history = crate::policy::history::History::resolve(
            cfg.agent.history,
            &transfer,
            history_dir.clone(),
        )
        .await?;
        let versioned = history == crate::policy::history::History::Versioning;
        let root = &cfg.agent.sync_root;
        crate::ops::restore::from_bucket(&transfer, &prefix, &history_dir, versioned, root, &opts)
            .await?
    } else {
        let pool = portail_core::catalog::connect(&cfg.db).await?;
        portail_core::catalog::prepare_schema(&pool).await?;
        let catalog = super::catalog_of(&pool, &cfg.agent.agent_name()).await?;
        let restore = crate::ops::restore::Restore {
            catalog: &catalog,
            transfer: &transfer,
            sync_root: &cfg.agent.sync_root,
        };
        restore.run(&opts).await?
    };
    for line in &report.planned {
        println!("{line}");
    }
    for f in &report.failed {
        eprintln!("failed: {f}");
    }
    println!("{}", report.summary());
    Ok(if report.failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

/// `history PATH` lists versions (catalog only); `history purge` needs S3 too.
async fn history(cfg: AgentConfig, args: HistoryArgs) -> anyhow::Result<u8> {
    if let Some(HistoryAction::Purge) = args.action {
        let agent = connect(cfg).await?;
        let p = agent.purger().purge().await?;
        println!(
            "history purge: {} versions forgotten, {} objects deleted, {} could not be deleted",
            p.versions, p.objects, p.failed
        );
        return Ok(if p.failed == 0 {
            EXIT_OK
        } else {
            EXIT_INCOMPLETE
        });
    }
    let Some(path) = args.path else {
        anyhow::bail!(ConfigError::Invalid {
            var: "PATH".into(),
            reason: "history needs a path (or `purge`)".into(),
        });
    };
    let pool = portail_core::catalog::connect(&cfg.db).await?;
    let catalog = super::catalog_of(&pool, &cfg.agent.agent_name()).await?;
    let path = path.trim_matches('/');
    let versions = catalog.versions_of_path(path).await?;
    if versions.is_empty() {
        eprintln!("history: no version of {path:?} was ever recorded");
        return Ok(EXIT_INCOMPLETE);
    }
    for line in crate::policy::history::describe(&versions) {
        println!("{line}");
    }
    Ok(EXIT_OK)
}

/// `rebuild-catalog`: the agent's rows from the bucket, into a catalog that has none.
async fn rebuild_catalog(cfg: AgentConfig) -> anyhow::Result<u8> {
    let agent = connect(cfg).await?;
    let r = crate::ops::recover::rebuild(&agent).await?;
    for s in &r.skipped {
        eprintln!("not recorded: {s}");
    }
    println!(
        "rebuild-catalog: {} files recorded, {} past versions, {} objects not recorded",
        r.files,
        r.past_versions,
        r.skipped.len()
    );
    Ok(if r.skipped.is_empty() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

async fn verify(cfg: AgentConfig) -> anyhow::Result<u8> {
    let agent = connect(cfg).await?;
    let report = crate::ops::verify::verify(&agent).await?;
    for d in &report.drift {
        println!("drift: {d}");
    }
    for path in &report.changed_since {
        println!("changed since its last sync (grown; S3 holds its start): {path}");
    }
    for path in &report.archived {
        println!("archived (needs RestoreObject before it can be read): {path}");
    }
    println!(
        "verify: {} synced files checked, {} drift",
        report.checked,
        report.drift.len()
    );
    Ok(if report.drift.is_empty() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("portail-agent: configuration error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

async fn sync(cfg: AgentConfig, dry_run: bool, echo_summary: bool) -> anyhow::Result<u8> {
    let agent = connect(cfg).await?;
    let report = sync_once(
        &agent,
        &SyncOptions {
            dry_run,
            progress: true,
            ..SyncOptions::default()
        },
    )
    .await?;
    for line in &report.planned {
        println!("{line}");
    }
    for f in &report.failed {
        eprintln!("failed: {} ({}): {}", f.path, f.stage, f.error);
    }
    for s in report.skipped.iter().filter(|s| s.reason.is_problem()) {
        match &s.raw_hex {
            Some(hex) => eprintln!(
                "not synced: {} (raw name hex {hex}): {}",
                s.path,
                s.reason.label()
            ),
            None => eprintln!("not synced: {}: {}", s.path, s.reason.label()),
        }
    }
    if let Some(b) = &report.deletes_blocked {
        eprintln!("deletes blocked ({}): {}", b.guard.label(), b.message);
    }
    if report.changes_held > 0 {
        eprintln!(
            "changes held: the mass-change tripwire holds {} changed files (see the log); if the changes are wanted, run `portail-agent release-changes`",
            report.changes_held
        );
    }
    let summary = report.summary();
    let summary = format!("{}{summary}", if dry_run { "dry run: " } else { "" });
    tracing::info!(converged = report.converged(), "{summary}");
    // With logs on stdout the line above is already there; otherwise stdout gets it too.
    if echo_summary {
        println!("{summary}");
    }
    Ok(if report.converged() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}
