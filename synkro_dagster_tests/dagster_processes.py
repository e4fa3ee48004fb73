"""What the tests that run real processes share: free local ports, polling with a named timeout,
an asset's partition keys through GraphQL, a local alert webhook, fresh PostgreSQL databases for a
Dagster instance and the data layer, and dagster-webserver + dagster-daemon started, waited for and
stopped as process groups."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from synkro_dagster.database import sqlalchemy_url

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def partition_keys(graphql: Callable[[str, dict], dict], asset_path: list[str]) -> list[str]:
    """The asset's partition keys, sorted, asked through a GraphQL endpoint (`graphql(query,
    variables)` returns the response's data)."""
    data = graphql(
        """
        query Keys($key: AssetKeyInput!) {
          assetNodeOrError(assetKey: $key) { ... on AssetNode { partitionKeys } }
        }
        """,
        {"key": {"path": asset_path}},
    )
    return sorted(data["assetNodeOrError"].get("partitionKeys") or [])


class WebhookReceiver:
    """A local alert endpoint recording every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def database_url(server_url: str, database: str, driver: str) -> str:
    """`server_url` pointed at `database` through the SQLAlchemy `driver`, password included."""
    return (
        sqlalchemy_url(server_url)
        .set(drivername=driver, database=database)
        .render_as_string(hide_password=False)
    )


@contextmanager
def instance_and_data_layer_on_postgres(
    admin_engine: sa.Engine,
    pg_server_url: str,
    migrated_template: str,
    prefix: str,
    home: Path,
    instance_yaml: Callable[[str], str],
) -> Iterator[str]:
    """A Dagster instance in `home` (its dagster.yaml is `instance_yaml(storage URL)`) on a new
    storage database, its schema created, and a new migrated data-layer database whose URL is
    yielded; both databases are dropped on exit."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    suffix = uuid.uuid4().hex[:10]
    storage_db, data_db = f"{prefix}_dagster_{suffix}", f"{prefix}_data_{suffix}"
    try:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'create database "{storage_db}"')
            conn.exec_driver_sql(f'create database "{data_db}" template "{migrated_template}"')
        # psycopg2 explicitly: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, on which
        # dagster-postgres's `NOTIFY run_events, <param>` is a syntax error (server-side binding).
        storage_url = database_url(pg_server_url, storage_db, "postgresql+psycopg2")
        (home / "dagster.yaml").write_text(instance_yaml(storage_url), encoding="utf-8")
        # The schema once here, so the webserver and the daemon do not race to create it.
        DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()
        yield database_url(pg_server_url, data_db, "postgresql+psycopg")
    finally:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'drop database if exists "{storage_db}" with (force)')
            conn.exec_driver_sql(f'drop database if exists "{data_db}" with (force)')


def log_tail(logs: dict[str, Path], chars: int) -> str:
    """The last `chars` characters of each process's log, under its name."""
    return "\n".join(
        f"--- {name} ---\n" + path.read_text(errors="replace")[-chars:]
        for name, path in logs.items()
        if path.exists()
    )


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group (its code servers and run workers too), SIGKILL if needed."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def webserver_and_daemon(
    env: dict[str, str],
    cwd: Path,
    log_dir: Path,
    *,
    port: int,
    location_args: Sequence[str] = (),
    tail_chars: int = 4000,
    timeout: float = 120,
) -> Iterator[dict[str, Path]]:
    """dagster-webserver on 127.0.0.1:`port` and dagster-daemon, each in its own process group
    with its log in `log_dir`; yields {name: log} once the webserver answers /server_info, and
    stops both on exit. `location_args` name the code location (e.g. `-m synkro`); without them
    the workspace in `cwd` or DAGSTER_MODULE_NAME in `env` does."""
    ui_url = f"http://127.0.0.1:{port}"
    logs: dict[str, Path] = {}
    processes: list[subprocess.Popen] = []
    try:
        for name, args in (
            (
                "webserver",
                ["dagster-webserver", *location_args, "-h", "127.0.0.1", "-p", str(port)],
            ),
            ("daemon", ["dagster-daemon", "run", *location_args]),
        ):
            logs[name] = log_dir / f"{name}.log"
            processes.append(
                subprocess.Popen(
                    [str(BIN / args[0]), *args[1:]],
                    env=env,
                    cwd=cwd,
                    stdout=logs[name].open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

        deadline = time.monotonic() + timeout
        while True:
            if any(process.poll() is not None for process in processes):
                pytest.fail(f"a Dagster process exited early:\n{log_tail(logs, tail_chars)}")
            try:
                if httpx.get(f"{ui_url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver did not answer /server_info within {timeout:.0f}s:\n"
                    f"{log_tail(logs, tail_chars)}"
                )
            time.sleep(1)
        yield logs
    finally:
        for process in processes:
            stop_process_group(process)
