"""A first load into an empty target goes straight into it by COPY, and lands exactly what staging
and merge land: same rows (checksum), same table (types, NOT NULLs, defaults, key), same cursor
and sync state — or it goes back to staging, with the same result, where it cannot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.sql import SqlConnector
from synkro_dagster.contracts import BatchesPart, CopyBatch, Integration, StreamRead
from synkro_dagster.datalayer.deletes import MassDeleteBlocked
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.test_datalayer_typed import arrow, records

# The scratch source database fixture lives beside the SQL connector tests.
from synkro_dagster_tests.test_sql_connector import pg_source_url  # noqa: F401


@pytest.fixture
def layer(database_url: str) -> DataLayer:
    return DataLayer(database_url=database_url)


def target(
    table: str, mode: str = "merge", cursor: str | None = "updated_at", sweep: str | None = None
) -> TableTarget:
    return TableTarget(
        schema="public",
        table=table,
        primary_key=["id"],
        write_mode=mode,  # type: ignore[arg-type]
        cursor_field=cursor,
        sweep=sweep,  # type: ignore[arg-type]
    )


def context(
    stream: str, integration: str = "acme", tenant: str = "A", whole: bool = False
) -> LoadContext:
    return LoadContext(
        tenant_id=tenant,
        integration_id=integration,
        stream=stream,
        run_id="run-1",
        reads_whole_source=whole,
    )


class Source:
    """A restartable read (a function of the start cursor, as a sync passes): counts its reads."""

    def __init__(self, batches: Callable[[], list[Any]]) -> None:
        self.batches = batches
        self.reads = 0

    def __call__(self, start: str | None) -> StreamRead:
        self.reads += 1
        return StreamRead(parts=iter([BatchesPart(iter(self.batches()))]))


def both_ways(
    layer: DataLayer,
    batches: Callable[[], list[Any]],
    name: str,
    shared: bool = False,
    whole: bool = False,
    **kwargs: Any,
) -> tuple[LoadStats, LoadStats, Source]:
    """The same batches loaded by a restartable read (may go direct) into `<name>_direct` and by a
    one-shot read (always staging) into `<name>_staging`. `shared`: both tables already hold
    another integration's rows (ids 1-200, another tenant)."""
    if shared:
        for table in (f"{name}_direct", f"{name}_staging"):
            layer.load(
                target(table, **kwargs),
                StreamRead(parts=iter([BatchesPart(iter([records(1, 200)]))])),
                context(f"{table}_first", integration="first", tenant="T1"),
            )
    source = Source(batches)
    direct = layer.load(
        target(f"{name}_direct", **kwargs), source, context(f"{name}_direct", whole=whole)
    )
    staging = layer.load(
        target(f"{name}_staging", **kwargs),
        StreamRead(parts=iter([BatchesPart(iter(batches()))])),
        context(f"{name}_staging", whole=whole),
    )
    return direct, staging, source


def landed(engine: sa.Engine, table: str) -> dict[str, Any]:
    """Everything a reader can tell about the table: columns in order with type, nullability and
    default, the primary key, row-level security, and an md5 of every row in key order."""
    with engine.connect() as conn:
        columns = conn.execute(
            sa.text(
                "select column_name, format_type(atttypid, atttypmod), is_nullable, column_default"
                " from information_schema.columns c join pg_attribute a"
                " on a.attrelid = cast(:r as text)::regclass and a.attname = c.column_name"
                " where table_name = :t order by ordinal_position"
            ),
            {"t": table, "r": table},
        ).all()
        key = conn.execute(
            sa.text(
                "select pg_get_constraintdef(oid) from pg_constraint"
                " where conrelid = cast(:r as text)::regclass and contype = 'p'"
            ),
            {"t": table, "r": table},
        ).scalar()
        secured = conn.execute(
            sa.text("select relrowsecurity from pg_class where oid = cast(:r as text)::regclass"),
            {"r": table},
        ).scalar()
        # Times of the load's transaction differ from load to load (which rows are soft-deleted
        # is compared by `swept_ids`).
        timed = (
            "_synkro_synced_at",
            "_synkro_valid_from",
            "_synkro_valid_to",
            "_synkro_deleted_at",
        )
        names = [c[0] for c in columns if c[0] not in timed]
        listed = ", ".join(f'"{n}"' for n in names)
        count, digest = conn.execute(
            sa.text(
                f"select count(*), md5(string_agg(row({listed})::text, '|'"
                f" order by integration_id, id)) from {table}"
            )
        ).one()
    return {
        "columns": [tuple(c) for c in columns],
        "key": key,
        "rls": secured,
        "rows": count,
        "md5": digest,
    }


