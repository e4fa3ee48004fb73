"""Turns a source spec into one multi-asset (one asset per stream), partitioned by integration."""

from __future__ import annotations

import os
import time
from datetime import date
from typing import Any

import dagster as dg

from synkro_dagster.assets.checks import (
    check_specs_for,
    completeness_result,
    duplicate_keys_result,
    files_rejected_result,
    future_cursor_result,
    sync_checks,
)
from synkro_dagster.connectors.streams import read_stream
from synkro_dagster.contracts import Integration, StreamRead
from synkro_dagster.datalayer.resource import DATALAYER_RESOURCE
from synkro_dagster.errors import is_transient
from synkro_dagster.specs.engines import connector_resource_key
from synkro_dagster.specs.models import SourceSpec, StreamSpec
from synkro_dagster.tags import SPEC_TAG, allows_mass_delete, is_full_refresh, run_tags


def partitions_name_for(spec_name: str) -> str:
    """The name of the spec's dynamic partitions in the Dagster instance."""
    return f"{spec_name}__integrations"


def partitions_def_for(spec_name: str) -> dg.DynamicPartitionsDefinition:
    """The spec's partitions: one key per integration id, kept equal to the registry by a sensor."""
    return dg.DynamicPartitionsDefinition(name=partitions_name_for(spec_name))


def job_name_for(spec_name: str) -> str:
    return f"sync_{spec_name}"


def asset_key_for(source: SourceSpec, stream: StreamSpec) -> dg.AssetKey:
    return dg.AssetKey([source.name, stream.name])


def _asset_spec(
    source: SourceSpec, stream: StreamSpec, partitions: dg.PartitionsDefinition
) -> dg.AssetSpec:
    table = f"{source.target_schema}.{source.table_for(stream)}"
    metadata: dict[str, Any] = {
        "synkro/table": table,
        "synkro/primary_key": ", ".join(stream.primary_key) or "(none)",
        "synkro/write_mode": stream.write_mode,
        "synkro/cursor": stream.cursor.field if stream.cursor else "(full read)",
        "dagster/table_name": table,
    }
    return dg.AssetSpec(
        key=asset_key_for(source, stream),
        group_name=source.name,
        description=stream.description or f"{source.description} — stream '{stream.name}'".strip(),
        kinds={source.engine, "postgres"},
        partitions_def=partitions,
        metadata=metadata,
        skippable=True,
    )


def reads_whole_source(
    source: SourceSpec, stream: StreamSpec, cursor: str | None, full_refresh: bool
) -> bool:
    """Whether the read sends no cursor filter, so it returns every record (a sweep may follow)."""
    if stream.parent is not None:
        # A child is read for the parents its parent's read returned.
        parent = source.stream(stream.parent)
        if parent.cursor is not None and not full_refresh:
            return False
        return reads_whole_source(source, parent, None, full_refresh)
    if stream.cursor is None:
        return True
    if cursor is not None or stream.cursor.initial is None:
        return cursor is None
    # Only a full refresh may skip `initial`, and only where the spec does not apply it then.
    applies = getattr(stream.cursor, "initial_applies_to_full_refresh", True)
    return full_refresh and not applies


class SyncFailed(dg.Failure):
    """One or more streams of a sync failed; the others were still landed."""


SYNC_MAX_RETRIES_ENV = "SYNKRO_SYNC_MAX_RETRIES"
SYNC_RETRY_DELAY_ENV = "SYNKRO_SYNC_RETRY_DELAY_SECONDS"


