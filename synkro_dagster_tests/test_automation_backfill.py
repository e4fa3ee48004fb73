"""`synkro backfill`: which integrations it picks and the Dagster command it submits."""

from __future__ import annotations

import json
import shlex
import sys

import dagster as dg
import pytest
from click.testing import CliRunner

from synkro_dagster.automation.backfill import (
    backfill,
    code_location_args,
    summary_table,
    wait_for_backfill,
)
from synkro_dagster_tests.test_automation_sensors import add_integration


@pytest.fixture
def fleet(engine) -> None:
    add_integration(engine, "acme-a", tenant="acme")
    add_integration(engine, "acme-b", tenant="acme")
    add_integration(engine, "acme-old", tenant="acme", enabled=False)
    add_integration(engine, "beta-a", tenant="beta")
    add_integration(engine, "acme-other", spec="other", tenant="acme")


def _dry_run(*args: str) -> str:
    result = CliRunner().invoke(backfill, [*args, "--dry-run", "-m", "synkro"])
    assert result.exit_code == 0, result.output
    return result.output


def _command(output: str) -> list[str]:
    [line] = [line for line in output.splitlines() if line.startswith("dagster ")]
    return shlex.split(line)


def _partitions(output: str) -> list[str]:
    command = _command(output)
    return command[command.index("--partitions") + 1].split(",")


def test_without_filters_every_enabled_integration_of_the_spec(fleet):
    out = _dry_run("toy")
    assert _partitions(out) == ["acme-a", "acme-b", "beta-a"]
    assert "skipped 'acme-old': disabled" in out
    # The command as typed at a shell: no interpreter path, every argument quoted.
    assert _command(out)[:5] == ["dagster", "job", "backfill", "-j", "sync_toy"]
    assert "--noprompt" in out and sys.executable not in out
    assert "/runs/backfills" in out


def test_integrations_and_tenants_add_up(fleet):
    out = _dry_run("toy", "--integration", "beta-a", "--tenant", "acme")
    assert _partitions(out) == ["acme-a", "acme-b", "beta-a"]
    assert "skipped 'acme-old' (tenant acme): disabled" in out
    assert _partitions(_dry_run("toy", "-i", "acme-b")) == ["acme-b"]


def test_full_refresh_adds_the_tag(fleet):
    command = _command(_dry_run("toy", "--tenant", "beta", "--full-refresh"))
    assert json.loads(command[command.index("--tags") + 1]) == {"synkro/full_refresh": "true"}
    assert command[-2:] == ["-m", "synkro"]


def test_allow_mass_delete_adds_its_tag(fleet):
    command = _command(_dry_run("toy", "-i", "acme-a", "--allow-mass-delete"))
    tags = command[command.index("--tags") + 1]
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
    monkeypatch.delenv("DAGSTER_MODULE_NAME", raising=False)
    assert code_location_args(None, None) == ["-m", "synkro"]
    (tmp_path / "pyproject.toml").write_text('[tool.dagster]\nmodule_name = "x"\n')
    assert code_location_args(None, None) == []
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    assert code_location_args(None, None) == []
    assert code_location_args("my.defs", None) == ["-m", "my.defs"]
    assert code_location_args(None, "other.yaml") == ["-w", "other.yaml"]


@dg.op
def sync_ok(context) -> None:
    context.log_event(
        dg.AssetMaterialization("toy/items", metadata={"rows_read": 5, "rows_inserted": 3})
    )


@dg.op
def sync_broken() -> None:
    raise RuntimeError("source refused the connection")


@dg.job
def toy_ok() -> None:
    sync_ok()


@dg.job
def toy_broken() -> None:
    sync_broken()


def test_wait_follows_each_partition_and_a_failed_run_fails_the_backfill():
    backfill_id = "bfwaitab"
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        for job, partition in ((toy_ok, "acme-a"), (toy_broken, "beta-a")):
            job.execute_in_process(
                instance=instance,
                raise_on_error=False,
                tags={"dagster/backfill": backfill_id, "dagster/partition": partition},
            )
        rows = wait_for_backfill(
            instance, backfill_id, ["acme-a", "beta-a"], timeout=10, echo=lines.append
        )
    by_partition = {r.partition: r for r in rows}
    assert by_partition["acme-a"].status == "SUCCESS"
    assert by_partition["acme-a"].rows == {
        "rows_read": 5, "rows_inserted": 3, "rows_updated": 0, "rows_deleted": 0,
    }  # fmt: skip
    assert by_partition["beta-a"].status == "FAILURE"
    assert any("acme-a" in line and "SUCCESS" in line for line in lines)
    table = summary_table(rows)
    assert table[0].split()[:2] == ["INTEGRATION", "STATUS"]
    assert table[2].split()[:2] == ["beta-a", "FAILURE"]


def test_wait_gives_up_naming_what_is_missing():
    import click

    with dg.instance_for_test() as instance, pytest.raises(click.ClickException) as caught:
        wait_for_backfill(instance, "bfnothing", ["acme-a"], timeout=0.2, poll=0.05)
    assert "acme-a NOT LAUNCHED" in caught.value.message
    assert "daemon" in caught.value.message
