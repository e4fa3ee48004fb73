"""Run tags Synkro sets and reads (run-queue limits, backfills, full refresh)."""

INTEGRATION_TAG = "synkro/integration"
TENANT_TAG = "synkro/tenant"
SPEC_TAG = "synkro/spec"
FULL_REFRESH_TAG = "synkro/full_refresh"


def is_full_refresh(tags: dict[str, str]) -> bool:
    return str(tags.get(FULL_REFRESH_TAG, "")).strip().lower() in ("1", "true", "yes")


def run_tags(integration_id: str, spec: str, tenant: str | None = None) -> dict[str, str]:
    tags = {INTEGRATION_TAG: integration_id, SPEC_TAG: spec}
    if tenant:
        tags[TENANT_TAG] = tenant
    return tags
