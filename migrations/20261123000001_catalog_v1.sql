-- Catalog schema v1: agents, the files they mirror, and each file's history.
-- A contract shared by portail-agent, portail-url-service and operators: never edit this file
-- once it has landed; add a new migration instead.

create table agents (
    id           bigserial primary key,
    -- AGENT_ID, default the host name. One row per agent, however often it restarts.
    name         text not null unique,
    hostname     text not null,
    root         text not null,
    bucket       text not null,
    prefix       text not null default '',
    created_at   timestamptz not null default now(),
    last_seen_at timestamptz not null default now()
);

create table files (
    id           bigserial primary key,
    agent_id     bigint not null references agents (id) on delete cascade,
    -- Relative to the agent's root, '/'-separated, UTF-8.
    path         text not null,
    s3_key       text not null,
    size_bytes   bigint not null check (size_bytes >= 0),
    mtime        timestamptz not null,
    -- Whole-file MD5, 32 lowercase hex chars. Null until the content has been hashed.
    md5          text check (md5 ~ '^[0-9a-f]{32}$'),
    etag         text,
    content_type text,
    status       text not null check (status in ('pending', 'synced', 'deleted', 'error')),
    last_error   text,
    synced_at    timestamptz,
    deleted_at   timestamptz,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    -- Change detection beyond size and mtime, where the platform has them.
    inode        bigint,
    ctime        timestamptz,
    unique (agent_id, path)
);

create index files_s3_key_idx on files (s3_key);
-- Passes read an agent's rows in bytewise path order (the scan's order), in keyset batches.
create index files_agent_path_c_idx on files (agent_id, path collate "C");
create index files_agent_status_idx on files (agent_id, status);

create table file_events (
    id       bigserial primary key,
    file_id  bigint not null references files (id) on delete cascade,
    kind     text not null check (kind in ('uploaded', 'updated', 'deleted', 'renamed', 'failed')),
    at       timestamptz not null default now(),
    details  jsonb not null default '{}'::jsonb
);

create index file_events_file_at_idx on file_events (file_id, at desc);
