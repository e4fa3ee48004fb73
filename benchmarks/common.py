"""What the benchmarks share: a scratch database, the machine's description, peak RSS of a child."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synkro_dagster.database import sqlalchemy_url  # noqa: E402

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database(
    server_url: str = DEFAULT_SERVER_URL, prefix: str = "synkro_bench", migrated: bool = False
) -> Iterator[str]:
    """A new database on the server for one benchmark run, dropped afterwards; yields its URL.

    `migrated`: with the data layer's migrations applied, as a sync's destination."""
    server = sqlalchemy_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'create database "{name}"')
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        if migrated:
            from synkro_dagster.datalayer.migrations import migrate

            engine = sa.create_engine(url)
            migrate(engine)
            engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')
        admin.dispose()


def peak_rss_of_this_process() -> int:
    """Peak RSS in bytes of this process image: VmHWM where Linux gives it.

    `ru_maxrss` would do elsewhere, but on Linux it carries over the high-water mark of the parent
    image across fork + exec, so a child of a big parent would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def start_demo_api(records: int) -> tuple[subprocess.Popen[str], str]:
    """The demo API in its own process, serving `records` benchmark records; (process, base URL)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "synkro_dagster.demo.api_server", "--port", "0"]
        + ["--bench-records", str(records)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise RuntimeError(f"the API server did not start: {url!r}")
    return process, url


def run_child(script: str, *args: str) -> dict:
    """Run `script` with `args` in a fresh interpreter; its last stdout line is a JSON object."""
    child = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT
    )
    if child.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(args)} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        import psutil

        memory = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{memory}; {platform.system()} {platform.release()}"
