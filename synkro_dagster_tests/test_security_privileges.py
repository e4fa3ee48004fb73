"""Synced tables are read-only for the client-facing roles, even with Supabase's default grants."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import sqlparse

from synkro_dagster.contracts import BatchesPart, StreamRead
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget


def _load(layer: DataLayer, schema: str, integration: str, tenant: str, ids: list[int]) -> None:
    layer.load(
        TableTarget(schema=schema, table="shop_orders", primary_key=["id"], write_mode="merge"),
        StreamRead(parts=iter([BatchesPart(iter([[{"id": i, "v": "x"} for i in ids]]))])),
        LoadContext(tenant_id=tenant, integration_id=integration, stream="orders", run_id="r1"),
    )


def _as(engine: sa.Engine, role: str, statement: str, tenant: str = "A") -> list[tuple]:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"set local role {role}")
        conn.execute(
            sa.text("select set_config('request.jwt.claims', :c, true)"),
            {"c": f'{{"tenant_id": "{tenant}", "role": "{role}"}}'},
        )
        result = conn.exec_driver_sql(statement)
        return [tuple(r) for r in result.all()] if result.returns_rows else []


@pytest.mark.parametrize("schema", ["public", "crm"])
def test_authenticated_cannot_write_or_truncate_with_supabase_default_privileges(
    database_url: str, engine: sa.Engine, schema: str
) -> None:
    with engine.begin() as conn:
        # What a Supabase project grants out of the box (supabase/postgres init scripts).
        conn.exec_driver_sql(f"create schema if not exists {schema}")
        conn.exec_driver_sql(f"grant usage on schema {schema} to anon, authenticated")
        conn.exec_driver_sql(
            f"alter default privileges in schema {schema} "
            "grant all on tables to anon, authenticated, service_role"
        )
    layer = DataLayer(database_url=database_url)
    _load(layer, schema, "acme", "A", [1, 2])
    _load(layer, schema, "bolt", "B", [3])
    table = f"{schema}.shop_orders"

    attacks = [
        f"truncate {table}",
        f"insert into {table} (tenant_id, integration_id, id) values ('B', 'bolt', 99)",
        f"update {table} set v = 'pwned'",
        f"delete from {table}",
        f"alter table {table} disable row level security",
    ]
    for role in ("authenticated", "anon"):
        for statement in attacks:
            with pytest.raises(sa.exc.DBAPIError) as denied:
                _as(engine, role, statement)
            assert isinstance(
                denied.value.orig,
                psycopg.errors.InsufficientPrivilege,
            ), statement
    assert _as(engine, "authenticated", f"select id from {table} order by id") == [(1,), (2,)]
    with engine.connect() as conn:
        assert conn.exec_driver_sql(f"select count(*) from {table}").scalar() == 3
        grants = conn.exec_driver_sql(
            "select grantee, privilege_type from information_schema.role_table_grants"
            f" where table_schema = '{schema}' and table_name = 'shop_orders'"
            " and grantee in ('anon', 'authenticated') order by 1, 2"
        ).all()
    assert [tuple(g) for g in grants] == [("authenticated", "SELECT")]

    # The schema's default privileges no longer hand write rights to the API roles.
    with engine.begin() as conn:
        conn.exec_driver_sql(f"create table {schema}.created_later (id int)")
    for statement in (
        f"insert into {schema}.created_later values (1)",
        f"truncate {schema}.created_later",
    ):
        with pytest.raises(sa.exc.DBAPIError):
            _as(engine, "authenticated", statement)


def test_the_status_view_is_select_only(database_url: str, engine: sa.Engine) -> None:
    _load(DataLayer(database_url=database_url), "public", "acme", "A", [1])
    with pytest.raises(sa.exc.DBAPIError):
        _as(engine, "authenticated", "delete from public.synkro_sync_status")
    assert _as(engine, "authenticated", "select stream from public.synkro_sync_status") == [
        ("orders",)
    ]


def _hook_sql() -> str:
    text = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    [hook] = [textwrap.dedent(b) for b in blocks if "custom_access_token_hook" in b]
    return hook


def test_the_documented_access_token_hook_takes_tenant_id_only_from_app_metadata(
    database_url: str, engine: sa.Engine
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "do $$ begin if not exists (select 1 from pg_roles where rolname = "
            "'supabase_auth_admin') then create role supabase_auth_admin nologin; end if; end $$"
        )
        for statement in sqlparse.split(_hook_sql()):
            if statement.strip():
                conn.exec_driver_sql(statement)
    _load(DataLayer(database_url=database_url), "public", "acme", "acme", [1])
    _load(DataLayer(database_url=database_url), "public", "evil", "evil", [2])

    def token(claims: dict) -> dict:
        event = json.dumps({"user_id": "u1", "claims": claims})
        with engine.connect() as conn:
            return conn.execute(
                sa.text("select public.custom_access_token_hook(cast(:e as jsonb))"), {"e": event}
            ).scalar()["claims"]

    # The user edited user_metadata (and even a top-level claim in the request): ignored.
    claims = token(
        {
            "sub": "u1",
            "role": "authenticated",
            "tenant_id": "evil",
            "user_metadata": {"tenant_id": "evil"},
            "app_metadata": {"tenant_id": "acme"},
        }
    )
    assert claims["tenant_id"] == "acme"
    with engine.begin() as conn:
        conn.exec_driver_sql("set local role authenticated")
        conn.execute(
            sa.text("select set_config('request.jwt.claims', :c, true)"), {"c": json.dumps(claims)}
        )
        assert conn.exec_driver_sql("select tenant_id, id from shop_orders").all() == [("acme", 1)]
    # No tenant in app_metadata: no tenant claim at all, so no synced row is visible.
    assert "tenant_id" not in token(
        {"sub": "u2", "tenant_id": "evil", "user_metadata": {"tenant_id": "evil"}}
    )
