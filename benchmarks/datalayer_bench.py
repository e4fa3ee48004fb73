"""Benchmarks DataLayer.load against a bare psycopg COPY and pandas to_sql, and its peak memory.

    python benchmarks/datalayer_bench.py [--rows 1000000] [--to-sql-rows 100000]
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres] [--out benchmarks/results/datalayer.md]

Creates a scratch database on the server, migrates it, runs every method against it and drops it.
Throughput runs use the same pre-generated records for every method (generation is not timed);
the memory runs stream generated batches through the data layer in a fresh subprocess each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synkro_dagster.contracts import BatchesPart, StreamRead  # noqa: E402
from synkro_dagster.database import libpq_url, sqlalchemy_url  # noqa: E402
from synkro_dagster.datalayer.migrations import migrate  # noqa: E402
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget  # noqa: E402

BATCH = 10_000
COLUMNS = ["id", "big", "name", "amount", "active", "updated_at", "day", "note", "score", "code"]
COPY_DDL = (
    "create table bench_copy (id integer, big bigint, name text, amount numeric, active boolean,"
    " updated_at timestamptz, day date, note text, score double precision, code text)"
)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def batch(start: int, size: int) -> list[dict]:
    return [
        {
            "id": i,
            "big": 10_000_000_000 + i,
            "name": f"customer {i}",
            "amount": Decimal(i % 100_000) / 100,
            "active": i % 2 == 0,
            "updated_at": EPOCH + timedelta(seconds=i),
            "day": date(2024, 1, 1) + timedelta(days=i % 365),
            "note": None if i % 3 else f"note {i}",
            "score": i / 7,
            "code": "ABC"[i % 3],
        }
        for i in range(start, start + size)
    ]


def batches(rows: int) -> Iterator[list[dict]]:
    for start in range(0, rows, BATCH):
        yield batch(start, min(BATCH, rows - start))


TARGET = TableTarget(
    schema="public",
    table="bench_orders",
    primary_key=["id"],
    write_mode="merge",
    cursor_field="updated_at",
)


def context(run: str) -> LoadContext:
    return LoadContext(tenant_id="bench", integration_id="bench", stream="orders", run_id=run)


def through_data_layer(url: str, data: Iterator[list[dict]], run: str) -> tuple[float, dict]:
    started = time.perf_counter()
    stats = DataLayer(database_url=url).load(
        TARGET, StreamRead(parts=iter([BatchesPart(data)])), context(run)
    )
    return time.perf_counter() - started, stats.as_metadata()


def bare_copy(url: str, data: list[list[dict]]) -> float:
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(COPY_DDL)
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"copy bench_copy ({', '.join(COLUMNS)}) from stdin") as copy,
        ):
            for records in data:
                for r in records:
                    copy.write_row(
                        (
                            r["id"],
                            r["big"],
                            r["name"],
                            r["amount"],
                            r["active"],
                            r["updated_at"],
                            r["day"],
                            r["note"],
                            r["score"],
                            r["code"],
                        )
                    )
        conn.commit()
        return time.perf_counter() - started


def pandas_to_sql(url: str, data: list[list[dict]], rows: int) -> float:
    import pandas as pd

    records = [r for records in data for r in records][:rows]
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    engine = sa.create_engine(url)
    started = time.perf_counter()
    frame.to_sql("bench_to_sql", engine, index=False)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def rss_child(url: str, rows: int) -> None:
    """Stream `rows` generated records through the data layer; print peak RSS in bytes."""
    table = f"bench_rss_{rows}"
    target = TableTarget(schema="public", table=table, primary_key=["id"], write_mode="merge")
    DataLayer(database_url=url).load(
        target, StreamRead(parts=iter([BatchesPart(batches(rows))])), context("rss")
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "peak_rss_bytes": peak_kib * 1024}))


def peak_rss(url: str, rows: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(rows), "--database-url", url],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--to-sql-rows", type=int, default=100_000)
    parser.add_argument(
        "--server-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/datalayer.md")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.database_url, args.rss_child)
        return

    load_start = os.getloadavg()[0]
    server = sqlalchemy_url(args.server_url)
    name = f"synkro_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'create database "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        engine = sa.create_engine(url)
        migrate(engine)
        with engine.connect() as conn:
            pg_version = conn.exec_driver_sql("show server_version").scalar()
        engine.dispose()

        print(f"generating {args.rows:,} records ...", flush=True)
        data = list(batches(args.rows))

        print("bare COPY ...", flush=True)
        copy_seconds = bare_copy(url, data)
        print(f"  {copy_seconds:.2f}s", flush=True)

        print("DataLayer.load merge into empty table ...", flush=True)
        empty_seconds, empty_stats = through_data_layer(url, iter(data), "empty")
        print(f"  {empty_seconds:.2f}s {empty_stats}", flush=True)

        print("DataLayer.load merge again (every row conflicts) ...", flush=True)
        full_seconds, full_stats = through_data_layer(url, iter(data), "full")
        print(f"  {full_seconds:.2f}s {full_stats}", flush=True)

        print(f"pandas to_sql of {args.to_sql_rows:,} rows ...", flush=True)
        to_sql_seconds = pandas_to_sql(url, data, args.to_sql_rows)
        print(f"  {to_sql_seconds:.2f}s", flush=True)
        del data

        rss_rows = (args.rows // 10, args.rows)
        print(f"peak RSS for {rss_rows[0]:,} and {rss_rows[1]:,} rows ...", flush=True)
        rss = [peak_rss(url, n) for n in rss_rows]
        print(f"  {[f'{r / 2**20:.0f} MiB' for r in rss]}", flush=True)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')
        admin.dispose()

    rate = {
        "copy": args.rows / copy_seconds,
        "empty": args.rows / empty_seconds,
        "full": args.rows / full_seconds,
        "to_sql": args.to_sql_rows / to_sql_seconds,
    }
    ratio_copy = rate["empty"] / rate["copy"]
    ratio_to_sql = rate["empty"] / rate["to_sql"]
    ratio_rss = rss[1] / rss[0]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    report = f"""## DataLayer.load benchmark

