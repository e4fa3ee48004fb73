"""Run-failure alerts: a sensor that posts each failed run to a webhook, with secrets removed.

Set SYNKRO_ALERT_WEBHOOK_URL to turn alerts on. SYNKRO_ALERT_WEBHOOK_FORMAT chooses the body:
`generic` (default; a flat JSON object), `slack` (`{"text": ...}`, also Mattermost / Teams
incoming webhooks) or `telegram` (`{"chat_id", "text"}` for the Bot API's sendMessage, chat id
from SYNKRO_ALERT_TELEGRAM_CHAT_ID).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import httpx

from synkro_dagster.automation import settings
from synkro_dagster.contracts import REDACTED, redact
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.tags import INTEGRATION_TAG, SPEC_TAG, TENANT_TAG

ALERT_SENSOR_NAME = "run_failure_alert"
FORMATS = ("generic", "slack", "telegram")
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
MAX_ERROR_CHARS = 2000

# Values that look like credentials even when the registry could not be asked for the
# integration's own secrets: key=value / key: value pairs, auth headers, URL user:password@.
_KEY_VALUE = re.compile(
    r"(?i)\b((?:[a-z0-9_-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|client[_-]?secret|private[_-]?key|auth|credential)[a-z0-9_-]*)[\"']?\s*[=:]\s*[\"']?)"
    r"(?!\*\*\*|(?:Bearer|Basic|Token|Digest) \*\*\*)([^\s&\"',;)}\]]+)"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(Bearer|Basic|Token|Digest)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{4,}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def redact_secrets(text: str, secret_values: Iterable[str] = ()) -> str:
    """`text` without the given secret values and without anything shaped like a credential."""
    text = redact(text, secret_values)
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _AUTH_SCHEME.sub(rf"\1 {REDACTED}", text)
    return _KEY_VALUE.sub(rf"\1{REDACTED}", text)


@dataclass(frozen=True)
class FailureAlert:
    """What an alert says about one failed run (already redacted)."""

    spec: str | None
    integration: str | None
    tenant: str | None
    job: str
    run_id: str
    error: str
    url: str

    def summary(self) -> str:
        who = self.integration or "(no integration)"
        lines = [
            f"Synkro sync failed: {self.spec or self.job} / {who}"
            + (f" (tenant {self.tenant})" if self.tenant else ""),
            f"Run {self.run_id} of {self.job}",
            self.error,
            self.url,
        ]
        return "\n".join(line for line in lines if line)


def webhook_payload(alert: FailureAlert, fmt: str, chat_id: str | None = None) -> dict[str, Any]:
    """The JSON body for `fmt` (generic, slack or telegram)."""
    return format_payload("synkro.run_failed", asdict(alert), alert.summary(), fmt, chat_id)


def format_payload(
    event: str, fields: dict[str, Any], summary: str, fmt: str, chat_id: str | None = None
) -> dict[str, Any]:
    """An alert's JSON body in `fmt`: every field (generic), or its one-line summary (chats)."""
    if fmt == "generic":
        return {"event": event, **fields}
    if fmt == "slack":
        return {"text": summary}
    if fmt == "telegram":
        if not chat_id:
            raise ValueError(
                f"{settings.ALERT_WEBHOOK_FORMAT_ENV}=telegram needs "
                f"{settings.ALERT_TELEGRAM_CHAT_ID_ENV} (the chat that receives alerts)"
            )
        return {"chat_id": chat_id, "text": summary, "disable_web_page_preview": True}
    raise ValueError(
        f"{settings.ALERT_WEBHOOK_FORMAT_ENV}={fmt!r}: use one of {', '.join(FORMATS)}"
    )


def safe_webhook_target(url: str) -> str:
    """Scheme and host only: webhook paths often carry the token (Slack, Telegram)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def post_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    attempts: int = 3,
    timeout: float = 10.0,
    backoff: float = 1.0,
) -> None:
    """POST `payload`; retries connection errors, 429 and 5xx; raises the last error."""
    last: Exception | None = None
    with httpx.Client(timeout=timeout) as client:
        for attempt in range(1, attempts + 1):
            wait = backoff * attempt
            try:
                response = client.post(url, json=payload)
                if response.status_code < 400:
                    return
                last = RuntimeError(
                    f"webhook {safe_webhook_target(url)} answered HTTP {response.status_code}"
                )
                if response.status_code != 429 and response.status_code < 500:
                    break
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    # Honour the receiver's pace, but never block the sensor for long.
                    wait = min(float(retry_after), 30.0)
            except httpx.HTTPError as exc:
                # str(exc) may repeat the URL (and its token); keep only the error class.
                last = RuntimeError(
                    f"webhook {safe_webhook_target(url)} unreachable: {type(exc).__name__}"
                )
            if attempt < attempts:
                time.sleep(wait)
    assert last is not None
    raise last


def _innermost(error: Any) -> Any:
    # Dagster wraps user exceptions ("Error occurred while executing op ..."); the cause at the
    # bottom of the chain is the one that says what went wrong.
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def _metadata_text(metadata: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(raw, str) and raw.strip():
            lines.append(f"{key}: {raw.strip()}")
    return lines


def step_error_text(event: dg.DagsterEvent) -> str:
    """One failed step's error: its Failure description and text metadata, or the exception."""
    data = event.event_specific_data
    lines: list[str] = []
    user = getattr(data, "user_failure_data", None)
    if user is not None:
        if user.description:
            lines.append(user.description)
        lines.extend(_metadata_text(user.metadata or {}))
    else:
        error = _innermost(getattr(data, "error", None))
        if error is not None:
            lines.append(error.message.strip())
    text = "\n".join(lines) or (event.message or "step failed")
    return f"{event.step_key}: {text}" if event.step_key else text


