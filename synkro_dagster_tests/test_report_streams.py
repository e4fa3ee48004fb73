"""Date-partitioned report streams: an asset partitioned by day x integration (Dagster
multi-partitions with the dynamic integration dimension); a run loads one day from the real local
API server and replaces exactly that day's rows of that integration in the real data layer."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from synkro_dagster.assets.factory import (
    build_report_assets,
    partitions_def_for,
    report_partition_key,
    report_partitions_def_for,
)
from synkro_dagster.connectors.http import HttpConnector
from synkro_dagster.demo.api_server import ApiServer, start_api_server
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.specs import SourceSpec, load_spec_file
from synkro_dagster.specs.loader import specs_dir
from synkro_dagster_tests.resources import run_resources
from synkro_dagster_tests.test_assets import FAST


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with start_api_server(bench_records=10) as server:
        yield server


@pytest.fixture
def shop(monkeypatch) -> SourceSpec:
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(specs_dir()))
    return load_spec_file(specs_dir() / "shop.yaml")


def _rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "select integration_id, partition_date::text, product_id, units, revenue"
                    " from shop_daily_sales order by 1, 2, 3"
                )
            )
        ]


def test_report_asset_is_partitioned_by_day_and_integration(shop: SourceSpec) -> None:
    partitions = report_partitions_def_for(shop, shop.stream("daily_sales"))
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    dims = {d.name: d.partitions_def for d in partitions.partitions_defs}
    assert isinstance(dims["date"], dg.DailyPartitionsDefinition)
    assert dims["integration"] == partitions_def_for("shop")
    (report,) = build_report_assets(shop)
    assert report.partitions_def == partitions


def test_a_run_replaces_exactly_one_day_of_one_integration(
    api: ApiServer, shop: SourceSpec, database_url: str, engine: sa.Engine
) -> None:
    registry = IntegrationRegistry(engine)
    for integration in ("acme-shop", "beta-shop"):
        registry.add(
            integration,
            spec="shop",
            tenant=integration.split("-")[0],
            config={"base_url": api.url},
            secrets={"api_token": api.credentials.bearer_token},
        )
    (report,) = build_report_assets(shop)
    resources = run_resources(database_url, http_connector=HttpConnector(**FAST))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shop__integrations", ["acme-shop", "beta-shop"])

        def run(
            day: str, integration: str, tags: dict[str, str] | None = None
        ) -> dg.ExecuteInProcessResult:
            return dg.materialize(
                [report],
                partition_key=report_partition_key(day, integration),
                instance=instance,
                resources=resources,
                tags=tags,
                raise_on_error=False,
            )

        for day, integration in [
            ("2026-01-01", "acme-shop"),
            ("2026-01-02", "acme-shop"),
            ("2026-01-02", "beta-shop"),
        ]:
            assert run(day, integration).success
        before = _rows(engine)
        assert len(before) == 15
        assert {(r[0], r[1]) for r in before} == {
            ("acme-shop", "2026-01-01"),
            ("acme-shop", "2026-01-02"),
            ("beta-shop", "2026-01-02"),
        }
        # The source restates 2 January: one product left, another's figures changed.
        api.store.reports["2026-01-02"] = [
            {"day": "2026-01-02", "product_id": 1, "units": 100, "revenue": "150.00"}
        ]
        result = run("2026-01-02", "acme-shop")
        assert result.success
        after = _rows(engine)
        assert [r for r in after if r[:2] == ("acme-shop", "2026-01-02")] == [
            ("acme-shop", "2026-01-02", 1, 100, Decimal("150.00"))
        ]
        # Every other day and the other integration's same day are untouched.
        untouched = [r for r in before if r[:2] != ("acme-shop", "2026-01-02")]
        assert [r for r in after if r[:2] != ("acme-shop", "2026-01-02")] == untouched
        materialization = result.get_asset_materialization_events()[0]
        meta = materialization.event_specific_data.materialization.metadata
        assert meta["rows_deleted"].value == 5 and meta["period"].value == "2026-01-02"

        # An empty answer for a day that holds most of the integration's rows (5 of 6) is held
        # to max_delete_fraction like any replace: the run fails loudly and nothing changes.
        api.store.reports["2026-01-01"] = []
        kept = _rows(engine)
        blocked = run("2026-01-01", "acme-shop")
        assert not blocked.success
        failure = blocked.failure_data_for_node(report.node_def.name)
        assert failure is not None and "max_delete_fraction" in str(failure)
        assert _rows(engine) == kept
        # With the explicit override the empty day replaces: its rows go.
        assert run("2026-01-01", "acme-shop", {"synkro/allow_mass_delete": "true"}).success
        assert not [r for r in _rows(engine) if r[:2] == ("acme-shop", "2026-01-01")]

        # The request carried the day the partition names.
        days = {r.query.get("date") for r in api.requests_to("/shop/api/v1/reports/sales")}
        assert days == {"2026-01-01", "2026-01-02"}


def test_backfill_a_date_range_through_dagster(engine, tmp_path, monkeypatch) -> None:
    """`synkro backfill shop --integration X --from --to` submits a Dagster backfill over the
    range's days x that integration (recorded in the instance: the UI's backfills page)."""
    from click.testing import CliRunner

    from synkro_dagster.automation.backfill import backfill
    from synkro_dagster_tests.test_automation_sensors import add_integration

    add_integration(engine, "acme-shop", spec="shop", tenant="acme")
    add_integration(engine, "beta-shop", spec="shop", tenant="beta")
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    args = ["shop", "--integration", "acme-shop", "--from", "2026-01-30", "--to", "2026-02-02"]

    dry = CliRunner().invoke(backfill, [*args, "--dry-run", "-m", "synkro"])
    assert dry.exit_code == 0, dry.output
    assert "-j sync_shop__daily_sales" in dry.output
    expected = [f"{d}|acme-shop" for d in ("2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02")]
    import shlex

    line = next(x for x in dry.output.splitlines() if "--partitions" in x)
    command = shlex.split(line)
    assert command[command.index("--partitions") + 1].split(",") == expected

    bad = CliRunner().invoke(backfill, ["shop", "--from", "2026-02-02", "--to", "2026-01-01"])
    assert bad.exit_code != 0 and "before --from" in bad.output
    half = CliRunner().invoke(backfill, ["shop", "--from", "2026-02-02"])
    assert half.exit_code != 0 and "give both --from and --to" in half.output

    result = CliRunner().invoke(backfill, [*args, "-m", "synkro"])
    assert result.exit_code == 0, result.output
    assert "submitted (sync_shop__daily_sales)" in result.output
    with dg.DagsterInstance.get() as instance:
        (submitted,) = instance.get_backfills()
        assert sorted(submitted.partition_names or []) == expected
        assert submitted.job_name == "sync_shop__daily_sales" or submitted.is_asset_backfill


def test_the_integrations_schedule_loads_the_latest_closed_day(
    engine, integrations, shop: SourceSpec
) -> None:
    import json
    from datetime import UTC, datetime

    from synkro_dagster.automation.report_scheduling import (
        build_report_scheduling_sensor,
        latest_closed_period,
    )
    from synkro_dagster_tests.test_automation_sensors import add_integration

    now = datetime(2026, 3, 5, 6, 0, 30, tzinfo=UTC)
    add_integration(engine, "acme-shop", spec="shop", schedule="0 6 * * *", tenant="acme")
    add_integration(engine, "hourly-shop", spec="shop", schedule="0 * * * *", tenant="beta")
    add_integration(engine, "later-shop", spec="shop", schedule="0 7 * * *", tenant="gamma")
    stream = shop.stream("daily_sales")
    assert latest_closed_period(shop, stream, now) == "2026-03-04"
    assert latest_closed_period(shop, stream, datetime(2025, 6, 1, tzinfo=UTC)) is None

    sensor = build_report_scheduling_sensor(shop, stream, now=lambda: now)
    from synkro_dagster.definitions import build_definitions

    defs = build_definitions({"shop": shop})
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            instance_ref=instance.get_ref(),
            cursor=json.dumps({"evaluated_at": "2026-03-05T05:59:00+00:00"}),
            definitions=defs,
            resources={"integrations": integrations},
        )
        data = sensor.evaluate_tick(context)
    requests = {r.partition_key: r for r in data.run_requests}
    assert set(requests) == {
        report_partition_key("2026-03-04", "acme-shop"),
        report_partition_key("2026-03-04", "hourly-shop"),
    }
    request = requests[report_partition_key("2026-03-04", "acme-shop")]
    assert request.run_key == "acme-shop:2026-03-05T06:00:00+00:00:2026-03-04"
    assert request.tags["synkro/integration"] == "acme-shop"
    [add] = data.dynamic_partitions_requests
    assert sorted(add.partition_keys) == ["acme-shop", "hourly-shop"]
