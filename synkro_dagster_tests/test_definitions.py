"""The code location: every spec becomes assets, checks and a job; loading touches no database or
network; a broken spec fails the load naming file, stream and field."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from synkro_dagster.specs import SpecError, load_specs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_specs.json"
REPO = Path(__file__).resolve().parents[1]


def _partitions_name(partitions: dg.PartitionsDefinition | None) -> str | None:
    if partitions is None:
        return None
    if isinstance(partitions, dg.MultiPartitionsDefinition):
        # Report streams: period x integration.
        return " x ".join(
            f"{d.name}:{getattr(d.partitions_def, 'name', None) or type(d.partitions_def).__name__}"
            for d in partitions.partitions_defs
        )
    return partitions.name


def _asset_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    snapshot = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        snapshot[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "partitions": _partitions_name(node.partitions_def),
            "checks": sorted(c.name for c in node.check_keys),
            "table": node.metadata.get("synkro/table"),
            "primary_key": node.metadata.get("synkro/primary_key"),
            "write_mode": node.metadata.get("synkro/write_mode"),
        }
    return snapshot


def test_every_stream_of_every_shipped_spec_is_an_asset_matching_the_snapshot() -> None:
    """Review guard: a change of asset keys, groups, partitions or checks shows in the diff."""
    from synkro_dagster.definitions import defs

    snapshot = _asset_snapshot(defs)
    if os.environ.get("SYNKRO_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n")
    assert snapshot == json.loads(SNAPSHOT.read_text())


def test_each_spec_has_a_partitioned_job_and_subsettable_assets() -> None:
    from synkro_dagster.definitions import defs

    specs = load_specs()
    assert {"shop", "crm", "erp", "onec"} <= set(specs)
    for name, spec in specs.items():
        job = defs.resolve_job_def(f"sync_{name}")
        assert job.partitions_def is not None
        assert job.partitions_def.name == f"{name}__integrations"
        assets = defs.resolve_assets_def(dg.AssetKey([name, spec.streams[0].name]))
        assert assets.can_subset
        assert {dg.AssetKey([name, s.name]) for s in spec.integration_streams} == set(assets.keys)
        # Report streams: their own asset and job, partitioned by period x integration.
        for stream in spec.partitioned_streams:
            job = defs.resolve_job_def(f"sync_{name}__{stream.name}")
            assert isinstance(job.partitions_def, dg.MultiPartitionsDefinition)
            assert defs.resolve_assets_def(dg.AssetKey([name, stream.name])).partitions_def == (
                job.partitions_def
            )


def test_definitions_load_touches_no_database_and_no_network(monkeypatch, tmp_path) -> None:
    """Loading the code location must work with every socket refused and no database reachable."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"definitions load opened a connection: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("SYNKRO_TEMP_DIR", str(tmp_path))
    monkeypatch.delenv("SYNKRO_DATABASE_URL", raising=False)
    from synkro_dagster.definitions import build_definitions

    defs = build_definitions(load_specs())
    defs.resolve_asset_graph()
    defs.resolve_all_job_defs()
    # The embedded PostgreSQL was not started either.
    assert not (tmp_path / "embedded-postgres").exists()


# Libraries only a run reading such a source needs; each costs tens to hundreds of milliseconds
# in every process that loads the code location (code server, run worker, CLI, daemon).
HEAVY_LIBRARIES = {"pandas", "numpy", "pyarrow", "openpyxl", "connectorx", "pymssql", "pgpq"}


def test_definitions_load_imports_no_heavy_library() -> None:
    """A fresh interpreter loading the code location (`synkro`, as Dagster does) and resolving
    every job imports none of the connectors' heavy libraries."""
    probe = (
        "import json, sys, synkro\n"
        "synkro.defs.resolve_all_job_defs()\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "SYNKRO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert {"dagster", "synkro_dagster"} <= imported  # the probe saw the load
    assert imported.isdisjoint(HEAVY_LIBRARIES), sorted(imported & HEAVY_LIBRARIES)


def test_dagster_definitions_validate_passes() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "synkro_dagster.definitions",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "SYNKRO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_spec_fails_the_load_naming_file_stream_and_field(tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text(
        "name: acme\n"
        "engine: http\n"
        "streams:\n"
        "  - name: orders\n"
        "    primary_key: id\n"
        "    write_mode: upsert\n"
    )
    with pytest.raises(SpecError) as error:
        load_specs(tmp_path)
    message = str(error.value)
    assert "acme.yaml" in message
    assert "stream 'orders'" in message
    assert "write_mode" in message
    assert "merge" in message  # what is allowed


def test_every_run_of_a_partition_carries_the_integration_and_spec_tags() -> None:
    """UI launches and backfills get the tags the run queue limits on, not only sensor runs."""
    from synkro_dagster.definitions import defs

    job = defs.resolve_job_def("sync_crm")
    tags = job.get_tags_for_partition_key("acme-crm", None)
    assert tags["synkro/integration"] == "acme-crm"
    assert tags["synkro/spec"] == "crm"


def test_the_registry_is_one_resource_on_the_data_layers_route_with_secrets_from_env(
    monkeypatch,
) -> None:
    from synkro_dagster.automation.alerts import ALERT_SENSOR_NAME
    from synkro_dagster.definitions import build_definitions

    monkeypatch.setenv("SYNKRO_DATABASE_URL", "postgresql://reader:pw-not-shown@db.example/x")
    monkeypatch.setenv("INTEGRATION_SECRET_KEY", "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs=")
    specs = load_specs()
    defs = build_definitions(specs)
    resources = defs.resources
    integrations = resources["integrations"]
    # One route: the registry and the data layer read the same setting; both secrets stay EnvVars
    # where the resources are wired, never values in run config.
    assert isinstance(integrations.secret_key, dg.EnvVar)
    assert integrations.secret_key.env_var_name == "INTEGRATION_SECRET_KEY"
    for resource in (integrations, resources["datalayer"]):
        assert isinstance(resource.database_url, dg.EnvVar)
        assert resource.database_url.env_var_name == "SYNKRO_DATABASE_URL"
    # Every reader of the registry takes that resource: the sync assets, the freshness checks
    # and every sensor that asks the registry.
    repository = defs.get_repository_def()
    for assets in repository.assets_defs_by_key.values():
        assert "integrations" in assets.required_resource_keys, assets.node_def.name
    for checks in repository.asset_checks_defs_by_key.values():
        assert "integrations" in checks.required_resource_keys
    readers = {s.name for s in repository.sensor_defs if "integrations" in s.required_resource_keys}
    expected = {
        "integrations_registry_sensor",
        "freshness_against_schedules",
        ALERT_SENSOR_NAME,
        "rejected_files_alert",
        *(f"{name}_integration_schedules" for name in specs),
        *(f"{name}_file_drop" for name, s in specs.items() if s.engine_entry.file_drop),
        *(
            f"{name}_{stream.name}_report_schedules"
            for name, s in specs.items()
            for stream in s.partitioned_streams
        ),
    }
    assert readers == {s.name for s in repository.sensor_defs} == expected
