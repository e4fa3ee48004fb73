"""The one Definitions object: specs -> assets and checks, resources, jobs, schedules, sensors.

Loading it reads the spec YAML files only: no database, no network.
"""

from __future__ import annotations

import os

import dagster as dg

from synkro_dagster.assets.factory import (
    DATALAYER_RESOURCE,
    build_report_assets,
    build_report_jobs,
    build_spec_assets,
    build_spec_job,
)
from synkro_dagster.database import DATABASE_URL_ENV
from synkro_dagster.specs import SourceSpec, load_specs
from synkro_dagster.specs.engines import connector_resources


def _resources() -> dict[str, object]:
    from synkro_dagster.datalayer.resource import DataLayer

    # With SYNKRO_DATABASE_URL unset the data layer starts the embedded PostgreSQL at run time;
    # when it is set, it is wired as an EnvVar so the URL never lands in run config or the UI.
    datalayer = (
        DataLayer(database_url=dg.EnvVar(DATABASE_URL_ENV))
        if os.environ.get(DATABASE_URL_ENV)
        else DataLayer()
    )
    # Every engine's connector (specs/engines.py), under `<engine>_connector`.
    return {DATALAYER_RESOURCE: datalayer, **connector_resources()}


def build_definitions(specs: dict[str, SourceSpec]) -> dg.Definitions:
    from synkro_dagster.automation import build_automation
    from synkro_dagster.automation.freshness import build_freshness_checks

    schedules, sensors = build_automation(specs)
    return dg.Definitions(
        assets=[build_spec_assets(spec) for spec in specs.values()]
        + [report for spec in specs.values() for report in build_report_assets(spec)],
        asset_checks=[build_freshness_checks(spec) for spec in specs.values()],
        jobs=[build_spec_job(spec) for spec in specs.values()]
        + [job for spec in specs.values() for job in build_report_jobs(spec)],
        schedules=schedules,
        sensors=sensors,
        resources=_resources(),
        # One process per run for every job of the location, including the implicit asset job
        # `dagster asset materialize` and UI launches use: a subprocess per step would reload the
        # definitions for each step (16 s instead of 6 s for one sync).
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_specs())
