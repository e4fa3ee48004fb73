"""Freshness against each integration's own schedule: the rule, and a sensor that reports it.

A sync due at cron fire time T must have landed by T + grace. `freshness_status` is the pure
rule (the asset factory's checks may call it too); `freshness_sensor` applies it every tick to
every stream of every scheduled, enabled integration and reports one `fresh_against_schedule`
check result per stream asset (passed when none of its integrations is overdue; the metadata
names the overdue ones). It reports when a stream's result changes, when a run has executed (or
skipped) the check since, and hourly, so the event log does not grow by one event per asset per
tick.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa
from croniter import croniter

from synkro_dagster.automation import settings
from synkro_dagster.integrations.registry import RegistryEntry
from synkro_dagster.integrations.resource import INTEGRATIONS_RESOURCE, IntegrationsResource
from synkro_dagster.specs import SourceSpec

FRESHNESS_CHECK = "fresh_against_schedule"
FRESHNESS_SENSOR_NAME = "freshness_against_schedules"
# Re-report an unchanged result this often, so the UI shows a recent evaluation time.
REPORT_EVERY = timedelta(hours=1)


def freshness_check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    """The check spec the freshness sensor reports on (declare it beside the asset's checks)."""
    return dg.AssetCheckSpec(
        FRESHNESS_CHECK,
        asset=asset_key,
        description=(
            "Every enabled, scheduled integration synced this stream after its latest cron fire "
            f"time plus the grace period ({settings.FRESHNESS_GRACE_ENV}, default "
            f"{settings.DEFAULT_FRESHNESS_GRACE_MINUTES} min). Reported by the "
            f"{FRESHNESS_SENSOR_NAME} sensor."
        ),
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1024)
def _latest_fire_at_or_before(schedule: str, cutoff: datetime) -> datetime:
    # A sensor tick asks this for thousands of integrations sharing a few crons and one cutoff.
    # Fire times are whole seconds; add one so a fire time exactly at the cutoff counts.
    start = cutoff.replace(microsecond=0) + timedelta(seconds=1)
    return croniter(schedule, start).get_prev(datetime)


def freshness_status(
    schedule: str | None,
    last_synced_at: datetime | None,
    now: datetime,
    grace: timedelta,
) -> tuple[bool, dict[str, Any]]:
    """Is a stream synced at `last_synced_at` fresh at `now` for an integration with `schedule`?

    Fresh when the latest fire time of `schedule` (cron, UTC) that is at least `grace` old is
    not after `last_synced_at`. No schedule: always fresh (it runs on demand). Never synced and
    a fire time is due: stale. Returns (passed, metadata) with plain str/float values.
    """
    if not schedule:
        return True, {"schedule": "none", "reason": "no schedule: synced on demand only"}
    cutoff = now.astimezone(UTC) - grace
    due_at = _latest_fire_at_or_before(schedule, cutoff)
    metadata: dict[str, Any] = {
        "schedule": schedule,
        "due_at": _iso(due_at),
        "grace_minutes": round(grace.total_seconds() / 60, 2),
        "last_synced_at": _iso(last_synced_at) if last_synced_at else "never",
    }
    passed = last_synced_at is not None and last_synced_at >= due_at
    if not passed:
        metadata["overdue_minutes"] = round((cutoff - due_at).total_seconds() / 60, 1)
        metadata["reason"] = (
            "never synced"
            if last_synced_at is None
            else f"the sync due at {_iso(due_at)} has not landed"
        )
    return passed, metadata


_sync_state = sa.table(
    "sync_state",
    sa.column("integration_id"),
    sa.column("stream"),
    sa.column("last_synced_at"),
    schema="synkro",
)


def last_synced_times(engine: sa.Engine) -> dict[tuple[str, str], datetime]:
    """(integration id, stream) → last_synced_at, for every stream ever synced: one query."""
    query = sa.select(
        _sync_state.c.integration_id, _sync_state.c.stream, _sync_state.c.last_synced_at
    ).where(_sync_state.c.last_synced_at.is_not(None))
    with engine.connect() as conn:
        return {(row[0], row[1]): row[2] for row in conn.execute(query)}


def freshness_evaluations(
    specs: Mapping[str, SourceSpec],
    entries: Iterable[RegistryEntry],
    synced: Mapping[tuple[str, str], datetime],
    now: datetime,
    grace: timedelta,
) -> list[dg.AssetCheckEvaluation]:
    """One freshness result per stream asset of each spec that has scheduled integrations."""
    by_spec: dict[str, list[RegistryEntry]] = {}
    for entry in entries:
        if entry.spec in specs and entry.enabled and entry.schedule:
            by_spec.setdefault(entry.spec, []).append(entry)
    evaluations = []
    for spec_name, spec_entries in sorted(by_spec.items()):
        for stream in specs[spec_name].streams:
            stale: list[str] = []
            for entry in spec_entries:
                passed, meta = freshness_status(
                    entry.schedule, synced.get((entry.id, stream.name)), now, grace
                )
                if not passed:
                    stale.append(
                        f"{entry.id}: {meta['reason']} (due {meta['due_at']}, "
                        f"overdue {meta['overdue_minutes']} min)"
                    )
            metadata: dict[str, Any] = {
                "integrations_checked": len(spec_entries),
                "integrations_stale": len(stale),
                "grace_minutes": round(grace.total_seconds() / 60, 2),
            }
            if stale:
                metadata["stale"] = dg.MetadataValue.md(
                    "\n".join(f"- {line}" for line in stale[:200])
                )
            evaluations.append(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey([spec_name, stream.name]),
                    check_name=FRESHNESS_CHECK,
                    passed=not stale,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata=metadata,
                    description=None
                    if not stale
                    else f"{len(stale)} of {len(spec_entries)} integrations missed their schedule",
                )
            )
    return evaluations


