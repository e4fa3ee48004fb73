"""Asset checks every stream carries, and how a load's numbers turn into their results.

The checks a sync evaluates are partitioned like their asset (one result per integration), so one
integration's failing check does not turn the asset red for the others, and the next success of
another integration does not hide it. Dagster 1.13 marks partitioned checks as a preview feature;
every result also names its integration in its description and metadata.
"""

from __future__ import annotations

import warnings
from typing import Any

import dagster as dg

from synkro_dagster.specs.engines import ENGINES

DUPLICATE_KEYS = "no_duplicate_keys_in_load"
COMPLETENESS = "complete_against_source_total"
FILES_REJECTED = "files_rejected"
FUTURE_CURSOR = "no_records_beyond_max_future"
SYNC_CHECKS = (DUPLICATE_KEYS, COMPLETENESS, FUTURE_CURSOR)  # evaluated by every sync run
FILES_SYNC_CHECKS = (*SYNC_CHECKS, FILES_REJECTED)  # ... and by a sync of dropped files
# A rejected-files check lists at most this many files (the count is always complete).
MAX_REJECTED_LISTED = 50


def sync_checks(engine: str) -> tuple[str, ...]:
    """The checks a sync of a spec on `engine` evaluates."""
    return FILES_SYNC_CHECKS if ENGINES[engine].file_drop else SYNC_CHECKS


def check_specs_for(
    asset_key: dg.AssetKey,
    description: str,
    engine: str,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetCheckSpec]:
    """The sync checks of one stream asset, partitioned by `partitions_def` (the integrations)."""
    with warnings.catch_warnings():
        # Partitioned checks are a preview in Dagster 1.13: silence the warning every definitions
        # load would print (docs/operations.md#checks explains the choice).
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _check_specs(asset_key, description, engine, partitions_def)


def _check_specs(
    asset_key: dg.AssetKey,
    description: str,
    engine: str,
    partitions_def: dg.PartitionsDefinition | None,
) -> list[dg.AssetCheckSpec]:
    files = [
        dg.AssetCheckSpec(
            FILES_REJECTED,
            asset=asset_key,
            description=(
                f"No file of {description} was quarantined by the sync (error: the table lacks "
                "what the rejected files held; their names and reasons are in the metadata)."
            ),
            partitions_def=partitions_def,
        )
    ]
    return (files if ENGINES[engine].file_drop else []) + [
        dg.AssetCheckSpec(
            DUPLICATE_KEYS,
            asset=asset_key,
            description=(
                f"The source sent each primary key of {description} at most once per load "
                "(warns: the merge kept the last version of each duplicate)."
            ),
            partitions_def=partitions_def,
        ),
        dg.AssetCheckSpec(
            COMPLETENESS,
            asset=asset_key,
            description=(
                f"At least as many rows of {description} were read as the source reported in "
                "its total (skipped when the source reports none)."
            ),
            partitions_def=partitions_def,
        ),
        dg.AssetCheckSpec(
            FUTURE_CURSOR,
            asset=asset_key,
            description=(
                f"No record of {description} is dated beyond now + the cursor's max_future "
                "(warns: such records land but do not move the cursor; fix the source's clock "
                "or data)."
            ),
        ),
    ]


def duplicate_keys_result(
    asset_key: dg.AssetKey,
    duplicates: int,
    example: dict[str, Any] | None,
    integration: str,
) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {"integration": integration, "duplicate_records": duplicates}
    if example:
        metadata["example_key"] = dg.MetadataValue.json(example)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=DUPLICATE_KEYS,
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=f"integration '{integration}': "
        + (
            "no primary key repeated in the load"
            if duplicates == 0
            else f"{duplicates} records repeated a primary key already sent in the same load"
        ),
    )


def completeness_result(
    asset_key: dg.AssetKey, rows_read: int, source_total: int | None, integration: str
) -> dg.AssetCheckResult:
    who = f"integration '{integration}': "
    if source_total is None:
        return dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=COMPLETENESS,
            passed=True,
            metadata={
                "integration": integration,
                "rows_read": rows_read,
                "source_total": "not reported",
            },
            description=who + "the source reports no total for this stream",
        )
    missing = max(source_total - rows_read, 0)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=COMPLETENESS,
        passed=missing == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "integration": integration,
            "rows_read": rows_read,
            "source_total": source_total,
            "rows_missing": missing,
        },
        description=who
        + (
            f"read all {rows_read} rows the source reported"
            if missing == 0
            else f"read {rows_read} rows but the source reported {source_total}"
        ),
    )


def files_rejected_result(
    asset_key: dg.AssetKey, rejected: list[tuple[str, str]], integration: str | None = None
) -> dg.AssetCheckResult:
    """Fails (error) when the sync quarantined files: names and the first reason of each."""
    listed = rejected[:MAX_REJECTED_LISTED]
    who = f"integration '{integration}': " if integration else ""
    metadata: dict[str, Any] = {
        **({"integration": integration} if integration else {}),
        "files_rejected": len(rejected),
        "files": dg.MetadataValue.json([name for name, _ in listed]),
        "reasons": dg.MetadataValue.md(
            "\n".join(f"- `{name}`: {reason}" for name, reason in listed) or "none"
        ),
    }
    if len(rejected) > len(listed):
        metadata["files_not_listed"] = len(rejected) - len(listed)
    first = f"{rejected[0][0]}: {rejected[0][1]}" if rejected else ""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=FILES_REJECTED,
        passed=not rejected,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=(
            who + "no file quarantined"
            if not rejected
            else (who + f"{len(rejected)} file(s) quarantined, e.g. {first}")[:500]
        ),
    )


def future_cursor_result(
    asset_key: dg.AssetKey,
    cursor_field: str | None,
    count: int,
    example: dict[str, Any] | None,
    limit: str | None,
) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {"future_records": count}
    if example:
        metadata["example_record"] = dg.MetadataValue.json(example)
    if limit:
        metadata["cursor_limit"] = limit
    description = None
    if count:
        value = (example or {}).get(cursor_field or "")
        key = {k: v for k, v in (example or {}).items() if k != cursor_field}
        description = (
            f"{count} record(s) dated beyond now + max_future landed without moving the cursor, "
            f"e.g. key {key} with {cursor_field} = {value!r}"
        )
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=FUTURE_CURSOR,
        passed=count == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )
