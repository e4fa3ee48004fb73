"""The `synkro` command, through click's runner and as a real process, on a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet

from synkro_dagster.cli import main

TOKEN = "shop-token-Zq81-secret"


@pytest.fixture(autouse=True)
def specs_dir(tiny_specs_dir: Path) -> Path:
    return tiny_specs_dir


def synkro(*args: str, input: str | None = None, env: dict | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def add_shop(id: str = "acme-shop", *extra: str, env: dict | None = None) -> Result:
    return synkro(
        "integrations",
        "add",
        id,
        "--spec",
        "shop",
        "--tenant",
        "acme",
        "--config",
        "base_url=https://shop.example.com",
        "--secret",
        "token=@env:SHOP_TOKEN",
        *extra,
        env={"SHOP_TOKEN": TOKEN, **(env or {})},
    )


def assert_one_line_error(result: Result, *expected: str) -> str:
    assert result.exit_code == 1, result.output
    # `db migrate` first says which database it works on; the error itself is one line.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("database: ")]
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith("Error: "), message
    assert "Traceback" not in result.output
    for text in expected:
        assert text in message, message
    return message


def test_add_list_show_enable_disable_remove_round_trip(database_url: str) -> None:
    result = add_shop("acme-shop", "--schedule", "*/30 * * * *")
    assert result.exit_code == 0, result.output
    assert "added integration 'acme-shop'" in result.stdout
    assert TOKEN not in result.output

    listing = synkro("integrations", "list")
    assert listing.exit_code == 0
    header, row = listing.stdout.strip().splitlines()
    assert header.split()[:5] == ["ID", "TENANT", "SPEC", "SCHEDULE", "ENABLED"]
    assert row.split()[:3] == ["acme-shop", "acme", "shop"]
    assert "*/30 * * * *" in row and " yes " in row

    shown = synkro("integrations", "show", "acme-shop")
    assert shown.exit_code == 0
    assert "base_url: https://shop.example.com" in shown.stdout
    assert "token: ***" in shown.stdout
    assert TOKEN not in shown.output

    assert synkro("integrations", "disable", "acme-shop").exit_code == 0
    assert " no " in synkro("integrations", "list").stdout
    assert "enabled:   no" in synkro("integrations", "show", "acme-shop").stdout
    assert synkro("integrations", "enable", "acme-shop").exit_code == 0
    assert "enabled:   yes" in synkro("integrations", "show", "acme-shop").stdout

    refused = synkro("integrations", "remove", "acme-shop", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert "acme-shop" in synkro("integrations", "list").stdout
    confirmed = synkro("integrations", "remove", "acme-shop", input="y\n")
    assert confirmed.exit_code == 0 and "removed integration 'acme-shop'" in confirmed.stdout
    assert "no integrations" in synkro("integrations", "list").stdout

    add_shop("again")
    assert synkro("integrations", "remove", "again", "--yes").exit_code == 0
    assert_one_line_error(synkro("integrations", "show", "again"), "'again' not found")


def test_add_disabled(database_url: str) -> None:
    assert add_shop("later", "--disabled").exit_code == 0
    assert "enabled:   no" in synkro("integrations", "show", "later").stdout


def test_secret_values_from_stdin_and_prompt(database_url: str, engine: sa.Engine) -> None:
    from synkro_dagster.integrations import IntegrationRegistry

    base = ["integrations", "add", "--spec", "shop", "--tenant", "acme"]
    config = ["--config", "base_url=https://x"]
    piped = synkro(
        *base[:2], "from-stdin", *base[2:], *config, "--secret", "token=@stdin", input=f"{TOKEN}\n"
    )
    assert piped.exit_code == 0, piped.output
    prompted = synkro(
        *base[:2], "prompted", *base[2:], *config, "--secret", "token", input="typed-secret-value\n"
    )
    assert prompted.exit_code == 0, prompted.output
    assert "typed-secret-value" not in prompted.output  # hidden input is not echoed
    literal = synkro(*base[:2], "literal", *base[2:], *config, "--secret", "token=@@at-sign")
    assert literal.exit_code == 0, literal.output

    registry = IntegrationRegistry(engine)
    assert registry.get("from-stdin").secrets == {"token": TOKEN}
    assert registry.get("prompted").secrets == {"token": "typed-secret-value"}
    assert registry.get("literal").secrets == {"token": "@at-sign"}

    missing = synkro(*base[:2], "no-env", *base[2:], *config, "--secret", "token=@env:NOPE_X")
    assert missing.exit_code == 2 and "NOPE_X is not set" in missing.output


def test_validation_errors_are_one_line(database_url: str) -> None:
    assert_one_line_error(add_shop("Bad Id"), "'Bad Id' is not a slug")
    assert_one_line_error(add_shop("x", "--schedule", "every hour"), "not a valid cron")
    assert_one_line_error(
        synkro("integrations", "add", "x", "--spec", "nope", "--tenant", "acme"),
        "unknown spec 'nope'",
    )
    assert_one_line_error(
        synkro(
            "integrations", "add", "x", "--spec", "shop", "--tenant", "acme", "--secret", "token=t"
        ),
        "integration 'x'",
        "requires config 'base_url'",
    )
    assert add_shop("dup").exit_code == 0
    assert_one_line_error(add_shop("dup"), "integration 'dup' already exists")


def test_update_changes_secrets_without_printing_them(database_url: str, engine) -> None:
    from synkro_dagster.integrations import IntegrationRegistry

    add_shop()
    result = synkro(
        "integrations",
        "update",
        "acme-shop",
        "--secret",
        "token=@env:NEW",
        "--schedule",
        "@daily",
        env={"NEW": "rotated-token-77"},
    )
    assert result.exit_code == 0, result.output
    assert "rotated-token-77" not in result.output
    integration = IntegrationRegistry(engine).get("acme-shop")
    assert integration.secrets == {"token": "rotated-token-77"}
    assert integration.schedule == "@daily"


def test_a_wrong_key_is_one_line_naming_the_integration_without_ciphertext(
    database_url: str, engine: sa.Engine
) -> None:
    add_shop()
    with engine.connect() as conn:
        token = conn.execute(sa.text("select secrets from synkro.integrations")).scalar_one()
    other_key = Fernet.generate_key().decode()
    result = synkro("integrations", "show", "acme-shop", env={"INTEGRATION_SECRET_KEY": other_key})
    message = assert_one_line_error(result, "integration 'acme-shop'", "cannot be decrypted")
    assert token not in result.output and token[:16] not in message
    assert TOKEN not in result.output
    # Listing reads no secrets, so it works with any key, or none.
    assert synkro("integrations", "list", env={"INTEGRATION_SECRET_KEY": other_key}).exit_code == 0
    assert synkro("integrations", "list", env={"INTEGRATION_SECRET_KEY": None}).exit_code == 0


def test_a_missing_or_malformed_key_is_one_line(database_url: str) -> None:
    assert_one_line_error(
        add_shop(env={"INTEGRATION_SECRET_KEY": None}), "INTEGRATION_SECRET_KEY is not set"
    )
    message = assert_one_line_error(
        add_shop(env={"INTEGRATION_SECRET_KEY": "hunter2"}), "is not a valid Fernet key"
    )
    assert "hunter2" not in message


def test_secrets_rotate(database_url: str, engine: sa.Engine) -> None:

    old_key = os.environ["INTEGRATION_SECRET_KEY"]
    new_key = Fernet.generate_key().decode()
    add_shop("one")
    add_shop("two")
    result = synkro("secrets", "rotate", env={"INTEGRATION_SECRET_KEY": f"{new_key},{old_key}"})
    assert result.exit_code == 0, result.output
    assert "2 integration(s)" in result.stdout
    assert_one_line_error(
        synkro("integrations", "show", "one", env={"INTEGRATION_SECRET_KEY": old_key}),
        "integration 'one'",
    )
    shown = synkro("integrations", "show", "two", env={"INTEGRATION_SECRET_KEY": new_key})
    assert shown.exit_code == 0 and "token: ***" in shown.stdout


def test_db_migrate_is_idempotent(empty_database_url: str, monkeypatch) -> None:
    monkeypatch.setenv("SYNKRO_DATABASE_URL", empty_database_url)
    first = synkro("db", "migrate")
    assert first.exit_code == 0, first.output
    applied = first.stdout.strip().splitlines()
    assert applied[0] == "applied 20261101000000_supabase_bootstrap.sql"
    assert all(line.startswith("applied ") and line.endswith(".sql") for line in applied)
    second = synkro("db", "migrate")
    assert second.exit_code == 0
    assert second.stdout.strip() == "up to date"


def test_commands_before_migrate_say_run_db_migrate(empty_database_url: str, monkeypatch) -> None:
    monkeypatch.setenv("SYNKRO_DATABASE_URL", empty_database_url)
    for args in (["integrations", "list"], ["integrations", "show", "x"], ["secrets", "rotate"]):
        assert_one_line_error(synkro(*args), "run `synkro db migrate` first")
    assert_one_line_error(add_shop(), "run `synkro db migrate` first")


def test_a_failing_migration_is_one_line_naming_the_file(
    empty_database_url: str, tmp_path: Path, monkeypatch
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000000_good.sql").write_text("create table good (id int);\n")
    (folder / "20990101000100_broken.sql").write_text("create tabel broken (id int);\n")
    monkeypatch.setenv("SYNKRO_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("SYNKRO_MIGRATIONS_DIR", str(folder))
    result = synkro("db", "migrate")
    assert_one_line_error(result, "20990101000100_broken.sql", "syntax error")


def test_an_unreachable_database_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("SYNKRO_DATABASE_URL", "postgresql://synkro:pw-hidden@127.0.0.1:1/nowhere")
    message = assert_one_line_error(synkro("integrations", "list"), "database error")
    assert "pw-hidden" not in message

    monkeypatch.setenv("SYNKRO_DATABASE_URL", "postgresql://synkro:pw-hidden@host:port/x")
    for args in (["integrations", "list"], ["db", "migrate"]):
        message = assert_one_line_error(synkro(*args), "SYNKRO_DATABASE_URL is not a usable")
        assert "pw-hidden" not in message


def test_commands_registered_later_get_the_same_error_handling(monkeypatch) -> None:
    from synkro_dagster.integrations import IntegrationNotFound

    @click.command("failing-extra")
    def failing_extra() -> None:
        raise IntegrationNotFound("integration 'zzz' not found")

    main.add_command(failing_extra)
    try:
        assert_one_line_error(synkro("failing-extra"), "integration 'zzz' not found")
    finally:
        main.commands.pop("failing-extra")

    monkeypatch.setitem(main.lazy_commands, "lazy-extra", "synkro_dagster.cli:db")
    assert "lazy-extra" in synkro("--help").stdout
    assert "migrate" in synkro("lazy-extra", "--help").stdout


def test_the_installed_synkro_command_runs_as_a_process(empty_database_url: str) -> None:
    env = {**os.environ, "SYNKRO_DATABASE_URL": empty_database_url, "SHOP_TOKEN": TOKEN}
    command = Path(sys.executable).with_name("synkro")
    assert command.exists(), "the package is not installed in this environment"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(command), *args], env=env, capture_output=True, text=True, timeout=60
        )

    migrated = run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 20261101000100_synkro_registry.sql" in migrated.stdout
    added = run(
        "integrations",
        "add",
        "proc-shop",
        "--spec",
        "shop",
        "--tenant",
        "acme",
        "--config",
        "base_url=https://x",
        "--secret",
        "token=@env:SHOP_TOKEN",
    )
    assert added.returncode == 0, added.stderr
    listed = run("integrations", "list")
    assert listed.returncode == 0 and "proc-shop" in listed.stdout
    wrong = subprocess.run(
        [str(command), "integrations", "show", "proc-shop"],
        env={**env, "INTEGRATION_SECRET_KEY": Fernet.generate_key().decode()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1
    assert wrong.stderr.strip().count("\n") == 0 and "proc-shop" in wrong.stderr
    assert "Traceback" not in wrong.stderr and TOKEN not in wrong.stderr + wrong.stdout


def test_add_and_remove_keep_the_dagster_partition_in_step(database_url: str) -> None:
    import dagster as dg

    assert add_shop("acme-shop").exit_code == 0
    with dg.DagsterInstance.get() as instance:
        # A materialize of the new integration works at once, without waiting for the daemon.
        assert instance.get_dynamic_partitions("shop__integrations") == ["acme-shop"]
    removed = synkro("integrations", "remove", "acme-shop", "--yes")
    assert removed.exit_code == 0
    assert "partition 'acme-shop' removed from shop__integrations" in removed.stdout
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("shop__integrations") == []


def test_without_dagster_home_add_says_the_daemon_adds_the_partition(
    database_url: str, monkeypatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME")
    result = add_shop("acme-shop")
    assert result.exit_code == 0
    assert "registry sensor" in result.output


def test_without_the_demo_package_synkro_demo_says_how_to_get_it(tmp_path: Path) -> None:
    """The production image installs synkro_dagster without synkro_dagster/demo: there
    `synkro --help` still lists every command, and `synkro demo` says in one line where the demo
    is, instead of a traceback."""
    import shutil

    package = Path(__file__).resolve().parents[1] / "synkro_dagster"
    shutil.copytree(
        package,
        tmp_path / "synkro_dagster",
        ignore=lambda folder, names: [
            n for n in names if n == "__pycache__" or (folder == str(package) and n == "demo")
        ],
    )
    assert not (tmp_path / "synkro_dagster" / "demo").exists()

    def run(*args: str) -> subprocess.CompletedProcess:
        # `python -c` puts the working folder first on sys.path: the copy without the demo. The
        # editable install's import hook would still find the checkout's demo by name: it goes.
        program = (
            "import sys; sys.meta_path[:] = [f for f in sys.meta_path"
            " if not str(getattr(f, '__module__', '')).startswith('__editable__')]"
            "; import synkro_dagster; assert synkro_dagster.__file__.startswith(sys.argv.pop(1))"
            "; from synkro_dagster.cli import main; main()"
        )
        return subprocess.run(
            [sys.executable, "-c", program, str(tmp_path), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = run("--help")
    assert listed.returncode == 0, listed.stderr
    assert (
        "demo" in listed.stdout and "backfill" in listed.stdout and "integrations" in listed.stdout
    )
    for args in (("demo",), ("demo", "--help"), ("demo", "--no-such-option")):
        result = run(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "`synkro demo` is not installed here" in result.stderr
        assert "./run demo" in result.stderr and "`demo` target" in result.stderr


def test_a_missing_dependency_of_a_lazy_command_keeps_its_traceback(monkeypatch) -> None:
    """Only the command's own module being absent is "not installed"; anything it fails to import
    is a broken installation and is not hidden."""
    monkeypatch.setitem(main.lazy_commands, "broken-extra", "synkro_dagster.cli:no_such_attribute")
    with pytest.raises(AttributeError):
        synkro("broken-extra")
    monkeypatch.setitem(main.lazy_commands, "absent-extra", "synkro_dagster.not_here.run:command")
    result = CliRunner().invoke(main, ["absent-extra"])
    assert result.exit_code == 1
    assert (
        "`synkro absent-extra` is not installed here (synkro_dagster.not_here.run" in result.output
    )
