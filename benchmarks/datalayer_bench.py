"""Benchmarks DataLayer.load against a bare psycopg COPY and pandas to_sql, and its peak memory.

    python benchmarks/datalayer_bench.py [--rows 1000000] [--to-sql-rows 100000] [--rounds 3]
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
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine, peak_rss_of_this_process, run_child, scratch_database  # noqa: E402

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


_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(url: str) -> dict[int, float]:
    """CPU seconds used so far by each backend of the benchmark database (same machine only)."""
    database = sqlalchemy_url(url).database
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "select pid from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                (database,),
            )
        ]
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    return used


class Meter:
    """Wall time, this process's CPU time and the database backends' CPU time of one method.

    The machine is shared with other work, so wall-clock rates move with its load; CPU seconds
    (client + server) do not, and both are reported.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> Meter:
        self._server = server_cpu(self.url)
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        return self

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._wall
        self.client = time.process_time() - self._cpu
        after = server_cpu(self.url)
        self.server = sum(v - self._server.get(pid, 0.0) for pid, v in after.items())

    def __exit__(self, *exc: object) -> None:
        if not hasattr(self, "wall"):
            self.stop()

    @property
    def cpu(self) -> float:
        return self.client + self.server


def through_data_layer(
    url: str, data: Iterator[list[dict]], run: str, table: str = TARGET.table
) -> tuple[Meter, dict]:
    layer = DataLayer(database_url=url)
    with layer.get_engine().connect() as conn:  # open the pooled connection before measuring
        conn.exec_driver_sql("select 1")
    # As a sync passes it: a read from the start cursor (restartable, so a first load may go
    # straight into the empty table).
    with Meter(url) as meter:
        stats = layer.load(
            replace(TARGET, table=table),
            lambda start: StreamRead(parts=iter([BatchesPart(data)])),
            context(run),
        )
    return meter, stats.as_metadata()


def bare_copy(url: str, data: list[list[dict]]) -> Meter:
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("drop table if exists bench_copy")
        conn.execute(COPY_DDL)
        conn.commit()
        meter = Meter(url).__enter__()
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
        meter.stop()
        return meter


def pandas_to_sql(url: str, data: list[list[dict]], rows: int) -> Meter:
    import pandas as pd

    records = [r for records in data for r in records][:rows]
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1")
    with Meter(url) as meter:
        frame.to_sql("bench_to_sql", engine, index=False)
        meter.stop()
    engine.dispose()
    return meter


def rss_child(url: str, rows: int) -> None:
    """Stream `rows` generated records through the data layer; print peak RSS in bytes."""
    table = f"bench_rss_{rows}"
    target = TableTarget(schema="public", table=table, primary_key=["id"], write_mode="merge")
    DataLayer(database_url=url).load(
        target, lambda start: StreamRead(parts=iter([BatchesPart(batches(rows))])), context("rss")
    )
    print(json.dumps({"rows": rows, "peak_rss_bytes": peak_rss_of_this_process()}))


