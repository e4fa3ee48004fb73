"""File-drop sensors: new complete files in a files-engine integration's inbox start a sync run.

One sensor per `files` spec, `<spec>_file_drop`, targeting `sync_<spec>`. Each tick reads the
spec's registry entries (one indexed query), lists every enabled integration's inbox with the same
readiness rules the connector uses (no `.tmp`, stable for `stable_seconds`, manifest if required)
and emits one RunRequest per integration that has ready files:

- `partition_key` = the integration id, run tags `synkro/integration`, `synkro/tenant`,
  `synkro/spec`;
- `run_key` = `<id>:<digest of the waiting uploads>`, each upload being its stream, file name,
  the manifest's export id, content hash and the time it arrived (the later of its modification
  and change time): Dagster never launches a run key twice, so the same waiting files never
  trigger twice, while a new file — even with the bytes of an earlier one, under a new name or
  dropped again under its old name — changes the key;
- no request for an integration whose sync run is still queued or in progress: that run is
  taking the files (the next tick after it asks again for whatever is left).

Content hashes are streamed (1 MB chunks) and cached in-process by (path, size, mtime); a
`<name>.sha256` manifest, when present, is used instead of reading the file (the run verifies it).
The cursor is one short digest of the last tick's state, so a quiet inbox costs a directory
listing per integration and returns a SkipReason.

A run that *failed* leaves its files in the inbox under the same key, which Dagster would never
launch again; so when the run of a key failed, the sensor requests `<key>:retry<n>`, up to
`max_retries` times (a cancelled run is not retried: someone stopped it on purpose).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field

import dagster as dg

from synkro_dagster.assets.factory import job_name_for, partitions_name_for
from synkro_dagster.automation import settings
from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.files_inbox import (
    HashCache,
    inbox_dir,
    read_manifest_info,
    ready_files,
    stream_options,
)
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.specs.engines import connector_resource_key
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster.tags import INTEGRATION_TAG, run_tags

RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
SENSOR_NAME_TAG = "dagster/sensor_name"
DEFAULT_MAX_RETRIES = 3

FILES_CONNECTOR = connector_resource_key("files")  # the engine whose connector has the inboxes
# Hashing stops for this tick once this many seconds went by; the rest is hashed next tick (the
# cache keeps what was done), so a drop of huge files never makes a tick time out.
DEFAULT_HASH_BUDGET_SECONDS = 20.0
_SHA256 = re.compile(r"[0-9a-f]{64}")

_hashes = HashCache()


def file_drop_sensor_name(spec_name: str) -> str:
    return f"{spec_name}_file_drop"


@dataclass
class InboxScan:
    """What one tick found for one spec."""

    requests: list[dg.RunRequest] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)  # "<id>: N file(s) waiting"
    pending: int = 0  # ready files whose hash is left for the next tick
    given_up: list[str] = field(default_factory=list)  # integrations whose retries are spent
    in_flight: list[str] = field(default_factory=list)  # integrations whose run is still going
    watched: int = 0


def scan_inboxes(
    source: SourceSpec,
    registry: IntegrationRegistry,
    connector: FileDropConnector,
    hash_budget_seconds: float = DEFAULT_HASH_BUDGET_SECONDS,
    busy: frozenset[str] = frozenset(),
) -> InboxScan:
    """One RunRequest per enabled integration of `source` whose inbox holds ready files, except
    the integrations in `busy` (a sync run of theirs is queued or in progress)."""
    streams = stream_options(source)
    root = connector.root()
    scan = InboxScan()
    deadline = time.monotonic() + hash_budget_seconds
    for entry in registry.entries(spec=source.name):
        files = ready_files(inbox_dir(root, entry.id), streams, connector.stable_seconds)
        if not entry.enabled:
            if files:
                scan.disabled.append(f"{entry.id}: {len(files)} file(s) waiting")
            continue
        scan.watched += 1
        if not files:
            continue
        if entry.id in busy:
            scan.in_flight.append(f"{entry.id}: {len(files)} file(s)")
            continue
        uploads: list[str] = []
        complete = True
        for dropped in files:
            manifest = read_manifest_info(dropped.path)
            declared = manifest.sha256 if manifest is not None else None
            try:
                stat = dropped.path.stat()
                if declared is not None and _SHA256.fullmatch(declared):
                    digest = declared
                elif time.monotonic() < deadline:
                    digest = _hashes.hash(dropped)
                else:
                    scan.pending += 1
                    complete = False
                    continue
            except FileNotFoundError:
                continue  # moved by a run that is finishing
            export = f"#{manifest.export_id}" if manifest and manifest.export_id else ""
            arrived = max(stat.st_mtime_ns, stat.st_ctime_ns)
            uploads.append(f"{dropped.stream}/{dropped.path.name}{export}@{digest}:{arrived}")
        # Request a run only for the whole inbox: a partial set would give a run key that the
        # next tick replaces anyway.
        if not uploads or not complete:
            continue
        digest = hashlib.sha256("\n".join(sorted(uploads)).encode()).hexdigest()[:20]
        scan.requests.append(
            dg.RunRequest(
                run_key=f"{entry.id}:{digest}",
                partition_key=entry.id,
                tags=run_tags(entry.id, source.name, entry.tenant),
            )
        )
    return scan


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def in_flight_partitions(instance: dg.DagsterInstance, job_name: str) -> frozenset[str]:
    """Partitions (integration ids) of `job_name` with a run queued, starting or running."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT))
    return frozenset(
        key for run in runs if (key := run.tags.get(PARTITION_TAG) or run.tags.get(INTEGRATION_TAG))
    )


