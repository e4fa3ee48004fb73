"""`synkro demo` leaves nothing scheduled against the API it stops when it ends."""

from __future__ import annotations

import sqlalchemy as sa

from synkro_dagster.demo.api_server import Credentials
from synkro_dagster.demo.run import _demo_integrations, _register
from synkro_dagster.integrations.registry import IntegrationRegistry


def test_http_demo_integrations_are_unscheduled_unless_the_api_stays() -> None:
    own_api = _demo_integrations("http://127.0.0.1:1", Credentials(), "sqlite:///x", False)
    served = _demo_integrations("http://127.0.0.1:1", Credentials(), "sqlite:///x", True)
    http = {"demo-shop", "demo-crm"}
    assert {i.id: i.schedule for i in own_api if i.id in http} == {
        "demo-shop": None,
        "demo-crm": None,
    }
    assert all(i.schedule for i in served if i.id in http)


def test_a_rerun_drops_the_schedule_an_earlier_demo_left(engine: sa.Engine) -> None:
    registry = IntegrationRegistry(engine)
    [shop] = [
        i
        for i in _demo_integrations("http://127.0.0.1:1", Credentials(), "sqlite:///x", True)
        if i.id == "demo-shop"
    ]
    assert _register(registry, shop) == "registered"
    assert registry.get("demo-shop").schedule == "*/15 * * * *"
    [rerun] = [
        i
        for i in _demo_integrations("http://127.0.0.1:2", Credentials(), "sqlite:///x", False)
        if i.id == "demo-shop"
    ]
    assert _register(registry, rerun) == "updated"
    again = registry.get("demo-shop")
    assert again.schedule is None and again.config["base_url"] == "http://127.0.0.1:2"
