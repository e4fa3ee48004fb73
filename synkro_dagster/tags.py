"""Run tags Synkro sets and reads (run-queue limits, backfills, full refresh)."""

INTEGRATION_TAG = "synkro/integration"
TENANT_TAG = "synkro/tenant"
SPEC_TAG = "synkro/spec"
FULL_REFRESH_TAG = "synkro/full_refresh"
# Lets a replace or sweep remove more than the stream's max_delete_fraction (a full refresh
# does not: an empty answer looks the same on a full refresh).
ALLOW_MASS_DELETE_TAG = "synkro/allow_mass_delete"


def is_full_refresh(tags: dict[str, str]) -> bool:
    return str(tags.get(FULL_REFRESH_TAG, "")).strip().lower() in ("1", "true", "yes")


def allows_mass_delete(tags: dict[str, str]) -> bool:
    return str(tags.get(ALLOW_MASS_DELETE_TAG, "")).strip().lower() in ("1", "true", "yes")


def run_tags(integration_id: str, spec: str, tenant: str | None = None) -> dict[str, str]:
    tags = {INTEGRATION_TAG: integration_id, SPEC_TAG: spec}
    if tenant:
        tags[TENANT_TAG] = tenant
    return tags
