"""Per-integration scheduling of report streams: when an integration's cron fires, load the latest
closed period (yesterday, last week, last month) of each of its spec's partitioned streams.

One sensor per report stream, beside the spec's own scheduling sensor and with the same cron
and cursor rules (`due_integrations`); the partition is (latest closed period at the fire time,
integration id) and `run_key = "<id>:<fire time>:<period>"`, so a retried tick never loads a
period twice. Older periods are loaded with `synkro backfill <spec> --from --to`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from synkro_dagster.assets.factory import (
    DATE_DIMENSION,
    partitions_name_for,
    report_job_name_for,
    report_partition_key,
    report_partitions_def_for,
)
from synkro_dagster.automation import settings
from synkro_dagster.automation.scheduling import (
    _read_cursor,
    _write_cursor,
    add_missing_partitions,
    due_integrations,
)
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.specs.models import SourceSpec, StreamSpec
from synkro_dagster.tags import run_tags


def report_sensor_name(spec_name: str, stream_name: str) -> str:
    return f"{spec_name}_{stream_name}_report_schedules"


def latest_closed_period(source: SourceSpec, stream: StreamSpec, at: datetime) -> str | None:
    """The last period of `stream` that had ended at `at` (its partition key), or None."""
    dims = {
        d.name: d.partitions_def for d in report_partitions_def_for(source, stream).partitions_defs
    }
    # Time-window partitions list only windows that have ended by the effective time.
    with dg.partition_loading_context(at):
        return dims[DATE_DIMENSION].get_last_partition_key()


def build_report_scheduling_sensor(
    source: SourceSpec,
    stream: StreamSpec,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dg.SensorDefinition:
    interval = settings.interval_seconds()
    job_name = report_job_name_for(source.name, stream.name)
    partitions_name = partitions_name_for(source.name)

    @dg.sensor(
        name=report_sensor_name(source.name, stream.name),
        job_name=job_name,
        minimum_interval_seconds=interval,
        default_status=settings.default_status(),
        description=(
            f"Starts a run of {job_name} for the latest closed {stream.partitioned_by} period of "
            f"each enabled integration of spec '{source.name}' whose cron (UTC) fired."
        ),
    )
    def report_schedules(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SensorResult:
        evaluated_at = now()
        since = _read_cursor(context.cursor) or evaluated_at - timedelta(seconds=interval)
        entries = integrations.get_registry().entries(spec=source.name)
        due = due_integrations(entries, since, evaluated_at)
        cursor = _write_cursor(evaluated_at)
        requests = []
        for d in due:
            period = latest_closed_period(source, stream, d.fire_time)
            if period is None:
                continue  # before partition_start: nothing has closed yet
            requests.append(
                dg.RunRequest(
                    run_key=f"{d.run_key}:{period}",
                    partition_key=report_partition_key(period, d.entry.id),
                    tags=run_tags(d.entry.id, source.name, d.entry.tenant),
                )
            )
        if not requests:
            return dg.SensorResult(
                skip_reason=f"no integration of '{source.name}' is due for '{stream.name}'",
                cursor=cursor,
            )
        return dg.SensorResult(
            run_requests=requests,
            cursor=cursor,
            dynamic_partitions_requests=add_missing_partitions(
                context.instance, partitions_name, (d.entry.id for d in due)
            ),
        )

    return report_schedules
