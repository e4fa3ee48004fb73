"""`synkro backfill`: which integrations it picks and the Dagster command it submits."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from synkro_dagster.automation.backfill import backfill, code_location_args
from synkro_dagster_tests.test_automation_sensors import add_integration


@pytest.fixture
def fleet(engine) -> None:
    add_integration(engine, "acme-a", tenant="acme")
    add_integration(engine, "acme-b", tenant="acme")
    add_integration(engine, "acme-old", tenant="acme", enabled=False)
    add_integration(engine, "beta-a", tenant="beta")
    add_integration(engine, "acme-other", spec="other", tenant="acme")


def _dry_run(*args: str) -> str:
    result = CliRunner().invoke(backfill, [*args, "--dry-run", "-m", "synkro_dagster.definitions"])
    assert result.exit_code == 0, result.output
    return result.output


def _partitions(output: str) -> list[str]:
    command = output.strip().splitlines()[-1].split()
    return command[command.index("--partitions") + 1].split(",")


def test_without_filters_every_enabled_integration_of_the_spec(fleet):
    out = _dry_run("toy")
    assert _partitions(out) == ["acme-a", "acme-b", "beta-a"]
    assert "skipped 'acme-old': disabled" in out
    assert "-m dagster job backfill -j sync_toy" in out
    assert "--noprompt" in out


def test_integrations_and_tenants_add_up(fleet):
    out = _dry_run("toy", "--integration", "beta-a", "--tenant", "acme")
    assert _partitions(out) == ["acme-a", "acme-b", "beta-a"]
    assert "skipped 'acme-old' (tenant acme): disabled" in out
    assert _partitions(_dry_run("toy", "-i", "acme-b")) == ["acme-b"]


def test_full_refresh_adds_the_tag(fleet):
    command = _dry_run("toy", "--tenant", "beta", "--full-refresh").strip().splitlines()[-1]
    tags = command.split("--tags ")[1].split(" -m ")[0]
    assert json.loads(tags) == {"synkro/full_refresh": "true"}


def test_allow_mass_delete_adds_its_tag(fleet):
    command = _dry_run("toy", "-i", "acme-a", "--allow-mass-delete").strip().splitlines()[-1]
    tags = command.split("--tags ")[1].split(" -m ")[0]
    assert json.loads(tags) == {"synkro/allow_mass_delete": "true"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--integration", "nope"], "integration 'nope' is not an integration of spec 'toy'"),
        (["--integration", "acme-other"], "is not an integration of spec 'toy'"),
        (["--integration", "acme-old"], "integration 'acme-old' is disabled"),
        (["--tenant", "gamma"], "tenant 'gamma' has no integration of spec 'toy'"),
    ],
)
def test_bad_selections_name_the_problem(fleet, args, message):
    result = CliRunner().invoke(backfill, ["toy", *args, "--dry-run"])
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_spec_has_no_integrations(fleet):
    result = CliRunner().invoke(backfill, ["nothing", "--dry-run"])
    assert result.exit_code == 2
    assert "spec 'nothing' has no integrations" in result.output


def test_code_location_follows_the_daemon(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert code_location_args(None, None) == ["-m", "synkro_dagster.definitions"]
    (tmp_path / "pyproject.toml").write_text('[tool.dagster]\nmodule_name = "x"\n')
    assert code_location_args(None, None) == []
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    assert code_location_args(None, None) == ["-w", "workspace.yaml"]
    assert code_location_args("my.defs", None) == ["-m", "my.defs"]
    assert code_location_args(None, "other.yaml") == ["-w", "other.yaml"]
