"""Asset checks every stream carries, and how a load's numbers turn into their results."""

from __future__ import annotations

from typing import Any

import dagster as dg

DUPLICATE_KEYS = "no_duplicate_keys_in_load"
COMPLETENESS = "complete_against_source_total"
FILES_REJECTED = "files_rejected"
SYNC_CHECKS = (DUPLICATE_KEYS, COMPLETENESS)  # evaluated by every sync run
FILES_SYNC_CHECKS = (*SYNC_CHECKS, FILES_REJECTED)  # ... and by a files spec's sync
# A rejected-files check lists at most this many files (the count is always complete).
MAX_REJECTED_LISTED = 50


def sync_checks(engine: str) -> tuple[str, ...]:
    """The checks a sync of a spec on `engine` evaluates."""
    return FILES_SYNC_CHECKS if engine == "files" else SYNC_CHECKS


def check_specs_for(
    asset_key: dg.AssetKey, description: str, engine: str = ""
) -> list[dg.AssetCheckSpec]:
    files = [
        dg.AssetCheckSpec(
            FILES_REJECTED,
            asset=asset_key,
            description=(
                f"No file of {description} was quarantined by the sync (error: the table lacks "
                "what the rejected files held; their names and reasons are in the metadata)."
            ),
        )
    ]
    return (files if engine == "files" else []) + [
        dg.AssetCheckSpec(
            DUPLICATE_KEYS,
            asset=asset_key,
            description=(
                f"The source sent each primary key of {description} at most once per load "
                "(warns: the merge kept the last version of each duplicate)."
            ),
        ),
        dg.AssetCheckSpec(
            COMPLETENESS,
            asset=asset_key,
            description=(
                f"At least as many rows of {description} were read as the source reported in "
                "its total (skipped when the source reports none)."
            ),
        ),
    ]


def duplicate_keys_result(
    asset_key: dg.AssetKey, duplicates: int, example: dict[str, Any] | None
) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {"duplicate_records": duplicates}
    if example:
        metadata["example_key"] = dg.MetadataValue.json(example)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=DUPLICATE_KEYS,
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=None
        if duplicates == 0
        else f"{duplicates} records repeated a primary key already sent in the same load",
    )


def completeness_result(
    asset_key: dg.AssetKey, rows_read: int, source_total: int | None
) -> dg.AssetCheckResult:
    if source_total is None:
        return dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=COMPLETENESS,
            passed=True,
            metadata={"rows_read": rows_read, "source_total": "not reported"},
            description="the source reports no total for this stream",
        )
    missing = max(source_total - rows_read, 0)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=COMPLETENESS,
        passed=missing == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_read": rows_read, "source_total": source_total, "rows_missing": missing},
        description=None
        if missing == 0
        else f"read {rows_read} rows but the source reported {source_total}",
    )


def files_rejected_result(
    asset_key: dg.AssetKey, rejected: list[tuple[str, str]]
) -> dg.AssetCheckResult:
    """Fails (error) when the sync quarantined files: names and the first reason of each."""
    listed = rejected[:MAX_REJECTED_LISTED]
    metadata: dict[str, Any] = {
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
        description=None
        if not rejected
        else f"{len(rejected)} file(s) quarantined, e.g. {first}"[:500],
    )
