"""Child streams: `/orders/{id}/lines` read once per changed parent, and `order.line_items[]`
unnested into a table of its own, each row carrying the parent's key — against the real local API
server and the real PostgreSQL data layer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from pydantic import ValidationError

from synkro_dagster.connectors.http import HttpConnector, HttpSourceError
from synkro_dagster.connectors.streams import read_stream
from synkro_dagster.contracts import Integration, Record
from synkro_dagster.demo.api_server import ApiServer, start_api_server
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.specs import SourceSpec, load_spec_file
from synkro_dagster.specs.loader import specs_dir
from synkro_dagster_tests.test_assets import FAST, Sync, _metadata

INTEGRATION = "acme-shop"
LINES = "/shop/api/v1/orders/"


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with start_api_server(bench_records=10) as server:
        # 40 orders are enough to show the fan-out and keep the test fast.
        orders = server.store.collections["shop.orders"]
        for order_id in sorted(orders)[40:]:
            del orders[order_id]
        yield server


def _shop(rate_per_second: float = 2000, concurrency: int = 4) -> dict[str, Any]:
    raw = yaml.safe_load((specs_dir() / "shop.yaml").read_text())
    raw["http"]["rate_limit"] = {"requests_per_second": rate_per_second}
    for stream in raw["streams"]:
        if stream["name"] == "order_lines":
            stream["http"]["concurrency"] = concurrency
    return raw


@pytest.fixture
def shop(tmp_path: Path, monkeypatch) -> SourceSpec:
    """The shipped shop spec (rate limit raised so the tests stay fast), as the registry sees it."""
    folder = tmp_path / "specs"
    folder.mkdir()
    for path in specs_dir().glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    (folder / "shop.yaml").write_text(yaml.safe_dump(_shop(), sort_keys=False))
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(folder))
    return load_spec_file(folder / "shop.yaml")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _integration(api: ApiServer) -> Integration:
    return Integration(
        id=INTEGRATION,
        tenant="acme",
        spec="shop",
        config={"base_url": api.url},
        secrets={"api_token": api.credentials.bearer_token},
    )


def _register(engine: sa.Engine, api: ApiServer) -> None:
    integration = _integration(api)
    IntegrationRegistry(engine).add(
        integration.id,
        spec="shop",
        tenant="acme",
        config=dict(integration.config),
        secrets=dict(integration.secrets),
    )


def _rows(engine: sa.Engine, table: str, order: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(sa.text(f"select * from public.{table} order by {order}"))
        return [dict(r._mapping) for r in result]


def _line_requests(api: ApiServer) -> list[int]:
    return [int(r.path.split("/")[5]) for r in api.requests_to(LINES) if r.path.endswith("/lines")]


def _expected_lines(api: ApiServer, orders: list[dict[str, Any]] | None = None) -> int:
    orders = orders if orders is not None else list(api.store.collections["shop.orders"].values())
    return sum(len(o["line_items"]) for o in orders)


def test_child_stream_reads_each_changed_parents_endpoint_and_lands_the_parent_key(
    api: ApiServer, shop: SourceSpec, instance: dg.DagsterInstance, database_url: str, engine
) -> None:
    _register(engine, api)
    sync = Sync(shop, instance, database_url)
    result = sync(["orders", "order_lines", "order_items"], integration=INTEGRATION)
    assert result.success, result.all_events

    orders = api.store.collections["shop.orders"]
    # One child request per parent order (each order has at most 4 lines: one page each).
    assert sorted(_line_requests(api)) == sorted(orders)
    lines = _rows(engine, "shop_order_lines", "order_id, line_no")
    assert len(lines) == _expected_lines(api)
    first = orders[lines[0]["order_id"]]
    assert lines[0]["line_no"] == 1
    assert lines[0]["sku"] == first["line_items"][0]["sku"]
    assert lines[0]["order_updated_at"].isoformat().startswith(first["updated_at"][:19])
    assert {r["tenant_id"] for r in lines} == {"acme"}
    assert _metadata(result, "order_lines")["rows_inserted"] == len(lines)

    # The nested list, unnested: one row per item, keyed by the order and its position.
    items = _rows(engine, "shop_order_items", "order_id, _nested_index")
    assert len(items) == len(lines)
    assert [(i["order_id"], i["_nested_index"], i["sku"]) for i in items] == [
        (line["order_id"], line["line_no"] - 1, line["sku"]) for line in lines
    ]
    with engine.connect() as conn:
        kinds = dict(
            conn.execute(
                sa.text(
                    "select column_name, data_type from information_schema.columns"
                    " where table_name = 'shop_order_items'"
                )
            ).all()
        )
    assert kinds["unit_price"] == "numeric"
    assert kinds["order_updated_at"] == "timestamp with time zone"

    # Incremental: the next sync visits only the orders changed since (plus the boundary order a
    # `>=` cursor reads again).
    cursor = max(o["updated_at"] for o in orders.values())
    boundary = {i for i, o in orders.items() if o["updated_at"] == cursor}
    before = len(api.requests_to(LINES))

    # Two orders change; one of them gets a different first line and one more line.
    changed = sorted(api.store.collections["shop.orders"])[10:12]
    order = api.store.collections["shop.orders"][changed[0]]
    new_items = [dict(order["line_items"][0], quantity=99), {"sku": "SKU-NEW", "quantity": 1}]
    api.store.update("shop.orders", changed[0], line_items=new_items)
    api.store.update("shop.orders", changed[1], status="shipped")

    result = sync(["order_lines", "order_items"], integration=INTEGRATION)
    assert result.success
    # Only the changed parents (and the boundary parent a `>=` cursor re-reads) were visited.
    assert set(_line_requests(api)[before:]) == set(changed) | boundary
    lines = [r for r in _rows(engine, "shop_order_lines", "order_id, line_no")]
    mine = [r for r in lines if r["order_id"] == changed[0]]
    assert [(r["line_no"], r["quantity"]) for r in mine][:2] == [(1, 99), (2, 1)]
    items = [
        r for r in _rows(engine, "shop_order_items", "order_id") if r["order_id"] == changed[0]
    ]
    assert {r["sku"] for r in items} >= {"SKU-NEW"}
    # The child's cursor is its parent's: now the newest changed order's updated_at.
    meta = _metadata(result, "order_lines")
    assert meta["cursor_after"].startswith(
        api.store.collections["shop.orders"][changed[1]]["updated_at"][:19]
    )


def _read_all(api: ApiServer, spec: SourceSpec, stream: str, cursor: str | None) -> list[Record]:
    with HttpConnector(**FAST).session(spec, _integration(api)) as session:
        read = read_stream(session, spec, spec.stream(stream), _integration(api), cursor)
        return [r for part in read.parts for batch in part.batches() for r in batch]


def _touch_orders(api: ApiServer, count: int) -> list[int]:
    ids = sorted(api.store.collections["shop.orders"])[:count]
    for order_id in ids:
        api.store.update("shop.orders", order_id, status="paid")
    return ids


def test_child_requests_run_at_bounded_concurrency(api: ApiServer) -> None:
    spec = SourceSpec.model_validate(_shop(concurrency=3))
    touched = _touch_orders(api, 9)
    api.slow(LINES, seconds=0.3)
    rows = _read_all(api, spec, "order_lines", "2026-01-01T00:00:00Z")
    assert {r["order_id"] for r in rows} == set(touched)
    # Measured on the server, not by a stopwatch: how many child requests were in flight at once.
    children = [r for r in api.requests_to(LINES) if r.path.endswith("/lines")]
    assert len(children) == 9
    events = sorted(
        [(r.time, 1) for r in children] + [(r.finished or r.time, -1) for r in children],
        key=lambda event: (event[0], event[1]),
    )
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    assert 2 <= peak <= 3, peak  # overlapping, never more than the spec's concurrency
    # Rows stay in parent order although the requests overlap.
    assert [r["order_id"] for r in rows] == sorted(r["order_id"] for r in rows)


def test_child_requests_share_the_sources_rate_budget(api: ApiServer) -> None:
    spec = SourceSpec.model_validate(_shop(rate_per_second=20, concurrency=4))
    _touch_orders(api, 8)
    started = time.monotonic()
    _read_all(api, spec, "order_lines", "2026-01-01T00:00:00Z")
    elapsed = time.monotonic() - started
    # 1 parent page + 8 child requests at 20/s: at least 8 intervals of 0.05 s, in spite of 4 workers.
    assert len(api.requests_to("/shop/")) == 9
    assert elapsed >= 0.38, elapsed


def test_child_requests_retry_and_fail_loudly_without_secrets(api: ApiServer) -> None:
    spec = SourceSpec.model_validate(_shop())
    touched = _touch_orders(api, 3)
    api.fail(f"{LINES}{touched[1]}/lines", status=503, count=1)
    rows = _read_all(api, spec, "order_lines", "2026-01-01T00:00:00Z")
    assert {r["order_id"] for r in rows} == set(touched)  # the 503 was retried

    api.fail(f"{LINES}{touched[2]}/lines", status=500, count=None)
    with pytest.raises(HttpSourceError) as error:
        _read_all(api, spec, "order_lines", "2026-01-01T00:00:00Z")
    message = str(error.value)
    assert f"/orders/{touched[2]}/lines" in message and "order_lines" in message
    assert "HTTP 500" in message
    assert api.credentials.bearer_token not in message


def test_a_parent_without_the_placeholder_field_is_a_clear_error(api: ApiServer) -> None:
    raw = _shop()
    for stream in raw["streams"]:
        if stream["name"] == "order_lines":
            stream["http"]["path"] = "/orders/{order_number}/lines"
    spec = SourceSpec.model_validate(raw)
    _touch_orders(api, 1)
    with pytest.raises(Exception, match="order_number") as error:
        _read_all(api, spec, "order_lines", "2026-01-01T00:00:00Z")
    assert "parent record has no value" in str(error.value)


def _spec_error(changes: dict[str, Any], engine: str = "http") -> str:
    raw = _shop()
    child = {"name": "child", "parent": "orders", "primary_key": ["orders_id", "line_no"]}
    child.update(changes)
    raw["streams"].append(child)
    with pytest.raises(ValidationError) as error:
        SourceSpec.model_validate(raw)
    return str(error.value)


def test_child_stream_spec_mistakes_are_named() -> None:
    assert "needs a placeholder naming a field of its parent" in _spec_error(
        {"http": {"path": "/lines"}}
    )
    assert "'nope' is not another stream" in _spec_error(
        {"parent": "nope", "http": {"path": "/o/{id}"}}
    )
    assert "follows its parent's cursor" in _spec_error(
        {"http": {"path": "/o/{id}"}, "cursor": {"field": "updated_at"}}
    )
    assert "one level of parents" in _spec_error(
        {"parent": "order_lines", "http": {"path": "/o/{id}"}}
    )
    assert "remove its 'http' block" in _spec_error(
        {"unnest": "line_items", "http": {"path": "/o/{id}"}}
    )
