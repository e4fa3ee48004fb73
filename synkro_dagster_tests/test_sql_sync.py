"""End to end through the data layer: an ERP in PostgreSQL or MariaDB synced into a fresh data layer
database, changed, and synced again — only the changes move, and the landed types are the source's."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from synkro_dagster.connectors.sql import SqlConnector
from synkro_dagster.contracts import Integration
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.demo.erp_source import create_demo_erp, touch_demo_erp
from synkro_dagster.specs.loader import load_specs

# The source fixtures (a scratch PostgreSQL database / MariaDB database) live beside the connector
# tests; importing them here registers them for this module.
from synkro_dagster_tests.test_sql_connector import (  # noqa: F401
    mariadb_skip_reason,
    mariadb_source_url,
    pg_source_url,
    source_url,
)

INTEGRATION = "acme_erp"


def _sync(layer: DataLayer, url: str, run_id: str) -> dict[str, LoadStats]:
    """One run of sync_erp for one integration: every stream from its committed cursor."""
    spec = load_specs()["erp"]
    integration = Integration(id=INTEGRATION, tenant="acme", spec="erp", config={"url": url})
    results: dict[str, LoadStats] = {}
    with SqlConnector(batch_size=25).session(spec, integration) as session:
        for stream in spec.streams:
            results[stream.name] = layer.sync(
                TableTarget.for_stream(spec, stream),
                lambda start, stream=stream: session.read(stream, start),
                LoadContext(
                    tenant_id="acme",
                    integration_id=INTEGRATION,
                    stream=stream.name,
                    run_id=run_id,
                ),
            )
    return results


def _landed(engine: sa.Engine, table: str, order_by: str = "id") -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"select * from public.{table} where integration_id = :i order by {order_by}"),
            {"i": INTEGRATION},
        )
        return [dict(r._mapping) for r in rows]


def _column_types(engine: sa.Engine, table: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'public' and table_name = :t"
            ),
            {"t": table},
        )
        return {name: kind for name, kind in rows}


def test_erp_sync_moves_only_changes_into_the_data_layer(
    source_url: str,  # noqa: F811 (the fixture imported above)
    database_url: str,
    engine: sa.Engine,
) -> None:
    counts = create_demo_erp(source_url, rows=30)
    layer = DataLayer(database_url=database_url)

    first = _sync(layer, source_url, "run-1")
    assert first["customers"].rows_read == 30 and first["customers"].rows_inserted == 30
    assert first["invoices"].rows_read == counts["invoices"]
    assert first["invoice_lines"].rows_read == counts["invoice_lines"]
    assert len(_landed(engine, "erp_customers")) == 30
    # The newest updated_at as the source typed it (PostgreSQL and MariaDB datetimes, ISO text).
    assert first["customers"].cursor_after.replace(" ", "T").startswith("2026-01-01T08:30:00")

    # The landed columns have the source's declared types, not types guessed from the values
    # (credit_limit values are all whole numbers).
    types = _column_types(engine, "erp_customers")
    assert types["credit_limit"] == "numeric"
    assert types["is_active"] == "boolean"
    assert types["updated_at"] == "timestamp without time zone"
    assert _column_types(engine, "erp_invoices")["issued_on"] == "date"
    assert _column_types(engine, "erp_open_balances")["open_amount"] == "numeric"

    touched = touch_demo_erp(source_url)
    second = _sync(layer, source_url, "run-2")

    # Customers: the boundary row (30) again plus the three changed; the merge dedupes 30.
    assert second["customers"].rows_read == 1 + len(touched["customers"])
    assert second["customers"].rows_inserted == 2
    customers = _landed(engine, "erp_customers")
    assert len(customers) == 32
    assert customers[0]["name"] == "Customer 00001 (renamed)"
    assert {c["_synkro_run_id"] for c in customers if c["id"] in touched["customers"]} == {"run-2"}
    assert {c["_synkro_run_id"] for c in customers if c["id"] not in (1, 30, 31, 32)} == {"run-1"}

    invoices = {i["id"]: i for i in _landed(engine, "erp_invoices")}
    assert second["invoices"].rows_read == 1 + len(touched["invoices"])
    assert invoices[touched["invoices"][0]]["status"] == "paid"
    assert len(invoices) == counts["invoices"] + 1

    # No cursor: the whole table again, swapped in as this integration's rows; only the
    # difference is written, so the unchanged lines are still those of run-1.
    replaced = second["invoice_lines"]
    assert replaced.rows_read == counts["invoice_lines"] + 1
    assert (replaced.rows_inserted, replaced.rows_updated, replaced.rows_deleted) == (1, 0, 0)
    assert replaced.rows_unchanged == counts["invoice_lines"]
    lines = _landed(engine, "erp_invoice_lines", order_by="invoice_id, line_no")
    assert len(lines) == counts["invoice_lines"] + 1
    assert sorted(line["_synkro_run_id"] for line in lines)[-2:] == ["run-1", "run-2"]
    assert [line["_synkro_run_id"] for line in lines].count("run-2") == 1

    assert layer.get_cursor(INTEGRATION, "customers") == second["customers"].cursor_after
    assert second["customers"].cursor_after > first["customers"].cursor_after

    # A third sync with nothing changed reads only the boundary rows.
    third = _sync(layer, source_url, "run-3")
    assert third["customers"].rows_read == len(touched["customers"])  # all at the same stamp
    assert third["customers"].rows_inserted == 0
    assert len(_landed(engine, "erp_customers")) == 32
