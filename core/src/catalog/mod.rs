//! The catalog: models and every SQL statement portail runs, one module per table.
//!
//! In: a PostgreSQL pool. Out: typed rows ([`AgentRow`], [`FileRow`], [`FileEvent`], ...) and
//! writes that are batched (one round trip per batch, via `UNNEST`), each change writing a
//! `file_events` row in the same statement.
//!
//! | module | table |
//! |---|---|
//! | [`agents`] | `agents` |
//! | [`files`] | `files` (and the `file_events` row written with each change) |
//! | [`events`] | `file_events` (reads) |
//! | [`guards`] | `guard_ledger`, `guard_holds` |
//! | [`journal`] | `multipart_uploads` |
//! | [`unsyncable`] | `unsyncable_entries` |
//! | [`tokens`] | `api_tokens` |
//! | [`links`] | `share_links` |
//! | [`audit`] | `audit_log` |
//! | [`sessions`] | `ui_sessions` |
//! | [`roles`] | `agent_roles`, the agents' login roles, and the schema check at start |
//!
//! Every function is re-exported here, so callers write `catalog::record_synced`.
//! All queries use `sqlx::query`/`query_as` rather than the macros, so builds need no database.

pub mod agents;
pub mod audit;
pub mod events;
pub mod files;
pub mod guards;
pub mod journal;
pub mod links;
mod models;
pub mod roles;
pub mod sessions;
pub mod tokens;
pub mod unsyncable;
pub mod versions;

pub use agents::*;
pub use audit::*;
pub use events::*;
pub use files::*;
pub use guards::*;
pub use journal::*;
pub use links::*;
pub use models::*;
pub use roles::*;
pub use sessions::*;
pub use tokens::*;
pub use unsyncable::*;
pub use versions::*;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::config::{ConfigError, DatabaseConfig};

/// The schema in `migrations/`, embedded at build time. The owner of the schema runs it
/// (`portail-url-service migrate`, or a service started with the owner's URL).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. One direct connection is tried first, within 10 s, so that a database that
/// is down fails with its real cause (refused, auth, unknown database) rather than a pool
/// timeout, and never hangs.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    use sqlx::{ConnectOptions, Connection};
    let opts = cfg.connect_options()?;
    let target = format!("{}:{}", opts.get_host(), opts.get_port());
    let probe = tokio::time::timeout(Duration::from_secs(10), opts.connect())
        .await
        .map_err(|_| anyhow::anyhow!("timed out after 10s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
    probe.close().await.ok();
    Ok(PgPoolOptions::new()
        .max_connections(cfg.db_max_connections)
        .acquire_timeout(cfg.db_acquire_timeout.0)
        .connect_lazy_with(opts))
}

/// Applies pending migrations. Safe to run from several processes at once (sqlx takes an
/// advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// What a service does with the schema at start. The owner (or a superuser, or anyone on an
/// empty database) migrates. Any other role, such as an agent's, only checks that the schema
/// is as new as the binary, and refuses to start otherwise (a [`ConfigError`], exit code 2)
/// with the command that fixes it.
pub async fn prepare_schema(pool: &PgPool) -> anyhow::Result<()> {
    use anyhow::Context;
    match roles::schema_state(pool)
        .await
        .context("reading the schema's state")?
    {
        Schema::Owner => migrate(pool).await.context("running migrations")?,
        Schema::Current => {}
        Schema::Outdated { applied, latest } => anyhow::bail!(ConfigError::Invalid {
            var: "DATABASE_URL".into(),
            reason: format!(
                "the catalog's schema (migration {applied}) is older than this binary's ({latest}), and this role may not change it: run `portail-url-service migrate` with the owner's DATABASE_URL"
            ),
        }),
    }
    Ok(())
}

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("select 1").execute(pool).await.map(|_| ())
}
