-- API tokens for portail-url-service. Only the SHA-256 of a token is stored; the token itself
-- is printed once, by `portail-url-service token create`.
create table api_tokens (
    id           bigserial primary key,
    name         text not null unique,
    -- hex SHA-256 of the bearer token.
    token_sha256 text not null unique check (token_sha256 ~ '^[0-9a-f]{64}$'),
    -- Scope: when set, the token sees only files under this path prefix / of this agent.
    path_prefix  text,
    agent_name   text,
    created_at   timestamptz not null default now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
