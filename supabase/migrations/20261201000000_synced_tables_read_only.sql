-- Synced tables are read-only for the client-facing API roles.
--
-- On Supabase, `anon` and `authenticated` receive ALL privileges on every new table in `public`
-- through default privileges, and TRUNCATE bypasses row-level security: a signed-in client could
-- empty another tenant's rows. Each synced table therefore keeps only SELECT for `authenticated`
-- (filtered by the tenant policy) and nothing for `anon`, and the default privileges of the target
-- schema stop granting write privileges to either role for tables the data layer creates later.

create or replace function synkro.enable_tenant_rls(target regclass) returns void
    language plpgsql
    as $$
declare
    target_schema text;
begin
    select n.nspname into target_schema
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = target;
    execute format('alter table %s enable row level security', target);
    execute format('drop policy if exists synkro_tenant_isolation on %s', target);
    execute format(
        'create policy synkro_tenant_isolation on %s for select to authenticated '
        'using (tenant_id = (auth.jwt() ->> %L))',
        target, 'tenant_id');
    -- Whatever default privileges granted, keep exactly SELECT for authenticated.
    execute format('revoke all on %s from public, anon, authenticated', target);
    execute format('grant select on %s to authenticated', target);
    -- Tables this role creates in the schema from now on start without write privileges for
    -- the API roles (Supabase's own defaults grant them ALL in public).
    execute format(
        'alter default privileges in schema %I revoke insert, update, delete, truncate, '
        'references, trigger on tables from anon, authenticated',
        target_schema);
end
$$;
revoke all on function synkro.enable_tenant_rls(regclass) from public;

-- Tables synced before this migration: the same treatment.
do $$
declare
    synced regclass;
begin
    for synced in
        select distinct p.polrelid::regclass
          from pg_policy p
         where p.polname = 'synkro_tenant_isolation'
    loop
        perform synkro.enable_tenant_rls(synced);
    end loop;
end
$$;

-- The clients' status view: SELECT only as well.
revoke all on public.synkro_sync_status from public, anon, authenticated;
grant select on public.synkro_sync_status to authenticated;
