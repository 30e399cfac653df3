-- Multipart uploads in flight, written before the first part is sent and removed once the
-- upload completes or is aborted. After a crash, the agent aborts whatever is left here, so
-- no multipart upload is left behind (stores that cannot list uploads included).
create table multipart_uploads (
    id         bigserial primary key,
    agent_id   bigint not null references agents (id) on delete cascade,
    s3_key     text not null,
    upload_id  text not null unique,
    started_at timestamptz not null default now()
);

-- Entries the last full pass found but could not sync because of their name: not UTF-8, or a
-- key over 1024 bytes. `path` is the lossy text; `raw_hex` the exact bytes of non-UTF-8 names,
-- so an operator can find and rename them. Replaced as a whole by every full pass.
create table unsyncable_entries (
    id       bigserial primary key,
    agent_id bigint not null references agents (id) on delete cascade,
    path     text not null,
    raw_hex  text,
    reason   text not null,
    seen_at  timestamptz not null default now()
);

create index unsyncable_entries_agent_idx on unsyncable_entries (agent_id);