- Machine: {machine()}
- PostgreSQL {pg_version} on 127.0.0.1 (same machine); Python {platform.python_version()},
  psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), SQLAlchemy {sa.__version__}
- Command: `python benchmarks/datalayer_bench.py --rows {args.rows} --to-sql-rows {args.to_sql_rows}`
- Run at: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) at start / end:
  {load_start:.1f} / {os.getloadavg()[0]:.1f} (other work shared the machine; ratios come from
  the same run, so they are fairer than the absolute rates)
- Records: Python dicts, 10 columns (int, bigint, text, numeric, bool, timestamptz, date,
  nullable text, float, short text), batches of {BATCH:,}; pre-generated once and reused by every
  method (generation not timed). All methods write to the same scratch database.

| method | rows | seconds | rows/s |
|---|---:|---:|---:|
| bare psycopg COPY (`write_row`, unindexed typed table) | {args.rows:,} | {copy_seconds:.2f} | {rate["copy"]:,.0f} |
| `DataLayer.load`, merge into an empty table | {args.rows:,} | {empty_seconds:.2f} | {rate["empty"]:,.0f} |
| `DataLayer.load`, merge again (every row conflicts → update) | {args.rows:,} | {full_seconds:.2f} | {rate["full"]:,.0f} |
| pandas `DataFrame.to_sql` (default method, SQLAlchemy engine) | {args.to_sql_rows:,} | {to_sql_seconds:.2f} | {rate["to_sql"]:,.0f} |

`DataLayer.load` includes everything a sync does: per-batch type inference, COPY into the staging
table, table creation with its primary key and row-level security, the cast + `INSERT ... ON
CONFLICT` merge, the cursor computed by PostgreSQL and the `sync_state` write, in one transaction.
to_sql ran on {args.to_sql_rows:,} rows (DataFrame built beforehand, not timed); its rows/s is
extrapolated to the full row count.

| ratio | value | target | |
|---|---:|---:|---|
| merge into empty ÷ bare COPY | {ratio_copy:.2f}× | ≥ 0.5× | {verdict(ratio_copy >= 0.5)} |
| merge into empty ÷ to_sql | {ratio_to_sql:.1f}× | ≥ 4× | {verdict(ratio_to_sql >= 4)} |
| merge again (all conflicts) ÷ bare COPY | {rate["full"] / rate["copy"]:.2f}× | — | |

Peak RSS of a fresh process streaming generated batches through `DataLayer.load` (merge into a new
table; `ru_maxrss` of the process, which includes the interpreter and imported libraries):

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
