"""The declared freshness check of each stream: stale when a scheduled integration missed its cron."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from synkro_dagster.automation.freshness import FRESHNESS_CHECK, build_freshness_checks
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.specs import load_specs


def test_freshness_check_fails_for_a_scheduled_integration_that_never_synced(
    engine: sa.Engine, integrations: IntegrationsResource
) -> None:
    shop = load_specs()["shop"]
    registry = IntegrationRegistry(engine)
    registry.add(
        "acme-shop",
        spec="shop",
        tenant="acme",
        config={"base_url": "http://127.0.0.1:9"},
        secrets={"api_token": "t0ken-never-shown"},
        schedule="0 * * * *",
    )
    registry.add(
        "beta-shop",
        spec="shop",
        tenant="beta",
        config={"base_url": "http://127.0.0.1:9"},
        secrets={"api_token": "t0ken-never-shown"},
    )  # no schedule: never stale
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "insert into synkro.sync_state (integration_id, stream, tenant_id, last_synced_at)"
                " values ('acme-shop', 'orders', 'acme', '2026-11-27 09:30+00')"
            )
        )
    checks = build_freshness_checks(shop, now=lambda: datetime(2026, 11, 27, 10, 20, tzinfo=UTC))
    result = dg.materialize(
        [checks],
        selection=dg.AssetSelection.checks(*checks.check_keys),
        resources={"integrations": integrations},
    )
    assert result.success
    evaluations = {
        e.asset_key.path[-1]: e
        for e in (
            ev.event_specific_data
            for ev in result.all_events
            if ev.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    }
    assert set(evaluations) == {s.name for s in shop.streams}
    assert all(e.check_name == FRESHNESS_CHECK for e in evaluations.values())
    # orders synced at 09:30, after the 09:00 fire time (10:00 is still within the 30 min grace).
    assert evaluations["orders"].passed
    # customers never synced although the cron has fired: stale, naming the integration.
    assert not evaluations["customers"].passed
    assert "acme-shop" in str(evaluations["customers"].metadata)
    assert "beta-shop" not in str(evaluations["customers"].metadata)