def sync_state(engine: sa.Engine, stream: str) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(
                    "select cursor, rows_last_sync, tenant_id, state, last_run_id"
                    " from synkro.sync_state where stream = :s"
                ),
                {"s": stream},
            ).one()
        )


def same_outcome(
    engine: sa.Engine, direct: LoadStats, staging: LoadStats, name: str
) -> dict[str, Any]:
    assert landed(engine, f"{name}_direct") == landed(engine, f"{name}_staging")
    assert direct.cursor_after == staging.cursor_after
    assert sync_state(engine, f"{name}_direct") == sync_state(engine, f"{name}_staging")
    keys = (
        "rows_read",
        "rows_inserted",
        "rows_updated",
        "duplicates_collapsed",
        "future_records",
        "rows_deleted",
        "deletes",
    )
    assert [getattr(direct, k) for k in keys] == [getattr(staging, k) for k in keys]
    assert staging.load_path == "staging"
    return landed(engine, f"{name}_direct")


def test_first_load_of_records_goes_direct_and_lands_what_staging_lands(
    layer: DataLayer, engine: sa.Engine
) -> None:
    direct, staging, source = both_ways(
        layer, lambda: [records(1, 400), records(401, 400), records(801, 5)], "first"
    )
    assert direct.load_path == "direct" and source.reads == 1
    table = same_outcome(engine, direct, staging, "first")
    assert table["rows"] == direct.rows_inserted == 805
    assert direct.cursor_after is not None and direct.table_created
    # The column defaults that carried tenant, integration and run id are gone again.
    assert [c for c in table["columns"] if c[3] is not None] == [
        ("_synkro_synced_at", "timestamp with time zone", "NO", "now()")
    ]


def test_arrow_batches_go_direct_where_their_types_are_the_target_types(
    layer: DataLayer, engine: sa.Engine
) -> None:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("amount", pa.decimal128(12, 2)),
            ("paid", pa.bool_()),
            ("updated_at", pa.timestamp("us", tz="UTC")),
            ("day", pa.date32()),
        ]
    )

    def batches() -> list[Any]:
        rows = records(1, 300)
        return [
            pa.RecordBatch.from_pylist(part, schema=schema) for part in (rows[:150], rows[150:])
        ]

    direct, staging, _ = both_ways(layer, batches, "arrow")
    assert direct.load_path == "direct"
    same_outcome(engine, direct, staging, "arrow")

    # A float column is cast on the way (double -> exact numeric text): staging keeps it.
    cast, staged, _ = both_ways(layer, lambda: [arrow(records(1, 50))], "floats")
    assert cast.load_path == "staging"
    same_outcome(engine, cast, staged, "floats")


def test_a_second_integration_goes_direct_into_a_shared_table(
    layer: DataLayer, engine: sa.Engine
) -> None:
    direct, staging, _ = both_ways(layer, lambda: [records(100, 300)], "shared", shared=True)
    assert direct.load_path == "direct" and not direct.table_created
    table = same_outcome(engine, direct, staging, "shared")
    assert table["rows"] == 500
    # Its next load has rows of its own to merge with: staging.
    again = layer.load(target("shared_direct"), Source(lambda: [records(1, 3)]), context("x"))
    assert again.load_path == "staging"


def test_a_repeated_key_goes_back_to_staging_and_keeps_the_latest_record(
    layer: DataLayer, engine: sa.Engine
) -> None:
    def batches() -> list[Any]:
        later = records(5, 1, changed=True)
        later[0]["updated_at"] += timedelta(days=1)
        return [records(1, 10), later, records(11, 10)]

    direct, staging, source = both_ways(layer, batches, "dupes")
    assert direct.load_path == "staging" and source.reads == 2
    table = same_outcome(engine, direct, staging, "dupes")
    assert table["rows"] == 20 and direct.duplicates_collapsed == 1


def test_a_repeated_key_in_a_shared_table_goes_back_to_staging(
    layer: DataLayer, engine: sa.Engine
) -> None:
    batches = [records(1, 10), records(3, 1, changed=True)]
    direct, staging, source = both_ways(layer, lambda: batches, "shareddup", shared=True)
    assert direct.load_path == "staging" and source.reads == 2
    same_outcome(engine, direct, staging, "shareddup")


