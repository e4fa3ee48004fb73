"""Source types carried over: a SQL source's numeric(10,2), varchar(n), NOT NULL and column comments
land as declared (PostgreSQL and MariaDB sources), spec-declared sizes hold for files, and a value
that no longer fits widens the column instead of being rounded or cut."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.sql import SqlConnector
from synkro_dagster.connectors.streams import read_stream
from synkro_dagster.contracts import Integration
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import drop

# The scratch source databases (PostgreSQL and MariaDB) live beside the SQL connector tests.
from synkro_dagster_tests.test_sql_connector import (  # noqa: F401
    mariadb_skip_reason,
    mariadb_source_url,
    pg_source_url,
    source_url,
)

SYSTEM = {"tenant_id", "integration_id", "_synkro_synced_at", "_synkro_run_id"}


def _sync(
    layer: DataLayer,
    spec: SourceSpec,
    stream: str,
    session: Any,
    run: str,
    integration: Integration,
) -> LoadStats:
    s = spec.stream(stream)
    read = read_stream(session, spec, s, integration, layer.get_cursor(integration.id, stream))
    return layer.load(
        TableTarget.for_stream(spec, s),
        read,
        LoadContext(tenant_id="acme", integration_id=integration.id, stream=stream, run_id=run),
    )


def _described(engine: sa.Engine, table: str) -> dict[str, tuple[str, bool, str | None]]:
    """{column: (format_type, not null, comment)} of a landed table."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
                " col_description(a.attrelid, a.attnum) from pg_attribute a"
                " where a.attrelid = cast(:t as regclass) and a.attnum > 0"
                " and not a.attisdropped"
            ),
            {"t": f"public.{table}"},
        ).all()
    return {
        name: (kind, notnull, comment)
        for name, kind, notnull, comment in rows
        if name not in SYSTEM
    }


def _rows(engine: sa.Engine, query: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def _sql_spec() -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": "books",
            "engine": "sql",
            "config": {"url": {}},
            "sql": {"url_config": "url", "password_secret": None},
            "streams": [
                {
                    "name": "ledger",
                    "primary_key": "id",
                    "cursor": {"field": "changed"},
                    "sql": {"table": "ledger"},
                }
            ],
        }
    )


def test_sql_source_types_lengths_not_null_and_comments_land_as_declared(
    source_url: str,  # noqa: F811
    database_url: str,
    engine: sa.Engine,
) -> None:
    source = sa.create_engine(source_url)
    mysql = source.dialect.name != "postgresql"
    with source.begin() as conn:
        conn.exec_driver_sql(
            "create table ledger (id integer primary key, amount numeric(10,2) not null,"
            " code varchar(8) not null, label char(3), note text, changed integer not null)"
        )
        if mysql:
            conn.exec_driver_sql(
                "alter table ledger modify amount decimal(10,2) not null comment 'net amount, EUR'"
            )
        else:
            conn.exec_driver_sql("comment on column ledger.amount is 'net amount, EUR'")
        conn.exec_driver_sql(
            "insert into ledger values (1, 10.50, 'A-1', 'abc', 'first', 1),"
            " (2, 99999999.99, 'B-22', 'xy', null, 2)"
        )
    spec = _sql_spec()
    layer = DataLayer(database_url=database_url)
    integration = Integration("acme-books", "acme", "books", {"url": source_url})

    with SqlConnector().session(spec, integration) as session:
        _sync(layer, spec, "ledger", session, "r1", integration)
    described = _described(engine, "books_ledger")
    assert described["amount"] == ("numeric(10,2)", True, "net amount, EUR")
    assert described["code"] == ("character varying(8)", True, None)
    assert described["label"][:2] == ("character varying(3)", False)
    assert described["note"][:2] == ("text", False)
    assert _rows(engine, "select amount, label from books_ledger order by id") == [
        (Decimal("10.50"), "abc"),
        # As the source hands it out: PostgreSQL pads char(3), MariaDB strips the blanks.
        (Decimal("99999999.99"), "xy" if mysql else "xy "),
    ]

    # The source changes: a wider amount, code may be null now. The target widens with it and
    # keeps every value whole.
    with source.begin() as conn:
        if mysql:
            conn.exec_driver_sql("alter table ledger modify amount decimal(14,4) not null")
            conn.exec_driver_sql("alter table ledger modify code varchar(8) null")
        else:
            conn.exec_driver_sql("alter table ledger alter amount type numeric(14,4)")
            conn.exec_driver_sql("alter table ledger alter code drop not null")
        conn.exec_driver_sql("insert into ledger values (3, 1234567890.1234, null, 'q', 'x', 3)")
    source.dispose()
    with SqlConnector().session(spec, integration) as session:
        stats = _sync(layer, spec, "ledger", session, "r2", integration)
    described = _described(engine, "books_ledger")
    assert described["amount"][:2] == ("numeric(14,4)", True)
    assert described["code"][:2] == ("character varying(8)", False)
    assert "code: not null -> null" in stats.types_widened
    assert "amount: numeric(10,2) -> numeric(14,4)" in stats.types_widened
    assert _rows(engine, "select id, amount, code from books_ledger order by id") == [
        (1, Decimal("10.5000"), "A-1"),
        (2, Decimal("99999999.9900"), "B-22"),
        (3, Decimal("1234567890.1234"), None),
    ]


def _files_spec() -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": "prices",
            "engine": "files",
            "streams": [
                {
                    "name": "items",
                    "primary_key": "sku",
                    "columns": {"sku": "varchar(6)", "price": "numeric(8, 2)", "qty": "integer"},
                    "files": {"pattern": "items_*.csv"},
                }
            ],
        }
    )


def test_declared_sizes_hold_and_a_value_that_does_not_fit_widens_instead_of_rounding(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    spec = _files_spec()
    layer = DataLayer(database_url=database_url)
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0)
    integration = Integration("acme", "acme", "prices")
    inbox = tmp_path / "acme"

    drop(inbox, "items_1.csv", "sku,price,qty\nA1,10.50,3\nB2,0.99,1\n", age=300)
    with connector.session(spec, integration) as session:
        _sync(layer, spec, "items", session, "r1", integration)
    described = _described(engine, "prices_items")
    assert described["price"][0] == "numeric(8,2)"
    assert described["sku"][0] == "character varying(6)"
    assert described["qty"][0] == "integer"

    # 1.005 does not fit numeric(8,2) without rounding; a 7-character sku does not fit varchar(6).
    drop(inbox, "items_2.csv", "sku,price,qty\nC3,1.005,2\nLONGSKU,5,1\n", age=200)
    with connector.session(spec, integration) as session:
        stats = _sync(layer, spec, "items", session, "r2", integration)
    described = _described(engine, "prices_items")
    assert described["price"][0] == "numeric"
    assert described["sku"][0] == "text"
    assert sorted(stats.types_widened) == [
        "price: numeric(8,2) -> numeric",
        "sku: varchar(6) -> text",
    ]
    assert _rows(engine, "select sku, price from prices_items order by sku") == [
        ("A1", Decimal("10.50")),
        ("B2", Decimal("0.99")),
        ("C3", Decimal("1.005")),
        ("LONGSKU", Decimal("5")),
    ]


def test_sized_column_types_are_validated_in_the_spec() -> None:
    spec = _files_spec()
    assert spec.stream("items").columns["price"] == "numeric(8,2)"
    raw = spec.model_dump(by_alias=True, exclude_defaults=True)
    raw["streams"][0]["columns"] = {"price": "numeric(8,2"}
    with pytest.raises(ValidationError, match="unknown column type 'numeric\\(8,2'"):
        SourceSpec.model_validate(raw)
