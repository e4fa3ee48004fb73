"""SQL fast paths (PostgreSQL COPY pass-through, MariaDB via connectorx + Arrow) land exactly what
the records path lands: same rows (checksum), same types, same cursor."""

from __future__ import annotations

import pyarrow as pa
import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.columns import ColumnShaper, shape_read
from synkro_dagster.connectors.sql import SqlConnector
from synkro_dagster.connectors.streams import read_stream
from synkro_dagster.contracts import CopyBatch, Integration, SourceDataError
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.test_datalayer_typed import checksum

# The source fixtures live beside the connector tests; importing them registers them here.
from synkro_dagster_tests.test_sql_connector import (  # noqa: F401
    mariadb_skip_reason,
    mariadb_source_url,
    pg_source_url,
    source_url,
)

PG_TABLE = """
create table wide (
    id integer primary key,
    big bigint,
    small smallint,
    code char(6),
    name varchar(40),
    note text,
    amount numeric(14, 4),
    huge numeric(40, 20),
    ratio double precision,
    flag boolean,
    born date,
    changed_at timestamp,
    seen_at timestamptz,
    payload jsonb,
    ref uuid
)
"""
PG_ROW = (
    "insert into wide select i, i * 10000000000, mod(i, 300)::smallint, 'c' || i, 'name ' || i,"
    " case when mod(i, 5) = 0 then null else E'line\\ttab \"q\" ' || i end,"
    " (i * 1.2345)::numeric(14,4), ('12345678901234567890.' || lpad(i::text, 20, '0'))::numeric,"
    " i / 7.0, mod(i, 2) = 0, date '2026-01-01' + i, timestamp '2026-01-01 00:00:00' + i * interval '1 minute',"
    " timestamptz '2026-01-01 00:00:00+02' + i * interval '1 second', jsonb_build_object('i', i, 'l', array[i, 2]),"
    " md5(i::text)::uuid from generate_series(1, {n}) i"
)
MARIADB_TABLE = """
create table wide (
    id int primary key,
    big bigint,
    uns int unsigned,
    ubig bigint unsigned,
    code char(6),
    name varchar(40),
    note text,
    amount decimal(14, 4),
    huge decimal(40, 20),
    ratio double,
    flag tinyint(1),
    born date,
    changed_at datetime(6),
    payload json,
    blobby blob,
    at_time time
)
"""
MARIADB_ROW = (
    "insert into wide select seq, seq * 10000000000, 4000000000 + seq, 18446744073709551615 - seq,"
    " concat('c', seq), concat('name ', seq), if(mod(seq, 5) = 0, null, concat('line\\ttab \"q\" ', seq)),"
    " seq * 1.2345, concat('12345678901234567890.', lpad(seq, 20, '0')), seq / 7.0e0, mod(seq, 2) = 0,"
    " date '2026-01-01' + interval seq day, timestamp '2026-01-01 00:00:00' + interval seq minute,"
    " json_object('i', seq, 'l', json_array(seq, 2)), unhex(md5(seq)), sec_to_time(seq * 37)"
    " from seq_1_to_{n}"
)

SPEC = SourceSpec.model_validate(
    {
        "name": "wide",
        "engine": "sql",
        "streams": [
            {
                "name": "wide",
                "primary_key": "id",
                "cursor": {"field": "changed_at"},
                "sql": {"table": "wide"},
            }
        ],
    }
)


def _create(url: str, n: int) -> None:
    engine = sa.create_engine(url)
    mariadb = engine.dialect.name in ("mysql", "mariadb")
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table if exists wide")
        conn.exec_driver_sql(MARIADB_TABLE if mariadb else PG_TABLE)
        conn.exec_driver_sql((MARIADB_ROW if mariadb else PG_ROW).format(n=n))
    engine.dispose()


def _sync(
    layer: DataLayer,
    url: str,
    table: str,
    fast: bool,
    cursor: str | None = None,
    spec: SourceSpec = SPEC,
    python_shaping: bool = False,
) -> LoadStats:
    """A sync of the stream; `python_shaping` applies column control to the records in Python, as
    every stream with column control was read before the source query did it."""
    integration = Integration(id="acme", tenant="acme", spec="wide", config={"url": url})
    stream = spec.stream("wide")
    target = TableTarget.for_stream(spec, stream)
    target = TableTarget(**{**target.__dict__, "table": table})
    with SqlConnector(batch_size=100, fast_paths=fast).session(spec, integration) as session:
        if python_shaping:
            shaper = ColumnShaper(spec, stream, integration)
            read = shape_read(session.read(stream, cursor), shaper)
        else:
            read = read_stream(session, spec, stream, integration, cursor)
        return layer.load(
            target,
            read,
            LoadContext(tenant_id="acme", integration_id="acme", stream="wide", run_id="r"),
        )


