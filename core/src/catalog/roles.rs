//! `agent_roles`, the agents' login roles, and the schema check at start.
//!
//! In: the owner's pool (to add, rotate and remove an agent's role), or any pool (to check the
//! schema and which agent a role is bound to). Out: login roles that are members of
//! `portail_agent` (whose row-level security policies keep each to its own rows, see
//! `migrations/20261204000001_agent_roles.sql`), and their bindings.

use sqlx::PgPool;

use super::MIGRATOR;

/// A login role bound to an agent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentRole {
    /// The PostgreSQL role.
    pub role_name: String,
    /// The agent it is bound to (AGENT_ID).
    pub agent_name: String,
    /// When `agent add` created it.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Creates a login role with `password`, a member of `portail_agent`, and binds it to
/// `agent_name`, in one transaction. `role` and `password` must be our own generated
/// identifiers (DDL takes no bind parameters); they are checked to be lowercase hex and `_`.
pub async fn add_agent_role(
    pool: &PgPool,
    agent_name: &str,
    role: &str,
    password: &str,
) -> sqlx::Result<()> {
    assert_plain(role);
    assert_plain(password);
    let mut tx = pool.begin().await?;
    sqlx::query("insert into agent_roles (role_name, agent_name) values ($1, $2)")
        .bind(role)
        .bind(agent_name)
        .execute(&mut *tx)
        .await?;
    let create =
        format!("create role \"{role}\" login password '{password}' in role portail_agent");
    sqlx::query(&create).execute(&mut *tx).await?;
    tx.commit().await
}

/// Gives the role bound to `agent_name` a new password; returns the role, or None if the
/// agent has none.
pub async fn rotate_agent_role(
    pool: &PgPool,
    agent_name: &str,
    password: &str,
) -> sqlx::Result<Option<String>> {
    assert_plain(password);
    let Some(role) = role_of(pool, agent_name).await? else {
        return Ok(None);
    };
    assert_plain(&role);
    let alter = format!("alter role \"{role}\" password '{password}'");
    sqlx::query(&alter).execute(pool).await?;
    Ok(Some(role))
}

/// Drops the role bound to `agent_name` and its binding; returns the role, or None. The
/// agent's rows stay (its history is not the role's to take along).
pub async fn remove_agent_role(pool: &PgPool, agent_name: &str) -> sqlx::Result<Option<String>> {
    let mut tx = pool.begin().await?;
    let role: Option<String> =
        sqlx::query_scalar("delete from agent_roles where agent_name = $1 returning role_name")
            .bind(agent_name)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(role) = &role {
        assert_plain(role);
        sqlx::query(&format!("drop role if exists \"{role}\""))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(role)
}

/// Every agent role, by agent name.
pub async fn agent_roles(pool: &PgPool) -> sqlx::Result<Vec<AgentRole>> {
    sqlx::query_as::<_, AgentRole>(
        "select role_name, agent_name, created_at from agent_roles order by agent_name",
    )
    .fetch_all(pool)
    .await
}

async fn role_of(pool: &PgPool, agent_name: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select role_name from agent_roles where agent_name = $1")
        .bind(agent_name)
        .fetch_optional(pool)
        .await
}

/// The agent the connected role is bound to; None for a role bound to none (the owner).
pub async fn bound_agent(pool: &PgPool) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select agent_name from agent_roles where role_name = current_user")
        .fetch_optional(pool)
        .await
}

/// How the connected role meets the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// The role owns the schema (or is a superuser, or there is no schema yet): it migrates.
    Owner,
    /// Another role, and the schema is as new as this binary.
    Current,
    /// Another role, and the schema is older than this binary: the owner must migrate.
    Outdated {
        /// The newest migration applied.
        applied: i64,
        /// The newest migration this binary knows.
        latest: i64,
    },
}

/// Whether the connected role may migrate, and if not, whether the schema is current.
pub async fn schema_state(pool: &PgPool) -> sqlx::Result<Schema> {
    // pg_class by oid and a setting, not the pg_tables view: planning the view's joins cost
    // about 10 ms at every start (`scripts/bench` case 2, a no-change resync).
    let owner: bool = sqlx::query_scalar(
        "select coalesce((select pg_get_userbyid(relowner) = current_user from pg_class
                          where oid = to_regclass('_sqlx_migrations')),
                         true)
             or current_setting('is_superuser') = 'on'",
    )
    .fetch_one(pool)
    .await?;
    if owner {
        return Ok(Schema::Owner);
    }
    let applied: Option<i64> =
        sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
            .fetch_one(pool)
            .await?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = applied.unwrap_or(0);
    Ok(if applied >= latest {
        Schema::Current
    } else {
        Schema::Outdated { applied, latest }
    })
}

fn assert_plain(s: &str) {
    assert!(
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_'),
        "a generated role name or password must be lowercase alphanumeric"
    );
}
