"""A load killed with SIGKILL mid-COPY or mid-merge changes nothing; the rerun lands exactly the source.

The load runs in a subprocess (this module run as a script) so it can really be killed: no
`finally`, no rollback from the client, just a dead socket the server has to notice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from synkro_dagster.contracts import BatchesPart, StreamRead
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget

TABLE = "crash_orders"
TARGET = TableTarget(
    schema="public", table=TABLE, primary_key=["id"], write_mode="merge", cursor_field="seq"
)
SOURCE_ROWS = 3000


def source_batches(pause_file: Path | None = None) -> Iterator[list[dict]]:
    """The stream as the source sends it; with `pause_file`, stop mid-stream and wait forever."""
    for start in range(0, SOURCE_ROWS, 1000):
        yield [{"id": i, "v": "new", "seq": 1000 + i} for i in range(start, start + 1000)]
        if pause_file is not None and start == 1000:
            pause_file.write_text("paused with the COPY open")
            time.sleep(600)


def context(run: str) -> LoadContext:
    return LoadContext(tenant_id="A", integration_id="acme", stream="orders", run_id=run)


def load_source(database_url: str, pause_file: Path | None = None, run: str = "crash") -> None:
    read = StreamRead(parts=iter([BatchesPart(source_batches(pause_file))]))
    DataLayer(database_url=database_url).load(TARGET, read, context(run))


def seed(layer: DataLayer) -> None:
    old = [{"id": i, "v": "old", "seq": i} for i in range(100)]
    layer.load(TARGET, StreamRead(parts=iter([BatchesPart(iter([old]))])), context("seed"))


def snapshot(engine: sa.Engine) -> tuple:
    with engine.connect() as conn:
        table = conn.exec_driver_sql(
            f"select count(*), count(*) filter (where v = 'old'), max(seq) from {TABLE}"
        ).one()
        state = conn.exec_driver_sql(
            "select cursor, last_run_id from synkro.sync_state where integration_id = 'acme'"
        ).one()
        columns = conn.exec_driver_sql(
            "select count(*) from information_schema.columns where table_name = %s", (TABLE,)
        ).scalar()
    return tuple(table), tuple(state), columns


def start_worker(database_url: str, pause_file: Path | None) -> subprocess.Popen:
    args = [sys.executable, "-m", "synkro_dagster_tests.test_datalayer_crash", database_url]
    if pause_file is not None:
        args.append(str(pause_file))
    return subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1])


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def backends_of(engine: sa.Engine, database: str, waiting_on_lock: bool = False) -> list[int]:
    with engine.connect() as conn:
        query = (
            "select pid from pg_stat_activity where datname = %s and pid <> pg_backend_pid()"
            " and backend_type = 'client backend'"
        )
        if waiting_on_lock:
            query += " and wait_event_type = 'Lock' and query like 'with m as (insert into%%'"
        return list(conn.exec_driver_sql(query, (database,)).scalars())


def assert_rerun_lands_exactly_the_source(database_url: str, engine: sa.Engine) -> None:
    load_source(database_url, run="rerun")
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            f"select count(*), count(distinct id), count(*) filter (where v = 'new') from {TABLE}"
        ).one()
        cursor = conn.exec_driver_sql(
            "select cursor from synkro.sync_state where integration_id = 'acme'"
        ).scalar()
    assert tuple(found) == (SOURCE_ROWS, SOURCE_ROWS, SOURCE_ROWS)
    assert cursor == str(1000 + SOURCE_ROWS - 1)


def test_crash_mid_copy_changes_nothing(database_url: str, engine: sa.Engine, tmp_path: Path):
    seed(DataLayer(database_url=database_url))
    before = snapshot(engine)
    pause_file = tmp_path / "paused"
    worker = start_worker(database_url, pause_file)
    try:
        wait_for(pause_file.exists, "the worker to pause mid-COPY")
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.wait(10)
    assert worker.returncode == -signal.SIGKILL
    assert snapshot(engine) == before
    assert_rerun_lands_exactly_the_source(database_url, engine)


def test_crash_mid_merge_changes_nothing(database_url: str, engine: sa.Engine):
    seed(DataLayer(database_url=database_url))
    before = snapshot(engine)
    database = engine.url.database
    # Hold a row the merge must update: the worker's upsert blocks part-way through.
    blocker = engine.connect()
    blocker.begin()
    blocker.exec_driver_sql(f"select * from {TABLE} where id = 50 for update")
    worker = start_worker(database_url, None)
    try:
        wait_for(lambda: backends_of(engine, database, waiting_on_lock=True), "a blocked merge")
        orphans = backends_of(engine, database, waiting_on_lock=True)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        blocker.rollback()
        blocker.close()
    assert worker.returncode == -signal.SIGKILL
    # The orphaned backend finishes its statement, finds the client gone and rolls back.
    wait_for(lambda: not set(orphans) & set(backends_of(engine, database)), "the backend to end")
    assert snapshot(engine) == before
    assert_rerun_lands_exactly_the_source(database_url, engine)


if __name__ == "__main__":
    # Worker: load the source into the database given, pausing mid-COPY if a file is given.
    os.environ.setdefault("SYNKRO_DATABASE_URL", sys.argv[1])
    load_source(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None)
