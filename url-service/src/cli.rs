//! The command line: `portail-url-service [serve]` and `portail-url-service token ...`.
//!
//! In: arguments and the environment. Out: an exit code — 0 success, 1 runtime failure,
//! 2 configuration error.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portail_core::catalog;
use portail_core::config::{DatabaseConfig, FromEnv};

use crate::{auth, router, AppState, UrlServiceConfig};

/// Serves presigned download links over the portail catalog.
#[derive(Debug, Parser)]
#[command(name = "portail-url-service", version, about, long_about = None)]
pub struct Cli {
    /// What to do; the default is `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API on LISTEN_ADDR (the default).
    Serve,
    /// Manage API tokens.
    Token {
        /// The token action.
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// Token management.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it, alone, on stdout. It is shown only this once.
    Create {
        /// A unique name for the token.
        #[arg(long)]
        name: String,
        /// Restrict the token to files under this path prefix.
        #[arg(long)]
        path_prefix: Option<String>,
        /// Restrict the token to one agent's files.
        #[arg(long)]
        agent: Option<String>,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token by name.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Runs the CLI and returns the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let cfg = match UrlServiceConfig::from_env() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portail-url-service: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            let _guard = match portail_core::telemetry::init(&cfg.log, "portail-url-service") {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("portail-url-service: {e:#}");
                    return ExitCode::from(2);
                }
            };
            match serve(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "url-service stopped");
                    eprintln!("portail-url-service: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token { action } => {
            let db = match DatabaseConfig::from_env() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portail-url-service: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            match token(db, action).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("portail-url-service: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn token(db: DatabaseConfig, action: TokenAction) -> anyhow::Result<ExitCode> {
    let pool = catalog::connect(&db)
        .await
        .context("connecting to PostgreSQL")?;
    catalog::migrate(&pool)
        .await
        .context("running migrations")?;
    match action {
        TokenAction::Create {
            name,
            path_prefix,
            agent,
        } => {
            let token = auth::generate_token();
            catalog::create_token(
                &pool,
                &name,
                &auth::token_hash(&token),
                path_prefix.as_deref(),
                agent.as_deref(),
            )
            .await
            .with_context(|| format!("creating token {name:?} (is the name taken?)"))?;
            println!("{token}");
        }
        TokenAction::List => {
            for t in catalog::list_tokens(&pool).await? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\tprefix={}\tagent={}\tcreated={}",
                    t.name,
                    state,
                    t.path_prefix.as_deref().unwrap_or("*"),
                    t.agent_name.as_deref().unwrap_or("*"),
                    t.created_at.to_rfc3339()
                );
            }
        }
        TokenAction::Revoke { name } => {
            if !catalog::revoke_token(&pool, &name).await? {
                eprintln!("no active token named {name:?}");
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("revoked {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: UrlServiceConfig) -> anyhow::Result<()> {
    let pool = catalog::connect(&cfg.db)
        .await
        .context("connecting to PostgreSQL")?;
    catalog::migrate(&pool)
        .await
        .context("running migrations")?;
    let s3 = portail_core::s3::build_client(&cfg.s3).await;
    let addr = cfg.service.listen_addr.clone();
    let limits = cfg.service.server_limits();
    let retention = cfg.service.audit_retention.0;
    let state = AppState::new(pool, s3, cfg.s3.aws_bucket_name.clone(), cfg.service)?;
    let purge = crate::audit::spawn_purge(state.pool.clone(), retention);
    let audit = state.audit.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding LISTEN_ADDR {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "url-service listening");
    crate::server::serve(
        listener,
        router(state),
        limits,
        portail_core::signal::shutdown(),
    )
    .await?;
    purge.abort();
    audit.close().await; // the last requests' entries
    Ok(())
}
