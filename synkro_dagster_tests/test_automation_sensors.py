"""The registry sensor, the per-integration scheduling sensor and freshness, on a real registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from synkro_dagster.assets.factory import job_name_for, partitions_def_for
from synkro_dagster.automation import build_automation
from synkro_dagster.automation.freshness import (
    FRESHNESS_CHECK,
    build_freshness_sensor,
    freshness_status,
)
from synkro_dagster.automation.registry_sensor import build_registry_sensor
from synkro_dagster.automation.scheduling import (
    build_scheduling_sensor,
    latest_fire_time,
)
from synkro_dagster.integrations.registry import IntegrationRegistry, integrations_table
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.integrations.secrets import SecretBox
from synkro_dagster.specs import SourceSpec
from synkro_dagster.tags import INTEGRATION_TAG, SPEC_TAG, TENANT_TAG


def toy_spec(name: str, streams: tuple[str, ...] = ("orders", "customers")) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": name,
            "engine": "sql",
            "config": {"url": {}},
            "sql": {"password_secret": None},
            "streams": [{"name": s, "primary_key": "id", "sql": {"table": s}} for s in streams],
        }
    )


SPECS = {"toy": toy_spec("toy"), "other": toy_spec("other", ("items",))}


def standin_definitions(specs: dict[str, SourceSpec], sensors=()) -> dg.Definitions:
    """The shape the asset factory gives: a partitioned multi-asset and a job per spec."""
    assets, jobs = [], []
    for spec in specs.values():
        partitions = partitions_def_for(spec.name)

        @dg.multi_asset(
            name=f"{spec.name}_streams",
            specs=[
                dg.AssetSpec(
                    [spec.name, s.name],
                    group_name=spec.name,
                    partitions_def=partitions,
                    skippable=True,
                )
                for s in spec.streams
            ],
            can_subset=True,
            partitions_def=partitions,
        )
        def _sync(context):
            for key in context.selected_asset_keys:
                yield dg.MaterializeResult(asset_key=key)

        assets.append(_sync)
        jobs.append(
            dg.define_asset_job(
                job_name_for(spec.name),
                selection=dg.AssetSelection.groups(spec.name),
                partitions_def=partitions,
            )
        )
    # The sensors take the registry as the `integrations` resource; no database is touched here.
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        sensors=list(sensors),
        resources={"integrations": IntegrationsResource()},
    )


def add_integration(
    engine: sa.Engine,
    id: str,
    spec: str = "toy",
    tenant: str = "acme",
    schedule: str | None = None,
    enabled: bool = True,
    secrets: dict[str, str] | None = None,
) -> None:
    # Written directly: the registry's own validation would look for these toy specs on disk.
    token = SecretBox.from_env().encrypt(secrets) if secrets else None
    with engine.begin() as conn:
        conn.execute(
            sa.insert(integrations_table).values(
                id=id,
                tenant=tenant,
                spec=spec,
                config={},
                secrets=token,
                schedule=schedule,
                enabled=enabled,
            )
        )


def set_synced(engine: sa.Engine, id: str, stream: str, at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "insert into synkro.sync_state (integration_id, stream, tenant_id, last_synced_at) "
                "values (:i, :s, 'acme', :at)"
            ),
            {"i": id, "s": stream, "at": at},
        )


@pytest.fixture
def registry(engine: sa.Engine) -> IntegrationRegistry:
    return IntegrationRegistry(engine)


# -- integrations_registry_sensor ---------------------------------------------------------------


def test_registry_sensor_adds_new_ids_and_deletes_removed_ones(engine, registry, integrations):
    add_integration(engine, "acme-toy")
    add_integration(engine, "beta-toy", enabled=False)
    add_integration(engine, "acme-other", spec="other")
    add_integration(engine, "acme-elsewhere", spec="not_in_this_location")
    sensor = build_registry_sensor(SPECS)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("toy__integrations", ["acme-toy", "removed-toy"])
        result = sensor(
            dg.build_sensor_context(resources={"integrations": integrations}, instance=instance)
        )

    requests = {
        (type(r).__name__, r.partitions_def_name): list(r.partition_keys)
        for r in result.dynamic_partitions_requests
    }
    assert requests == {
        ("AddDynamicPartitionsRequest", "toy__integrations"): ["beta-toy"],
        ("DeleteDynamicPartitionsRequest", "toy__integrations"): ["removed-toy"],
        ("AddDynamicPartitionsRequest", "other__integrations"): ["acme-other"],
    }
    assert not result.run_requests


def test_registry_sensor_skips_when_partitions_match(engine, registry, integrations):
    add_integration(engine, "acme-toy")
    sensor = build_registry_sensor(SPECS)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("toy__integrations", ["acme-toy"])
        result = sensor(
            dg.build_sensor_context(resources={"integrations": integrations}, instance=instance)
        )
    assert not result.dynamic_partitions_requests
    assert "match the registry" in result.skip_reason.skip_message


def test_registry_sensor_tick_applies_partitions_to_the_instance(engine, registry, integrations):
    add_integration(engine, "acme-toy")
    add_integration(engine, "beta-toy")
    sensor = build_registry_sensor(SPECS)
    defs = standin_definitions(SPECS, [sensor])
    with dg.instance_for_test() as instance:
        data = sensor.evaluate_tick(
            dg.build_sensor_context(
                resources={"integrations": integrations},
                instance=instance,
                instance_ref=instance.get_ref(),
                definitions=defs,
            )
        )
        for request in data.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        assert sorted(instance.get_dynamic_partitions("toy__integrations")) == [
            "acme-toy",
            "beta-toy",
        ]


def test_registry_sensor_never_deletes_a_partition_added_during_its_tick(
    engine, registry, integrations
):
    # `synkro integrations add` writes the registry row, then the partition. When that finishes
    # just after the sensor read the registry, the sensor must not take the new partition for a
    # removed integration.
    add_integration(engine, "acme-toy")

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("toy__integrations", ["acme-toy"])

        class RegistryRacingAnAdd:
            def entries(self):
                found = registry.entries()
                add_integration(engine, "new-toy")
                instance.add_dynamic_partitions("toy__integrations", ["new-toy"])
                return found

        class RacingIntegrations(IntegrationsResource):
            def get_registry(self) -> Any:
                return RegistryRacingAnAdd()

        racing = RacingIntegrations()
        sensor = build_registry_sensor(SPECS)
        result = sensor(
            dg.build_sensor_context(resources={"integrations": racing}, instance=instance)
        )
    deleted = [
        key
        for request in result.dynamic_partitions_requests or []
        if isinstance(request, dg.DeleteDynamicPartitionsRequest)
        for key in request.partition_keys
    ]
    assert "new-toy" not in deleted


# -- per-integration scheduling ---------------------------------------------------------------

NOW = datetime(2026, 11, 27, 10, 30, 20, tzinfo=UTC)


def _cursor(at: datetime) -> str:
    return json.dumps({"evaluated_at": at.isoformat()})


def test_latest_fire_time_is_inclusive_of_now_and_exclusive_of_since():
    at_half = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    assert latest_fire_time("*/15 * * * *", at_half - timedelta(minutes=1), at_half) == at_half
    assert latest_fire_time("*/15 * * * *", at_half, at_half + timedelta(minutes=5)) is None
    assert latest_fire_time("@hourly", NOW - timedelta(hours=5), NOW) == datetime(
        2026, 11, 27, 10, 0, tzinfo=UTC
    )


def test_schedule_runs_only_due_enabled_integrations(engine, registry, integrations):
    add_integration(engine, "every-minute", schedule="* * * * *", tenant="acme")
    add_integration(engine, "disabled", schedule="* * * * *", enabled=False)
    add_integration(engine, "manual-only", schedule=None)
    add_integration(engine, "new-year", schedule="0 0 1 1 *")
    add_integration(engine, "other-spec", spec="other", schedule="* * * * *")
    sensor = build_scheduling_sensor("toy", now=lambda: NOW)
    defs = standin_definitions(SPECS, [sensor])
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            resources={"integrations": integrations},
            instance=instance,
            instance_ref=instance.get_ref(),
            cursor=_cursor(NOW - timedelta(minutes=2)),
            definitions=defs,
        )
        data = sensor.evaluate_tick(context)

    assert [r.partition_key for r in data.run_requests] == ["every-minute"]
    request = data.run_requests[0]
    assert request.run_key == "every-minute:2026-11-27T10:30:00+00:00"
    assert request.tags[INTEGRATION_TAG] == "every-minute"
    assert request.tags[SPEC_TAG] == "toy"
    assert request.tags[TENANT_TAG] == "acme"
    assert request.tags["dagster/partition"] == "every-minute"
    assert request.tags["dagster/partition_set"] == "sync_toy_partition_set"
    assert request.job_name in (None, "sync_toy")
    # The partition did not exist yet: the same tick adds it, so the run request is valid.
    [add] = data.dynamic_partitions_requests
    assert (add.partitions_def_name, list(add.partition_keys)) == (
        "toy__integrations",
        ["every-minute"],
    )
    assert json.loads(data.cursor) == {"evaluated_at": NOW.isoformat()}


def test_schedule_with_nothing_due_skips_and_advances_the_cursor(engine, registry, integrations):
    add_integration(engine, "new-year", schedule="0 0 1 1 *")
    sensor = build_scheduling_sensor("toy", now=lambda: NOW)
    with dg.instance_for_test() as instance:
        result = sensor(
            dg.build_sensor_context(
                resources={"integrations": integrations},
                instance=instance,
                cursor=_cursor(NOW - timedelta(minutes=1)),
            )
        )
    assert not result.run_requests
    assert "no integration of 'toy' is due" in result.skip_reason.skip_message
    assert json.loads(result.cursor) == {"evaluated_at": NOW.isoformat()}


def test_schedule_catches_up_after_an_outage_with_one_run_per_integration(
    engine, registry, integrations
):
    add_integration(engine, "hourly", schedule="0 * * * *")
    add_integration(engine, "quarter", schedule="*/15 * * * *")
    sensor = build_scheduling_sensor("toy", now=lambda: NOW)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("toy__integrations", ["hourly", "quarter"])
        # The daemon was down for five hours: every missed integration runs once, for its
        # latest fire time.
        result = sensor(
            dg.build_sensor_context(
                resources={"integrations": integrations},
                instance=instance,
                cursor=_cursor(NOW - timedelta(hours=5)),
            )
        )
    assert sorted(r.run_key for r in result.run_requests) == [
        "hourly:2026-11-27T10:00:00+00:00",
        "quarter:2026-11-27T10:30:00+00:00",
    ]
    assert not result.dynamic_partitions_requests


def test_consecutive_ticks_neither_skip_nor_repeat_a_fire_time(engine, registry, integrations):
    add_integration(engine, "quarter", schedule="*/15 * * * *")
    clock = [datetime(2026, 11, 27, 10, 0, 40, tzinfo=UTC)]
    sensor = build_scheduling_sensor("toy", now=lambda: clock[0])
    fired = []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("toy__integrations", ["quarter"])
        cursor = _cursor(clock[0])
        # Irregular tick spacing, as with a busy or restarted daemon; ends 10:30:21 + 50 s.
        for step in (40, 7 * 60, 1, 8 * 60, 14 * 60, 50):
            clock[0] += timedelta(seconds=step)
            result = sensor(
                dg.build_sensor_context(
                    resources={"integrations": integrations}, instance=instance, cursor=cursor
                )
            )
            fired += [r.run_key for r in result.run_requests]
            cursor = result.cursor
    assert fired == [
        "quarter:2026-11-27T10:15:00+00:00",
        "quarter:2026-11-27T10:30:00+00:00",
    ]


def test_first_tick_looks_back_one_interval(engine, registry, monkeypatch, integrations):
    monkeypatch.setenv("SYNKRO_AUTOMATION_INTERVAL_SECONDS", "60")
    add_integration(engine, "half-past", schedule="30 10 * * *")
    sensor = build_scheduling_sensor("toy", now=lambda: NOW)
    with dg.instance_for_test() as instance:
        result = sensor(
            dg.build_sensor_context(resources={"integrations": integrations}, instance=instance)
        )
    assert [r.partition_key for r in result.run_requests] == ["half-past"]


def test_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SYNKRO_AUTOMATION_INTERVAL_SECONDS", "5")
    _, sensors = build_automation(SPECS)
    assert {s.name: s.minimum_interval_seconds for s in sensors} == {
        "integrations_registry_sensor": 5,
        "toy_integration_schedules": 5,
        "other_integration_schedules": 5,
        "run_failure_alert": 5,
        "freshness_against_schedules": 60,
    }
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors)
    monkeypatch.setenv("SYNKRO_AUTOMATION_DEFAULT_STATUS", "stopped")
    _, sensors = build_automation(SPECS)
    assert all(s.default_status == dg.DefaultSensorStatus.STOPPED for s in sensors)


def test_build_automation_touches_no_database(monkeypatch):
    monkeypatch.setenv("SYNKRO_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    schedules, sensors = build_automation(SPECS)
    defs = standin_definitions(SPECS, sensors)
    assert defs.get_repository_def().get_sensor_def("toy_integration_schedules")
    assert schedules == []


# -- freshness -----------------------------------------------------------------------------


def test_freshness_without_schedule_always_passes():
    passed, metadata = freshness_status(None, None, NOW, timedelta(minutes=30))
    assert passed and metadata["schedule"] == "none"


def test_freshness_passes_when_the_due_sync_landed():
    # Hourly: at 10:30:20 with 20 min grace the sync due at 10:00 must have landed.
    passed, metadata = freshness_status(
        "0 * * * *", datetime(2026, 11, 27, 10, 1, tzinfo=UTC), NOW, timedelta(minutes=20)
    )
    assert passed
    assert metadata["due_at"] == "2026-11-27T10:00:00+00:00"


def test_freshness_within_grace_still_passes():
    # With 45 min grace the 10:00 sync is not due yet; the 09:00 one landed.
    passed, metadata = freshness_status(
        "0 * * * *", datetime(2026, 11, 27, 9, 5, tzinfo=UTC), NOW, timedelta(minutes=45)
    )
    assert passed and metadata["due_at"] == "2026-11-27T09:00:00+00:00"


def test_freshness_fails_when_a_sync_was_missed():
    passed, metadata = freshness_status(
        "0 * * * *", datetime(2026, 11, 27, 8, 59, tzinfo=UTC), NOW, timedelta(minutes=20)
    )
    assert not passed
    assert metadata["overdue_minutes"] == 10.3
    assert "has not landed" in metadata["reason"]


def test_freshness_never_synced_is_stale():
    passed, metadata = freshness_status("*/5 * * * *", None, NOW, timedelta(minutes=10))
    assert not passed and metadata["reason"] == "never synced"
    assert metadata["last_synced_at"] == "never"


def test_freshness_sensor_reports_per_stream_and_only_on_change(engine, registry, integrations):
    add_integration(engine, "fresh", schedule="0 * * * *")
    add_integration(engine, "late", schedule="0 * * * *")
    add_integration(engine, "paused", schedule="0 * * * *", enabled=False)
    add_integration(engine, "manual", schedule=None)
    set_synced(engine, "fresh", "orders", NOW - timedelta(minutes=5))
    set_synced(engine, "fresh", "customers", NOW - timedelta(minutes=5))
    set_synced(engine, "late", "orders", NOW - timedelta(minutes=5))
    set_synced(engine, "late", "customers", NOW - timedelta(hours=3))
    sensor = build_freshness_sensor(SPECS, now=lambda: NOW)
    with dg.instance_for_test() as instance:
        result = sensor(
            dg.build_sensor_context(resources={"integrations": integrations}, instance=instance)
        )
        by_key = {e.asset_key.to_user_string(): e for e in result.asset_events}
        assert set(by_key) == {"toy/orders", "toy/customers"}
        assert by_key["toy/orders"].passed
        customers = by_key["toy/customers"]
        assert not customers.passed and customers.check_name == FRESHNESS_CHECK
        assert customers.metadata["integrations_stale"].value == 1
        assert customers.metadata["stale"].value.startswith("- late: the sync due at")
        # Nothing changed: the next tick reports nothing.
        again = sensor(
            dg.build_sensor_context(
                resources={"integrations": integrations}, instance=instance, cursor=result.cursor
            )
        )
        assert not again.asset_events


def test_freshness_sensor_reports_again_after_a_run_touched_the_check(
    engine, registry, integrations
):
    add_integration(engine, "late", schedule="0 * * * *")
    partitions = partitions_def_for("toy")

    # A sync run plans the stream's freshness check and reports it for its own integration only.
    @dg.multi_asset(
        specs=[dg.AssetSpec(["toy", "orders"], partitions_def=partitions)],
        check_specs=[dg.AssetCheckSpec(FRESHNESS_CHECK, asset=["toy", "orders"])],
        partitions_def=partitions,
    )
    def toy_orders():
        yield dg.MaterializeResult(asset_key=["toy", "orders"])
        yield dg.AssetCheckResult(
            asset_key=["toy", "orders"], check_name=FRESHNESS_CHECK, passed=True
        )

    sensor = build_freshness_sensor({"toy": toy_spec("toy", ("orders",))}, now=lambda: NOW)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("toy__integrations", ["late"])
        first = sensor(
            dg.build_sensor_context(resources={"integrations": integrations}, instance=instance)
        )
        for event in first.asset_events:
            instance.report_runless_asset_event(event)
        quiet = sensor(
            dg.build_sensor_context(
                resources={"integrations": integrations}, instance=instance, cursor=first.cursor
            )
        )
        assert not quiet.asset_events
        assert dg.materialize([toy_orders], partition_key="late", instance=instance).success
        again = sensor(
            dg.build_sensor_context(
                resources={"integrations": integrations}, instance=instance, cursor=quiet.cursor
            )
        )
    [evaluation] = again.asset_events
    assert not evaluation.passed
