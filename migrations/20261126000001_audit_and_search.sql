-- Issue 15: search by name, and an audit log of every download.
--
-- Search: `GET /v1/files?q=TEXT` matches a case-insensitive substring anywhere in the path
-- (ILIKE '%TEXT%'). A trigram index answers that without reading every row.
create extension if not exists pg_trgm;
create index files_path_trgm_idx on files using gin (path gin_trgm_ops);

-- One row per presigned URL issued (API or UI) and per share-link click, whatever the outcome.
-- No foreign key to files: an entry outlives the file it names (kept for AUDIT_RETENTION).
create table audit_log (
    id          bigserial primary key,
    at          timestamptz not null default now(),
    file_id     bigint,
    -- An API token's name, or `link:<id>` for a share link (`link:unknown` for a token that
    -- matches none).
    actor       text not null,
    channel     text not null check (channel in ('api', 'ui', 'link')),
    -- issued, redirected, proxied, not_found, gone, refused, error.
    outcome     text not null,
    client_ip   inet,
    user_agent  text
);

create index audit_log_at_idx on audit_log (at);
create index audit_log_file_idx on audit_log (file_id, id);
create index audit_log_actor_idx on audit_log (actor, id);
