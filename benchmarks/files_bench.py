"""Benchmarks a CSV file through the file-drop engine + DataLayer.load against a bare COPY of it.

    python benchmarks/files_bench.py [--rows 1000000] [--rounds 3]
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres] [--out benchmarks/results/files.md]

Writes a CSV of `--rows` orders (8 columns) to a scratch inbox, creates a scratch database on the
server, then runs `--rounds` interleaved rounds of: a bare `psql \\copy ... (format csv, header)`
of the file into an unindexed typed table, the whole sync (connector read into `DataLayer.load`,
a first load into a new table) on the CSV pass-through (files_copy.py) COPYed straight into the
new table (datalayer/direct.py), and the same sync staged and merged (the direct path off);
medians are reported. The precise path (`fast_paths=False`: Python parses and converts every value) and the
connector's read alone run once, beside them. Peak RSS of the whole sync is measured at a tenth of
the rows and at all of them, each in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (  # noqa: E402
    machine,
    peak_rss_of_this_process,
    run_child,
    scratch_database,
)

from synkro_dagster.connectors.files import FileDropConnector  # noqa: E402
from synkro_dagster.contracts import Integration  # noqa: E402
from synkro_dagster.database import libpq_url  # noqa: E402
from synkro_dagster.datalayer.load import load_stream  # noqa: E402
from synkro_dagster.datalayer.migrations import migrate  # noqa: E402
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget  # noqa: E402
from synkro_dagster.specs.models import SourceSpec  # noqa: E402

COLUMNS = {
    "id": "integer",
    "customer": "text",
    "amount": "numeric",
    "quantity": "integer",
    "ordered_on": "date",
    "paid": "boolean",
    "updated_at": "timestamp",
    "note": "text",
}
SOURCE = SourceSpec.model_validate(
    {
        "name": "bench_files",
        "engine": "files",
        "streams": [
            {
                "name": "orders",
                "primary_key": "id",
                "columns": COLUMNS,
                "files": {"pattern": "orders_*.csv", "encoding": "utf-8", "delimiter": ","},
            }
        ],
    }
)
STREAM = SOURCE.stream("orders")
INTEGRATION = Integration(id="bench", tenant="bench", spec="bench_files")
COPY_DDL = (
    "create table bench_copy (id integer, customer text, amount numeric, quantity integer,"
    " ordered_on date, paid boolean, updated_at timestamp, note text)"
)


def write_csv(path: Path, rows: int) -> int:
    """A realistic orders export: quoted names with commas, empty notes, ISO values."""
    rng = random.Random(7)
    start = datetime(2026, 1, 1)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(COLUMNS) + "\n")
        for i in range(1, rows + 1):
            note = "" if i % 3 else f'"gift wrap, note {i}"'
            handle.write(
                f'{i},"Customer {i % 50_000}, Ltd",{rng.randint(100, 9_999_999) / 100:.2f},'
                f"{rng.randint(1, 50)},{date(2026, 1, 1) + timedelta(days=i % 365)},"
                f"{'true' if i % 2 else 'false'},"
                f"{(start + timedelta(seconds=i)).isoformat(sep=' ')},{note}\n"
            )
    return path.stat().st_size


def make_inbox(rows: int) -> tuple[Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="synkro_files_bench_"))
    inbox = root / INTEGRATION.id
    inbox.mkdir()
    path = inbox / f"orders_{rows}.csv"
    write_csv(path, rows)
    return root, path


def bare_copy(url: str, path: Path, table: str) -> float:
    """`psql \\copy` of the file into a new unindexed typed table (psql's start included)."""
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(COPY_DDL.replace("bench_copy", table))
        conn.commit()
    command = f"\\copy {table} from '{path}' with (format csv, header true)"
    started = time.perf_counter()
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(url), "-c", command],
        check=True,
    )
    return time.perf_counter() - started


def read_only(root: Path) -> tuple[float, float, int]:
    """The connector alone: list, hash, parse, convert; the file stays in the inbox.
    Returns (wall seconds, CPU seconds of this process, records)."""
    connector = FileDropConnector(inbox_root=str(root), stable_seconds=0)
    started, cpu = time.perf_counter(), time.process_time()
    records = 0
    with connector.session(SOURCE, INTEGRATION) as session:
        for part in session.read(STREAM, None).parts:
            for batch in part.batches():
                records += len(batch)
    return time.perf_counter() - started, time.process_time() - cpu, records


