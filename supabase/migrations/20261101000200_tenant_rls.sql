-- Row-level security for landed tables, and the clients' view of sync status.

-- Called by the data layer when it creates a table: only rows of the caller's tenant are visible
-- (tenant_id equals the tenant_id claim of the JWT). anon gets no grant and so sees nothing.
create or replace function synkro.enable_tenant_rls(target regclass) returns void
    language plpgsql
    as $$
begin
    execute format('alter table %s enable row level security', target);
    execute format('drop policy if exists synkro_tenant_isolation on %s', target);
    execute format(
        'create policy synkro_tenant_isolation on %s for select to authenticated '
        'using (tenant_id = (auth.jwt() ->> %L))',
        target, 'tenant_id');
    execute format('grant select on %s to authenticated', target);
    execute format('revoke all on %s from anon', target);
end
$$;
revoke all on function synkro.enable_tenant_rls(regclass) from public;

-- "Last synced at" per stream for client apps. The view runs with its owner's rights (the private
-- schema stays closed) and applies the same tenant filter itself.
create or replace view public.synkro_sync_status as
    select s.tenant_id,
           s.integration_id,
           s.stream,
           s.last_synced_at,
           s.rows_last_sync,
           s.last_run_id
      from synkro.sync_state s
     where s.tenant_id = (auth.jwt() ->> 'tenant_id');

revoke all on public.synkro_sync_status from public, anon;
grant select on public.synkro_sync_status to authenticated;