def test_a_type_that_widens_later_goes_back_to_staging(layer: DataLayer, engine: sa.Engine) -> None:
    def batches() -> list[Any]:
        first = records(1, 10)
        second = records(11, 10)
        for record in second:
            record["day"] = "not a date"  # the column becomes text: the source's own text
        second[0]["big"] = 2**70  # bigint -> numeric
        return [first, second]

    direct, staging, source = both_ways(layer, batches, "widen")
    assert direct.load_path == "staging" and source.reads == 2
    table = same_outcome(engine, direct, staging, "widen")
    kinds = {c[0]: c[1] for c in table["columns"]}
    assert kinds["day"] == "text" and kinds["big"] == "numeric"


def test_a_column_that_appears_later(layer: DataLayer, engine: sa.Engine) -> None:
    def batches() -> list[Any]:
        later = records(11, 10)
        for record in later:
            record["extra"] = Decimal("1.50")
        return [records(1, 10), later]

    # A new table: staging would create the column before the system columns, so staging it is.
    direct, staging, source = both_ways(layer, batches, "later")
    assert direct.load_path == "staging" and source.reads == 2
    same_outcome(engine, direct, staging, "later")

    # A shared table adds new columns at its end on either path: the load stays direct.
    direct, staging, source = both_ways(layer, batches, "laterdup", shared=True)
    assert direct.load_path == "direct" and direct.columns_added == ["extra"]
    same_outcome(engine, direct, staging, "laterdup")