def sync_retry_policy() -> dg.RetryPolicy | None:
    """How a sync failing only with transient errors (network, lock timeout, serialization
    failure) is retried: SYNKRO_SYNC_MAX_RETRIES more attempts (default 3), waiting
    SYNKRO_SYNC_RETRY_DELAY_SECONDS (default 15) doubled each time, with jitter. 0 retries: none.

    Dagster retries the whole step of the multi-asset, so every selected stream runs again; the
    streams that had landed re-read from their new cursor. A permanent failure raises a Failure
    with allow_retries=False, which Dagster fails at once whatever the policy says."""
    # Empty counts as unset: .env.example lists the names empty so run containers receive them.
    retries = int(os.environ.get(SYNC_MAX_RETRIES_ENV) or "3")
    if retries <= 0:
        return None
    return dg.RetryPolicy(
        max_retries=retries,
        delay=float(os.environ.get(SYNC_RETRY_DELAY_ENV) or "15"),
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def load_integration(registry: Any, source: SourceSpec, integration_id: str) -> Integration:
    """The partition's integration, refused with a clear message if unknown, disabled or foreign."""
    from synkro_dagster.integrations.registry import IntegrationNotFound

    try:
        integration = registry.get(integration_id)
    except IntegrationNotFound:
        raise dg.Failure(
            allow_retries=False,
            description=f"integration '{integration_id}' is not in the registry "
            f"(add it with `synkro integrations add {integration_id} --spec {source.name} ...`)",
        ) from None
    if integration.spec != source.name:
        raise dg.Failure(
            allow_retries=False,
            description=f"integration '{integration_id}' uses spec '{integration.spec}', "
            f"not '{source.name}'",
        )
    if not integration.enabled:
        raise dg.Failure(
            allow_retries=False,
            description=f"integration '{integration_id}' is disabled; "
            f"enable it with `synkro integrations enable {integration_id}`",
        )
    return integration


def tag_run(context: Any, integration: Integration) -> None:
    """Adds synkro/integration, synkro/tenant and synkro/spec to the run if it lacks them.

    Runs from the UI's multi-partition "Launch backfill" (asset backfills) carry only
    dagster/asset_partition_range_*, and no launch path knows the tenant without the registry;
    tagging at the start of the sync makes every run filterable and alertable by all three.
    """
    wanted = run_tags(integration.id, integration.spec, integration.tenant)
    missing = {k: v for k, v in wanted.items() if context.run.tags.get(k) != v}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)


DATE_DIMENSION = "date"
INTEGRATION_DIMENSION = "integration"


def report_partitions_def_for(
    source: SourceSpec, stream: StreamSpec
) -> dg.MultiPartitionsDefinition:
    """A report stream's partitions: period (daily/weekly/monthly) x integration (dynamic)."""
    start = (stream.partition_start or date(2000, 1, 1)).isoformat()
    period: dg.PartitionsDefinition
    if stream.partitioned_by == "weekly":
        period = dg.WeeklyPartitionsDefinition(start_date=start, day_offset=1)  # Monday weeks
    elif stream.partitioned_by == "monthly":
        period = dg.MonthlyPartitionsDefinition(start_date=start)
    else:
        period = dg.DailyPartitionsDefinition(start_date=start)
    return dg.MultiPartitionsDefinition(
        {DATE_DIMENSION: period, INTEGRATION_DIMENSION: partitions_def_for(source.name)}
    )


def report_job_name_for(spec_name: str, stream_name: str) -> str:
    return f"sync_{spec_name}__{stream_name}"


def report_partition_key(period: str, integration_id: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIMENSION: period, INTEGRATION_DIMENSION: integration_id})


