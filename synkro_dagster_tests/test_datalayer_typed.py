"""Typed batches (Arrow record batches, binary COPY) land exactly what the records path lands."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

from synkro_dagster.contracts import BatchesPart, SourceDataError, StreamRead
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget

TABLE = "typed_orders"


def target(
    mode: str = "merge", cursor: str | None = "updated_at", table: str = TABLE
) -> TableTarget:
    return TableTarget(
        schema="public",
        table=table,
        primary_key=["id"],
        write_mode=mode,  # type: ignore[arg-type]
        cursor_field=cursor,
    )


def context(integration: str = "acme", run: str = "run-1") -> LoadContext:
    return LoadContext(tenant_id="A", integration_id=integration, stream="orders", run_id=run)


def records(start: int, count: int, changed: bool = False) -> list[dict]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "id": i,
            "big": i * 10_000_000_000,
            "name": f'name {i}, "quoted"\ttab' if i % 7 else None,
            "amount": Decimal(f"{i}.{i % 100:02d}") * (-1 if i % 3 == 0 else 1),
            # As the source wrote them: a numeric(38,18) keeps its 18 decimals.
            "precise": Decimal(f"1234567890123456789{i % 10}.1234567890123456{i % 100:02d}"),
            "ratio": i / 7 if not changed else i / 3,
            "paid": i % 2 == 0,
            "updated_at": base + timedelta(seconds=i),
            "day": date(2026, 1, 1) + timedelta(days=i % 400),
            "iso_text": f"2026-02-{1 + i % 28:02d}",
            "tags": ["a", str(i)] if i % 5 else None,
        }
        for i in range(start, start + count)
    ]


def arrow(batch: list[dict]) -> pa.RecordBatch:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("big", pa.int64()),
            ("name", pa.string()),
            ("amount", pa.decimal128(12, 2)),
            ("precise", pa.decimal128(38, 18)),
            ("ratio", pa.float64()),
            ("paid", pa.bool_()),
            ("updated_at", pa.timestamp("us", tz="UTC")),
            ("day", pa.date32()),
            ("iso_text", pa.string()),
            ("tags", pa.list_(pa.string())),
        ]
    )
    return pa.RecordBatch.from_pylist(batch, schema=schema)


def read(*batches) -> StreamRead:
    return StreamRead(parts=iter([BatchesPart(iter(list(batches)))]))


def checksum(engine: sa.Engine, table: str = TABLE) -> tuple[int, str, dict[str, str]]:
    with engine.connect() as conn:
        columns = [
            name
            for (name,) in conn.execute(
                sa.text(
                    "select column_name from information_schema.columns where table_name = :t"
                    " and column_name not in ('_synkro_synced_at', '_synkro_run_id')"
                    " order by column_name"
                ),
                {"t": table},
            )
        ]
        kinds = dict(
            conn.execute(
                sa.text(
                    "select column_name, data_type from information_schema.columns"
                    " where table_name = :t"
                ),
                {"t": table},
            ).all()
        )
        listed = ", ".join(f'"{c}"' for c in columns)
        count, digest = conn.execute(
            sa.text(
                f"select count(*), md5(string_agg(row({listed})::text, '|' order by id))"
                f" from {table}"
            )
        ).one()
    return count, digest, kinds


@pytest.fixture
def layer(database_url: str) -> DataLayer:
    return DataLayer(database_url=database_url)


def test_arrow_batches_land_the_same_rows_as_records(layer: DataLayer, engine: sa.Engine) -> None:
    batches = [records(1, 500), records(501, 500)]
    layer.load(target(table="via_records"), read(*batches), context())
    stats = layer.load(target(table="via_arrow"), read(*map(arrow, batches)), context())
    assert stats.rows_read == stats.rows_inserted == 1000
    via_records, via_arrow = checksum(engine, "via_records"), checksum(engine, "via_arrow")
    assert via_arrow == via_records
    count, _, kinds = via_arrow
    assert count == 1000
    assert kinds["amount"] == kinds["precise"] == kinds["ratio"] == "numeric"
    assert kinds["id"] == "integer" and kinds["big"] == "bigint"
    assert kinds["updated_at"] == "timestamp with time zone" and kinds["day"] == "date"
    assert kinds["iso_text"] == "date" and kinds["tags"] == "jsonb"
    with engine.connect() as conn:
        precise = conn.execute(sa.text("select precise from via_arrow where id = 1")).scalar()
    assert precise == Decimal("12345678901234567891.123456789012345601")


def test_arrow_null_primary_key_names_the_stream_and_record(layer: DataLayer) -> None:
    batch = pa.RecordBatch.from_pylist([{"id": 1, "v": "a"}, {"id": None, "v": "b"}])
    with pytest.raises(SourceDataError, match=r"stream 'orders'.*'id'.*'v': 'b'"):
        layer.load(target(cursor=None), read(batch), context())


def test_records_and_arrow_batches_mix_in_one_load_and_widen(
    layer: DataLayer, engine: sa.Engine
) -> None:
    small = pa.RecordBatch.from_pylist(
        [{"id": 1, "n": 5, "when": "x"}],
        schema=pa.schema([("id", pa.int32()), ("n", pa.int32()), ("when", pa.string())]),
    )
    wide = pa.RecordBatch.from_pylist([{"id": 2, "n": 2**40, "extra": 1.5}])
    as_records = [{"id": 3, "n": "not a number", "when": "y"}]
    stats = layer.load(target(cursor=None), read(small, wide, as_records), context())
    assert stats.rows_inserted == 3
    with engine.connect() as conn:
        kinds = dict(
            conn.execute(
                sa.text(
                    "select column_name, data_type from information_schema.columns"
                    " where table_name = :t"
                ),
                {"t": TABLE},
            ).all()
        )
        landed = conn.execute(sa.text(f"select id, n, extra from {TABLE} order by id")).all()
    assert kinds["n"] == "text" and kinds["extra"] == "numeric"
    assert landed == [(1, "5", None), (2, str(2**40), Decimal("1.5")), (3, "not a number", None)]


def test_arrow_widening_inside_typed_staging(layer: DataLayer, engine: sa.Engine) -> None:
    first = pa.RecordBatch.from_pylist(
        [{"id": 1, "n": 5}], schema=pa.schema([("id", pa.int32()), ("n", pa.int32())])
    )
    second = pa.RecordBatch.from_pylist([{"id": 2, "n": 2**40}])
    layer.load(target(cursor=None), read(first, second), context())
    with engine.connect() as conn:
        landed = conn.execute(sa.text(f"select id, n from {TABLE} order by id")).all()
    assert landed == [(1, 5), (2, 2**40)]


def test_a_crash_during_an_arrow_load_changes_nothing(layer: DataLayer, engine: sa.Engine) -> None:
    layer.load(target(), read(arrow(records(1, 10))), context())
    cursor = layer.get_cursor("acme", "orders")
    assert cursor is not None
    assert dt.datetime.fromisoformat(cursor) == dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC)

    def failing():
        yield arrow(records(1, 10, changed=True))
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        layer.load(target(), StreamRead(parts=iter([BatchesPart(failing())])), context(run="run-2"))
    assert layer.get_cursor("acme", "orders") == cursor
    with engine.connect() as conn:
        runs = conn.execute(sa.text(f"select distinct _synkro_run_id from {TABLE}")).all()
    assert runs == [("run-1",)]