def test_the_fast_path_is_the_one_taken(source_url: str) -> None:  # noqa: F811
    _create(source_url, 10)
    integration = Integration(id="acme", tenant="acme", spec="wide", config={"url": source_url})
    with SqlConnector().session(SPEC, integration) as session:
        part = next(session.read(SPEC.stream("wide"), None).parts)
        batches = list(part.typed_batches()) if "mysql" in source_url else None
        if batches is None:
            copy = next(part.typed_batches())
            assert isinstance(copy, CopyBatch)
            assert dict(copy.columns)["amount"] == "numeric"
            assert bytes(next(iter(copy.chunks)))[:6] == b"PGCOPY"
        else:
            assert all(isinstance(b, pa.RecordBatch) for b in batches)
            # Decimals come as their exact text, not rounded to a fixed scale.
            assert batches[0].schema.field("huge").type in (pa.string(), pa.large_string())
        # Every other consumer still reads records.
        records = [row for batch in part.batches() for row in batch]
        assert len(records) == 10 and isinstance(records[0], dict)


def test_pass_through_null_key_names_the_stream(
    pg_source_url: str,  # noqa: F811
    database_url: str,
) -> None:
    engine = sa.create_engine(pg_source_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table wide (id integer, changed_at timestamp)")
        conn.exec_driver_sql("insert into wide values (1, now()), (null, now())")
    engine.dispose()
    with pytest.raises(SourceDataError, match="stream 'wide'.*primary key field 'id'"):
        _sync(DataLayer(database_url=database_url), pg_source_url, "wide_fast", fast=True)


# Column control: fields left out, renamed, the naming rule and a type hint on a renamed field.
SHAPED = SourceSpec.model_validate(
    {
        "name": "wide",
        "engine": "sql",
        "naming": "snake_case",
        "streams": [
            {
                "name": "wide",
                "primary_key": "id",
                "cursor": {"field": "changed_at"},
                "columns": {
                    "exclude": ["note", "payload"],
                    "rename": {"changed_at": "modified_at", "code": "sku"},
                    "amount": "numeric(20,4)",
                },
                "sql": {"table": "wide"},
            }
        ],
    }
)


@pytest.mark.parametrize("spec", [SPEC, SHAPED], ids=["all_columns", "column_control"])
def test_fast_path_and_records_path_land_identical_rows(
    spec: SourceSpec,
    source_url: str,  # noqa: F811
    database_url: str,
    engine: sa.Engine,
) -> None:
    _create(source_url, 450)
    layer = DataLayer(database_url=database_url)
    fast = _sync(layer, source_url, "wide_fast", True, spec=spec)
    slow = _sync(layer, source_url, "wide_records", False, spec=spec)
    # Column control applied to the records in Python (how such streams were read before).
    python = _sync(layer, source_url, "wide_python", False, spec=spec, python_shaping=True)
    assert fast.rows_read == slow.rows_read == python.rows_read == fast.rows_inserted == 450
    assert fast.cursor_after == slow.cursor_after == python.cursor_after
    assert (
        checksum(engine, "wide_fast")
        == checksum(engine, "wide_records")
        == checksum(engine, "wide_python")
    )
    if spec is SHAPED:
        landed = checksum(engine, "wide_fast")[2]
        assert {"sku", "modified_at"} <= set(landed)
        assert not {"note", "payload", "code", "changed_at"} & set(landed)

    # From a stored cursor (rendered as a literal for COPY / connectorx): the same rows again.
    cursor = fast.cursor_after
    again_fast = _sync(layer, source_url, "wide_fast", True, cursor, spec=spec)
    again_slow = _sync(layer, source_url, "wide_records", False, cursor, spec=spec)
    assert again_fast.rows_read == again_slow.rows_read == 1
    assert checksum(engine, "wide_fast") == checksum(engine, "wide_records")


def test_a_column_controlled_stream_takes_the_fast_path(source_url: str) -> None:  # noqa: F811
    _create(source_url, 10)
    integration = Integration(id="acme", tenant="acme", spec="wide", config={"url": source_url})
    stream = SHAPED.stream("wide")
    with SqlConnector().session(SHAPED, integration) as session:
        read = read_stream(session, SHAPED, stream, integration, None)
        part = next(read.parts)
        batch = next(iter(part.typed_batches()))
        if isinstance(batch, CopyBatch):
            names = [name for name, _ in batch.columns]
            list(batch.chunks)
        else:
            assert isinstance(batch, pa.RecordBatch)
            names = batch.schema.names
        # Only the landed fields, under their landed names, straight from the source query.
        assert "sku" in names and "modified_at" in names
        assert not {"note", "payload", "code", "changed_at"} & set(names)
        assert "modified_at" in read.column_types and "changed_at" not in read.column_types


def test_a_hashed_field_keeps_the_records_path(pg_source_url: str) -> None:  # noqa: F811
    _create(pg_source_url, 3)
    spec = SourceSpec.model_validate(
        {
            "name": "wide",
            "engine": "sql",
            "secrets": ["hash_salt"],
            "streams": [
                {
                    "name": "wide",
                    "primary_key": "id",
                    "columns": {"select": ["id", "name"], "hash": ["name"]},
                    "sql": {"table": "wide"},
                }
            ],
        }
    )
    integration = Integration(
        id="acme",
        tenant="acme",
        spec="wide",
        config={"url": pg_source_url},
        secrets={"hash_salt": "salt"},
    )
    stream = spec.stream("wide")
    with SqlConnector().session(spec, integration) as session:
        part = next(read_stream(session, spec, stream, integration, None).parts)
        batches = list(part.typed_batches())
    assert all(isinstance(b, list) for b in batches)
    records = [r for b in batches for r in b]
    assert sorted(records[0]) == ["id", "name"] and len(records[0]["name"]) == 64
