//! The command line: `portail-url-service [serve]`, `migrate`, `token ...` and `agent ...`.
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
    /// Apply the schema's pending migrations (with the owner's DATABASE_URL), then exit.
    Migrate,
    /// Manage the agents' database roles (with the owner's DATABASE_URL).
    Agent {
        /// The agent action.
        #[command(subcommand)]
        action: AgentAction,
    },
}

/// The agents' database roles: each agent logs in with its own role, which sees and writes
/// only that agent's rows.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Create the agent's login role and print its DATABASE_URL, alone, on stdout (only once).
    Add {
        /// The agent's name (its AGENT_ID).
        name: String,
    },
    /// List the agents that have a role.
    List,
    /// Give the agent's role a new password and print its new DATABASE_URL.
    Rotate {
        /// The agent's name.
        name: String,
    },
    /// Drop the agent's role (its rows and history stay).
    Remove {
        /// The agent's name.
        name: String,
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
        Command::Token { action } => admin(|db| token(db, action)).await,
        Command::Migrate => admin(migrate).await,
        Command::Agent { action } => admin(|db| agent(db, action)).await,
    }
}

/// Runs an admin command, which needs only the database: 2 on a configuration error, 1 when
/// it fails.
async fn admin<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(DatabaseConfig) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let db = match DatabaseConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portail-url-service: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match command(db).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portail-url-service: {e:#}");
            if e.downcast_ref::<portail_core::config::ConfigError>()
                .is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `migrate`: the owner applies what is pending.
async fn migrate(db: DatabaseConfig) -> anyhow::Result<ExitCode> {
    let pool = catalog::connect(&db)
        .await
        .context("connecting to PostgreSQL")?;
    catalog::migrate(&pool)
        .await
        .context("running migrations")?;
    eprintln!("portail-url-service: the catalog's schema is current");
    Ok(ExitCode::SUCCESS)
}

/// `agent add|list|rotate|remove`.
async fn agent(db: DatabaseConfig, action: AgentAction) -> anyhow::Result<ExitCode> {
    let pool = catalog::connect(&db)
        .await
        .context("connecting to PostgreSQL")?;
    catalog::prepare_schema(&pool).await?;
    let password = || hex::encode(rand::random::<[u8; 24]>());
    match action {
        AgentAction::Add { name } => {
            let role = format!("portail_agent_{}", hex::encode(rand::random::<[u8; 6]>()));
            let pw = password();
            catalog::add_agent_role(&pool, &name, &role, &pw)
                .await
                .with_context(|| format!("adding a role for agent {name:?} (it may have one: see `agent list`, or `agent rotate`)"))?;
            println!("{}", agent_url(&db, &role, &pw)?);
            eprintln!("agent {name:?}: role {role} created; give the URL above to that agent as its DATABASE_URL (it is not shown again)");
        }
        AgentAction::List => {
            for r in catalog::agent_roles(&pool).await? {
                println!(
                    "{}\t{}\t{}",
                    r.agent_name,
                    r.role_name,
                    r.created_at.to_rfc3339()
                );
            }
        }
        AgentAction::Rotate { name } => {
            let pw = password();
            let Some(role) = catalog::rotate_agent_role(&pool, &name, &pw).await? else {
                eprintln!("portail-url-service: agent {name:?} has no role (`agent add {name}`)");
                return Ok(ExitCode::FAILURE);
            };
            println!("{}", agent_url(&db, &role, &pw)?);
            eprintln!(
                "agent {name:?}: role {role} has a new password; the old URL no longer works"
            );
        }
        AgentAction::Remove { name } => match catalog::remove_agent_role(&pool, &name).await? {
            Some(role) => eprintln!("agent {name:?}: role {role} dropped; its rows stay"),
            None => {
                eprintln!("portail-url-service: agent {name:?} has no role");
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// The DATABASE_URL of an agent's role: the owner's server and database, the role's login.
fn agent_url(db: &DatabaseConfig, role: &str, password: &str) -> anyhow::Result<String> {
    let o = db.connect_options()?;
    let (host, port) = (o.get_host(), o.get_port());
    let database = o.get_database().unwrap_or("portail");
    Ok(if host.starts_with('/') {
        format!("postgres://{role}:{password}@localhost:{port}/{database}?host={host}")
    } else if host.contains(':') {
        format!("postgres://{role}:{password}@[{host}]:{port}/{database}")
    } else {
        format!("postgres://{role}:{password}@{host}:{port}/{database}")
    })
}

async fn token(db: DatabaseConfig, action: TokenAction) -> anyhow::Result<ExitCode> {
    let pool = catalog::connect(&db)
        .await
        .context("connecting to PostgreSQL")?;
    catalog::prepare_schema(&pool).await?;
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
    catalog::prepare_schema(&pool).await?;
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
