-- Issue 14: a search within one agent walks that agent's rows in id order (see
-- catalog::list_files). The new index replaces (agent_id, status), which it also serves, so a
-- sync still maintains the same number of indexes on `files`.
create index files_agent_status_id_idx on files (agent_id, status, id);
drop index files_agent_status_idx;
