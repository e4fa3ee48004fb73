"""Rejected-files alerts: a sensor that posts each run which quarantined files to the alert webhook.

A sync that quarantines files usually *succeeds* (the other files load), so the run-failure
alert never sees it; its `files_rejected` check fails instead. This sensor watches finished runs
(successful or failed), reads their failed `files_rejected` check evaluations and posts one alert
per run to SYNKRO_ALERT_WEBHOOK_URL — event `synkro.files_rejected` (generic format), or the same
text as the failure alert in the `slack` / `telegram` formats — with secrets removed the same way.
The cursor is the last run-status event seen, so each run is reported once; the first tick starts
from the newest event (no alerts about history).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from synkro_dagster.assets.checks import FILES_REJECTED
from synkro_dagster.automation import settings
from synkro_dagster.automation.alerts import (
    PARTITION_TAG,
    format_payload,
    post_webhook,
    redact_secrets,
    safe_webhook_target,
)
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.tags import INTEGRATION_TAG, SPEC_TAG, TENANT_TAG

if TYPE_CHECKING:
    from dagster._core.event_api import RunStatusChangeEventType

REJECTED_FILES_SENSOR_NAME = "rejected_files_alert"
EVENT = "synkro.files_rejected"
# Runs looked at per tick; more wait for the next tick (the cursor keeps the place).
RUNS_PER_TICK = 100
MAX_FILES_PER_ALERT = 20
_FINISHED: tuple[RunStatusChangeEventType, ...] = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
)


@dataclass(frozen=True)
class RejectedFile:
    stream: str
    file: str
    reason: str


@dataclass(frozen=True)
class RejectedFilesAlert:
    """What an alert says about one run that quarantined files (already redacted)."""

    spec: str | None
    integration: str | None
    tenant: str | None
    job: str
    run_id: str
    files_rejected: int
    files: list[RejectedFile] = field(default_factory=list)
    url: str = ""

    def summary(self) -> str:
        who = self.integration or "(no integration)"
        lines = [
            f"Synkro rejected {self.files_rejected} file(s): {self.spec or self.job} / {who}"
            + (f" (tenant {self.tenant})" if self.tenant else ""),
            f"Run {self.run_id} of {self.job}: the files are in the inbox's quarantine/ folder",
            *(f"{f.stream}: {f.file}: {f.reason}" for f in self.files),
        ]
        if self.files_rejected > len(self.files):
            lines.append(f"... and {self.files_rejected - len(self.files)} more")
        lines.append(self.url)
        return "\n".join(line for line in lines if line)


def rejection_payload(
    alert: RejectedFilesAlert, fmt: str, chat_id: str | None = None
) -> dict[str, Any]:
    """The JSON body for `fmt` (generic, slack or telegram), like the run-failure alert's."""
    return format_payload(EVENT, asdict(alert), alert.summary(), fmt, chat_id)


def _metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    value = metadata.get(key)
    return getattr(value, "value", value)


def rejected_files_in_run(instance: dg.DagsterInstance, run_id: str) -> tuple[int, list]:
    """(files rejected, [(stream, file, reason)]) from the run's failed files_rejected checks."""
    total = 0
    files: list[tuple[str, str, str]] = []
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = getattr(event, "event_specific_data", None) if event else None
        if evaluation is None or evaluation.check_name != FILES_REJECTED or evaluation.passed:
            continue
        stream = evaluation.asset_key.path[-1]
        metadata = evaluation.metadata or {}
        total += int(_metadata_value(metadata, "files_rejected") or 0)
        names = _metadata_value(metadata, "files") or []
        reasons = _reasons(_metadata_value(metadata, "reasons") or "")
        files.extend((stream, name, reasons.get(name, "")) for name in names)
    return total, files


def _reasons(markdown: str) -> dict[str, str]:
    """The check's "- `file`: reason" lines, by file name."""
    found = {}
    for line in markdown.splitlines():
        if line.startswith("- `") and "`: " in line:
            name, reason = line[3:].split("`: ", 1)
            found[name] = reason
    return found


