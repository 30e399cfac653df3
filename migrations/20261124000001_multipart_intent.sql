-- Multipart intent: the journal row is written before CreateMultipartUpload is sent, with no
-- upload id yet, so a crash while that call is in flight still leaves a trace. At start the
-- agent lists the store's uploads for exactly that key and aborts them (issue 17).
alter table multipart_uploads alter column upload_id drop not null;
