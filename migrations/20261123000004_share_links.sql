-- Revocable share links. Only the SHA-256 of a link token is stored; the token is the secret
-- in the link URL (/l/<token>) and is shown once, when the link is created. Every click mints
-- a fresh short-lived presigned URL, so a link can outlive the 7-day SigV4 limit and can be
-- revoked at any time.
create table share_links (
    id             bigserial primary key,
    file_id        bigint not null references files (id) on delete cascade,
    token_sha256   text not null unique check (token_sha256 ~ '^[0-9a-f]{64}$'),
    -- The API token that created it.
    created_by     text not null,
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null,
    max_downloads  integer check (max_downloads > 0),
    downloads      integer not null default 0,
    revoked_at     timestamptz
);

create index share_links_file_idx on share_links (file_id);
