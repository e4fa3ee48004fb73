"""The engine map (specs/engines.py): each engine is one entry that the spec models, the code
location's resources and the automation all read, and every engine's connector sees an
integration's config as the registry checked it (the spec's `config` defaults applied)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synkro_dagster.connectors.base import ConnectorResource
from synkro_dagster.contracts import Integration
from synkro_dagster.definitions import build_definitions
from synkro_dagster.specs.engines import ENGINES, connector_resource_key
from synkro_dagster.specs.loader import load_specs
from synkro_dagster.specs.models import SourceSpec, StreamSpec
from synkro_dagster_tests.localhttp import LocalServer, Seen, local_server


def _rows(session: Any, stream: StreamSpec) -> list[dict[str, Any]]:
    read = session.read(stream, None)
    return [dict(r) for part in read.parts for batch in part.batches() for r in batch]


def test_every_engine_is_bound_under_its_connector_key_and_has_its_spec_blocks() -> None:
    resources = build_definitions(load_specs()).resources
    for name, entry in ENGINES.items():
        connector = entry.connector()
        assert issubclass(connector, ConnectorResource), name
        assert isinstance(resources[connector_resource_key(name)], connector), name
        # The blocks a spec writes under `<engine>:` are the entry's models.
        assert entry.source_options in _types(SourceSpec.model_fields[name].annotation), name
        assert entry.stream_options in _types(StreamSpec.model_fields[name].annotation), name


def _types(annotation: Any) -> set[Any]:
    import typing

    return set(typing.get_args(annotation)) or {annotation}


def test_an_unknown_engine_is_refused_naming_the_engines() -> None:
    with pytest.raises(ValueError, match="unknown engine 'ftp'; engines: http, sql, files"):
        SourceSpec.model_validate(
            {"name": "x", "engine": "ftp", "streams": [{"name": "s", "primary_key": "id"}]}
        )


# -- a spec's `config` default, as every engine sees it --------------------------------------------


def _http(tmp_path: Path, server: LocalServer) -> tuple[dict[str, Any], Callable[[], None]]:
    def items(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        region = seen.query.get("region", ["?"])[0]
        body = json.dumps([{"id": 1, "region": region}]).encode()
        return 200, {"Content-Type": "application/json"}, body

    server.routes["/items"] = items
    spec = {
        "config": {"base_url": {"default": server.url}},
        "http": {"base_url": "{base_url}", "params": {"region": "{region}"}},
        "streams": [{"name": "items", "primary_key": "id", "http": {"path": "/items"}}],
    }
    return spec, lambda: None


def _sql(tmp_path: Path, server: LocalServer) -> tuple[dict[str, Any], Callable[[], None]]:
    database = tmp_path / "source.db"
    with sqlite3.connect(database) as conn:
        conn.execute("create table items (id integer primary key, region text)")
        conn.execute("insert into items values (1, 'eu')")
    spec = {
        "config": {"url": {"default": f"sqlite:///{database}"}},
        "sql": {"password_secret": None},
        "streams": [{"name": "items", "primary_key": "id", "sql": {"table": "items"}}],
    }
    return spec, lambda: None


def _files(tmp_path: Path, server: LocalServer) -> tuple[dict[str, Any], Callable[[], None]]:
    spec = {
        "files": {"require_manifest": False},
        "streams": [{"name": "items", "primary_key": "id", "files": {"pattern": "items_*.csv"}}],
    }

    def drop() -> None:
        inbox = tmp_path / "inbox" / "acme_items"
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "items_1.csv").write_text("id,region\n1,eu\n")

    return spec, drop


SPEC_PARTS = {"http": _http, "sql": _sql, "files": _files}
# Connector settings for the test: a dropped file is ready at once.
SETTINGS: dict[str, dict[str, Any]] = {"files": {"stable_seconds": 0}}


def test_the_config_default_test_covers_every_engine() -> None:
    assert set(SPEC_PARTS) == set(ENGINES)


@pytest.mark.parametrize("engine", sorted(SPEC_PARTS))
def test_every_engine_sees_a_spec_config_default_the_integration_left_out(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNKRO_INBOX_ROOT", str(tmp_path / "inbox"))
    with local_server() as server:
        part, prepare = SPEC_PARTS[engine](tmp_path, server)
        declared = part.pop("config", {})
        spec = SourceSpec.model_validate(
            {
                "name": "items",
                "engine": engine,
                "config": {**declared, "region": {"required": True, "default": "eu"}},
                **part,
            }
        )
        # The registry accepts the integration without the names the spec defaults ...
        assert spec.missing_config({}) == []
        integration = Integration(id="acme_items", tenant="acme", spec="items", config={})
        prepare()
        connector = ENGINES[engine].connector()(**SETTINGS.get(engine, {}))
        with connector.session(spec, integration) as session:
            # ... and the engine sees the same config the registry resolved.
            assert session.integration.config == spec.resolve_config({})
            assert session.integration.config["region"] == "eu"
            rows = _rows(session, spec.streams[0])
        assert [(str(r["id"]), r["region"]) for r in rows] == [("1", "eu")]
        if engine == "http":
            assert server.requests_to("/items")[0].query["region"] == ["eu"]


def test_the_integrations_own_config_wins_over_the_spec_default(tmp_path: Path) -> None:
    with local_server() as server:
        part, _ = _sql(tmp_path, server)
    spec = SourceSpec.model_validate({"name": "items", "engine": "sql", **part})
    given = Integration(
        id="acme_items", tenant="acme", spec="items", config={"url": "sqlite:///nowhere.db"}
    )
    with ENGINES["sql"].connector()().session(spec, given) as session:
        assert session.integration.config["url"] == "sqlite:///nowhere.db"
