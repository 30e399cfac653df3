-- Guards over time (issue 17).
--
-- `guard_ledger`: what passed a guard, one row per batch, so deletes are counted over a rolling
-- DELETE_WINDOW and content changes over CHANGE_WINDOW, across restarts.
create table guard_ledger (
    id       bigserial primary key,
    agent_id bigint not null references agents (id) on delete cascade,
    kind     text not null check (kind in ('deletes', 'changes')),
    at       timestamptz not null default now(),
    count    bigint not null check (count > 0),
    -- Files tracked when the batch ran: the oldest row in a window gives the window's base.
    tracked  bigint not null check (tracked >= 0)
);

create index guard_ledger_agent_kind_at_idx on guard_ledger (agent_id, kind, at);

-- `guard_holds`: what a tripped guard holds now (deletes, or uploads of changed files), and an
-- operator's release (`portail-agent release-deletes` / `release-changes`). While a row has no
-- allowance left, the agent holds every further one of that kind.
create table guard_holds (
    agent_id    bigint not null references agents (id) on delete cascade,
    kind        text not null check (kind in ('deletes', 'changes')),
    -- The guard that tripped (the metric label), how many files it holds, the first of them.
    guard       text not null,
    -- The guard's limit when it tripped (MAX_DELETE, MAX_DELETE_PERCENT or MAX_CHANGE_PERCENT):
    -- a restart with that limit raised lifts the hold, as a release does.
    guard_limit bigint,
    held        bigint not null check (held >= 0),
    sample      text[] not null default '{}',
    held_since  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    -- Set by a release: that many of the held files may pass, once.
    released_at timestamptz,
    released_by text,
    allowance   bigint not null default 0 check (allowance >= 0),
    primary key (agent_id, kind)
);