def _secrets_and_tenant(
    registry_factory: Callable[[], IntegrationRegistry], integration: str | None
) -> tuple[list[str], str | None]:
    if not integration:
        return [], None
    try:
        found = registry_factory().get(integration)
    except Exception:  # noqa: BLE001 - the alert still goes out, with the generic patterns only
        return [], None
    return [str(v) for v in found.secrets.values()], found.tenant


def build_rejected_files_alert(
    run: dg.DagsterRun,
    total: int,
    files: list[tuple[str, str, str]],
    registry_factory: Callable[[], IntegrationRegistry],
) -> RejectedFilesAlert:
    tags = run.tags
    integration = tags.get(INTEGRATION_TAG) or tags.get(PARTITION_TAG)
    secrets, tenant = _secrets_and_tenant(registry_factory, integration)

    def clean(text: str) -> str:
        return redact_secrets(text, secrets)

    return RejectedFilesAlert(
        spec=tags.get(SPEC_TAG),
        integration=integration,
        tenant=tags.get(TENANT_TAG) or tenant,
        job=run.job_name,
        run_id=run.run_id,
        files_rejected=max(total, len(files)),
        files=[
            RejectedFile(stream, clean(name), clean(reason))
            for stream, name, reason in files[:MAX_FILES_PER_ALERT]
        ],
        url=f"{settings.ui_url()}/runs/{run.run_id}",
    )


def _latest_storage_id(instance: dg.DagsterInstance, event_type: dg.DagsterEventType) -> int:
    result = instance.fetch_run_status_changes(event_type, limit=1, ascending=False)
    return result.records[0].storage_id if result.records else 0


def build_rejected_files_alert_sensor() -> dg.SensorDefinition:
    """`rejected_files_alert`: every finished run that quarantined files → the alert webhook."""

    @dg.sensor(
        name=REJECTED_FILES_SENSOR_NAME,
        minimum_interval_seconds=settings.interval_seconds(),
        default_status=settings.default_status(),
        description=(
            "Posts each run whose files_rejected check failed (spec, integration, tenant, the "
            "quarantined files and their reasons without secrets, UI link) to "
            "SYNKRO_ALERT_WEBHOOK_URL; does nothing while that is unset."
        ),
    )
    def rejected_files_alert(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SkipReason:
        instance = context.instance
        positions: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        if not positions:
            positions = {t.value: _latest_storage_id(instance, t) for t in _FINISHED}
            context.update_cursor(json.dumps(positions))
            return dg.SkipReason("started: runs that finish from now on are watched")
        url = os.environ.get(settings.ALERT_WEBHOOK_URL_ENV, "").strip()
        fmt = os.environ.get(settings.ALERT_WEBHOOK_FORMAT_ENV, "generic").strip().lower()
        sent = 0
        for event_type in _FINISHED:
            result = instance.fetch_run_status_changes(
                dg.RunStatusChangeRecordsFilter(
                    event_type=event_type, after_storage_id=positions.get(event_type.value, 0)
                ),
                limit=RUNS_PER_TICK,
                ascending=True,
            )
            for record in result.records:
                positions[event_type.value] = record.storage_id
                run = instance.get_run_by_id(record.run_id) if record.run_id else None
                if run is None:
                    continue
                total, files = rejected_files_in_run(instance, run.run_id)
                if not total and not files:
                    continue
                alert = build_rejected_files_alert(run, total, files, integrations.get_registry)
                if not url:
                    context.log.info(
                        f"run {run.run_id} rejected {alert.files_rejected} file(s); "
                        f"{settings.ALERT_WEBHOOK_URL_ENV} is unset, no alert sent"
                    )
                    continue
                try:
                    payload = rejection_payload(
                        alert, fmt, os.environ.get(settings.ALERT_TELEGRAM_CHAT_ID_ENV)
                    )
                    post_webhook(url, payload)
                except Exception as exc:  # noqa: BLE001 - a broken webhook must not stop the sensor
                    context.log.error(
                        f"rejected-files alert for run {run.run_id} not delivered: {exc}"
                    )
                    continue
                sent += 1
                context.log.info(
                    f"rejected-files alert for run {run.run_id} posted to {safe_webhook_target(url)}"
                )
        context.update_cursor(json.dumps(positions))
        return dg.SkipReason(f"{sent} rejected-files alert(s) sent")

    return rejected_files_alert