def sync(
    url: str, root: Path, table: str, fast: bool = True, direct: bool = True
) -> tuple[float, dict]:
    """The whole sync: connector read into DataLayer.load (a first load into a new table).
    `direct`: the file may be COPYed straight into the new table (datalayer/direct.py); else it
    is staged and merged."""
    connector = FileDropConnector(inbox_root=str(root), stable_seconds=0, fast_paths=fast)
    target = TableTarget.for_stream(SOURCE, STREAM)
    target = TableTarget(
        schema=target.schema,
        table=table,
        primary_key=target.primary_key,
        write_mode=target.write_mode,
        column_hints=target.column_hints,
    )
    started = time.perf_counter()
    with connector.session(SOURCE, INTEGRATION) as session:
        read = session.read(STREAM, None)
        stats = load_stream(
            DataLayer(database_url=url).get_engine(),
            target,
            read,
            # One integration id per table: the same content loaded for another measurement
            # would otherwise be skipped as already loaded (exactly once, by its hash).
            LoadContext(tenant_id="bench", integration_id=table, stream=table, run_id=table),
            direct=direct,
        )
    seconds = time.perf_counter() - started
    wanted = "csv_copy" if fast else None
    assert read.stats.read_paths.get(f"orders_{stats.rows_read}.csv") == wanted, read.stats
    assert stats.load_path == ("direct" if fast and direct else "staging"), stats
    return seconds, stats.as_metadata()


def rss_child(url: str, rows: int) -> None:
    root, _ = make_inbox(rows)
    try:
        _, stats = sync(url, root, f"bench_rss_{rows}")
        assert stats["parts_loaded"] == 1, stats
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"rows": rows, "peak_rss_bytes": peak_rss_of_this_process()}))


