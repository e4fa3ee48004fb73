"""Turns a source spec into one multi-asset (one asset per stream), partitioned by integration."""

from __future__ import annotations

import time
from typing import Any

import dagster as dg

from synkro_dagster.assets.checks import (
    check_specs_for,
    completeness_result,
    duplicate_keys_result,
    files_rejected_result,
    sync_checks,
)
from synkro_dagster.connectors.streams import read_stream
from synkro_dagster.contracts import Integration, StreamRead
from synkro_dagster.specs.models import SourceSpec, StreamSpec
from synkro_dagster.tags import SPEC_TAG, allows_mass_delete, is_full_refresh, run_tags

DATALAYER_RESOURCE = "datalayer"


def partitions_def_for(spec_name: str) -> dg.DynamicPartitionsDefinition:
    """The spec's partitions: one key per integration id, kept equal to the registry by a sensor."""
    return dg.DynamicPartitionsDefinition(name=f"{spec_name}__integrations")


def job_name_for(spec_name: str) -> str:
    return f"sync_{spec_name}"


def connector_resource_key(engine: str) -> str:
    return f"{engine}_connector"


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


def load_integration(registry: Any, source: SourceSpec, integration_id: str) -> Integration:
    """The partition's integration, refused with a clear message if unknown, disabled or foreign."""
    from synkro_dagster.integrations.registry import IntegrationNotFound

    try:
        integration = registry.get(integration_id)
    except IntegrationNotFound:
        raise dg.Failure(
            description=f"integration '{integration_id}' is not in the registry "
            f"(add it with `synkro integrations add {integration_id} --spec {source.name} ...`)"
        ) from None
    if integration.spec != source.name:
        raise dg.Failure(
            description=f"integration '{integration_id}' uses spec '{integration.spec}', "
            f"not '{source.name}'"
        )
    if not integration.enabled:
        raise dg.Failure(
            description=f"integration '{integration_id}' is disabled; "
            f"enable it with `synkro integrations enable {integration_id}`"
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


def build_spec_assets(source: SourceSpec) -> dg.AssetsDefinition:
    """One multi-asset for the spec: a run syncs the selected streams of one integration."""
    from synkro_dagster.datalayer.resource import LoadContext, TableTarget
    from synkro_dagster.integrations.registry import IntegrationRegistry

    partitions = partitions_def_for(source.name)
    streams = {asset_key_for(source, s): s for s in source.streams}
    check_specs = [
        spec
        for key, stream in streams.items()
        for spec in check_specs_for(key, f"{source.name}/{stream.name}", source.engine, partitions)
    ]
    connector_key = connector_resource_key(source.engine)

    @dg.multi_asset(
        name=f"{source.name}_streams",
        specs=[_asset_spec(source, s, partitions) for s in source.streams],
        check_specs=check_specs,
        can_subset=True,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(1),
        required_resource_keys={DATALAYER_RESOURCE, connector_key},
        description=source.description or None,
        op_tags={SPEC_TAG: source.name},
    )
    def _sync(context):  # an AssetExecutionContext (annotations are strings here)
        datalayer = getattr(context.resources, DATALAYER_RESOURCE)
        connector = getattr(context.resources, connector_key)
        registry = IntegrationRegistry(datalayer.get_engine())
        integration = load_integration(registry, source, context.partition_key)
        tag_run(context, integration)
        full_refresh = is_full_refresh(context.run.tags)
        selected_checks = context.selected_asset_check_keys
        failures: list[str] = []

        with connector.session(source, integration) as session:
            for key, stream in streams.items():
                if key not in context.selected_asset_keys:
                    continue
                started = time.monotonic()
                try:
                    cursor = (
                        None if full_refresh else datalayer.get_cursor(integration.id, stream.name)
                    )
                    read: StreamRead = read_stream(session, source, stream, integration, cursor)
                    stats = datalayer.load(
                        TableTarget.for_stream(source, stream),
                        read,
                        LoadContext(
                            tenant_id=integration.tenant,
                            integration_id=integration.id,
                            stream=stream.name,
                            run_id=context.run.run_id,
                            full_refresh=full_refresh,
                            reads_whole_source=reads_whole_source(
                                source, stream, cursor, full_refresh
                            ),
                            allow_mass_delete=allows_mass_delete(context.run.tags),
                        ),
                    )
                except Exception as exc:  # noqa: BLE001 - one stream's failure must not hide the others
                    message = integration.redact(f"{type(exc).__name__}: {exc}")
                    context.log.error(
                        f"stream '{stream.name}' of '{integration.id}' failed: {message}"
                    )
                    failures.append(f"{stream.name}: {message}")
                    continue

                metadata: dict[str, Any] = dict(stats.as_metadata())
                metadata.update(
                    {
                        "pages": read.stats.pages,
                        "files": read.stats.files,
                        "files_rejected": read.stats.files_rejected,
                        "bytes": read.stats.bytes,
                        "full_refresh": full_refresh,
                        "integration": integration.id,
                        "tenant": integration.tenant,
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
                ]
                if source.engine == "files":
                    rejected = [(n, integration.redact(r)) for n, r in read.stats.rejected]
                    results.append(files_rejected_result(key, rejected, integration.id))
                    if read.stats.encodings:
                        metadata["encodings_detected"] = "; ".join(
                            f"{name}: {how}" for name, how in read.stats.encodings.items()
                        )
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata=metadata,
                    check_results=[
                        r for r in results if dg.AssetCheckKey(key, r.check_name) in selected_checks
                    ],
                )

        if failures:
            raise SyncFailed(
                description=f"{len(failures)} stream(s) of integration '{integration.id}' failed",
                metadata={"failed_streams": "\n".join(failures)},
            )

    return _sync


def build_spec_job(source: SourceSpec) -> dg.UnresolvedAssetJobDefinition:
    keys = [asset_key_for(source, stream) for stream in source.streams]
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
