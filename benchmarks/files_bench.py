"""Benchmarks a CSV file through the file-drop engine + DataLayer.load against a bare COPY of it.

    python benchmarks/files_bench.py [--rows 1000000]
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres] [--out benchmarks/results/files.md]

Writes a CSV of `--rows` orders (8 columns) to a scratch inbox, creates a scratch database on the
server, then times: a bare psycopg `COPY ... FROM STDIN (FORMAT csv)` of the file's bytes; the
connector's read alone (hash + parse + convert, no database); and the whole sync (connector read
into `DataLayer.load`, merge into an empty table). Peak RSS of the whole sync is measured at a
tenth of the rows and at all of them, each in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
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
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(COPY_DDL.replace("bench_copy", table))
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"copy {table} from stdin (format csv, header true)") as copy,
            path.open("rb") as handle,
        ):
            while chunk := handle.read(1024 * 1024):
                copy.write(chunk)
        conn.commit()
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


def sync(url: str, root: Path, table: str) -> tuple[float, dict]:
    """The whole sync: connector read into DataLayer.load (merge into a new table)."""
    connector = FileDropConnector(inbox_root=str(root), stable_seconds=0)
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
        stats = DataLayer(database_url=url).load(
            target,
            session.read(STREAM, None),
            # One integration id per table: the same content loaded for another measurement
            # would otherwise be skipped as already loaded (exactly once, by its hash).
            LoadContext(tenant_id="bench", integration_id=table, stream=table, run_id=table),
        )
    return time.perf_counter() - started, stats.as_metadata()


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
    parser.add_argument("--repeat", type=int, default=2, help="runs of COPY and sync; best is kept")
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

        print(f"{args.rows:,} rows, {size / 2**20:.0f} MiB CSV; bare COPY ...", flush=True)
        # Best of `--repeat` runs for both sides of the ratio: the machine is shared.
        copy_runs = []
        for attempt in range(args.repeat):
            copy_runs.append(bare_copy(url, path, f"bench_copy_{attempt}"))
        copy_seconds = min(copy_runs)
        print(f"  {copy_runs}", flush=True)

        print("connector read alone ...", flush=True)
        read_seconds, read_cpu, records = read_only(root)
        assert records == args.rows, records
        print(f"  {read_seconds:.2f}s ({read_cpu:.2f}s CPU)", flush=True)

        print("file engine + DataLayer.load ...", flush=True)
        sync_runs = []
        for attempt in range(args.repeat):
            seconds, stats = sync(url, root, f"bench_orders_{attempt}")
            assert stats["rows_inserted"] == args.rows, stats
            processed = root / INTEGRATION.id / "processed" / path.name
            assert processed.exists()
            processed.rename(path)  # back into the inbox for the next attempt
            sync_runs.append(seconds)
            print(f"  {seconds:.2f}s {stats}", flush=True)
        sync_seconds = min(sync_runs)

        rss_rows = (args.rows // 10, args.rows)
        print(f"peak RSS for {rss_rows[0]:,} and {rss_rows[1]:,} rows ...", flush=True)
        rss = [peak_rss(url, n) for n in rss_rows]
        print(f"  {[f'{r / 2**20:.0f} MiB' for r in rss]}", flush=True)

    ratio = copy_seconds / sync_seconds
    ratio_rss = rss[1] / rss[0]

    def fmt(runs: list[float]) -> str:
        return ", ".join(f"{r:.1f}s" for r in runs)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    report = f"""## File-drop engine benchmark

- Machine: {machine()}
- PostgreSQL {pg_version} on 127.0.0.1 (same machine); Python {platform.python_version()},
  psycopg {psycopg.__version__} ({psycopg.pq.__impl__})
- Command: `python benchmarks/files_bench.py --rows {args.rows} --repeat {args.repeat}`; COPY
  and the whole sync each ran {args.repeat}× and the best time is shown (COPY {fmt(copy_runs)};
  sync {fmt(sync_runs)})
- Run at: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) at start / end:
  {load_start:.1f} / {os.getloadavg()[0]:.1f} (other work shared the machine; the ratio comes from
  the same run, so it is fairer than the absolute rates)
- File: {args.rows:,} orders, {size / 2**20:.0f} MiB UTF-8 CSV, 8 columns (integer, quoted text
  with commas, numeric, integer, date, boolean, timestamp, mostly-empty quoted text); every
  column typed by the stream's `columns:` hints.

| method | seconds | rows/s | MiB/s |
|---|---:|---:|---:|
| bare psycopg `COPY ... FROM STDIN (FORMAT csv)` of the file's bytes, unindexed typed table | {copy_seconds:.2f} | {args.rows / copy_seconds:,.0f} | {size / 2**20 / copy_seconds:.1f} |
| connector read alone: SHA-256, csv parse, per-column conversion, batches of 10,000 ({read_cpu:.1f} s CPU) | {read_seconds:.2f} | {args.rows / read_seconds:,.0f} | {size / 2**20 / read_seconds:.1f} |
| file engine + `DataLayer.load` (merge into an empty table, one transaction, file recorded and moved) | {sync_seconds:.2f} | {args.rows / sync_seconds:,.0f} | {size / 2**20 / sync_seconds:.1f} |

| ratio | value | target | |
|---|---:|---:|---|
| file engine + DataLayer.load ÷ bare COPY (throughput) | {ratio:.2f}× | ≥ 0.4× | {verdict(ratio >= 0.4)} |

Peak RSS of a fresh process running the whole sync of a generated file (`VmHWM`, includes the
interpreter and imported libraries):

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
