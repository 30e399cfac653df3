//! SQL on `guard_ledger` and `guard_holds`: the agent's guards over time. The ledger counts what
//! passed a guard within a window; a hold says what a tripped guard holds and what an operator
//! released. Two small tables with one job, so they share a module.

use sqlx::PgPool;

/// What passed a guard within a window.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct LedgerWindow {
    /// Files that passed within the window.
    pub passed: i64,
    /// Files tracked when the oldest batch in the window ran; None for an empty window.
    pub base: Option<i64>,
    /// Seconds since the oldest batch in the window; None for an empty window.
    pub oldest_secs: Option<f64>,
}

/// A tripped guard's hold.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GuardHold {
    /// The guard's metric label.
    pub guard: String,
    /// Its limit when it tripped; a higher limit now lifts the hold.
    pub guard_limit: Option<i64>,
    /// Files held.
    pub held: i64,
    /// The first of them.
    pub sample: Vec<String>,
    /// Since when.
    pub held_since: chrono::DateTime<chrono::Utc>,
    /// When an operator released it, if they did.
    pub released_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Who released it.
    pub released_by: Option<String>,
    /// How many held files may still pass because of the release.
    pub allowance: i64,
}

/// What passed `kind`'s guard within the last `window_secs` seconds.
pub async fn ledger_window(
    pool: &PgPool,
    agent_id: i64,
    kind: &str,
    window_secs: f64,
) -> sqlx::Result<LedgerWindow> {
    sqlx::query_as::<_, LedgerWindow>(
        "select coalesce(sum(count), 0)::int8 as passed,
                (array_agg(tracked order by at, id))[1] as base,
                extract(epoch from now() - min(at))::float8 as oldest_secs
         from guard_ledger
         where agent_id = $1 and kind = $2 and at > now() - make_interval(secs => $3)",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(window_secs)
    .fetch_one(pool)
    .await
}

/// Records that `count` files passed `kind`'s guard with `tracked` files tracked, and forgets
/// rows older than the window.
pub async fn record_passed(
    pool: &PgPool,
    agent_id: i64,
    kind: &str,
    count: i64,
    tracked: i64,
    window_secs: f64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "delete from guard_ledger
         where agent_id = $1 and kind = $2 and at < now() - make_interval(secs => $3)",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(window_secs)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into guard_ledger (agent_id, kind, count, tracked) values ($1, $2, $3, $4)",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(count)
    .bind(tracked)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The hold on `kind`, if a guard tripped.
pub async fn guard_hold(
    pool: &PgPool,
    agent_id: i64,
    kind: &str,
) -> sqlx::Result<Option<GuardHold>> {
    sqlx::query_as::<_, GuardHold>(
        "select guard, guard_limit, held, sample, held_since, released_at, released_by, allowance
         from guard_holds where agent_id = $1 and kind = $2",
    )
    .bind(agent_id)
    .bind(kind)
    .fetch_optional(pool)
    .await
}

/// What a guard holds, as [`set_hold`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHold<'a> {
    /// `deletes` or `changes`.
    pub kind: &'a str,
    /// The guard's metric label.
    pub guard: &'a str,
    /// Its limit now.
    pub guard_limit: Option<i64>,
    /// Files held.
    pub held: i64,
    /// The first of them.
    pub sample: &'a [String],
}

/// Records what a guard holds now. Keeps `held_since` and any release.
pub async fn set_hold(pool: &PgPool, agent_id: i64, h: &NewHold<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "insert into guard_holds (agent_id, kind, guard, guard_limit, held, sample)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (agent_id, kind) do update
         set guard = excluded.guard, guard_limit = excluded.guard_limit, held = excluded.held,
             sample = excluded.sample, updated_at = now()",
    )
    .bind(agent_id)
    .bind(h.kind)
    .bind(h.guard)
    .bind(h.guard_limit)
    .bind(h.held)
    .bind(h.sample)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Uses `n` of a release's allowance and records that `still_held` files are held. The hold
/// ends once nothing is held (an allowance left over with nothing to let through is dropped).
pub async fn use_allowance(
    pool: &PgPool,
    agent_id: i64,
    kind: &str,
    n: i64,
    still_held: i64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update guard_holds set allowance = greatest(allowance - $3, 0), held = $4,
                updated_at = now()
         where agent_id = $1 and kind = $2",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(n)
    .bind(still_held)
    .execute(&mut *tx)
    .await?;
    end_spent_hold(&mut tx, agent_id, kind).await?;
    tx.commit().await
}

/// Ends a hold that holds nothing.
async fn end_spent_hold(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    agent_id: i64,
    kind: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "delete from guard_holds
         where agent_id = $1 and kind = $2 and held = 0",
    )
    .bind(agent_id)
    .bind(kind)
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Releases what `kind`'s guard holds for agent `agent_name`: the held files may pass once, and
/// the window starts afresh. Returns the hold as it was, or None when nothing was held.
pub async fn release_hold(
    pool: &PgPool,
    agent_name: &str,
    kind: &str,
    released_by: &str,
) -> sqlx::Result<Option<GuardHold>> {
    let mut tx = pool.begin().await?;
    let hold = sqlx::query_as::<_, GuardHold>(
        "update guard_holds h
         set released_at = now(), released_by = $3, allowance = h.held, updated_at = now()
         from agents a
         where a.id = h.agent_id and a.name = $1 and h.kind = $2 and h.held > 0
         returning h.guard, h.guard_limit, h.held, h.sample, h.held_since, h.released_at, h.released_by,
                   h.allowance",
    )
    .bind(agent_name)
    .bind(kind)
    .bind(released_by)
    .fetch_optional(&mut *tx)
    .await?;
    if hold.is_some() {
        sqlx::query(
            "delete from guard_ledger l using agents a
             where a.id = l.agent_id and a.name = $1 and l.kind = $2",
        )
        .bind(agent_name)
        .bind(kind)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(hold)
}
