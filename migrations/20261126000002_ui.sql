-- Issue 15: the web pages under /ui/.
--
-- Sessions: a signed-in browser holds a random cookie; only its SHA-256 is stored, with the
-- API token it was opened with (revoking the token ends its sessions: a session is honoured
-- only while its token is not revoked) and the CSRF token its forms must carry.
create table ui_sessions (
    id_sha256   text primary key check (id_sha256 ~ '^[0-9a-f]{64}$'),
    token_id    bigint not null references api_tokens (id) on delete cascade,
    csrf        text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
create index ui_sessions_token_idx on ui_sessions (token_id);
create index ui_sessions_expires_idx on ui_sessions (expires_at);

-- Browsing folder by folder: each row's folder (its path up to and including the last '/';
-- '' at the root), so a folder's files are one index range, in name order, at any depth.
alter table files add column dir text not null
    generated always as (coalesce(substring(path from '^(.*/)'), '')) stored;
create index files_agent_dir_path_idx on files (agent_id, dir collate "C", path collate "C");