def peak_rss(url: str, rows: int) -> int:
    return run_child(__file__, "--rss-child", str(rows), "--database-url", url)["peak_rss_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--to-sql-rows", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved bare COPY / merge-into-empty rounds"
    )
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
    with scratch_database(args.server_url) as url:
        engine = sa.create_engine(url)
        migrate(engine)
        with engine.connect() as conn:
            pg_version = conn.exec_driver_sql("show server_version").scalar()
        engine.dispose()

        # Memory first, while this process is still small (the children are separate images).
        rss_rows = (args.rows // 10, args.rows)
        print(f"peak RSS for {rss_rows[0]:,} and {rss_rows[1]:,} rows ...", flush=True)
        rss = [peak_rss(url, n) for n in rss_rows]
        print(f"  {[f'{r / 2**20:.0f} MiB' for r in rss]}", flush=True)

        print(f"generating {args.rows:,} records ...", flush=True)
        data = list(batches(args.rows))

        def show(meter: Meter, extra: object = "") -> None:
            print(
                f"  wall {meter.wall:.2f}s, client CPU {meter.client:.2f}s,"
                f" server CPU {meter.server:.2f}s {extra}",
                flush=True,
            )

        # Interleaved rounds (the machine is shared): the round with the median wall time of each.
        copies, empties = [], []
        for round_ in range(args.rounds):
            print(f"bare COPY (round {round_ + 1}) ...", flush=True)
            copies.append(bare_copy(url, data))
            show(copies[-1])
            print(f"DataLayer.load merge into empty table (round {round_ + 1}) ...", flush=True)
            table = TARGET.table if round_ == args.rounds - 1 else f"{TARGET.table}_{round_}"
            empties.append(through_data_layer(url, iter(data), f"empty{round_}", table))
            show(*empties[-1])
        copy = sorted(copies, key=lambda m: m.wall)[len(copies) // 2]
        empty, empty_stats = sorted(empties, key=lambda m: m[0].wall)[len(empties) // 2]

        # Every record changes (untimed), so the second merge really updates every row; identical
        # records would be left alone by the merge.
        for records in data:
            for record in records:
                record["code"] = "Z"
        print("DataLayer.load merge again (every row conflicts and changed) ...", flush=True)
        full, full_stats = through_data_layer(url, iter(data), "full")
        show(full, full_stats)

        print(f"pandas to_sql of {args.to_sql_rows:,} rows ...", flush=True)
        to_sql = pandas_to_sql(url, data, args.to_sql_rows)
        show(to_sql)
        del data

    methods = [
        ("bare psycopg COPY (`write_row`, unindexed typed table)", args.rows, copy),
        ("`DataLayer.load`, merge into an empty table", args.rows, empty),
        ("`DataLayer.load`, merge again (every row conflicts, changed → update)", args.rows, full),
        (
            "pandas `DataFrame.to_sql` (default method, SQLAlchemy engine)",
            args.to_sql_rows,
            to_sql,
        ),
    ]
    table = "\n".join(
        f"| {label} | {rows:,} | {m.wall:.2f} | {rows / m.wall:,.0f} | {m.client:.2f} |"
        f" {m.server:.2f} | {rows / m.cpu:,.0f} |"
        for label, rows, m in methods
    )

    def wall_rate(rows: int, m: Meter) -> float:
        return rows / m.wall

    def cpu_rate(rows: int, m: Meter) -> float:
        return rows / m.cpu

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    ratios = []
    for label, measure in (("wall clock", wall_rate), ("CPU time", cpu_rate)):
        vs_copy = measure(args.rows, empty) / measure(args.rows, copy)
        vs_to_sql = measure(args.rows, empty) / measure(args.to_sql_rows, to_sql)
        again = measure(args.rows, full) / measure(args.rows, copy)
        ratios.append(
            f"| {label} | {vs_copy:.2f}× ({verdict(vs_copy >= 0.6)}) |"
            f" {vs_to_sql:.1f}× ({verdict(vs_to_sql >= 4)}) | {again:.2f}× |"
        )
    ratio_rss = rss[1] / rss[0]

    report = f"""## DataLayer.load benchmark

- Machine: {machine()}
- PostgreSQL {pg_version} on 127.0.0.1 (same machine); Python {platform.python_version()},
  psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), SQLAlchemy {sa.__version__}
- Command: `python benchmarks/datalayer_bench.py --rows {args.rows} --to-sql-rows {args.to_sql_rows} --rounds {args.rounds}`
- Run at: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) at start / end:
  {load_start:.1f} / {os.getloadavg()[0]:.1f}. The machine was shared with other work, so wall-clock
  rates move with its load; CPU seconds (this process + the PostgreSQL backends, read from
  `/proc/<pid>/stat`) do not, and both are reported.
- Records: Python dicts, 10 columns (int, bigint, text, numeric, bool, timestamptz, date,
  nullable text, float, short text), batches of {BATCH:,}; pre-generated once and reused by every
  method (generation not timed). All methods write to the same scratch database.

| method | rows | wall s | rows/s (wall) | client CPU s | server CPU s | rows/s (CPU) |
|---|---:|---:|---:|---:|---:|---:|
{table}

Bare COPY and merge into an empty table ran in {args.rounds} interleaved rounds; the table shows
each one's round of median wall time. Wall seconds of every round: bare COPY
{", ".join(f"{m.wall:.2f}" for m in copies)}; merge into empty
{", ".join(f"{m.wall:.2f}" for m, _ in empties)}.

`DataLayer.load` includes everything a sync does: per-batch type inference, table creation with
its primary key and row-level security, the rows COPYed in, the cursor computed by PostgreSQL and
the `sync_state` write, in one transaction. The first load went {empty_stats["load_path"]}
(`datalayer/direct.py`: into an empty target the rows are COPYed straight in, no staging and no
merge); the second went {full_stats["load_path"]} (staged, then merged with conflicts). to_sql ran on
{args.to_sql_rows:,} rows (DataFrame built beforehand, not timed); its rows/s is extrapolated.

| measured by | merge into empty ÷ bare COPY (target ≥ 0.6×) | merge into empty ÷ to_sql (target ≥ 4×) | merge again ÷ bare COPY |
|---|---:|---:|---:|
{chr(10).join(ratios)}

Peak RSS of a fresh process streaming generated batches through `DataLayer.load` (merge into a new
table; peak RSS = `VmHWM` of the child process, which includes the interpreter and imported
libraries):

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
