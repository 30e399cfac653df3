-- How each file's object is encrypted at rest, as the agent wrote it (issue 16): null (the
-- bucket's default), 'AES256', 'aws:kms', or 'SSE-C' (a customer key the agent holds). The
-- url-service refuses links to SSE-C objects: a browser cannot send the key.
alter table files add column encryption text
    check (encryption in ('AES256', 'aws:kms', 'SSE-C'));