def failure_error_text(context: dg.RunFailureSensorContext) -> str:
    steps = context.get_step_failure_events()
    if steps:
        text = "\n".join(step_error_text(e) for e in steps)
    else:
        # The run failed outside any step (launch, resource init, a killed worker).
        data = context.failure_event.event_specific_data
        error = _innermost(getattr(data, "error", None))
        text = context.failure_event.message or "run failed"
        if error is not None:
            text = f"{text}\n{error.message.strip()}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def _secret_values(
    registry_factory: Callable[[], IntegrationRegistry], integration: str
) -> list[str]:
    try:
        return [str(v) for v in registry_factory().get(integration).secrets.values()]
    except Exception:  # noqa: BLE001 - the alert must still go out, with the generic patterns only
        return []


def _entry_from_registry(
    registry_factory: Callable[[], IntegrationRegistry], integration: str
) -> Any:
    try:
        return registry_factory().entry(integration)
    except Exception:  # noqa: BLE001 - a missing tenant is better than a missing alert
        return None


def integration_of_run(tags: Mapping[str, str]) -> str | None:
    """The integration a run synced: its Synkro tag, else its partition (the integration id).

    Asset backfills launched from the UI carry only a partition range; Synkro's assets backfill
    one partition per run, so a range whose start and end agree names the integration.
    """
    if tags.get(INTEGRATION_TAG):
        return tags[INTEGRATION_TAG]
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and start == end:
        return start
    return None


def build_failure_alert(
    context: dg.RunFailureSensorContext,
    registry_factory: Callable[[], IntegrationRegistry],
) -> FailureAlert:
    run = context.dagster_run
    tags = run.tags
    # A run that failed before its sync started (launch, resources) may carry only the partition
    # (or an asset backfill's partition range); the registry supplies the tenant and spec.
    integration = integration_of_run(tags)
    tenant, spec = tags.get(TENANT_TAG), tags.get(SPEC_TAG)
    if integration and not (tenant and spec):
        entry = _entry_from_registry(registry_factory, integration)
        if entry is not None:
            tenant, spec = tenant or entry.tenant, spec or entry.spec
    secrets = _secret_values(registry_factory, integration) if integration else []
    return FailureAlert(
        spec=spec,
        integration=integration,
        tenant=tenant,
        job=run.job_name,
        run_id=run.run_id,
        error=redact_secrets(failure_error_text(context), secrets),
        url=f"{settings.ui_url()}/runs/{run.run_id}",
    )


def build_failure_alert_sensor() -> dg.SensorDefinition:
    """`run_failure_alert`: every failed run → SYNKRO_ALERT_WEBHOOK_URL.

    It watches every code location of the instance, so a run launched from a location of another
    name (or an asset backfill's run of the implicit asset job) is alerted too.
    """

    @dg.run_failure_sensor(
        name=ALERT_SENSOR_NAME,
        monitor_all_code_locations=True,
        minimum_interval_seconds=settings.interval_seconds(),
        default_status=settings.default_status(),
        description=(
            "Posts each failed run (spec, integration, tenant, error without secrets, UI link) to "
            "SYNKRO_ALERT_WEBHOOK_URL; does nothing while that is unset."
        ),
    )
    def run_failure_alert(
        context: dg.RunFailureSensorContext, integrations: IntegrationsResource
    ) -> None:
        url = os.environ.get(settings.ALERT_WEBHOOK_URL_ENV, "").strip()
        if not url:
            return
        fmt = os.environ.get(settings.ALERT_WEBHOOK_FORMAT_ENV, "generic").strip().lower()
        # The registry is asked inside the alert's own guards: a data layer that is down must
        # not stop the alert.
        alert = build_failure_alert(context, integrations.get_registry)
        try:
            payload = webhook_payload(
                alert, fmt, os.environ.get(settings.ALERT_TELEGRAM_CHAT_ID_ENV)
            )
            post_webhook(url, payload)
        except Exception as exc:  # noqa: BLE001 - a broken webhook must not stop the sensor
            context.log.error(f"alert for run {alert.run_id} not delivered: {exc}")
            return
        context.log.info(f"alert for run {alert.run_id} posted to {safe_webhook_target(url)}")

    return run_failure_alert
