"""Automation: the sensors that replace the old task queue's beat, partitions upkeep and alerts.

`build_automation(specs)` returns what `definitions.py` adds to the code location:

- `integrations_registry_sensor` — each spec's dynamic partitions = its registry ids;
- `<spec>_integration_schedules` — one per spec: runs for integrations whose own cron is due;
- `<spec>_<stream>_report_schedules` — one per report stream: the latest closed period, same crons;
- `run_failure_alert` — failed runs → SYNKRO_ALERT_WEBHOOK_URL;
- `freshness_against_schedules` — the streams' `fresh_against_schedule` check results;
- `<spec>_file_drop` — one per `files` spec: new complete inbox files start a run;
- `rejected_files_alert` — with any `files` spec: runs that quarantined files → the webhook.

Building them reads only environment settings: no database, no network.
"""

from __future__ import annotations

import dagster as dg

from synkro_dagster.specs import SourceSpec


def build_automation(
    specs: dict[str, SourceSpec],
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """The schedules and sensors of a code location made of `specs`."""
    from synkro_dagster.automation.alerts import build_failure_alert_sensor
    from synkro_dagster.automation.freshness import build_freshness_sensor
    from synkro_dagster.automation.registry_sensor import build_registry_sensor
    from synkro_dagster.automation.report_scheduling import build_report_scheduling_sensor
    from synkro_dagster.automation.scheduling import build_scheduling_sensor

    sensors: list[dg.SensorDefinition] = [
        build_registry_sensor(specs),
        *(build_scheduling_sensor(name) for name in sorted(specs)),
        *(
            build_report_scheduling_sensor(spec, stream)
            for _, spec in sorted(specs.items())
            for stream in spec.partitioned_streams
        ),
        build_failure_alert_sensor(),
    ]
    if specs:
        sensors.append(build_freshness_sensor(specs))
    sensors.extend(_file_drop_sensors(specs))
    # Every cadence is per integration (its own cron), so there is no Dagster schedule: the
    # per-spec sensors above do what a schedule per integration would, without a deploy.
    return [], sensors


def _file_drop_sensors(specs: dict[str, SourceSpec]) -> list[dg.SensorDefinition]:
    from synkro_dagster.automation.file_drop import build_file_drop_sensors
    from synkro_dagster.automation.rejected_files_alert import build_rejected_files_alert_sensor

    sensors = build_file_drop_sensors(specs)
    if sensors:  # quarantined files exist only where files specs do
        sensors.append(build_rejected_files_alert_sensor())
    return sensors


__all__ = ["build_automation"]
