-- History (issue 13): one row per stored content of a path, so that any tree can be restored
-- as of any time. A version is current from valid_from until valid_to (null: still current);
-- the bytes are at s3_key (current, or with version_id when the bucket keeps versions), or at
-- history_key once a HISTORY=prefix copy took them out of the way of an overwrite or a delete.
-- Written in the same statements as the `files` rows (core/src/catalog/files.rs).

-- When the current bytes were first recorded under the file's key (a change of mtime or mode
-- alone keeps it): the time in a HISTORY=prefix copy's key.
alter table files add column content_since timestamptz;

-- The storage class the agent wrote the object in (issue 16), null for the bucket's default:
-- the url-service refuses links to archived objects (GLACIER, DEEP_ARCHIVE), which S3 serves
-- only after a RestoreObject.
alter table files add column storage_class text;

create table file_versions (
    id          bigserial primary key,
    file_id     bigint not null references files (id) on delete cascade,
    -- Denormalised for the per-agent indexes; no foreign key of its own (one check less per
    -- row on the upload path): the rows go with their file, which goes with its agent.
    agent_id    bigint not null,
    path        text not null,
    valid_from  timestamptz not null,
    valid_to    timestamptz check (valid_to >= valid_from),
    size_bytes  bigint not null check (size_bytes >= 0),
    md5         text not null check (md5 ~ '^[0-9a-f]{32}$'),
    mtime       timestamptz not null,
    -- st_mode (type bits included), uid and gid; null when unknown (rows from before this
    -- migration, or objects written by other tools).
    mode        integer,
    uid         bigint,
    gid         bigint,
    s3_key      text not null,
    -- The S3 VersionId of the upload, when the bucket keeps versions.
    version_id  text,
    -- Where a HISTORY=prefix copy put the bytes when this version stopped being current.
    history_key text,
    encryption  text,
    -- How the version began ('uploaded', 'updated', 'renamed', 'rebuilt') and ended.
    event       text not null,
    ended_by    text check (ended_by in ('overwritten', 'deleted'))
);

-- A file's versions, newest first (`history PATH`, GET /v1/files/{id}/versions), and its
-- current one when an overwrite or a delete ends it (a file has few versions).
create index file_versions_file_idx on file_versions (file_id, valid_from desc);
-- The current version of each path, in path order (restore as of now; closing on overwrite).
create index file_versions_current_idx on file_versions (agent_id, path collate "C")
    where valid_to is null;
-- Versions that ended after a time (restore --at), and expired ones (purge).
create index file_versions_ended_idx on file_versions (agent_id, valid_to)
    where valid_to is not null;

-- Every content the catalog vouches for today becomes a current version.
update files set content_since = coalesce(synced_at, updated_at) where md5 is not null;
insert into file_versions (file_id, agent_id, path, valid_from, size_bytes, md5, mtime, s3_key,
                           encryption, event)
select id, agent_id, path, content_since, size_bytes, md5, mtime, s3_key, encryption, 'uploaded'
from files where md5 is not null and status in ('synced', 'error');
