"""The repository root's dagster.yaml and workspace.yaml: the local instance and the one code
location, `synkro`, however Dagster is started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _env_references(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [str(value["env"])] if set(value) == {"env"} else []
        return found + [name for v in value.values() for name in _env_references(v)]
    if isinstance(value, list):
        return [name for v in value for name in _env_references(v)]
    return []


def test_root_dagster_yaml_is_local_and_queues_like_production() -> None:
    local, production = _yaml(REPO_ROOT / "dagster.yaml"), _yaml(REPO_ROOT / "deploy/dagster.yaml")
    # Nothing to set on a fresh clone: no DAGSTER_PG_* (or any other) variable.
    assert _env_references(local) == []
    assert local["storage"] == {"sqlite": {"base_dir": "temp/dagster_home"}}
    assert local["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = local["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits == production["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {(rule["key"], rule["limit"]) for rule in limits} == {
        ("synkro/integration", 1),
        ("synkro/spec", 3),
    }
    # A queued run is picked up within a second, locally as in production.
    assert local["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1
    assert production["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1


def test_every_way_of_loading_names_the_location_synkro() -> None:
    from dagster._core.remote_origin import _assign_loadable_target_origin_name
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    [local] = WorkspaceFileTarget([str(REPO_ROOT / "workspace.yaml")]).create_origins()
    assert local.location_name == "synkro"
    [production] = _yaml(REPO_ROOT / "deploy/workspace.yaml")["load_from"]
    assert production["grpc_server"]["location_name"] == "synkro"
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert pyproject == {"module_name": "synkro", "code_location_name": "synkro"}
    # `-m synkro` and DAGSTER_MODULE_NAME=synkro name the location after the module: synkro.
    from dagster._core.workspace.load import location_origin_from_module_name

    origin = location_origin_from_module_name("synkro", None, None)
    assert origin.location_name == "synkro"
    assert _assign_loadable_target_origin_name(origin.loadable_target_origin) == "synkro"


def test_the_whole_location_runs_in_process() -> None:
    import synkro

    assert synkro.defs.executor is dg.in_process_executor
    asset_job = synkro.defs.resolve_implicit_global_asset_job_def()
    assert asset_job.executor_def is dg.in_process_executor


def test_dagster_commands_in_the_root_need_no_flags_and_print_no_instance_warning(
    tmp_path: Path,
) -> None:
    # A copy of the root's two files stands in for a fresh clone (storage lands under tmp_path).
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNKRO_"))}
    env.update(DAGSTER_HOME=str(tmp_path), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    result = subprocess.run(
        [str(BIN / "dagster"), "sensor", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Sensor: integrations_registry_sensor" in output
    assert "No dagster instance configuration file" not in output
    assert "DAGSTER_PG" not in output and "Traceback" not in output
    assert (tmp_path / "temp/dagster_home/history").is_dir()  # the root file's storage was used
