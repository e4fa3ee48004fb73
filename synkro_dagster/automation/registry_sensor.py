"""The sensor that keeps each spec's dynamic partitions equal to the integrations registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import dagster as dg

from synkro_dagster.assets.factory import partitions_name_for
from synkro_dagster.automation import settings
from synkro_dagster.integrations.registry import RegistryEntry
from synkro_dagster.integrations.resource import IntegrationsResource

REGISTRY_SENSOR_NAME = "integrations_registry_sensor"


def partition_requests(
    spec_names: Iterable[str],
    entries: Iterable[RegistryEntry],
    existing: Callable[[str], Iterable[str]],
) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
    """The add/delete requests that make each spec's partitions equal to its registry ids.

    `existing(partitions_name)` returns the keys the instance holds now. Integrations of specs
    that are not in this code location are ignored (their partitions belong to no asset here).
    Disabled integrations keep their partition: their history stays visible and enabling them
    again needs no sensor tick.
    """
    names = sorted(set(spec_names))
    wanted: dict[str, set[str]] = {name: set() for name in names}
    for entry in entries:
        if entry.spec in wanted:
            wanted[entry.spec].add(entry.id)
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    for spec in names:
        partitions_name = partitions_name_for(spec)
        current = set(existing(partitions_name))
        added = sorted(wanted[spec] - current)
        removed = sorted(current - wanted[spec])
        if added:
            requests.append(
                dg.AddDynamicPartitionsRequest(
                    partitions_def_name=partitions_name, partition_keys=added
                )
            )
        if removed:
            requests.append(
                dg.DeleteDynamicPartitionsRequest(
                    partitions_def_name=partitions_name, partition_keys=removed
                )
            )
    return requests


def _describe(requests: list) -> str:
    parts = []
    for request in requests:
        verb = "add" if isinstance(request, dg.AddDynamicPartitionsRequest) else "delete"
        keys = list(request.partition_keys)
        shown = ", ".join(keys[:10]) + (f" (+{len(keys) - 10} more)" if len(keys) > 10 else "")
        parts.append(f"{verb} {request.partitions_def_name}: {shown}")
    return "; ".join(parts)


def build_registry_sensor(spec_names: Iterable[str]) -> dg.SensorDefinition:
    """`integrations_registry_sensor`: one registry query per tick, one SensorResult; the
    registry is the code location's `integrations` resource."""
    names = sorted(set(spec_names))

    @dg.sensor(
        name=REGISTRY_SENSOR_NAME,
        minimum_interval_seconds=settings.interval_seconds(),
        default_status=settings.default_status(),
        description=(
            "Keeps each spec's dynamic partitions (<spec>__integrations) equal to the integration "
            "ids in the registry: adds new ids, deletes removed ones."
        ),
    )
    def integrations_registry_sensor(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SensorResult:
        # Partitions first, registry second: `synkro integrations add` (and the demo) write the
        # registry row before the partition, so a partition read here is always in the registry
        # read after it. In the other order a tick racing an add would delete the new partition.
        existing = {
            partitions_name_for(name): context.instance.get_dynamic_partitions(
                partitions_name_for(name)
            )
            for name in names
        }
        entries = integrations.get_registry().entries()
        requests = partition_requests(names, entries, existing.__getitem__)
        if not requests:
            return dg.SensorResult(
                skip_reason=f"partitions match the registry ({len(entries)} integrations)"
            )
        context.log.info(_describe(requests))
        return dg.SensorResult(dynamic_partitions_requests=requests)

    return integrations_registry_sensor
