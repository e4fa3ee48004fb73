"""History mode (`write_mode: history`) in the real PostgreSQL data layer: a new version only when a
tracked column really changed, deletes close the current version, a view shows the current state,
and a load that fails changes nothing — also end to end through the shipped shop spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from synkro_dagster.contracts import BatchesPart, Record, StreamRead
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.demo.api_server import ApiServer, start_api_server
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.specs import SourceSpec, load_spec_file
from synkro_dagster.specs.loader import specs_dir
from synkro_dagster_tests.test_assets import Sync

TABLE = "crm_people"


def _target(track: list[str] | None = None, cursor: str | None = None) -> TableTarget:
    return TableTarget(
        schema="public",
        table=TABLE,
        primary_key=["id"],
        write_mode="history",
        cursor_field=cursor,
        track_columns=track,
    )


def _load(
    layer: DataLayer, records: list[Record], run: str, track: list[str] | None = None, **ctx: Any
) -> LoadStats:
    read = StreamRead(parts=iter([BatchesPart(iter([list(records)]))]))
    return layer.load(
        _target(track),
        read,
        LoadContext(
            tenant_id="acme", integration_id="acme-crm", stream="people", run_id=run, **ctx
        ),
    )


def _versions(engine: sa.Engine, table: str = TABLE) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"select * from public.{table} order by id, _synkro_valid_from, _synkro_run_id")
        )
        return [dict(r._mapping) for r in rows]


def _current(engine: sa.Engine, table: str = TABLE) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"select * from public.{table}_current order by id"))
        return [dict(r._mapping) for r in rows]


PEOPLE = [
    {"id": 1, "name": "Ada", "city": "Berlin", "seen": "2026-01-01"},
    {"id": 2, "name": "Ben", "city": "Paris", "seen": "2026-01-01"},
    {"id": 3, "name": "Cleo", "city": "Rome", "seen": "2026-01-01"},
]


def test_history_keeps_every_version_and_only_real_changes_make_one(
    database_url: str, engine: sa.Engine
) -> None:
    layer = DataLayer(database_url=database_url)
    first = _load(layer, PEOPLE, "r1", track=["name", "city"])
    assert (first.rows_inserted, first.rows_updated) == (3, 0)

    # The same records again (a rerun, a boundary re-read): no new version at all.
    again = _load(layer, PEOPLE, "r2", track=["name", "city"])
    assert (again.rows_inserted, again.rows_updated, again.rows_deleted) == (0, 0, 0)
    assert len(_versions(engine)) == 3

    # Ada moves (tracked: a new version); Ben is only seen later (untracked: in place).
    changed = [
        {"id": 1, "name": "Ada", "city": "Lisbon", "seen": "2026-02-01"},
        {"id": 2, "name": "Ben", "city": "Paris", "seen": "2026-02-01"},
        PEOPLE[2],
    ]
    third = _load(layer, changed, "r3", track=["name", "city"])
    assert (third.rows_inserted, third.rows_updated) == (0, 1)
    versions = _versions(engine)
    ada = [v for v in versions if v["id"] == 1]
    assert [(v["city"], v["_synkro_is_current"]) for v in ada] == [
        ("Berlin", False),
        ("Lisbon", True),
    ]
    # The old version ends exactly where the new one starts.
    assert ada[0]["_synkro_valid_to"] == ada[1]["_synkro_valid_from"]
    assert ada[1]["_synkro_valid_to"] is None
    ben = [v for v in versions if v["id"] == 2]
    assert len(ben) == 1 and str(ben[0]["seen"]) == "2026-02-01"

    # A whole read without Cleo (this stream has no cursor): her current version is closed.
    fourth = _load(layer, changed[:2], "r4", track=["name", "city"])
    assert fourth.rows_deleted == 1
    cleo = [v for v in _versions(engine) if v["id"] == 3]
    assert len(cleo) == 1 and cleo[0]["_synkro_is_current"] is False
    assert cleo[0]["_synkro_valid_to"] is not None

    current = _current(engine)
    assert [(r["id"], r["city"]) for r in current] == [(1, "Lisbon"), (2, "Paris")]
    assert {r["tenant_id"] for r in current} == {"acme"}

    # Cleo comes back: a new current version beside the closed one.
    fifth = _load(layer, PEOPLE, "r5", track=["name", "city"])
    assert fifth.rows_inserted == 1
    assert [r["id"] for r in _current(engine)] == [1, 2, 3]
    assert len([v for v in _versions(engine) if v["id"] == 3]) == 2


def test_every_column_is_tracked_by_default_and_new_columns_reach_the_view(
    database_url: str, engine: sa.Engine
) -> None:
    layer = DataLayer(database_url=database_url)
    _load(layer, PEOPLE, "r1")
    # Two of three people go: more than max_delete_fraction, so this run says it means it.
    stats = _load(
        layer,
        [dict(PEOPLE[0], seen="2026-03-01", phone="+49 30 1")],
        "r2",
        allow_mass_delete=True,
    )
    assert stats.rows_updated == 1 and stats.columns_added == ["phone"]
    # Only Ada was read (a partial read of a cursor stream would not close the others, but this
    # stream has no cursor: the read is the whole source).
    assert [r["id"] for r in _current(engine)] == [1]
    assert _current(engine)[0]["phone"] == "+49 30 1"


def test_a_failing_history_load_changes_nothing(database_url: str, engine: sa.Engine) -> None:
    layer = DataLayer(database_url=database_url)
    _load(layer, PEOPLE, "r1")

    def broken() -> Iterator[list[Record]]:
        yield [dict(PEOPLE[0], city="Oslo")]
        raise RuntimeError("the source went away")

    with pytest.raises(RuntimeError, match="went away"):
        layer.load(
            _target(),
            StreamRead(parts=iter([BatchesPart(broken())])),
            LoadContext(tenant_id="acme", integration_id="acme-crm", stream="people", run_id="r2"),
        )
    assert [(v["id"], v["city"], v["_synkro_is_current"]) for v in _versions(engine)] == [
        (1, "Berlin", True),
        (2, "Paris", True),
        (3, "Rome", True),
    ]


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with start_api_server(bench_records=10) as server:
        yield server


def test_shop_price_history_through_a_sync(
    api: ApiServer, tmp_path: Path, monkeypatch, database_url: str, engine: sa.Engine
) -> None:
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(specs_dir()))
    spec: SourceSpec = load_spec_file(specs_dir() / "shop.yaml")
    IntegrationRegistry(engine).add(
        "acme-shop",
        spec="shop",
        tenant="acme",
        config={"base_url": api.url},
        secrets={"api_token": api.credentials.bearer_token},
    )
    with dg.instance_for_test() as instance:
        sync = Sync(spec, instance, database_url)
        assert sync(["price_history"], integration="acme-shop").success
        products = api.store.collections["shop.products"]
        assert len(_current(engine, "shop_price_history")) == len(products)

        api.store.update("shop.products", 5, price="12.34")  # tracked: a new version
        api.store.update("shop.products", 6, stock=0)  # untracked: in place
        result = sync(["price_history"], integration="acme-shop")
        assert result.success

    versions = [v for v in _versions(engine, "shop_price_history") if v["id"] in (5, 6)]
    assert [(v["id"], v["_synkro_is_current"]) for v in versions] == [
        (5, False),
        (5, True),
        (6, True),
    ]
    assert str(versions[1]["price"]) == "12.34"
    assert versions[2]["stock"] == 0
    with engine.connect() as conn:
        kind = conn.execute(
            sa.text(
                "select format_type(atttypid, atttypmod) from pg_attribute"
                " where attrelid = 'shop_price_history'::regclass and attname = 'price'"
            )
        ).scalar()
    assert kind == "numeric(10,2)"
