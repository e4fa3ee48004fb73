-- Synkro's private schema: the integrations registry and per-stream sync state.
-- Not exposed to the client API: only the service (table owner) reads and writes it.
create schema if not exists synkro;
revoke all on schema synkro from public;

create table if not exists synkro.integrations (
    id          text primary key check (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    tenant      text not null check (length(tenant) > 0),
    spec        text not null,
    config      jsonb not null default '{}'::jsonb,
    secrets     text,          -- Fernet token of a JSON object; never plaintext
    schedule    text,          -- cron expression, UTC
    enabled     boolean not null default true,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
create index if not exists integrations_spec_idx on synkro.integrations (spec);

-- One row per (integration, stream). Written in the same transaction as the stream's data.
create table if not exists synkro.sync_state (
    integration_id  text not null,
    stream          text not null,
    tenant_id       text not null,
    cursor          text,
    state           jsonb not null default '{}'::jsonb,
    rows_last_sync  bigint,
    last_synced_at  timestamptz,
    last_run_id     text,
    primary key (integration_id, stream)
);

-- Files loaded by the file-drop engine, by content hash, recorded with their rows (exactly once).
create table if not exists synkro.processed_files (
    integration_id  text not null,
    content_hash    text not null,
    stream          text not null,
    file_name       text not null,
    rows_loaded     bigint not null default 0,
    run_id          text,
    processed_at    timestamptz not null default now(),
    primary key (integration_id, content_hash)
);