def _fingerprint(evaluation: dg.AssetCheckEvaluation) -> str:
    stale = evaluation.metadata.get("stale")
    text = f"{evaluation.passed}|{getattr(stale, 'value', '')}"
    # Only which integrations are stale matters, not how overdue they are by now.
    text = "\n".join(line.split(" (due ")[0] for line in text.splitlines())
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _superseded_by_runs(
    instance: dg.DagsterInstance, evaluations: list[dg.AssetCheckEvaluation]
) -> set[dg.AssetCheckKey]:
    """Checks whose latest execution belongs to a run, not to this sensor (one query).

    A sync run plans every check of the streams it materializes; the one it reports (or skips)
    for its single integration would otherwise stay the check's visible state until this
    sensor's result changes.
    """
    keys = [e.asset_check_key for e in evaluations]
    if not keys:
        return set()
    try:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    except Exception:  # noqa: BLE001 - storage without asset checks: fall back to the cursor
        return set()
    return {key for key, record in latest.items() if record.run_id}


def build_freshness_sensor(
    specs: Mapping[str, SourceSpec],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dg.SensorDefinition:
    """`freshness_against_schedules`: reports FRESHNESS_CHECK for each stream asset."""
    specs = dict(specs)

    @dg.sensor(
        name=FRESHNESS_SENSOR_NAME,
        minimum_interval_seconds=max(settings.interval_seconds(), 60),
        default_status=settings.default_status(),
        description=(
            f"Reports the '{FRESHNESS_CHECK}' check of every stream: stale when an enabled "
            "integration's sync due by its cron schedule has not landed within the grace period."
        ),
    )
    def freshness_against_schedules(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SensorResult:
        evaluated_at = now()
        registry = integrations.get_registry()
        evaluations = freshness_evaluations(
            specs,
            registry.entries(),
            last_synced_times(registry.engine),
            evaluated_at,
            timedelta(minutes=settings.freshness_grace_minutes()),
        )
        previous: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        superseded = _superseded_by_runs(context.instance, evaluations)
        reported: dict[str, Any] = {}
        events = []
        for evaluation in evaluations:
            key = evaluation.asset_key.to_user_string()
            fingerprint = _fingerprint(evaluation)
            last = previous.get(key) or {}
            last_at = datetime.fromisoformat(last["at"]) if last.get("at") else None
            if (
                last.get("fingerprint") != fingerprint
                or last_at is None
                or evaluated_at - last_at >= REPORT_EVERY
                or evaluation.asset_check_key in superseded
            ):
                events.append(evaluation)
                last = {"fingerprint": fingerprint, "at": evaluated_at.isoformat()}
            reported[key] = last
        cursor = json.dumps(reported, sort_keys=True)
        if not events:
            return dg.SensorResult(
                skip_reason=f"freshness unchanged for {len(evaluations)} stream(s)", cursor=cursor
            )
        stale = sum(1 for e in events if not e.passed)
        context.log.info(f"reporting freshness of {len(events)} stream(s), {stale} stale")
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return freshness_against_schedules


def build_freshness_checks(
    source: SourceSpec,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dg.AssetChecksDefinition:
    """The declared `fresh_against_schedule` check of each stream of `source`.

    Declared so the UI lists it beside the asset's other checks and a user can run it on demand;
    the freshness sensor reports the same check keys on its own between syncs.
    """
    keys = [dg.AssetKey([source.name, stream.name]) for stream in source.streams]

    @dg.multi_asset_check(
        specs=[freshness_check_spec(key) for key in keys],
        name=f"{source.name}_freshness",
        can_subset=True,
        required_resource_keys={INTEGRATIONS_RESOURCE},
    )
    def _freshness(context):  # an AssetCheckExecutionContext (annotations are strings here)
        registry = getattr(context.resources, INTEGRATIONS_RESOURCE).get_registry()
        evaluations = freshness_evaluations(
            {source.name: source},
            registry.entries(spec=source.name),
            last_synced_times(registry.engine),
            now(),
            timedelta(minutes=settings.freshness_grace_minutes()),
        )
        by_key = {e.asset_check_key: e for e in evaluations}
        for check_key in sorted(context.selected_asset_check_keys, key=str):
            evaluation = by_key.get(check_key)
            if evaluation is None:
                yield dg.AssetCheckResult(
                    asset_key=check_key.asset_key,
                    check_name=check_key.name,
                    passed=True,
                    metadata={"integrations_checked": 0},
                    description="no enabled integration of this spec has a schedule",
                )
                continue
            yield dg.AssetCheckResult(
                asset_key=evaluation.asset_key,
                check_name=evaluation.check_name,
                passed=evaluation.passed,
                severity=evaluation.severity,
                metadata=evaluation.metadata,
                description=evaluation.description,
            )

    return _freshness
