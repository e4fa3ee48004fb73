"""Per-integration scheduling: a sensor per spec that starts runs for integrations whose cron is due.

This is what Celery beat did. Each tick asks the registry (one indexed query) for the spec's
integrations and, for every enabled one with a schedule, whether its cron (UTC) fired since the
previous evaluation. The cursor stores when that evaluation happened, so a daemon that was down
for a while catches up on its next tick; `run_key = "<id>:<fire time>"` makes Dagster drop a
request it has already launched, so a tick retried after a crash never starts a run twice.
After a long outage an integration gets one run, for its latest missed fire time, not one per
missed fire time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from croniter import croniter

from synkro_dagster.assets.factory import job_name_for, partitions_name_for
from synkro_dagster.automation import settings
from synkro_dagster.integrations.registry import RegistryEntry
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.tags import run_tags


def scheduling_sensor_name(spec_name: str) -> str:
    return f"{spec_name}_integration_schedules"


def latest_fire_time(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The latest time in (since, now] at which the cron `schedule` (UTC) fires, or None."""
    # croniter's get_prev is strict (< start); start one second past `now` (floored to the
    # second, as cron has no sub-second fire times) so a fire time equal to `now` counts.
    start = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    fired = croniter(schedule, start).get_prev(datetime)
    return fired if fired > since.astimezone(UTC) else None


@dataclass(frozen=True)
class DueIntegration:
    entry: RegistryEntry
    fire_time: datetime

    @property
    def run_key(self) -> str:
        return f"{self.entry.id}:{self.fire_time.isoformat()}"


def due_integrations(
    entries: Iterable[RegistryEntry], since: datetime, now: datetime
) -> list[DueIntegration]:
    """Enabled integrations with a schedule that fired in (since, now], each with its latest fire."""
    fire_by_schedule: dict[str, datetime | None] = {}
    due = []
    for entry in entries:
        if not entry.enabled or not entry.schedule:
            continue
        # Integrations mostly share a handful of crons: compute each one once per tick.
        if entry.schedule not in fire_by_schedule:
            fire_by_schedule[entry.schedule] = latest_fire_time(entry.schedule, since, now)
        fired = fire_by_schedule[entry.schedule]
        if fired is not None:
            due.append(DueIntegration(entry, fired))
    return due


def _read_cursor(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    try:
        return datetime.fromisoformat(json.loads(cursor)["evaluated_at"])
    except (ValueError, KeyError, TypeError):
        # An unreadable cursor (hand-edited, older format) behaves like a first tick.
        return None


def _write_cursor(evaluated_at: datetime) -> str:
    return json.dumps({"evaluated_at": evaluated_at.isoformat()})


def build_scheduling_sensor(
    spec_name: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dg.SensorDefinition:
    """The sensor that launches `sync_<spec>` for each integration whose own cron is due."""
    interval = settings.interval_seconds()
    partitions_name = partitions_name_for(spec_name)

    @dg.sensor(
        name=scheduling_sensor_name(spec_name),
        job_name=job_name_for(spec_name),
        minimum_interval_seconds=interval,
        default_status=settings.default_status(),
        description=(
            f"Starts a run of {job_name_for(spec_name)} for each enabled integration of spec "
            f"'{spec_name}' whose cron schedule (UTC) fired since the previous tick."
        ),
    )
    def integration_schedules(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SensorResult:
        evaluated_at = now()
        # First tick: look back one interval, so a fire time just before the sensor started
        # is not lost; afterwards the cursor carries on exactly where the last tick stopped.
        since = _read_cursor(context.cursor) or evaluated_at - timedelta(seconds=interval)
        entries = integrations.get_registry().entries(spec=spec_name)
        due = due_integrations(entries, since, evaluated_at)
        cursor = _write_cursor(evaluated_at)
        if not due:
            return dg.SensorResult(
                skip_reason=f"no integration of '{spec_name}' is due "
                f"({len(entries)} registered, window {since.isoformat()} .. "
                f"{evaluated_at.isoformat()})",
                cursor=cursor,
            )
        # A partition Dagster does not know yet is added in the same result (below) rather than
        # waiting for the registry sensor's next tick, so each one exists. Giving a request
        # the job's partition tags up front spares Dagster re-checking every key against the
        # instance one query at a time, which dominated ticks with hundreds of due integrations.
        job = (
            context.repository_def.get_job(job_name_for(spec_name))
            if context.repository_def is not None
            else None
        )

        def partition_tags(key: str) -> Mapping[str, str]:
            return job.get_tags_for_partition_key(key, None) if job is not None else {}

        requests = [
            dg.RunRequest(
                run_key=d.run_key,
                partition_key=d.entry.id,
                tags={
                    **run_tags(d.entry.id, spec_name, d.entry.tenant),
                    **partition_tags(d.entry.id),
                },
            )
            for d in due
        ]
        context.log.info(
            f"{len(requests)} integration(s) of '{spec_name}' due: "
            + ", ".join(f"{d.entry.id} @ {d.fire_time.isoformat()}" for d in due[:20])
            + (" ..." if len(due) > 20 else "")
        )
        return dg.SensorResult(
            run_requests=requests,
            cursor=cursor,
            dynamic_partitions_requests=add_missing_partitions(
                context.instance, partitions_name, (d.entry.id for d in due)
            ),
        )

    return integration_schedules


def add_missing_partitions(
    instance: dg.DagsterInstance, partitions_name: str, keys: Iterable[str]
) -> list[dg.AddDynamicPartitionsRequest] | None:
    """The request adding the keys Dagster does not know yet, so a run for them in the same
    sensor result does not fail the tick (None when every key is known)."""
    missing = sorted(set(keys) - set(instance.get_dynamic_partitions(partitions_name)))
    if not missing:
        return None
    return [
        dg.AddDynamicPartitionsRequest(partitions_def_name=partitions_name, partition_keys=missing)
    ]