def retry_run_key(
    instance: dg.DagsterInstance, sensor_name: str, run_key: str, max_retries: int
) -> str | None:
    """`run_key`, or `<run_key>:retry<n>` after n failed runs of it; None once retries are spent."""
    key = run_key
    for attempt in range(1, max_retries + 2):
        runs = instance.get_runs(
            filters=dg.RunsFilter(tags={RUN_KEY_TAG: key, SENSOR_NAME_TAG: sensor_name}), limit=1
        )
        if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
            return key
        key = f"{run_key}:retry{attempt}"
    return None


def build_file_drop_sensor(
    source: SourceSpec,
    hash_budget_seconds: float = DEFAULT_HASH_BUDGET_SECONDS,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> dg.SensorDefinition:
    """`<spec>_file_drop`: runs `sync_<spec>` for each integration with new complete files.

    Uses the code location's `files_connector` resource, so the sensor and the runs agree on the
    inbox root and the stability window, and its `integrations` resource for the registry.
    """
    if not source.engine_entry.file_drop:
        raise ValueError(f"spec '{source.name}' is a {source.engine} spec, not a files spec")
    partitions_name = partitions_name_for(source.name)
    job_name = job_name_for(source.name)
    sensor_name = file_drop_sensor_name(source.name)

    @dg.sensor(
        name=sensor_name,
        job_name=job_name,
        minimum_interval_seconds=settings.interval_seconds(),
        default_status=settings.default_status(),
        description=(
            f"Starts {job_name} for each enabled integration of '{source.name}' whose inbox "
            "(<inbox root>/<integration id>/) holds new complete files."
        ),
    )
    def file_drop(
        context: dg.SensorEvaluationContext,
        files_connector: FileDropConnector,
        integrations: IntegrationsResource,
    ) -> dg.SensorResult:
        # The parameter names are the resource keys (FILES_CONNECTOR, INTEGRATIONS_RESOURCE):
        # Dagster injects them by name.
        busy = in_flight_partitions(context.instance, job_name)
        registry = integrations.get_registry()
        scan = scan_inboxes(source, registry, files_connector, hash_budget_seconds, busy)
        requests = []
        for request in scan.requests:
            key = retry_run_key(context.instance, sensor_name, str(request.run_key), max_retries)
            if key is None:
                scan.given_up.append(str(request.partition_key))
            else:
                requests.append(request.with_replaced_attrs(run_key=key))
        scan.requests = requests
        state = json.dumps(sorted(r.run_key for r in scan.requests if r.run_key))
        cursor = hashlib.sha256(state.encode()).hexdigest()[:16]
        disabled = f"; disabled, skipped: {', '.join(scan.disabled)}" if scan.disabled else ""
        pending = f"; {scan.pending} file(s) still being hashed" if scan.pending else ""
        if scan.in_flight:
            # The run in progress is moving these files; asking now would start a second run
            # for whatever it has not moved yet.
            pending += f"; a run is still in progress for {', '.join(scan.in_flight)}"
        if scan.given_up:
            # Files whose runs failed max_retries times wait for a person (re-execute the run).
            pending += f"; {max_retries} failed runs, not retried again: {', '.join(scan.given_up)}"
        if not scan.requests or cursor == context.cursor:
            what = "no new files" if not scan.requests else "no change since the last tick"
            return dg.SensorResult(
                skip_reason=f"{what} in {scan.watched} inbox(es) of '{source.name}'"
                f"{pending}{disabled}",
                cursor=cursor,
            )
        if scan.disabled:
            context.log.info(f"disabled integrations skipped: {', '.join(scan.disabled)}")
        if scan.in_flight:
            context.log.info(
                f"runs still in progress, not asked again: {', '.join(scan.in_flight)}"
            )
        known = set(context.instance.get_dynamic_partitions(partitions_name))
        missing = sorted({r.partition_key for r in scan.requests if r.partition_key} - known)
        context.log.info(
            f"new files for {len(scan.requests)} integration(s): "
            + ", ".join(str(r.run_key) for r in scan.requests[:20])
        )
        return dg.SensorResult(
            run_requests=scan.requests,
            cursor=cursor,
            dynamic_partitions_requests=(
                [
                    dg.AddDynamicPartitionsRequest(
                        partitions_def_name=partitions_name,
                        partition_keys=missing,
                    )
                ]
                if missing
                else None
            ),
        )

    return file_drop


def build_file_drop_sensors(specs: dict[str, SourceSpec]) -> list[dg.SensorDefinition]:
    """One file-drop sensor per spec whose engine reads dropped files (`files`)."""
    return [
        build_file_drop_sensor(source)
        for _, source in sorted(specs.items())
        if source.engine_entry.file_drop
    ]
