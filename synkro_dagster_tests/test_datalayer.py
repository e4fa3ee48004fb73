"""The data layer against real PostgreSQL: merge, append, replace, cursor, parts, schema drift, RLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa

from synkro_dagster.contracts import BatchesPart, Part, SourceDataError, StreamRead
from synkro_dagster.datalayer.identifiers import column_name
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.specs.models import SourceSpec

TABLE = "shop_orders"


@pytest.fixture
def layer(database_url: str) -> DataLayer:
    return DataLayer(database_url=database_url)


def target(
    mode: str = "merge",
    pk: list[str] | None = None,
    cursor: str | None = None,
    hints: dict[str, str] | None = None,
    table: str = TABLE,
    schema: str = "public",
) -> TableTarget:
    return TableTarget(
        schema=schema,
        table=table,
        primary_key=["id"] if pk is None else pk,
        write_mode=mode,  # type: ignore[arg-type]
        cursor_field=cursor,
        column_hints=hints or {},
    )


def context(
    integration: str = "acme", tenant: str = "A", full_refresh: bool = False, run: str = "run-1"
) -> LoadContext:
    return LoadContext(
        tenant_id=tenant,
        integration_id=integration,
        stream="orders",
        run_id=run,
        full_refresh=full_refresh,
    )


def stream(*batches: list[dict], column_types: dict[str, str] | None = None) -> StreamRead:
    return StreamRead(
        parts=iter([BatchesPart(iter([list(b) for b in batches]))]),
        column_types=column_types or {},
    )


def rows(engine: sa.Engine, query: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query), params).all()]


def column_types(engine: sa.Engine, table: str = TABLE, schema: str = "public") -> dict[str, str]:
    return dict(
        rows(
            engine,
            "select column_name, data_type from information_schema.columns"
            " where table_schema = :s and table_name = :t",
            s=schema,
            t=table,
        )
    )


def sync_state(engine: sa.Engine, integration: str = "acme") -> tuple | None:
    found = rows(
        engine,
        "select cursor, rows_last_sync, last_run_id, tenant_id from synkro.sync_state"
        " where integration_id = :i and stream = 'orders'",
        i=integration,
    )
    return found[0] if found else None


# --- resource ----------------------------------------------------------------------------------


def test_resource_touches_no_database_when_built():
    # An unreachable URL: building the resource and loading Definitions must not connect.
    layer = DataLayer(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")

    @dg.asset
    def orders(data_layer: DataLayer) -> None: ...

    dg.Definitions.validate_loadable(
        dg.Definitions(assets=[orders], resources={"data_layer": layer})
    )


def test_target_for_stream_comes_from_the_spec():
    source = SourceSpec.model_validate(
        {
            "name": "shop",
            "engine": "http",
            "schema": "raw",
            "streams": [
                {
                    "name": "orders",
                    "primary_key": "id",
                    "cursor": {"field": "updated_at"},
                    "columns": {"amount": "numeric"},
                }
            ],
        }
    )
    made = TableTarget.for_stream(source, source.streams[0])
    assert made == TableTarget(
        schema="raw",
        table="shop_orders",
        primary_key=["id"],
        write_mode="merge",
        cursor_field="updated_at",
        column_hints={"amount": "numeric"},
        cursor=source.streams[0].cursor,
    )
    assert made.cursor_spec.format == "as_stored" and made.cursor_spec.max_future == "1d"


def test_stats_as_metadata_are_numbers_where_possible():
    stats = LoadStats(rows_read=3, columns_added=["a", "b"], cursor_after="5", seconds=0.12345)
    metadata = stats.as_metadata()
    assert metadata["rows_read"] == 3
    assert metadata["columns_added"] == 2
    assert metadata["columns_added_names"] == "a, b"
    assert metadata["cursor_after"] == "5"
    assert metadata["seconds"] == 0.123
    assert all(isinstance(v, int | float | str) for v in metadata.values())


# --- merge -------------------------------------------------------------------------------------


def test_merge_upserts_by_integration_and_key(layer: DataLayer, engine: sa.Engine):
    first = layer.load(target(), stream([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]), context())
    assert (first.rows_inserted, first.rows_updated, first.table_created) == (2, 0, True)
    second = layer.load(
        target(), stream([{"id": 2, "v": "B"}, {"id": 3, "v": "c"}]), context(run="run-2")
    )
    assert (second.rows_read, second.rows_inserted, second.rows_updated) == (2, 1, 1)
    assert rows(engine, f"select id, v, _synkro_run_id from {TABLE} order by id") == [
        (1, "a", "run-1"),
        (2, "B", "run-2"),
        (3, "c", "run-2"),
    ]
    assert sync_state(engine) == (None, 2, "run-2", "A")


def test_unchanged_record_is_not_rewritten(layer: DataLayer, engine: sa.Engine):
    layer.load(target(), stream([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]), context())
    stats = layer.load(
        target(), stream([{"id": 1, "v": "a"}, {"id": 2, "v": "B"}]), context(run="run-2")
    )
    assert (stats.rows_inserted, stats.rows_updated) == (0, 1)
    assert rows(engine, f"select id, _synkro_run_id from {TABLE} order by id") == [
        (1, "run-1"),
        (2, "run-2"),
    ]


def test_every_table_carries_tenant_integration_and_sync_columns(
    layer: DataLayer, engine: sa.Engine
):
    layer.load(target(), stream([{"id": 1}]), context())
    assert column_types(engine) == {
        "tenant_id": "text",
        "integration_id": "text",
        "id": "integer",
        "_synkro_synced_at": "timestamp with time zone",
        "_synkro_run_id": "text",
    }
    key = rows(
        engine,
        "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
        " and a.attnum = any(i.indkey) where i.indrelid = cast(:t as regclass) and i.indisprimary",
        t=TABLE,
    )
    assert sorted(k[0] for k in key) == ["id", "integration_id"]
    assert rows(engine, f"select tenant_id, integration_id from {TABLE}") == [("A", "acme")]


def test_two_integrations_of_one_tenant_with_overlapping_ids(layer: DataLayer, engine: sa.Engine):
    layer.load(target(), stream([{"id": 1, "v": "first"}]), context("acme-eu"))
    layer.load(target(), stream([{"id": 1, "v": "second"}]), context("acme-us"))
    layer.load(target(), stream([{"id": 1, "v": "first!"}]), context("acme-eu"))
    assert rows(engine, f"select integration_id, id, v from {TABLE} order by 1") == [
        ("acme-eu", 1, "first!"),
        ("acme-us", 1, "second"),
    ]


def test_duplicates_in_one_load_collapse_last_by_cursor_wins(layer: DataLayer, engine: sa.Engine):
    batch_one = [
        {"id": 1, "v": "newest", "updated_at": "2024-01-03T00:00:00Z"},
        {"id": 2, "v": "only", "updated_at": "2024-01-01T00:00:00Z"},
    ]
    batch_two = [
        {"id": 1, "v": "older, seen last", "updated_at": "2024-01-02T00:00:00Z"},
        {"id": 1, "v": "oldest", "updated_at": "2024-01-01T00:00:00Z"},
    ]
    stats = layer.load(target(cursor="updated_at"), stream(batch_one, batch_two), context())
    assert stats.duplicates_collapsed == 2
    assert stats.duplicate_key_example == {"id": 1}
    assert (stats.rows_read, stats.rows_inserted) == (4, 2)
    assert rows(engine, f"select id, v from {TABLE} order by id") == [(1, "newest"), (2, "only")]
    assert stats.cursor_after == "2024-01-03T00:00:00Z"  # as the source wrote it


def test_duplicates_without_cursor_last_seen_wins(layer: DataLayer, engine: sa.Engine):
    layer.load(target(), stream([{"id": 1, "v": "old"}]), context())
    stats = layer.load(
        target(),
        stream([{"id": 1, "v": "a"}], [{"id": 1, "v": "b"}, {"id": 1, "v": "c"}]),
        context(),
    )
    assert (stats.duplicates_collapsed, stats.rows_updated) == (2, 1)
    assert rows(engine, f"select v from {TABLE}") == [("c",)]


def test_composite_primary_key(layer: DataLayer, engine: sa.Engine):
    tgt = target(pk=["order_id", "line"])
    layer.load(
        tgt, stream([{"order_id": 1, "line": 1, "q": 1}, {"order_id": 1, "line": 2}]), context()
    )
    stats = layer.load(tgt, stream([{"order_id": 1, "line": 2, "q": 5}]), context())
    assert stats.rows_updated == 1
    assert rows(engine, f"select order_id, line, q from {TABLE} order by line") == [
        (1, 1, 1),
        (1, 2, 5),
    ]


def test_null_primary_key_names_stream_and_record(layer: DataLayer, engine: sa.Engine):
    with pytest.raises(SourceDataError) as raised:
        layer.load(target(), stream([{"id": 1}, {"id": None, "name": "Ann"}]), context())
    message = str(raised.value)
    assert "stream 'orders'" in message and "'id'" in message and "'name': 'Ann'" in message
    with pytest.raises(SourceDataError, match="primary key field 'id'.*'name': 'Bo'"):
        layer.load(target(), stream([{"name": "Bo"}]), context())
    assert sync_state(engine) is None
    assert rows(engine, "select to_regclass(:t)::text", t=TABLE) == [(None,)]


# --- cursor ------------------------------------------------------------------------------------


def test_cursor_is_committed_with_the_data_and_only_moves_forward(
    layer: DataLayer, engine: sa.Engine
):
    tgt = target(cursor="seq")
    first = layer.load(tgt, stream([{"id": 1, "seq": 9}, {"id": 2, "seq": 10}]), context())
    assert (first.cursor_before, first.cursor_after) == (None, "10")
    assert layer.get_cursor("acme", "orders") == "10"
    # Typed comparison: 9 < 10 numerically even though "9" > "10" as text.
    second = layer.load(tgt, stream([{"id": 1, "seq": 9}]), context())
    assert (second.cursor_before, second.cursor_after) == ("10", "10")
    empty = layer.load(tgt, stream([]), context())
    assert (empty.rows_read, empty.cursor_after) == (0, "10")
    refresh = layer.load(tgt, stream([{"id": 1, "seq": 9}]), context(full_refresh=True))
    assert refresh.cursor_after == "9"
    assert sync_state(engine)[0] == "9"
    assert layer.get_cursor("other", "orders") is None


def test_timestamp_cursor_is_iso_8601(layer: DataLayer):
    # Typed values (a SQL source) are kept in PostgreSQL's ISO-8601 text, which parses back to
    # the same instant for the bound parameter of the next read.
    records = [
        {"id": 1, "at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC)},
        {"id": 2, "at": datetime(2024, 5, 2, 8, 0, tzinfo=UTC)},
    ]
    stats = layer.load(target(cursor="at"), stream(records), context())
    assert stats.cursor_after == "2024-05-02 08:00:00+00:00"
    assert datetime.fromisoformat(stats.cursor_after) == records[1]["at"]


def test_full_refresh_with_nothing_loaded_keeps_the_cursor(layer: DataLayer):
    layer.load(target(cursor="seq"), stream([{"id": 1, "seq": 5}]), context())
    stats = layer.load(target(cursor="seq"), stream([]), context(full_refresh=True))
    assert stats.cursor_after == "5"


# --- append and replace ------------------------------------------------------------------------


def test_append_inserts_every_record(layer: DataLayer, engine: sa.Engine):
    tgt = target(mode="append", pk=[])
    layer.load(tgt, stream([{"event": "a"}, {"event": "a"}]), context())
    stats = layer.load(tgt, stream([{"event": "a"}]), context())
    assert stats.rows_inserted == 1
    assert rows(engine, f"select count(*) from {TABLE}") == [(3,)]
    assert "_synkro_run_id" in column_types(engine)


def test_append_never_reappends_boundary_records(layer: DataLayer, engine: sa.Engine):
    tgt = target(mode="append", pk=[], cursor="at")
    first = [
        {"event": "a", "at": "2024-01-01T00:00:00Z"},
        {"event": "b", "at": "2024-01-02T00:00:00Z"},
        {"event": "c", "at": "2024-01-02T00:00:00Z"},
    ]
    assert layer.load(tgt, stream(first), context()).cursor_after == "2024-01-02T00:00:00Z"
    # The connector reads `at >= cursor`: the boundary records come again, plus a new one at the
    # same instant and one later; a stale record older than the cursor is dropped too.
    second = [
        {"event": "old", "at": "2023-12-31T00:00:00Z"},
        {"event": "b", "at": "2024-01-02T00:00:00Z"},
        {"event": "c", "at": "2024-01-02T00:00:00Z"},
        {"event": "d", "at": "2024-01-02T00:00:00Z"},
        {"event": "e", "at": "2024-01-03T00:00:00Z"},
    ]
    stats = layer.load(tgt, stream(second), context())
    assert stats.rows_inserted == 2
    assert rows(engine, f"select event from {TABLE} order by event") == [
        ("a",),
        ("b",),
        ("c",),
        ("d",),
        ("e",),
    ]
    assert stats.cursor_after == "2024-01-03T00:00:00Z"


def test_replace_touches_only_its_own_integration(layer: DataLayer, engine: sa.Engine):
    tgt = target(mode="replace", pk=["id"])
    layer.load(tgt, stream([{"id": 1}, {"id": 2}]), context("acme-eu"))
    layer.load(tgt, stream([{"id": 1}, {"id": 7}]), context("acme-us"))
    stats = layer.load(tgt, stream([{"id": 1}, {"id": 3}]), context("acme-eu"))
    assert (stats.rows_deleted, stats.rows_inserted, stats.rows_unchanged) == (1, 1, 1)
    assert rows(engine, f"select integration_id, id from {TABLE} order by 1, 2") == [
        ("acme-eu", 1),
        ("acme-eu", 3),
        ("acme-us", 1),
        ("acme-us", 7),
    ]


def test_replace_readers_see_old_or_new_set_never_half(layer: DataLayer, engine: sa.Engine):
    tgt = target(mode="replace", pk=[])
    layer.load(tgt, stream([{"n": i} for i in range(100)]), context())
    # Hold the stream's sync_state row: the replace has deleted and inserted when it waits there.
    blocker = engine.connect()
    blocker.begin()
    blocker.exec_driver_sql(
        "select * from synkro.sync_state where integration_id = 'acme' for update"
    )
    worker = threading.Thread(
        target=layer.load, args=(tgt, stream([{"n": i} for i in range(100, 350)]), context())
    )
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not rows(
            engine,
            "select 1 from pg_stat_activity where datname = current_database()"
            " and wait_event_type = 'Lock' and query like 'insert into synkro.sync_state%'",
        ):
            assert time.monotonic() < deadline, "the replace never reached its state write"
            time.sleep(0.05)
        during = [rows(engine, f"select count(*), min(n) from {TABLE}")[0] for _ in range(3)]
    finally:
        blocker.rollback()
        blocker.close()
        worker.join(20)
    assert during == [(100, 0)] * 3
    assert rows(engine, f"select count(*), min(n) from {TABLE}") == [(250, 100)]


# --- parts -------------------------------------------------------------------------------------


class FilePart(Part):
    """A file-like part: records, an identity, and hooks that record what happened."""

    def __init__(self, name: str, batches: list[list[dict]], identity: str | None = None):
        self.name = name
        self.isolated = True
        self.identity = identity
        self._batches = batches
        self.events: list[str] = []

    def batches(self) -> Iterator[list[dict]]:
        for batch in self._batches:
            if batch == ["bad"]:
                raise SourceDataError(f"{self.name}: line 3: not a number")
            yield batch

    def before_commit(self, connection) -> None:
        self.events.append("before_commit")

    def after_commit(self) -> None:
        self.events.append("after_commit")

    def rejected(self, error: SourceDataError) -> None:
        self.events.append(f"rejected: {error}")


def test_isolated_part_rejected_others_load(layer: DataLayer, engine: sa.Engine):
    good = FilePart("a.csv", [[{"id": 1, "v": "a"}]])
    bad = FilePart("b.csv", [[{"id": 2, "new_col": 5}], ["bad"]])
    null_key = FilePart("c.csv", [[{"id": None, "v": "x"}]])
    later = FilePart("d.csv", [[{"id": 3, "v": "d"}]])
    stats = layer.load(target(), StreamRead(parts=iter([good, bad, null_key, later])), context())
    assert (stats.parts_loaded, stats.parts_rejected, stats.rows_read) == (2, 2, 2)
    assert rows(engine, f"select id, v from {TABLE} order by id") == [(1, "a"), (3, "d")]
    assert "new_col" not in column_types(engine)
    assert good.events == ["before_commit", "after_commit"]
    assert bad.events == ["rejected: b.csv: line 3: not a number"]
    assert "primary key field 'id'" in null_key.events[0] and "c.csv" in null_key.events[0]


def test_non_isolated_part_error_fails_the_whole_load(layer: DataLayer, engine: sa.Engine):
    layer.load(target(cursor="seq"), stream([{"id": 1, "seq": 1}]), context())

    def broken() -> Iterator[list[dict]]:
        yield [{"id": 2, "seq": 2}]
        raise SourceDataError("page 2: invalid JSON")

    with pytest.raises(SourceDataError, match="page 2"):
        layer.load(target(cursor="seq"), StreamRead(parts=iter([BatchesPart(broken())])), context())
    assert rows(engine, f"select id from {TABLE}") == [(1,)]
    assert sync_state(engine)[0] == "1"


def test_identity_part_loaded_exactly_once(layer: DataLayer, engine: sa.Engine):
    first = FilePart("orders.csv", [[{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]], identity="h1")
    stats = layer.load(target(), StreamRead(parts=iter([first])), context())
    assert (stats.parts_loaded, stats.parts_skipped) == (1, 0)
    # The same file again (its move after the commit never happened), with a new one beside it.
    again = FilePart("orders.csv", [[{"id": 1, "v": "CHANGED"}]], identity="h1")
    other = FilePart("more.csv", [[{"id": 3, "v": "c"}]], identity="h2")
    stats = layer.load(target(), StreamRead(parts=iter([again, other])), context())
    assert (stats.parts_loaded, stats.parts_skipped, stats.rows_read) == (1, 1, 1)
    assert again.events == ["after_commit"]
    assert rows(engine, f"select id, v from {TABLE} order by id") == [(1, "a"), (2, "b"), (3, "c")]
    assert rows(
        engine,
        "select content_hash, file_name, rows_loaded, stream from synkro.processed_files"
        " order by 1",
    ) == [("h1", "orders.csv", 2, "orders"), ("h2", "more.csv", 1, "orders")]
    # Another integration may load the same content.
    stats = layer.load(
        target(), StreamRead(parts=iter([FilePart("o.csv", [[{"id": 1}]], "h1")])), context("b")
    )
    assert stats.parts_loaded == 1


def test_rejected_identity_part_can_load_later(layer: DataLayer, engine: sa.Engine):
    bad = FilePart("x.csv", [["bad"]], identity="hx")
    assert layer.load(target(), StreamRead(parts=iter([bad])), context()).parts_rejected == 1
    assert rows(engine, "select count(*) from synkro.processed_files") == [(0,)]
    fixed = FilePart("x.csv", [[{"id": 1}]], identity="hx")
    assert layer.load(target(), StreamRead(parts=iter([fixed])), context()).parts_loaded == 1


# --- schema drift ------------------------------------------------------------------------------


def test_types_are_inferred_from_python_values(layer: DataLayer, engine: sa.Engine):
    record = {
        "id": 1,
        "big": 2**40,
        "huge": 2**70,
        "price": Decimal("9.99"),
        "ratio": 0.5,
        "ok": True,
        "name": "x",
        "day": date(2024, 1, 2),
        "local": datetime(2024, 1, 2, 3, 4),
        "at": datetime(2024, 1, 2, 3, 4, tzinfo=UTC),
        "iso_day": "2024-01-02",
        "iso_at": "2024-01-02T03:04:05Z",
        "meta": {"a": [1, 2]},
        "tags": ["x", "y"],
        "empty": None,
    }
    layer.load(target(), stream([record]), context())
    assert column_types(engine) == {
        "tenant_id": "text",
        "integration_id": "text",
        "id": "integer",
        "big": "bigint",
        "huge": "numeric",
        "price": "numeric",
        "ratio": "numeric",
        "ok": "boolean",
        "name": "text",
        "day": "date",
        "local": "timestamp without time zone",
        "at": "timestamp with time zone",
        "iso_day": "date",
        "iso_at": "timestamp with time zone",
        "meta": "jsonb",
        "tags": "jsonb",
        "empty": "text",
        "_synkro_synced_at": "timestamp with time zone",
        "_synkro_run_id": "text",
    }
    landed = rows(engine, f"select huge, ok, meta, tags, at from {TABLE}")[0]
    assert landed == (
        Decimal(2**70),
        True,
        {"a": [1, 2]},
        ["x", "y"],
        datetime(2024, 1, 2, 3, 4, tzinfo=UTC),
    )


def test_hints_win_over_declared_and_inferred_types(layer: DataLayer, engine: sa.Engine):
    read = stream(
        [{"id": 1, "code": 7, "n": 5, "f": 1.5}], column_types={"code": "bigint", "n": "text"}
    )
    layer.load(target(hints={"code": "text", "f": "double precision"}), read, context())
    found = column_types(engine)
    assert (found["code"], found["n"], found["f"]) == ("text", "text", "double precision")


def test_new_column_added(layer: DataLayer, engine: sa.Engine):
    layer.load(target(), stream([{"id": 1}]), context())
    stats = layer.load(target(), stream([{"id": 2}], [{"id": 3, "color": "red"}]), context())
    assert stats.columns_added == ["color"]
    assert rows(engine, f"select id, color from {TABLE} order by id") == [
        (1, None),
        (2, None),
        (3, "red"),
    ]


def test_a_column_of_only_nulls_keeps_the_type_it_has(layer: DataLayer, engine: sa.Engine):
    """Another integration sending nulls in a column must not widen it for everyone."""
    layer.load(target(), stream([{"id": 1, "tags": ["x"], "amount": 5}]), context())
    stats = layer.load(
        target(), stream([{"id": 1, "tags": None, "amount": None}]), context(integration="b")
    )
    assert stats.types_widened == []
    found = column_types(engine)
    assert (found["tags"], found["amount"]) == ("jsonb", "integer")
    assert rows(engine, f"select integration_id, tags, amount from {TABLE} order by 1") == [
        ("acme", ["x"], 5),
        ("b", None, None),
    ]


def test_int_widens_to_text(layer: DataLayer, engine: sa.Engine):
    layer.load(target(), stream([{"id": 1, "amount": 5}]), context())
    stats = layer.load(target(), stream([{"id": 2, "amount": 2**40}]), context())
    assert stats.types_widened == ["amount: integer -> bigint"]
    stats = layer.load(target(), stream([{"id": 3, "amount": 1.5}]), context())
    assert stats.types_widened == ["amount: bigint -> numeric"]
    stats = layer.load(target(), stream([{"id": 4, "amount": "n/a"}]), context())
    assert stats.types_widened == ["amount: numeric -> text"]
    assert rows(engine, f"select amount from {TABLE} order by id") == [
        ("5",),
        (str(2**40),),
        ("1.5",),
        ("n/a",),
    ]


def test_widening_within_one_load_and_dates_to_text(layer: DataLayer, engine: sa.Engine):
    stats = layer.load(
        target(),
        stream(
            [{"id": 1, "n": 1, "d": "2024-01-01"}],
            [{"id": 2, "n": 2**40, "d": "2024-01-01T05:00:00+02:00"}],
            [{"id": 3, "n": "many", "d": "soon"}],
        ),
        context(),
    )
    assert stats.table_created and stats.types_widened == []
    assert column_types(engine)["n"] == "text" and column_types(engine)["d"] == "text"
    assert rows(engine, f"select n, d from {TABLE} order by id") == [
        ("1", "2024-01-01"),
        (str(2**40), "2024-01-01T05:00:00+02:00"),
        ("many", "soon"),
    ]


def test_date_widens_to_timestamptz(layer: DataLayer, engine: sa.Engine):
    layer.load(target(), stream([{"id": 1, "d": date(2024, 1, 1)}]), context())
    stats = layer.load(
        target(), stream([{"id": 2, "d": datetime(2024, 1, 2, 3, tzinfo=UTC)}]), context()
    )
    assert stats.types_widened == ["d: date -> timestamptz"]
    assert rows(engine, f"select d from {TABLE} order by id") == [
        (datetime(2024, 1, 1, tzinfo=UTC),),
        (datetime(2024, 1, 2, 3, tzinfo=UTC),),
    ]


def test_nested_lands_as_jsonb(layer: DataLayer, engine: sa.Engine):
    records = [
        {"id": 1, "address": {"city": "Oslo", "zip": None}, "items": [{"sku": "a"}]},
        {"id": 2, "address": None, "items": []},
    ]
    layer.load(target(), stream(records), context())
    assert column_types(engine)["address"] == "jsonb"
    assert rows(engine, f"select address->>'city', items from {TABLE} order by id") == [
        ("Oslo", [{"sku": "a"}]),
        (None, []),
    ]


def test_later_batch_with_fewer_columns(layer: DataLayer, engine: sa.Engine):
    stats = layer.load(
        target(),
        stream([{"id": 1, "a": "x", "b": True}], [{"id": 2}], [{"id": 3, "b": False}]),
        context(),
    )
    assert stats.rows_inserted == 3
    assert rows(engine, f"select id, a, b from {TABLE} order by id") == [
        (1, "x", True),
        (2, None, None),
        (3, None, False),
    ]


def test_mixed_values_in_a_text_column_keep_their_meaning(layer: DataLayer, engine: sa.Engine):
    records = [
        {"id": 1, "v": True},
        {"id": 2, "v": "word"},
        {"id": 3, "v": {"k": 1}},
        {"id": 4, "v": 2},
    ]
    layer.load(target(), stream(records), context())
    assert rows(engine, f"select v from {TABLE} order by id") == [
        ("true",),
        ("word",),
        ('{"k": 1}',),
        ("2",),
    ]


def test_value_that_breaks_a_hint_is_a_source_error(layer: DataLayer, engine: sa.Engine):
    with pytest.raises(SourceDataError, match="orders.*does not fit"):
        layer.load(target(hints={"n": "integer"}), stream([{"id": 1, "n": "abc"}]), context())
    assert sync_state(engine) is None


def test_missing_schema_is_created(layer: DataLayer, engine: sa.Engine):
    layer.load(target(schema="raw_shop"), stream([{"id": 1}]), context())
    assert rows(engine, "select id from raw_shop.shop_orders") == [(1,)]


# --- identifiers -------------------------------------------------------------------------------


def test_hostile_identifiers_are_quoted(layer: DataLayer, engine: sa.Engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("create table y (keep int)")
    hostile = 'x"; drop table y; --'
    records = [{"id": 1, hostile: "v", "select": 1, "Mixed Case": 2, "a%s": 3, "tenant_id": "B"}]
    layer.load(
        target(table='t"; drop table y; --', schema='s"; drop table y; --'),
        stream(records),
        context(),
    )
    assert rows(engine, "select to_regclass('y')::text") == [("y",)]
    found = rows(
        engine,
        f'select {psycopg.sql.Identifier(hostile).as_string()}, "select", "Mixed Case", "a%s",'
        ' tenant_id, _source_tenant_id from "s""; drop table y; --"."t""; drop table y; --"',
    )
    assert found == [("v", 1, 2, 3, "A", "B")]


def test_63_byte_names_shortened_without_collision(layer: DataLayer, engine: sa.Engine):
    prefix = "customer_lifetime_value_in_the_reporting_currency_of_the_tenant_"
    a, b = prefix + "before_tax", prefix + "after_tax"
    assert column_name(a) != column_name(b)
    assert column_name(a) == column_name(a)
    assert all(len(column_name(n).encode()) <= 63 for n in (a, b, "é" * 40))
    layer.load(target(), stream([{"id": 1, a: 1, b: 2}]), context())
    layer.load(target(), stream([{"id": 2, a: 3, b: 4}]), context())
    names = set(column_types(engine))
    assert {column_name(a), column_name(b)} <= names
    assert rows(
        engine,
        f'select "{column_name(a)}", "{column_name(b)}" from {TABLE} order by id',
    ) == [(1, 2), (3, 4)]


# --- row-level security --------------------------------------------------------------------------


def test_authenticated_sees_only_its_tenant_and_anon_nothing(layer: DataLayer, engine: sa.Engine):
    layer.load(target(), stream([{"id": 1, "v": "a"}]), context("acme", tenant="A"))
    layer.load(target(), stream([{"id": 2, "v": "b"}]), context("bolt", tenant="B"))

    def as_role(role: str, query: str, tenant: str = "A") -> list[tuple]:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"set local role {role}")
            conn.execute(
                sa.text("select set_config('request.jwt.claims', :c, true)"),
                {"c": f'{{"tenant_id": "{tenant}"}}'},
            )
            return [tuple(r) for r in conn.exec_driver_sql(query).all()]

    assert as_role("authenticated", f"select tenant_id, id from {TABLE}") == [("A", 1)]
    assert as_role("authenticated", f"select id from {TABLE}", tenant="B") == [(2,)]
    assert as_role(
        "authenticated", "select tenant_id, integration_id, stream from public.synkro_sync_status"
    ) == [("A", "acme", "orders")]
    for query in (f"select * from {TABLE}", "select * from public.synkro_sync_status"):
        with pytest.raises(sa.exc.ProgrammingError) as denied:
            as_role("anon", query)
        assert isinstance(denied.value.orig, psycopg.errors.InsufficientPrivilege)


def test_rls_applies_in_a_created_schema(layer: DataLayer, engine: sa.Engine):
    layer.load(target(schema="crm"), stream([{"id": 1}]), context("acme", tenant="A"))
    layer.load(target(schema="crm"), stream([{"id": 2}]), context("bolt", tenant="B"))
    with engine.begin() as conn:
        conn.exec_driver_sql("set local role authenticated")
        conn.exec_driver_sql(
            "select set_config('request.jwt.claims', '{\"tenant_id\":\"B\"}', true)"
        )
        assert conn.exec_driver_sql(f"select id from crm.{TABLE}").all() == [(2,)]


# --- concurrency -------------------------------------------------------------------------------


def test_concurrent_loads_into_one_table_do_not_deadlock(layer: DataLayer, engine: sa.Engine):
    errors: list[BaseException] = []

    def run(integration: str, offset: int) -> None:
        try:
            for round_ in range(4):
                records = [{"id": i, f"col_{integration}_{round_}": i} for i in range(200)]
                layer.load(target(), stream(records[:100], records[100:]), context(integration))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"i{n}", n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert rows(engine, f"select count(*), count(distinct integration_id) from {TABLE}") == [
        (800, 4)
    ]
    assert len(column_types(engine)) == 5 + 16


def _shop_like(first_id: int, count: int) -> list[dict]:
    """Records shaped like the shop's products and orders: lists, lists of dicts, nested dicts,
    decimals as strings, ISO timestamps."""
    return [
        {
            "id": i,
            "sku": f"SKU-{i:04d}",
            "price": f"{i}.95",
            "tags": ["new", "sale", "eco"][: i % 3],
            "line_items": [{"product_id": i, "quantity": 2, "unit_price": "4.20"}],
            "meta": {"dims": {"w": i, "h": 2}, "flags": [True, None]},
            "updated_at": f"2025-03-{1 + i % 28:02d}T10:00:00Z",
        }
        for i in range(first_id, first_id + count)
    ]


@pytest.mark.parametrize("mode", ["merge", "append", "replace"])
def test_two_first_loads_of_one_table_at_once_both_land(
    layer: DataLayer, engine: sa.Engine, mode: str
):
    # Both loads stage their first batch before either merges, so each one starts while the
    # table does not exist yet and one of them finds it created by the other at merge time.
    staged = threading.Barrier(2, timeout=30)
    results: dict[str, LoadStats] = {}
    errors: list[BaseException] = []
    spec_target = target(
        mode, cursor="updated_at", hints={"price": "numeric", "updated_at": "timestamptz"}
    )

    def batches() -> Iterator[list[dict]]:
        yield _shop_like(1, 40)
        staged.wait()
        yield _shop_like(41, 40)

    def run(integration: str) -> None:
        try:
            read = StreamRead(parts=iter([BatchesPart(batches())]))
            results[integration] = layer.load(spec_target, read, context(integration))
        except BaseException as error:
            errors.append(error)
            staged.abort()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("acme", "bolt")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(s.table_created for s in results.values()) == [False, True]
    assert {s.rows_inserted for s in results.values()} == {80}
    types = column_types(engine)
    assert {k: types[k] for k in ("price", "tags", "line_items", "meta", "updated_at")} == {
        "price": "numeric",
        "tags": "jsonb",
        "line_items": "jsonb",
        "meta": "jsonb",
        "updated_at": "timestamp with time zone",
    }
    for integration in ("acme", "bolt"):
        assert rows(
            engine,
            f"select count(*), count(distinct id), sum(price)::text from {TABLE}"
            " where integration_id = :i",
            i=integration,
        ) == [(80, 80, str(sum(Decimal(f"{i}.95") for i in range(1, 81))))]
        assert rows(
            engine,
            f"select tags, line_items, meta, updated_at from {TABLE}"
            " where integration_id = :i and id = 44",
            i=integration,
        ) == [
            (
                ["new", "sale"],
                [{"product_id": 44, "quantity": 2, "unit_price": "4.20"}],
                {"dims": {"w": 44, "h": 2}, "flags": [True, None]},
                datetime(2025, 3, 17, 10, tzinfo=UTC),
            )
        ]
    key = rows(
        engine,
        "select pg_get_constraintdef(oid) from pg_constraint"
        " where conrelid = cast(:t as regclass) and contype = 'p'",
        t=TABLE,
    )
    assert key == ([("PRIMARY KEY (integration_id, id)",)] if mode == "merge" else [])


def test_large_batches_are_staged_in_slices(database_url: str, engine: sa.Engine):
    layer = DataLayer(database_url=database_url, batch_rows=7)
    records = [{"id": i, "v": i if i < 30 else f"t{i}"} for i in range(50)]
    stats = layer.load(target(), stream(records), context())
    assert stats.rows_inserted == 50
    assert rows(engine, f"select v from {TABLE} where id in (3, 40) order by id") == [
        ("3",),
        ("t40",),
    ]
