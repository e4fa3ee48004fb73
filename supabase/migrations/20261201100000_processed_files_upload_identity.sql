-- A file drop is an upload, not a content: synkro.processed_files is keyed by the upload
-- (stream, file name, the manifest's export id, content hash), so a new export whose bytes equal
-- an older one's loads again, while the same upload arriving twice is still skipped.
-- Streams that opt in to content-level dedupe (files.dedupe: content) record `<stream>@<hash>`:
-- the same content under any name is then loaded once.
alter table synkro.processed_files add column if not exists export_id text;
alter table synkro.processed_files add column if not exists dedupe text not null default 'upload'
    check (dedupe in ('upload', 'content'));
alter table synkro.processed_files add column if not exists upload_key text
    generated always as (
        case when dedupe = 'content' then stream || '@' || content_hash
             else stream || '/' || file_name || coalesce('#' || export_id, '') || '@' || content_hash
        end
    ) stored;

alter table synkro.processed_files drop constraint if exists processed_files_pkey;
alter table synkro.processed_files add primary key (integration_id, upload_key);

-- Content-level dedupe asks "was this content loaded into this stream before, by any name?"
create index if not exists processed_files_content_idx
    on synkro.processed_files (integration_id, stream, content_hash);