def test_a_failure_mid_load_commits_nothing(layer: DataLayer, engine: sa.Engine) -> None:
    def failing() -> Iterator[list[dict]]:
        yield records(1, 100)
        yield records(101, 100)
        raise RuntimeError("source went away")

    def read(start: str | None) -> StreamRead:
        return StreamRead(parts=iter([BatchesPart(failing())]))

    with pytest.raises(RuntimeError, match="source went away"):
        layer.load(target("crashed"), read, context("crashed"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select to_regclass('public.crashed')")).scalar() is None
        assert conn.execute(sa.text("select count(*) from synkro.sync_state")).scalar() == 0
    assert layer.get_cursor("acme", "crashed") is None


@pytest.mark.parametrize("mode", ["history", "append", "replace"])
def test_other_write_modes_keep_staging(layer: DataLayer, engine: sa.Engine, mode: str) -> None:
    direct, staging, _ = both_ways(
        layer, lambda: [records(1, 30), records(31, 30)], f"mode_{mode}", mode=mode
    )
    assert direct.load_path == "staging"
    same_outcome(engine, direct, staging, f"mode_{mode}")


def test_postgresql_copy_pass_through_goes_direct(
    pg_source_url: str,  # noqa: F811
    layer: DataLayer,
    engine: sa.Engine,
) -> None:
    source = sa.create_engine(pg_source_url)
    with source.begin() as conn:
        conn.exec_driver_sql(
            "create table orders (id integer primary key, name text not null, amount numeric,"
            " paid boolean, updated_at timestamptz, payload jsonb)"
        )
        conn.exec_driver_sql(
            "insert into orders select i, 'name ' || i, i * 1.25, mod(i, 2) = 0,"
            " timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute',"
            " jsonb_build_object('i', i) from generate_series(1, 300) i"
        )
    source.dispose()
    spec = SourceSpec.model_validate(
        {
            "name": "shop",
            "engine": "sql",
            "streams": [
                {
                    "name": "orders",
                    "primary_key": "id",
                    "cursor": {"field": "updated_at"},
                    "sql": {"table": "orders"},
                }
            ],
        }
    )
    integration = Integration(id="acme", tenant="A", spec="shop", config={"url": pg_source_url})
    stream = spec.stream("orders")
    landing = TableTarget.for_stream(spec, stream)
    with SqlConnector(batch_size=100).session(spec, integration) as session:
        first = next(session.read(stream, None).parts)
        assert isinstance(next(iter(first.typed_batches())), CopyBatch)
        direct = layer.load(
            TableTarget(**{**landing.__dict__, "table": "pg_direct"}),
            lambda start: session.read(stream, start),
            context("pg_direct"),
        )
    # The same pass-through read, one-shot: staged and merged.
    with SqlConnector(batch_size=100).session(spec, integration) as session:
        staging = layer.load(
            TableTarget(**{**landing.__dict__, "table": "pg_staging"}),
            session.read(stream, None),
            context("pg_staging"),
        )
    assert direct.load_path == "direct"
    table = same_outcome(engine, direct, staging, "pg")
    nullable = {c[0]: c[2] for c in table["columns"]}
    assert nullable["name"] == "NO" and nullable["amount"] == "YES"


def test_the_future_limit_and_cursor_are_computed_as_on_staging(
    layer: DataLayer, engine: sa.Engine
) -> None:
    future = datetime.now(UTC) + timedelta(days=30)

    def batches() -> list[Any]:
        rows = records(1, 20)
        rows[3]["updated_at"] = future
        return [rows]

    direct, staging, _ = both_ways(layer, batches, "future")
    assert direct.load_path == "direct"
    same_outcome(engine, direct, staging, "future")


@pytest.mark.parametrize("cursor", ["updated_at", "day", "id", "amount", "iso_text", "name"])
def test_the_cursor_is_the_one_staging_computes_whatever_its_type(
    layer: DataLayer, engine: sa.Engine, cursor: str
) -> None:
    """Ties of one instant written in two time zones, the newest value in an earlier batch, a
    future date and time (beyond max_future): the cursor, the future count and its example are
    staging's."""
    far = datetime.now(UTC) + timedelta(days=40)

    def batches() -> list[Any]:
        first, second = records(1, 50), records(51, 50)
        first[10]["updated_at"] = datetime(2027, 1, 1, 12, tzinfo=UTC)
        second[5]["updated_at"] = datetime(2027, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
        second[6]["updated_at"] = far
        first[20]["day"] = far.date()
        first[30]["amount"] = Decimal("99999.10")
        second[7]["amount"] = Decimal("99999.1")
        return [first, second]

    direct, staging, _ = both_ways(layer, batches, f"cur_{cursor}", cursor=cursor)
    assert direct.load_path == "direct"
    same_outcome(engine, direct, staging, f"cur_{cursor}")
    assert direct.future_record_example == staging.future_record_example
    assert direct.cursor_after is not None


# --- sweeping targets: a first load goes direct, the sweep after it removes nothing ------------


def swept_ids(engine: sa.Engine, table: str, integration: str = "acme") -> list[int]:
    """The integration's soft-deleted ids (a hard sweep leaves none)."""
    with engine.connect() as conn:
        if not conn.execute(
            sa.text(
                "select exists (select 1 from information_schema.columns"
                " where table_name = :t and column_name = '_synkro_deleted_at')"
            ),
            {"t": table},
        ).scalar():
            return []
        return list(
            conn.execute(
                sa.text(
                    f"select id from {table} where integration_id = :i"
                    " and _synkro_deleted_at is not null order by id"
                ),
                {"i": integration},
            ).scalars()
        )


def read_again(layer: DataLayer, name: str, batches: list[Any], **kwargs: Any) -> list[LoadStats]:
    """A second full read into both tables of `both_ways` (staged and merged: rows exist)."""
    return [
        layer.load(
            target(f"{name}_{path}", **kwargs),
            Source(lambda: batches),
            context(f"{name}_{path}", whole=True),
        )
        for path in ("direct", "staging")
    ]


def second_read_sweeps_the_same(
    layer: DataLayer, engine: sa.Engine, name: str, batches: list[Any], **kwargs: Any
) -> list[int]:
    """After a first load each way, a second full read lacking some keys sweeps the same rows of
    both tables; returns the ids swept (hard: gone, soft: marked)."""
    direct, staging = read_again(layer, name, batches, **kwargs)
    assert direct.load_path == staging.load_path == "staging"
    same_outcome(engine, direct, staging, name)
    assert swept_ids(engine, f"{name}_direct") == swept_ids(engine, f"{name}_staging")
    assert direct.deletes == f"{kwargs['sweep']} sweep: {direct.rows_deleted} row(s)"
    with engine.connect() as conn:
        kept: set[int] = set(
            conn.execute(
                sa.text(
                    f"select id from {name}_direct where integration_id = 'acme'"
                    + (" and _synkro_deleted_at is null" if kwargs["sweep"] == "soft" else "")
                )
            ).scalars()
        )
    assert kept == {record["id"] for batch in batches for record in batch}
    return swept_ids(engine, f"{name}_direct")


@pytest.mark.parametrize("sweep", ["soft", "hard"])
@pytest.mark.parametrize("cursor", [None, "updated_at"])
def test_a_sweeping_first_load_goes_direct_and_a_later_full_read_sweeps_as_after_staging(
    layer: DataLayer, engine: sa.Engine, sweep: str, cursor: str | None
) -> None:
    name = f"sw_{sweep}_{cursor or 'full'}"
    direct, staging, source = both_ways(
        layer,
        lambda: [records(1, 300), records(301, 100)],
        name,
        whole=True,
        sweep=sweep,
        cursor=cursor,
    )
    assert direct.load_path == "direct" and source.reads == 1
    table = same_outcome(engine, direct, staging, name)
    assert table["rows"] == 400 and direct.rows_deleted == 0
    assert direct.deletes == f"{sweep} sweep: 0 row(s)"
    names = [column[0] for column in table["columns"]]
    assert ("_synkro_deleted_at" in names) == (sweep == "soft")
    assert swept_ids(engine, f"{name}_direct") == []

    # 101-200 are gone from the source: exactly those are swept, as after a staged first load.
    swept = second_read_sweeps_the_same(
        layer, engine, name, [records(1, 100), records(201, 200)], sweep=sweep, cursor=cursor
    )
    with engine.connect() as conn:
        left = conn.execute(sa.text(f"select count(*) from {name}_direct")).scalar()
    if sweep == "soft":
        assert swept == list(range(101, 201)) and left == 400
    else:
        assert swept == [] and left == 300


@pytest.mark.parametrize("sweep", ["soft", "hard"])
def test_an_incremental_sweeping_first_load_goes_direct_and_skips_the_sweep_as_staging(
    layer: DataLayer, engine: sa.Engine, sweep: str
) -> None:
    direct, staging, _ = both_ways(layer, lambda: [records(1, 50)], f"swinc_{sweep}", sweep=sweep)
    assert direct.load_path == "direct"
    same_outcome(engine, direct, staging, f"swinc_{sweep}")
    assert direct.deletes is not None and "skipped: incremental read" in direct.deletes


@pytest.mark.parametrize("sweep", ["soft", "hard"])
def test_a_sweeping_first_load_into_a_shared_table_leaves_the_other_integration_alone(
    layer: DataLayer, engine: sa.Engine, sweep: str
) -> None:
    name = f"swshared_{sweep}"
    direct, staging, _ = both_ways(
        layer, lambda: [records(100, 300)], name, shared=True, sweep=sweep, cursor=None
    )
    assert direct.load_path == "direct" and not direct.table_created
    assert direct.deletes == f"{sweep} sweep: 0 row(s)"
    assert same_outcome(engine, direct, staging, name)["rows"] == 500

    second_read_sweeps_the_same(
        layer, engine, name, [records(100, 100), records(300, 100)], sweep=sweep, cursor=None
    )
    for path in ("direct", "staging"):
        assert swept_ids(engine, f"{name}_{path}", integration="first") == []
        with engine.connect() as conn:
            others = conn.execute(
                sa.text(f"select count(*) from {name}_{path} where integration_id = 'first'")
            ).scalar()
        assert others == 200


@pytest.mark.parametrize("sweep", ["soft", "hard"])
def test_a_sweeping_first_load_that_goes_back_to_staging_sweeps_as_staging(
    layer: DataLayer, engine: sa.Engine, sweep: str
) -> None:
    name = f"swdup_{sweep}"
    batches = [records(1, 30), records(5, 1, changed=True), records(31, 30)]
    direct, staging, source = both_ways(layer, lambda: batches, name, sweep=sweep, cursor=None)
    assert direct.load_path == "staging" and source.reads == 2
    same_outcome(engine, direct, staging, name)
    assert direct.deletes == f"{sweep} sweep: 0 row(s)" and direct.duplicates_collapsed == 1

    swept = second_read_sweeps_the_same(
        layer, engine, name, [records(1, 20), records(41, 20)], sweep=sweep, cursor=None
    )
    assert swept == (list(range(21, 41)) if sweep == "soft" else [])


def test_a_mass_sweep_after_a_direct_first_load_is_blocked_as_after_staging(
    layer: DataLayer, engine: sa.Engine
) -> None:
    name = "swguard"
    direct, staging, _ = both_ways(
        layer, lambda: [records(1, 100)], name, sweep="soft", cursor=None
    )
    assert direct.load_path == "direct"
    for path in ("direct", "staging"):
        with pytest.raises(MassDeleteBlocked, match="soft sweep would remove 90 of 100 rows"):
            layer.load(
                target(f"{name}_{path}", sweep="soft", cursor=None),
                Source(lambda: [records(1, 10)]),
                context(f"{name}_{path}"),
            )
    assert landed(engine, f"{name}_direct") == landed(engine, f"{name}_staging")
    assert swept_ids(engine, f"{name}_direct") == []
