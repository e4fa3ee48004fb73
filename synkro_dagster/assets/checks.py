"""Asset checks every stream carries, and how a load's numbers turn into their results."""

from __future__ import annotations

from typing import Any

import dagster as dg

DUPLICATE_KEYS = "no_duplicate_keys_in_load"
COMPLETENESS = "complete_against_source_total"
SYNC_CHECKS = (DUPLICATE_KEYS, COMPLETENESS)  # evaluated by every sync run


def check_specs_for(asset_key: dg.AssetKey, description: str) -> list[dg.AssetCheckSpec]:
    return [
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