def _split_partition_key(key: str | dg.MultiPartitionKey) -> tuple[str, str | None]:
    """(integration id, period or None) of a run's partition key."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims[INTEGRATION_DIMENSION], dims[DATE_DIMENSION]
    return key, None


def build_spec_assets(source: SourceSpec) -> dg.AssetsDefinition:
    """One multi-asset for the spec: a run syncs the selected streams of one integration."""
    return _build_assets(
        source,
        source.integration_streams,
        partitions_def_for(source.name),
        f"{source.name}_streams",
    )


def build_report_assets(source: SourceSpec) -> list[dg.AssetsDefinition]:
    """One asset per partitioned (report) stream: a run loads one period of one integration."""
    return [
        _build_assets(
            source,
            [stream],
            report_partitions_def_for(source, stream),
            f"{source.name}_{stream.name}_report",
        )
        for stream in source.partitioned_streams
    ]


def build_report_jobs(source: SourceSpec) -> list[dg.UnresolvedAssetJobDefinition]:
    jobs = []
    for stream in source.partitioned_streams:
        key = asset_key_for(source, stream)
        partitions = report_partitions_def_for(source, stream)

        def tags(key_text: str, spec_name: str = source.name) -> dict[str, str]:
            integration_id = key_text.split("|")[-1]
            return run_tags(integration_id, spec_name)

        jobs.append(
            dg.define_asset_job(
                name=report_job_name_for(source.name, stream.name),
                selection=dg.AssetSelection.assets(key).without_checks()
                | dg.AssetSelection.checks(
                    *(dg.AssetCheckKey(key, n) for n in sync_checks(source.engine))
                ),
                executor_def=dg.in_process_executor,
                config=dg.PartitionedConfig(
                    partitions_def=partitions,
                    run_config_for_partition_key_fn=lambda _key: {},
                    tags_for_partition_key_fn=tags,
                ),
                partitions_def=partitions,
                tags={SPEC_TAG: source.name},
                description=f"Load one {stream.partitioned_by} period of report stream "
                f"'{stream.name}' (spec '{source.name}') for one integration.",
            )
        )
    return jobs


def _build_assets(
    source: SourceSpec,
    stream_list: list[StreamSpec],
    partitions: dg.PartitionsDefinition,
    name: str,
) -> dg.AssetsDefinition:
    from synkro_dagster.datalayer.resource import LoadContext, TableTarget
    from synkro_dagster.integrations.resource import INTEGRATIONS_RESOURCE

    streams = {asset_key_for(source, s): s for s in stream_list}
    check_specs = [
        spec
        for key, stream in streams.items()
        for spec in check_specs_for(key, f"{source.name}/{stream.name}", source.engine, partitions)
    ]
    connector_key = connector_resource_key(source.engine)
    retry_policy = sync_retry_policy()

    @dg.multi_asset(
        name=name,
        specs=[_asset_spec(source, s, partitions) for s in stream_list],
        check_specs=check_specs,
        can_subset=True,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(1),
        required_resource_keys={DATALAYER_RESOURCE, INTEGRATIONS_RESOURCE, connector_key},
        description=source.description or None,
        op_tags={SPEC_TAG: source.name},
        retry_policy=retry_policy,
    )
    def _sync(context):  # an AssetExecutionContext (annotations are strings here)
        if retry_policy is None:
            yield from _sync_streams(context)
            return
        try:
            yield from _sync_streams(context)
        except dg.Failure:
            raise  # its allow_retries already says whether a retry could help
        except Exception as exc:
            # Only a transient failure is worth the retry policy's wait; anything else fails now.
            if is_transient(exc):
                raise
            raise dg.Failure(
                description=f"{type(exc).__name__}: {exc}", allow_retries=False
            ) from exc

    def _sync_streams(context: Any) -> Any:
        datalayer = getattr(context.resources, DATALAYER_RESOURCE)
        connector = getattr(context.resources, connector_key)
        registry = getattr(context.resources, INTEGRATIONS_RESOURCE).get_registry()
        integration_id, period = _split_partition_key(context.partition_key)
        integration = load_integration(registry, source, integration_id)
        tag_run(context, integration)
        full_refresh = is_full_refresh(context.run.tags)
        selected_checks = context.selected_asset_check_keys
        failures: list[str] = []
        transient: list[bool] = []  # per failure: whether a retry could cure it

        with connector.session(source, integration) as session:
            for key, stream in streams.items():
                if key not in context.selected_asset_keys:
                    continue
                started = time.monotonic()
                reads: list[StreamRead] = []

                def read_from(
                    start: str | None, stream: StreamSpec = stream, reads: list = reads
                ) -> StreamRead:
                    if period is not None:
                        start = None  # a period is read whole, whatever was loaded before
                    reads.append(
                        read_stream(session, source, stream, integration, start, partition=period)
                    )
                    return reads[-1]

                def reads_whole(start: str | None, stream: StreamSpec = stream) -> bool:
                    # Known only once the data layer has read the cursor under the lock.
                    cursor = None if period is not None else start
                    return reads_whole_source(source, stream, cursor, full_refresh)

                try:
                    # The data layer takes the stream's lock, reads the cursor under it and only
                    # then asks the connector to read from there (initial / lookback applied).
                    target = TableTarget.for_stream(source, stream)
                    stats = datalayer.sync(
                        target,
                        read_from,
                        LoadContext(
                            tenant_id=integration.tenant,
                            integration_id=integration.id,
                            stream=stream.name,
                            run_id=context.run.run_id,
                            full_refresh=full_refresh,
                            reads_whole_source=reads_whole,
                            allow_mass_delete=allows_mass_delete(context.run.tags),
                            partition=period,
                            log=context.log,
                        ),
                    )
                    read = reads[-1]
                    # Read after the commit: the table as readers see it, for the UI's catalog.
                    catalog = datalayer.table_catalog(target, integration.id)
                except Exception as exc:  # noqa: BLE001 - one stream's failure must not hide the others
                    message = integration.redact(f"{type(exc).__name__}: {exc}")
                    context.log.error(
                        f"stream '{stream.name}' of '{integration.id}' failed: {message}"
                    )
                    failures.append(f"{stream.name}: {message}")
                    transient.append(is_transient(exc))
                    continue

                metadata: dict[str, Any] = dict(stats.as_metadata())
                metadata.update(catalog.as_metadata())
                metadata.update(
                    {
                        "pages": read.stats.pages,
                        "files": read.stats.files,
                        "files_rejected": read.stats.files_rejected,
                        "bytes": read.stats.bytes,
                        "full_refresh": full_refresh,
                        "integration": integration.id,
                        "tenant": integration.tenant,
                        **({"period": period} if period is not None else {}),
                        "step_seconds": round(time.monotonic() - started, 3),
                    }
                )
                if read.stats.source_total is not None:
                    metadata["source_total"] = read.stats.source_total
                results = [
                    duplicate_keys_result(
                        key,
                        stats.duplicates_collapsed,
                        stats.duplicate_key_example,
                        integration.id,
                    ),
                    completeness_result(
                        key, stats.rows_read, read.stats.source_total, integration.id
                    ),
                    future_cursor_result(
                        key,
                        source.landed_cursor(stream),
                        stats.future_records,
                        stats.future_record_example,
                        stats.future_limit,
                    ),
                ]
                if source.engine_entry.file_drop:
                    rejected = [(n, integration.redact(r)) for n, r in read.stats.rejected]
                    results.append(files_rejected_result(key, rejected, integration.id))
                    if read.stats.encodings:
                        metadata["encodings_detected"] = "; ".join(
                            f"{name}: {how}" for name, how in read.stats.encodings.items()
                        )
                    if read.stats.read_paths:
                        # csv_copy: PostgreSQL's COPY parsed the file; records: Python did (why).
                        metadata["fast_path"] = "\n".join(
                            f"{name}: {how}" for name, how in read.stats.read_paths.items()
                        )
                        metadata["files_csv_copy"] = sum(
                            how == "csv_copy" for how in read.stats.read_paths.values()
                        )
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata=metadata,
                    check_results=[
                        r
                        for r in results
                        if r.check_name is not None
                        and dg.AssetCheckKey(key, r.check_name) in selected_checks
                    ],
                )

        if failures:
            retry = all(transient)
            raise SyncFailed(
                description=f"{len(failures)} stream(s) of integration '{integration.id}' failed"
                + (
                    " with transient errors; the run retries them"
                    if retry
                    else "; the messages below say what to fix, then rerun the partition"
                ),
                metadata={"failed_streams": "\n".join(failures)},
                allow_retries=retry,
            )

    return _sync


def build_spec_job(source: SourceSpec) -> dg.UnresolvedAssetJobDefinition:
    keys = [asset_key_for(source, stream) for stream in source.integration_streams]
    return dg.define_asset_job(
        name=job_name_for(source.name),
        # The streams and the checks their sync evaluates; other checks on these assets (the
        # freshness check a sensor reports, unpartitioned) are not part of a sync run.
        selection=dg.AssetSelection.assets(*keys).without_checks()
        | dg.AssetSelection.checks(
            *(dg.AssetCheckKey(key, name) for key in keys for name in sync_checks(source.engine))
        ),
        executor_def=dg.in_process_executor,
        # Every run of a partition carries the integration and spec tags, however it was launched
        # (sensor, UI launchpad, backfill), so the run queue's per-integration limit always applies.
        config=dg.PartitionedConfig(
            partitions_def=partitions_def_for(source.name),
            run_config_for_partition_key_fn=lambda _key: {},
            tags_for_partition_key_fn=lambda key: run_tags(key, source.name),
        ),
        partitions_def=partitions_def_for(source.name),
        tags={SPEC_TAG: source.name},
        description=f"Sync the streams of spec '{source.name}' for one integration (partition).",
    )