def peak_rss(url: str, rows: int) -> int:
    return run_child(__file__, "--rss-child", str(rows), "--database-url", url)["peak_rss_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--server-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/files.md")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of bare COPY and the sync"
    )
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.database_url, args.rss_child)
        return

    load_start = os.getloadavg()[0]
    root, path = make_inbox(args.rows)
    size = path.stat().st_size
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        url = cleanup.enter_context(scratch_database(args.server_url, "synkro_files_bench"))
        engine = sa.create_engine(url)
        migrate(engine)
        with engine.connect() as conn:
            pg_version = conn.exec_driver_sql("show server_version").scalar()
        engine.dispose()

        print(f"{args.rows:,} rows, {size / 2**20:.0f} MiB CSV", flush=True)
        processed = root / INTEGRATION.id / "processed" / path.name

        def synced(table: str, fast: bool, direct: bool = True) -> float:
            seconds, stats = sync(url, root, table, fast=fast, direct=direct)
            assert stats["rows_inserted"] == args.rows, stats
            processed.rename(path)  # back into the inbox for the next run
            way = ("direct" if direct else "staged") if fast else "precise"
            print(f"  {way} sync {seconds:.2f}s", flush=True)
            return seconds

        # Rounds alternate the two sides of the ratio: the machine is shared, and its load moves.
        copy_runs, sync_runs, staged_runs, loads = [], [], [], []
        for attempt in range(args.rounds):
            loads.append(os.getloadavg()[0])
            copy_runs.append(bare_copy(url, path, f"bench_copy_{attempt}"))
            print(f"round {attempt + 1}: bare psql \\copy {copy_runs[-1]:.2f}s", flush=True)
            sync_runs.append(synced(f"bench_orders_{attempt}", fast=True))
            staged_runs.append(synced(f"bench_staged_{attempt}", fast=True, direct=False))
        copy_seconds = statistics.median(copy_runs)
        sync_seconds = statistics.median(sync_runs)
        staged_seconds = statistics.median(staged_runs)

        print("precise path, once ...", flush=True)
        precise_copy = bare_copy(url, path, "bench_copy_precise")
        precise_seconds = synced("bench_orders_precise", fast=False)

        print("connector read alone ...", flush=True)
        read_seconds, read_cpu, records = read_only(root)
        assert records == args.rows, records
        print(f"  {read_seconds:.2f}s ({read_cpu:.2f}s CPU)", flush=True)

        rss_rows = (args.rows // 10, args.rows)
        print(f"peak RSS for {rss_rows[0]:,} and {rss_rows[1]:,} rows ...", flush=True)
        rss = [peak_rss(url, n) for n in rss_rows]
        print(f"  {[f'{r / 2**20:.0f} MiB' for r in rss]}", flush=True)

    ratio = copy_seconds / sync_seconds
    ratio_staged = copy_seconds / staged_seconds
    ratio_precise = precise_copy / precise_seconds
    ratio_rss = rss[1] / rss[0]

    def fmt(runs: list[float]) -> str:
        return ", ".join(f"{r:.1f}" for r in runs)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rounds = ", ".join(f"{c / r:.2f}×" for c, r in zip(copy_runs, sync_runs, strict=True))

    def rate(seconds: float) -> str:
        return f"{seconds:.2f} | {args.rows / seconds:,.0f} | {size / 2**20 / seconds:.1f}"

    report = f"""## File-drop engine benchmark

- Machine: {machine()}
- PostgreSQL {pg_version} on 127.0.0.1 (same machine); Python {platform.python_version()},
  psycopg {psycopg.__version__} ({psycopg.pq.__impl__})
- Command: `python benchmarks/files_bench.py --rows {args.rows} --rounds {args.rounds}`: bare
  COPY, the pass-through sync straight into the new table and the same sync staged and merged
  alternate in {args.rounds} rounds, medians shown (bare COPY {fmt(copy_runs)} s; direct sync
  {fmt(sync_runs)} s; staged sync {fmt(staged_runs)} s; ratio per round {rounds}); the precise path ran
  once after them, beside one more bare COPY ({precise_copy:.1f} s)
- Run at: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) at start / at each
  round / at the end: {load_start:.1f} / {fmt(loads)} / {os.getloadavg()[0]:.1f} (other work
  shared the machine; the ratios come from the same rounds, so they are fairer than the
  absolute rates)
- File: {args.rows:,} orders, {size / 2**20:.0f} MiB UTF-8 CSV, 8 columns (integer, quoted text
  with commas, numeric, integer, date, boolean, timestamp, mostly-empty quoted text); every
  column typed by the stream's `columns:` hints.

| method | seconds | rows/s | MiB/s |
|---|---:|---:|---:|
| bare `psql \\copy ... (format csv, header)` of the file, unindexed typed table | {rate(copy_seconds)} |
| file engine + `DataLayer.load`, CSV pass-through straight into the new table (`COPY (FORMAT csv)` into the target, then its primary key; `load_path: direct`; one transaction, file recorded and moved) | {rate(sync_seconds)} |
| file engine + `DataLayer.load`, CSV pass-through staged and merged (`COPY (FORMAT csv)` into staging, insert into the target; the direct path off) | {rate(staged_seconds)} |
| file engine + `DataLayer.load`, precise path (`fast_paths=False`: Python parses and converts every value) | {rate(precise_seconds)} |
| (part of the precise path) connector read alone: csv parse, per-column conversion, batches of 10,000 ({read_cpu:.1f} s CPU) | {rate(read_seconds)} |

| ratio | value | target | |
|---|---:|---:|---|
| file engine + DataLayer.load ÷ bare COPY, CSV pass-through, direct (medians) | {ratio:.2f}× | ≥ 0.4× | {verdict(ratio >= 0.4)} |
| file engine + DataLayer.load ÷ bare COPY, CSV pass-through, staged and merged (medians) | {ratio_staged:.2f}× | | |
| file engine + DataLayer.load ÷ bare COPY, precise path (one run) | {ratio_precise:.2f}× | | |

Peak RSS of a fresh process running the whole pass-through sync of a generated file (`VmHWM`,
includes the interpreter and imported libraries):

| rows | peak RSS |
|---:|---:|
| {rss_rows[0]:,} | {rss[0] / 2**20:.0f} MiB |
| {rss_rows[1]:,} | {rss[1] / 2**20:.0f} MiB |

RSS({rss_rows[1]:,}) ÷ RSS({rss_rows[0]:,}) = {ratio_rss:.2f} (target ≤ 1.3: {verdict(ratio_rss <= 1.3)}).
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
