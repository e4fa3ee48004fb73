"""The sql part of a spec (validation with clear errors), URL and driver handling including SQL
Server, cursor conversion, and the demo ERP on SQLite."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.sql import SqlConnector, SqlSourceError, cursor_value
from synkro_dagster.contracts import Integration
from synkro_dagster.demo.erp_source import create_demo_erp, touch_demo_erp
from synkro_dagster.specs.loader import SpecError, load_spec_file, load_specs
from synkro_dagster.specs.models import SourceSpec


def _raw(stream: dict[str, Any], **top: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "legacy",
        "engine": "sql",
        "config": {"url": {}},
        "secrets": ["password"],
        "sql": {},
        "streams": [stream],
    }
    raw.update(top)
    return raw


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    import yaml

    path = tmp_path / "legacy.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_erp_spec_loads_with_its_four_streams() -> None:
    spec = load_specs()["erp"]
    assert spec.engine == "sql"
    assert [s.name for s in spec.streams] == [
        "customers",
        "invoices",
        "invoice_lines",
        "open_balances",
    ]
    assert spec.stream("customers").cursor.field == "updated_at"
    assert spec.stream("invoice_lines").cursor is None
    assert spec.stream("invoice_lines").write_mode == "replace"
    assert spec.stream("open_balances").sql.query.startswith("select")
    assert list(spec.secrets) == ["password"] and not spec.secrets["password"].required
    assert "url" in spec.config


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (
            {"name": "s", "primary_key": "id", "sql": {"table": "t", "query": "select 1"}},
            "exactly one of 'table' or 'query'",
        ),
        ({"name": "s", "primary_key": "id", "sql": {}}, "exactly one of 'table' or 'query'"),
        (
            {"name": "s", "primary_key": "id", "sql": {"table": "t", "colums": ["id"]}},
            "stream 's', field 'sql.colums': unknown key",
        ),
        (
            {
                "name": "s",
                "primary_key": "id",
                "cursor": {"field": "changed"},
                "sql": {"table": "t", "columns": ["id", "name"]},
            },
            "missing: changed",
        ),
        (
            {
                "name": "s",
                "primary_key": "id",
                "cursor": {"field": "changed", "param": "since"},
                "sql": {"table": "t"},
            },
            "cursor.param is for http streams",
        ),
        (
            {"name": "s", "primary_key": "id", "sql": {"query": "select 1", "columns": ["a"]}},
            "'columns' and 'schema' go with 'table'",
        ),
        ({"name": "s", "primary_key": "id", "sql": {"query": " ; "}}, "empty string"),
        ({"name": "s", "primary_key": "id"}, "stream 's': a sql stream needs"),
    ],
)
def test_bad_sql_streams_fail_at_load_naming_stream_and_field(
    tmp_path: Path, stream: dict[str, Any], expected: str
) -> None:
    with pytest.raises(SpecError) as raised:
        load_spec_file(_write(tmp_path, _raw(stream)))
    assert expected in str(raised.value)
    assert "legacy.yaml" in str(raised.value)


def test_url_config_and_password_secret_must_be_declared(tmp_path: Path) -> None:
    stream = {"name": "s", "primary_key": "id", "sql": {"table": "t"}}
    with pytest.raises(SpecError, match="declares no 'dsn'"):
        load_spec_file(_write(tmp_path, _raw(stream, sql={"url_config": "dsn"})))
    with pytest.raises(SpecError, match="secrets do not list it"):
        load_spec_file(_write(tmp_path, _raw(stream, secrets=[])))
    spec = load_spec_file(_write(tmp_path, _raw(stream, secrets=[], sql={"password_secret": None})))
    assert spec.sql.password_secret is None


def test_query_trailing_semicolon_is_dropped() -> None:
    spec = SourceSpec.model_validate(
        _raw({"name": "s", "primary_key": "id", "sql": {"query": "select 1 as id ;\n"}})
    )
    assert spec.streams[0].sql.query == "select 1 as id"


def _session_url(url: str, **secrets: str) -> tuple[str, str]:
    spec = load_specs()["erp"]
    integration = Integration(id="i1", tenant="t", spec="erp", config={"url": url}, secrets=secrets)
    with SqlConnector().session(spec, integration) as session:
        engine = session.engine
        return f"{engine.dialect.name}+{engine.dialect.driver}", session.safe_url


def test_password_secret_goes_into_the_url_and_is_masked() -> None:
    dialect, safe = _session_url("postgresql://reader@db.example:5432/erp", password="p@ss:w/rd")
    assert dialect == "postgresql+psycopg"
    assert safe == "postgresql+psycopg://reader:***@db.example:5432/erp"


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("mysql://reader@h/erp", "mysql+pymysql"),
        ("mariadb://reader@h/erp", "mariadb+pymysql"),
        ("mysql+pymysql://reader@h/erp", "mysql+pymysql"),
        ("postgresql+psycopg://reader@h/erp", "postgresql+psycopg"),
        ("sqlite:///erp.db", "sqlite+pysqlite"),
        # SQL Server: pymssql installs from PyPI as a wheel; no server runs here, so this proves
        # the URL, the dialect and the driver load (no connection is made).
        ("mssql://reader@sqlserver.example:1433/erp", "mssql+pymssql"),
        ("mssql+pymssql://reader@sqlserver.example:1433/erp", "mssql+pymssql"),
    ],
)
def test_bare_dialects_get_the_installed_driver(url: str, dialect: str) -> None:
    pytest.importorskip("pymssql") if "mssql" in url else None
    assert _session_url(url, password="pw")[0] == dialect


def test_sql_server_statements_compile_for_the_mssql_dialect() -> None:
    pytest.importorskip("pymssql")
    from sqlalchemy.dialects import mssql

    table = sa.Table(
        "customers",
        sa.MetaData(),
        sa.Column("id", sa.Integer),
        sa.Column("updated_at", sa.DateTime),
        schema="dbo",
    )
    statement = (
        sa.select(table)
        .where(table.c.updated_at >= dt.datetime(2026, 1, 1))
        .order_by(table.c.updated_at)
    )
    sql = str(statement.compile(dialect=mssql.dialect()))
    assert "FROM dbo.customers" in sql and "ORDER BY dbo.customers.updated_at" in sql


def test_missing_driver_says_what_to_install() -> None:
    try:
        import pyodbc  # noqa: F401

        pytest.skip("pyodbc is installed here")
    except ImportError:
        pass
    spec = load_specs()["erp"]
    integration = Integration(
        id="i1",
        tenant="t",
        spec="erp",
        config={"url": "mssql+pyodbc://reader@dsn_erp"},
        secrets={"password": "hunter2-secret"},
    )
    with pytest.raises(SqlSourceError) as raised, SqlConnector().session(spec, integration):
        pass
    message = str(raised.value)
    assert "pip install pyodbc" in message and "integration 'i1'" in message
    assert "hunter2-secret" not in message


def test_a_password_written_into_the_config_url_is_masked_too() -> None:
    spec = load_specs()["erp"]
    integration = Integration(
        id="i1", tenant="t", spec="erp", config={"url": "mysql://u:inline-Secret9@127.0.0.1:1/x"}
    )
    with (
        SqlConnector(connect_timeout_seconds=1).session(spec, integration) as session,
        pytest.raises(SqlSourceError) as raised,
    ):
        session.read(spec.stream("customers"), None)
    assert "inline-Secret9" not in str(raised.value)


def test_missing_url_config_is_a_clear_error() -> None:
    spec = load_specs()["erp"]
    integration = Integration(id="i1", tenant="t", spec="erp", config={})
    with pytest.raises(SqlSourceError, match="config has no 'url'"):
        SqlConnector().session(spec, integration).__enter__()


@pytest.mark.parametrize(
    ("text", "pg_type", "value"),
    [
        ("2026-01-01T10:00:00", "timestamp", dt.datetime(2026, 1, 1, 10)),
        ("2026-01-01T10:00:00+00:00", "timestamp", dt.datetime(2026, 1, 1, 10)),
        ("2026-01-01T12:00:00+02:00", "timestamp", dt.datetime(2026, 1, 1, 10)),
        ("2026-01-01 10:00:00+00", "timestamptz", dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)),
        ("2026-01-01T10:00:00", "timestamptz", dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)),
        ("2026-01-01", "date", dt.date(2026, 1, 1)),
        ("2026-01-01T00:00:00", "date", dt.date(2026, 1, 1)),
        ("42", "bigint", 42),
        ("12.50", "numeric", Decimal("12.50")),
        ("0.5", "double precision", 0.5),
        ("v-17", "text", "v-17"),
        ("v-17", None, "v-17"),
    ],
)
def test_stored_cursor_text_becomes_the_column_type(
    text: str, pg_type: str | None, value: Any
) -> None:
    assert cursor_value(text, pg_type) == value


def test_a_cursor_that_does_not_parse_names_stream_and_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    create_demo_erp(url, rows=3)
    spec = load_specs()["erp"]
    integration = Integration(id="i1", tenant="t", spec="erp", config={"url": url})
    with (
        SqlConnector().session(spec, integration) as session,
        pytest.raises(SqlSourceError) as raised,
    ):
        session.read(spec.stream("customers"), "yesterday")
    assert "stream 'customers'" in str(raised.value) and "'updated_at'" in str(raised.value)


def test_demo_erp_on_sqlite_syncs_incrementally(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    counts = create_demo_erp(url, rows=15)
    assert counts["customers"] == 15 and counts["invoices"] > 15
    spec = load_specs()["erp"]
    integration = Integration(id="demo", tenant="demo", spec="erp", config={"url": url})
    with SqlConnector(batch_size=7).session(spec, integration) as session:
        read = session.read(spec.stream("customers"), None)
        first = [r for part in read.parts for b in part.batches() for r in b]
        assert read.column_types["credit_limit"] == "numeric(12,2)"
        assert read.column_types["is_active"] == "boolean"
        assert read.column_types["updated_at"] == "timestamp"
        assert isinstance(first[0]["updated_at"], dt.datetime)
        cursor = max(r["updated_at"] for r in first).isoformat()
        touched = touch_demo_erp(url)
        second = [
            r
            for part in session.read(spec.stream("customers"), cursor).parts
            for b in part.batches()
            for r in b
        ]
        assert sorted(r["id"] for r in second) == sorted([15, *touched["customers"]])
        balances = [
            r
            for part in session.read(spec.stream("open_balances"), None).parts
            for b in part.batches()
            for r in b
        ]
        assert balances


def test_sql_server_driver_connects_and_reports_an_absent_server_clearly() -> None:
    # No SQL Server runs here: this proves pymssql loads and speaks TDS, and the error is clear.
    pytest.importorskip("pymssql")
    spec = load_specs()["erp"]
    integration = Integration(
        id="i1",
        tenant="t",
        spec="erp",
        config={"url": "mssql://reader@127.0.0.1:1/erp"},
        secrets={"password": "Secr3t-for-mssql"},
    )
    with (
        SqlConnector(connect_timeout_seconds=2).session(spec, integration) as session,
        pytest.raises(SqlSourceError) as raised,
    ):
        session.read(spec.stream("customers"), None)
    message = str(raised.value)
    assert "mssql+pymssql://reader:***@127.0.0.1:1/erp" in message
    assert "Unable to connect" in message and "Secr3t-for-mssql" not in message
