-- Least privilege in the catalog (issue 28): one login role per agent, bound to its name, that
-- sees and writes only its own rows, through row-level security, and owns nothing.
--
-- `portail-url-service agent add NAME` (run with the owner's URL) creates the login role, a
-- member of `portail_agent`, and binds it here. The owner of the tables (who runs the
-- migrations) bypasses row-level security, as PostgreSQL does for owners, so the services and
-- the tests that connect as the owner see what they saw before.

-- Roles belong to the cluster, not the database: create the group once, whoever comes first.
do $$
begin
    create role portail_agent nologin;
exception when duplicate_object or unique_violation then
    null;
end
$$;

-- Which login role is which agent. Only the owner writes it (`agent add`, `agent remove`).
create table agent_roles (
    role_name  text primary key,
    agent_name text not null unique,
    created_at timestamptz not null default now()
);

-- The agent the current login role is bound to (null for any other role). Invoker rights, so
-- it reads through the policies below; stable, so a statement evaluates it once.
create function portail_agent_name() returns text
    language sql stable
    as $$ select agent_name from agent_roles where role_name = current_user $$;

create function portail_agent_id() returns bigint
    language sql stable
    as $$ select id from agents where name = portail_agent_name() $$;

alter table agent_roles enable row level security;
create policy own_binding on agent_roles to portail_agent
    using (role_name = current_user);
grant select on agent_roles to portail_agent;

-- The agent's own row: registered (or updated) at start under its bound name only.
alter table agents enable row level security;
create policy own_agent on agents to portail_agent
    using (name = portail_agent_name())
    with check (name = portail_agent_name());
grant select, insert, update on agents to portail_agent;

-- Every per-agent table: its own rows only, for reading and for writing.
do $$
declare
    t text;
begin
    foreach t in array array['files', 'file_versions', 'multipart_uploads',
                             'unsyncable_entries', 'guard_ledger', 'guard_holds'] loop
        execute format('alter table %I enable row level security', t);
        execute format(
            'create policy own_rows on %I to portail_agent
                 using (agent_id = portail_agent_id())
                 with check (agent_id = portail_agent_id())', t);
        execute format('grant select, insert, update, delete on %I to portail_agent', t);
    end loop;
end
$$;

-- Events gain the agent's id, so their policy reads no other table: an event is written in
-- the same statement as its file's row, and a check that looked the file up would not see a
-- row that statement inserts. The pair (file_id, agent_id) must match the file's, so an event
-- cannot be hung on another agent's file.
alter table file_events add column agent_id bigint;
update file_events e set agent_id = f.agent_id from files f where f.id = e.file_id;
alter table file_events alter column agent_id set not null;
alter table files add constraint files_id_agent_key unique (id, agent_id);
alter table file_events add constraint file_events_file_agent_fkey
    foreign key (file_id, agent_id) references files (id, agent_id) on delete cascade;
alter table file_events enable row level security;
create policy own_events on file_events to portail_agent
    using (agent_id = portail_agent_id())
    with check (agent_id = portail_agent_id());
grant select, insert, update, delete on file_events to portail_agent;

-- The id sequences of the tables above, and no other (not the audit log's, not the tokens').
do $$
declare
    t text;
    seq text;
begin
    foreach t in array array['agents', 'files', 'file_versions', 'file_events',
                             'multipart_uploads', 'unsyncable_entries', 'guard_ledger'] loop
        seq := pg_get_serial_sequence(t, 'id');
        if seq is not null then
            execute format('grant usage, select on sequence %s to portail_agent', seq);
        end if;
    end loop;
end
$$;

-- The schema check at start (is the catalog as new as the binary?) reads the migrations table.
grant select on _sqlx_migrations to portail_agent;

-- No DDL for anyone but the owner (PostgreSQL 15 already revokes this from PUBLIC).
revoke create on schema public from public;

-- Tokens, sessions, share links and the audit log stay out of reach: no grant at all.
