"""SqlConnector against the real local PostgreSQL and MariaDB: incremental reads, full refresh,
query streams, reflected types, bounded batches and errors that never show the password."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.sql import SqlConnector, SqlSourceError
from synkro_dagster.contracts import Integration, StreamRead
from synkro_dagster.demo.erp_source import create_demo_erp, touch_demo_erp
from synkro_dagster.specs.cursors import read_start
from synkro_dagster.specs.loader import load_specs
from synkro_dagster.specs.models import ConfigField, SourceSpec

MARIADB_ROOT_URL = "mysql+pymysql://root@127.0.0.1:3306/"


def _mariadb_reachable() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 3306), timeout=1):
            pass
        engine = sa.create_engine(MARIADB_ROOT_URL)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # the reason is shown in the skip message
        return f"MariaDB at 127.0.0.1:3306 (root, no password) is unreachable: {exc}"


@pytest.fixture(scope="session")
def mariadb_skip_reason() -> str | None:
    return _mariadb_reachable()


@pytest.fixture
def pg_source_url(admin_engine: sa.Engine, pg_server_url: str) -> Iterator[str]:
    name = f"synkro_src_{uuid.uuid4().hex[:12]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'create database "{name}"')
    yield sa.make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def mariadb_source_url(mariadb_skip_reason: str | None) -> Iterator[str]:
    if mariadb_skip_reason:
        pytest.skip(mariadb_skip_reason)
    name = f"synkro_src_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(MARIADB_ROOT_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"create database `{name}`")
    yield f"{MARIADB_ROOT_URL}{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"drop database if exists `{name}`")
    admin.dispose()


@pytest.fixture(params=["postgresql", "mariadb"])
def source_url(request: pytest.FixtureRequest) -> str:
    fixture = "pg_source_url" if request.param == "postgresql" else "mariadb_source_url"
    return request.getfixturevalue(fixture)


def _spec(streams: list[dict[str, Any]]) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": "legacy",
            "engine": "sql",
            "config": {"url": {}},
            "secrets": ["password"],
            "sql": {},
            "streams": streams,
        }
    )


def _integration(url: str, **secrets: str) -> Integration:
    return Integration(
        id="acme_erp", tenant="acme", spec="erp", config={"url": url}, secrets=secrets
    )


def _rows(read: StreamRead) -> list[dict[str, Any]]:
    return [row for part in read.parts for batch in part.batches() for row in batch]


def _exec(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def _stored_cursor(rows: list[dict[str, Any]], field: str) -> str:
    """What the data layer stores after a load: the max cursor value as ISO-8601 text."""
    return max(row[field] for row in rows).isoformat()


def test_second_sync_reads_only_changed_rows(source_url: str) -> None:
    create_demo_erp(source_url, rows=30)
    spec = load_specs()["erp"]
    with SqlConnector().session(spec, _integration(source_url)) as session:
        first = _rows(session.read(spec.stream("customers"), None))
        assert [r["id"] for r in first] == list(range(1, 31))
        cursor = _stored_cursor(first, "updated_at")
        invoices_first = _rows(session.read(spec.stream("invoices"), None))
        invoices_cursor = _stored_cursor(invoices_first, "modified_at")
        last_invoice = invoices_first[-1]["id"]

        touched = touch_demo_erp(source_url)
        second = _rows(session.read(spec.stream("customers"), cursor))
        # The boundary row (customer 30, at the stored cursor) comes again; the merge dedupes it.
        assert sorted(r["id"] for r in second) == sorted([30, *touched["customers"]])
        assert second[0]["id"] == 30  # ordered by the cursor column
        renamed = next(r for r in second if r["id"] == 1)
        assert renamed["name"] == "Customer 00001 (renamed)"

        invoices_second = _rows(session.read(spec.stream("invoices"), invoices_cursor))
        assert sorted(r["id"] for r in invoices_second) == sorted(
            [last_invoice, *touched["invoices"]]
        )
        paid = next(r for r in invoices_second if r["id"] == touched["invoices"][0])
        assert paid["status"] == "paid"


def test_table_without_cursor_is_read_whole_every_time(source_url: str) -> None:
    counts = create_demo_erp(source_url, rows=20)
    spec = load_specs()["erp"]
    with SqlConnector().session(spec, _integration(source_url)) as session:
        lines = spec.stream("invoice_lines")
        first = _rows(session.read(lines, None))
        assert len(first) == counts["invoice_lines"]
        touch_demo_erp(source_url)
        # The stored cursor is meaningless for a stream without one: everything comes again.
        second = _rows(session.read(lines, "2099-01-01T00:00:00"))
        assert len(second) == counts["invoice_lines"] + 1


def test_query_stream_is_read_and_filtered_by_its_cursor(source_url: str) -> None:
    create_demo_erp(source_url, rows=25)
    spec = load_specs()["erp"]
    with SqlConnector().session(spec, _integration(source_url)) as session:
        balances = _rows(session.read(spec.stream("open_balances"), None))
        assert balances and all(r["open_invoices"] >= 1 for r in balances)
        assert all(isinstance(r["open_amount"], Decimal) for r in balances)

    # A literal colon ('10:30') must not be taken for a bind parameter.
    query_spec = _spec(
        [
            {
                "name": "recent_invoices",
                "primary_key": "id",
                "cursor": {"field": "changed"},
                "sql": {
                    "query": "select id, number, '10:30' as slot, modified_at as changed "
                    "from invoices where status <> 'void';"
                },
            }
        ]
    )
    stream = query_spec.stream("recent_invoices")
    with SqlConnector().session(query_spec, _integration(source_url)) as session:
        everything = _rows(session.read(stream, None))
        assert everything and {r["slot"] for r in everything} == {"10:30"}
        changed = [r["changed"] for r in everything]
        assert changed == sorted(changed)
        middle = changed[len(changed) // 2]
        later = _rows(session.read(stream, middle.isoformat()))
        assert [r["id"] for r in later] == [r["id"] for r in everything if r["changed"] >= middle]
        read = session.read(stream, None)
        assert read.column_types["changed"] == "timestamp"
        assert read.column_types["number"] == "text"


def test_cursor_initial_applies_when_nothing_is_stored(source_url: str) -> None:
    create_demo_erp(source_url, rows=10)
    spec = _spec(
        [
            {
                "name": "customers",
                "primary_key": "id",
                "cursor": {"field": "updated_at", "initial": "2026-01-01T08:08:00"},
                "sql": {"table": "customers", "columns": ["id", "updated_at"]},
            }
        ]
    )
    stream = spec.streams[0]
    with SqlConnector().session(spec, _integration(source_url)) as session:
        rows = _rows(session.read(stream, read_start(stream.cursor, None, full_refresh=False)))
    assert [r["id"] for r in rows] == [8, 9, 10]
    assert set(rows[0]) == {"id", "updated_at"}


def test_pg_column_types_come_from_reflection(pg_source_url: str) -> None:
    _exec(
        pg_source_url,
        "create table ledger (id bigint primary key, amount numeric(12,2), ratio double precision,"
        " paid boolean, booked date, at timestamptz, local_at timestamp, doc jsonb,"
        " tags text[], blob bytea, note varchar(20), qty smallint)",
        "insert into ledger values (1, 100, 0.5, true, '2026-01-02', '2026-01-02 10:00+00',"
        " '2026-01-02 10:00', '{\"a\": 1}', '{x,y}', '\\x00ff', 'n', 3)",
    )
    spec = _spec(
        [
            {
                "name": "ledger",
                "primary_key": "id",
                "write_mode": "replace",
                "sql": {"table": "ledger"},
            }
        ]
    )
    with SqlConnector().session(spec, _integration(pg_source_url)) as session:
        read = session.read(spec.streams[0], None)
        assert read.column_types == {
            "id": "bigint",
            "amount": "numeric(12,2)",  # as declared, although the only value is whole
            "ratio": "double precision",
            "paid": "boolean",
            "booked": "date",
            "at": "timestamptz",
            "local_at": "timestamp",
            "doc": "jsonb",
            "tags": "jsonb",
            "blob": "text",
            "note": "varchar(20)",
            "qty": "integer",
        }
        (row,) = _rows(read)
    assert row["amount"] == Decimal("100.00")
    assert row["blob"] == "00ff"  # binary lands as hex text
    assert row["at"] == dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)


def test_mariadb_column_types_come_from_reflection(mariadb_source_url: str) -> None:
    _exec(
        mariadb_source_url,
        "create table ledger (id int primary key, amount decimal(12,2), flag tinyint(1),"
        " level tinyint, big bigint, ratio double, booked date, at datetime, blob_col blob,"
        " counter int unsigned)",
        "insert into ledger values (1, 100, 1, 5, 9000000000, 0.25, '2026-01-02',"
        " '2026-01-02 10:00:00', x'00ff', 4000000000)",
    )
    spec = _spec(
        [
            {
                "name": "ledger",
                "primary_key": "id",
                "write_mode": "replace",
                "sql": {"table": "ledger"},
            }
        ]
    )
    with SqlConnector().session(spec, _integration(mariadb_source_url)) as session:
        read = session.read(spec.streams[0], None)
        assert read.column_types == {
            "id": "integer",
            "amount": "numeric(12,2)",
            "flag": "boolean",  # TINYINT(1) is MySQL's BOOLEAN
            "level": "integer",
            "big": "bigint",
            "ratio": "double precision",
            "booked": "date",
            "at": "timestamp",
            "blob_col": "text",
            "counter": "bigint",  # INT UNSIGNED does not fit a PostgreSQL integer
        }
        (row,) = _rows(read)
    assert row["flag"] is True
    assert row["amount"] == Decimal("100.00")
    assert row["blob_col"] == "00ff"


def test_batches_never_exceed_the_configured_size(source_url: str) -> None:
    counts = create_demo_erp(source_url, rows=40)
    spec = load_specs()["erp"]
    with SqlConnector(batch_size=17).session(spec, _integration(source_url)) as session:
        read = session.read(spec.stream("invoice_lines"), None)
        sizes = [len(batch) for part in read.parts for batch in part.batches()]
    assert max(sizes) == 17
    assert sum(sizes) == counts["invoice_lines"] == read.stats.records
    assert read.stats.pages == len(sizes)


def test_pg_rows_come_from_a_server_side_cursor(
    pg_source_url: str, admin_engine: sa.Engine
) -> None:
    create_demo_erp(pg_source_url, rows=60)
    spec = load_specs()["erp"]
    with SqlConnector(batch_size=10).session(spec, _integration(pg_source_url)) as session:
        batches = next(session.read(spec.stream("invoice_lines"), None).parts).batches()
        next(batches)
        with admin_engine.connect() as conn:
            running = (
                conn.execute(
                    sa.text(
                        "select query from pg_stat_activity where application_name = 'synkro'"
                        " and datname = :db"
                    ),
                    {"db": sa.make_url(pg_source_url).database},
                )
                .scalars()
                .all()
            )
        # Rows arrive by FETCH from a declared cursor, one batch at a time.
        assert any(q.lstrip().upper().startswith("FETCH FORWARD") for q in running), running
        rest = sum(len(b) for b in batches)
    assert rest > 0


def test_missing_table_and_column_errors_name_integration_stream_and_url(source_url: str) -> None:
    create_demo_erp(source_url, rows=3)
    spec = _spec(
        [
            {"name": "ghosts", "primary_key": "id", "sql": {"table": "no_such_table"}},
            {
                "name": "partial",
                "primary_key": "id",
                "sql": {"table": "customers", "columns": ["id", "nickname"]},
            },
            {
                "name": "broken",
                "primary_key": "id",
                "sql": {"query": "select id from nowhere_at_all"},
            },
        ]
    )
    with SqlConnector().session(spec, _integration(source_url)) as session:
        with pytest.raises(SqlSourceError) as missing_table:
            session.read(spec.stream("ghosts"), None)
        with pytest.raises(SqlSourceError) as missing_column:
            session.read(spec.stream("partial"), None)
        with pytest.raises(SqlSourceError) as bad_query:
            session.read(spec.stream("broken"), None)
    for error, stream in (
        (missing_table, "ghosts"),
        (missing_column, "partial"),
        (bad_query, "broken"),
    ):
        message = str(error.value)
        assert "integration 'acme_erp'" in message
        assert f"stream '{stream}'" in message
        assert sa.make_url(source_url).database in message
    assert "no_such_table" in str(missing_table.value)
    assert "'nickname'" in str(missing_column.value) and "updated_at" in str(missing_column.value)
    assert "nowhere_at_all" in str(bad_query.value)


def test_wrong_password_never_appears_in_the_error(mariadb_source_url: str) -> None:
    user = f"synkro_{uuid.uuid4().hex[:8]}"
    _exec(mariadb_source_url, f"create user '{user}'@'%%' identified by 'right-Pa55word'")
    try:
        url = sa.make_url(mariadb_source_url).set(username=user, host="127.0.0.1")
        spec = load_specs()["erp"]
        secret = "Wr0ng-Secret-Pa55"
        integration = _integration(url.render_as_string(hide_password=False), password=secret)
        with (
            SqlConnector().session(spec, integration) as session,
            pytest.raises(SqlSourceError) as raised,
        ):
            session.read(spec.stream("customers"), None)
        message = str(raised.value)
        assert secret not in message and secret not in repr(raised.value)
        assert "Access denied" in message and "***" in message
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
    finally:
        _exec(mariadb_source_url, f"drop user '{user}'@'%%'")


def test_unreachable_server_error_is_clear_and_masks_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    spec = load_specs()["erp"]
    secret = "s3cr3t-Never-Shown"
    for url in (
        f"postgresql+psycopg://reader@127.0.0.1:{free_port}/erp",
        f"mysql+pymysql://reader@127.0.0.1:{free_port}/erp",
    ):
        with (
            SqlConnector(connect_timeout_seconds=2).session(
                spec, _integration(url, password=secret)
            ) as session,
            pytest.raises(SqlSourceError) as raised,
        ):
            session.read(spec.stream("customers"), None)
        message = str(raised.value)
        assert secret not in message
        assert f"reader:***@127.0.0.1:{free_port}/erp" in message
        assert "stream 'customers'" in message


def test_sessions_are_read_only(pg_source_url: str) -> None:
    create_demo_erp(pg_source_url, rows=3)
    spec = _spec(
        [{"name": "sneaky", "primary_key": "id", "sql": {"query": "select id from customers"}}]
    )
    with (
        SqlConnector().session(spec, _integration(pg_source_url)) as session,
        session.engine.connect() as conn,
        pytest.raises(sa.exc.InternalError, match="read-only"),
    ):
        conn.exec_driver_sql("delete from customers")


def test_pg_types_without_a_binary_loader_still_arrive_as_text(pg_source_url: str) -> None:
    # An enum, an interval and a time column: the read falls back to the text format for them.
    _exec(
        pg_source_url,
        "create type mood as enum ('calm', 'busy')",
        "create table shifts (id int primary key, mood mood, length interval, starts time)",
        "insert into shifts values (1, 'busy', '1 hour 30 minutes', '08:30')",
    )
    spec = _spec(
        [
            {
                "name": "shifts",
                "primary_key": "id",
                "write_mode": "replace",
                "sql": {"table": "shifts"},
            }
        ]
    )
    with SqlConnector().session(spec, _integration(pg_source_url)) as session:
        read = session.read(spec.streams[0], None)
        (row,) = _rows(read)
    assert read.column_types["mood"] == "text"
    assert row == {"id": 1, "mood": "busy", "length": "1:30:00", "starts": "08:30:00"}


def test_statement_timeout_stops_a_runaway_query(pg_source_url: str) -> None:
    spec = _spec(
        [
            {
                "name": "slow",
                "primary_key": "id",
                "write_mode": "replace",
                "sql": {"query": "select 1 as id, pg_sleep(5) as waited"},
            }
        ]
    )
    connector = SqlConnector(statement_timeout_seconds=0.5)
    with connector.session(spec, _integration(pg_source_url)) as session:
        read = session.read(spec.streams[0], None)
        with pytest.raises(SqlSourceError, match="statement timeout") as raised:
            _rows(read)
    assert "stream 'slow'" in str(raised.value)


def test_mariadb_rows_stream_unbuffered(mariadb_source_url: str) -> None:
    # 60,000 rows of ~200 bytes: far more than socket buffers hold, so a buffered client would
    # have finished the statement before handing over the first batch.
    _exec(
        mariadb_source_url,
        "create table wide (id int primary key, payload varchar(200))",
        "insert into wide select seq, repeat('x', 200) from seq_1_to_60000",
    )
    spec = _spec(
        [{"name": "wide", "primary_key": "id", "write_mode": "replace", "sql": {"table": "wide"}}]
    )
    database = sa.make_url(mariadb_source_url).database
    admin = sa.create_engine(MARIADB_ROOT_URL)
    try:
        with SqlConnector(batch_size=500).session(
            spec, _integration(mariadb_source_url)
        ) as session:
            batches = next(session.read(spec.streams[0], None).parts).batches()
            assert len(next(batches)) == 500
            with admin.connect() as conn:
                running = conn.execute(
                    sa.text(
                        "select info from information_schema.processlist"
                        " where db = :db and command = 'Query' and info like '%wide%'"
                    ),
                    {"db": database},
                ).all()
            # The SELECT is still being sent while the first batch is in our hands (SSCursor).
            assert running, "the statement had already finished: rows were buffered"
            assert sum(len(b) for b in batches) == 60_000 - 500
    finally:
        admin.dispose()


def test_mixed_case_schema_table_and_columns_are_quoted(pg_source_url: str) -> None:
    _exec(
        pg_source_url,
        'create schema "Sales"',
        'create table "Sales"."Order Lines" ("Id" int primary key, "Changed At" timestamp,'
        ' "select" text)',
        """insert into "Sales"."Order Lines" values (1, '2026-01-01 10:00', 'a'),"""
        """ (2, '2026-01-02 10:00', 'b')""",
    )
    spec = _spec(
        [
            {
                "name": "order_lines",
                "primary_key": "Id",
                "cursor": {"field": "Changed At"},
                "sql": {"table": "Order Lines", "schema": "Sales"},
            }
        ]
    )
    with SqlConnector().session(spec, _integration(pg_source_url)) as session:
        rows = _rows(session.read(spec.streams[0], "2026-01-02T10:00:00"))
    assert rows == [{"Id": 2, "Changed At": dt.datetime(2026, 1, 2, 10), "select": "b"}]


def test_a_spec_config_default_is_used_when_the_integration_gives_none(pg_source_url: str) -> None:
    """The registry accepts an integration that relies on a spec's documented `config` default;
    the SQL engine resolves config the same way (it used to fail with "no 'url'")."""
    create_demo_erp(pg_source_url, rows=5)
    erp = load_specs()["erp"]
    spec = erp.model_copy(
        update={"config": {"url": ConfigField(description="the ERP", default=pg_source_url)}}
    )
    assert spec.missing_config({}) == []
    relying = Integration(id="acme_erp", tenant="acme", spec="erp", config={})
    with SqlConnector().session(spec, relying) as session:
        rows = _rows(session.read(spec.stream("customers"), None))
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    # The integration's own value still wins over the default.
    wins = spec.resolve_config({"url": "sqlite:///elsewhere.db"})
    assert wins["url"] == "sqlite:///elsewhere.db"
