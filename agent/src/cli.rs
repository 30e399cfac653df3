//! The command line: `portail-agent [sync [--dry-run] | verify | watch | release-deletes |
//! release-changes]`.
//!
//! In: arguments and the environment. Out: an exit code — 0 converged, 1 some files could not
//! be synced, 2 configuration error (also for a missing SYNC_ROOT, an unmounted share).

use std::process::ExitCode;

use std::sync::{Arc, OnceLock};

use clap::{Parser, Subcommand};
use portail_core::config::ConfigError;

use crate::{sync_once, Agent, AgentConfig, SyncOptions};

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
        Command::ReleaseDeletes => release(cfg, crate::guard::Kind::Deletes).await,
        Command::ReleaseChanges => release(cfg, crate::guard::Kind::Changes).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "failed");
            eprintln!("portail-agent: {e:#}");
            // A missing root (an unmounted share) is a configuration problem.
            let missing_root = e.downcast_ref::<crate::scan::ScanError>().is_some();
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
        return Err(crate::scan::ScanError::RootMissing(cfg.agent.sync_root.clone()).into());
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
    let app = crate::health::router(agent.clone(), registry, health.clone());
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
async fn release(cfg: AgentConfig, kind: crate::guard::Kind) -> anyhow::Result<u8> {
    let pool = portail_core::catalog::connect(&cfg.db).await?;
    let name = cfg.agent.agent_name();
    println!("{}", crate::guard::release(&pool, &name, kind).await?);
    Ok(EXIT_OK)
}

async fn verify(cfg: AgentConfig) -> anyhow::Result<u8> {
    let agent = connect(cfg).await?;
    let report = crate::verify::verify(&agent).await?;
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
