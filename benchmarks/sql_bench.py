"""Benchmarks the SQL engine: SqlConnector + DataLayer.load vs a bare psycopg COPY pipe.

Run: python benchmarks/sql_bench.py [--rows 1000000] [--rss-rows 100000,1000000]
         [--server postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--out benchmarks/results/sql.md]

Both paths move the same rows from a source database to a destination database on the same
PostgreSQL server, in the same run:
  - bare:   COPY (SELECT ...) TO STDOUT on the source, piped chunk by chunk into
            COPY ... FROM STDIN on the destination (no Python per row: the floor);
  - synkro: SqlConnector reads the table through a server-side cursor in batches, the data layer
            COPYs them into staging and merges into the landed table (one transaction, cursor
            committed with the data).
Peak RSS is measured in a fresh subprocess per size, so one size's memory never hides another's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synkro_dagster.connectors.sql import SqlConnector  # noqa: E402
from synkro_dagster.contracts import Integration  # noqa: E402
from synkro_dagster.database import libpq_url  # noqa: E402
from synkro_dagster.specs.models import SourceSpec  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SOURCE_DB = "synkro_bench_sql_src"
COLUMNS = "id, customer_id, sku, quantity, amount, status, note, created_at, updated_at"
SOURCE_DDL = """
create table {name} (
  id bigint primary key,
  customer_id integer not null,
  sku text not null,
  quantity integer not null,
  amount numeric(12,2) not null,
  status text not null,
  note text,
  created_at timestamp not null,
  updated_at timestamptz not null
)"""
SOURCE_FILL = """
insert into {name}
select g, (g %% 5000) + 1, 'SKU-' || lpad((g %% 997)::text, 5, '0'), (g %% 17) + 1,
       ((g %% 100000) / 100.0)::numeric(12,2), (array['open','paid','void'])[(g %% 3) + 1],
       case when g %% 4 = 0 then null else 'order note ' || g end,
       timestamp '2026-01-01' + (g || ' seconds')::interval,
       timestamptz '2026-01-01 00:00:00+00' + (g || ' seconds')::interval
from generate_series(1, {rows}) g"""


def _url(server: str, database: str) -> str:
    return sa.make_url(server).set(database=database).render_as_string(hide_password=False)


def _admin(server: str) -> sa.Engine:
    return sa.create_engine(server, isolation_level="AUTOCOMMIT")


def source_table(rows: int) -> str:
    return f"orders_{rows}"


def prepare_source(server: str, sizes: list[int]) -> None:
    """The source database with one table per size (kept between runs when already filled)."""
    admin = _admin(server)
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("select 1 from pg_database where datname = :n"), {"n": SOURCE_DB}
        ).scalar()
        if not exists:
            conn.exec_driver_sql(f'create database "{SOURCE_DB}"')
    admin.dispose()
    engine = sa.create_engine(_url(server, SOURCE_DB))
    for rows in sizes:
        name = source_table(rows)
        with engine.begin() as conn:
            count = conn.execute(sa.text("select to_regclass(:n)"), {"n": name}).scalar()
            have = conn.exec_driver_sql(f"select count(*) from {name}").scalar() if count else None
            if have != rows:
                conn.exec_driver_sql(f"drop table if exists {name}")
                conn.exec_driver_sql(SOURCE_DDL.format(name=name))
                conn.exec_driver_sql(SOURCE_FILL.format(name=name, rows=rows))
            # A change-tracking column is indexed in any source that is read incrementally.
            conn.exec_driver_sql(
                f"create index if not exists {name}_updated_at on {name} (updated_at)"
            )
            conn.exec_driver_sql(f"analyze {name}")
    engine.dispose()


def fresh_destination(server: str) -> tuple[str, str]:
    """A new, migrated destination database; returns (name, url)."""
    from synkro_dagster.datalayer.migrations import migrate

    name = f"synkro_bench_sql_dst_{uuid.uuid4().hex[:8]}"
    admin = _admin(server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'create database "{name}"')
    admin.dispose()
    url = _url(server, name)
    engine = sa.create_engine(url)
    migrate(engine)
    engine.dispose()
    return name, url


def drop_database(server: str, name: str) -> None:
    admin = _admin(server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')
    admin.dispose()


def bare_copy_pipe(server: str, dest_url: str, rows: int, target: str) -> float:
    """COPY (SELECT ...) TO STDOUT on the source piped into COPY ... FROM STDIN on the destination."""
    table = source_table(rows)
    with (
        psycopg.connect(libpq_url(_url(server, SOURCE_DB))) as src,
        psycopg.connect(libpq_url(dest_url)) as dst,
    ):
        dst.execute(SOURCE_DDL.format(name=target).replace(" primary key", ""))
        dst.commit()
        started = time.perf_counter()
        with (
            src.cursor().copy(f"COPY (SELECT {COLUMNS} FROM {table}) TO STDOUT") as out,
            dst.cursor().copy(f"COPY {target} ({COLUMNS}) FROM STDIN") as into,
        ):
            for chunk in out:
                into.write(chunk)
        dst.commit()
        elapsed = time.perf_counter() - started
        landed = dst.execute(f"select count(*) from {target}").fetchone()[0]
    assert landed == rows, (landed, rows)
    return elapsed


def bench_spec(rows: int) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": "bench",
            "engine": "sql",
            "config": {"url": {}},
            "secrets": [],
            "sql": {"password_secret": None},
            "streams": [
                {
                    "name": "orders",
                    "primary_key": "id",
                    "cursor": {"field": "updated_at"},
                    "sql": {"table": source_table(rows)},
                }
            ],
        }
    )


def data_layer_available() -> bool:
    try:
        from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget  # noqa: F401
    except ImportError:
        return False
    return True


def synkro_sync(server: str, dest_url: str | None, rows: int, batch_size: int) -> dict:
    """One sync through SqlConnector (+ DataLayer.load when dest_url is given)."""
    spec = bench_spec(rows)
    stream = spec.streams[0]
    integration = Integration(
        id="bench", tenant="bench", spec="bench", config={"url": _url(server, SOURCE_DB)}
    )
    started = time.perf_counter()
    with SqlConnector(batch_size=batch_size).session(spec, integration) as session:
        read = session.read(stream, None)
        if dest_url is None:
            landed = sum(len(b) for part in read.parts for b in part.batches())
            stats: dict = {"rows_read": landed}
        else:
            from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget

            layer = DataLayer(database_url=dest_url, batch_rows=batch_size)
            result = layer.load(
                TableTarget.for_stream(spec, stream),
                read,
                LoadContext(
                    tenant_id="bench", integration_id="bench", stream="orders", run_id="bench"
                ),
            )
            stats = {
                "rows_read": result.rows_read,
                "rows_inserted": result.rows_inserted,
                "cursor_after": result.cursor_after,
            }
    stats["seconds"] = time.perf_counter() - started
    return stats


def child(args: argparse.Namespace) -> None:
    """Subprocess entry: one sync of `--child-rows` rows, then peak RSS as JSON on stdout."""
    dest_name, dest_url = (None, None)
    if args.mode == "load":
        dest_name, dest_url = fresh_destination(args.server)
    try:
        stats = synkro_sync(args.server, dest_url, args.child_rows, args.batch_size)
    finally:
        if dest_name:
            from synkro_dagster.database import _engine

            _engine.cache_clear()
            drop_database(args.server, dest_name)
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(stats, default=str))


def run_child(args: argparse.Namespace, rows: int, mode: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child-rows",
        str(rows),
        "--mode",
        mode,
        "--server",
        args.server,
        "--batch-size",
        str(args.batch_size),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rss-rows", default="100000,1000000")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument(
        "--server", default=os.environ.get("SYNKRO_BENCH_SERVER_URL", DEFAULT_SERVER)
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sql.md"))
    parser.add_argument("--child-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["load", "read"], default="load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rows:
        child(args)
        return

    mode = "load" if data_layer_available() else "read"
    rss_sizes = [int(n) for n in args.rss_rows.split(",") if n]
    prepare_source(args.server, sorted({args.rows, *rss_sizes}))

    # Throughput: the bare pipe and the synkro path on the same rows, same server, same run.
    dest_name, dest_url = fresh_destination(args.server)
    try:
        load_before = os.getloadavg()[0]
        bare_before = bare_copy_pipe(args.server, dest_url, args.rows, "bare_before")
        synkro = run_child(args, args.rows, mode)
        read_only = run_child(args, args.rows, "read") if mode == "load" else None
        # The bare pipe again after the synkro path: on a shared machine the load changes, and
        # the ratio uses the mean of both so neither path gets the quieter minute alone.
        bare_after = bare_copy_pipe(args.server, dest_url, args.rows, "bare_after")
        load_after = os.getloadavg()[0]
        bare_s = (bare_before + bare_after) / 2
    finally:
        drop_database(args.server, dest_name)
    # Peak RSS per size, each in a fresh process.
    rss = {rows: run_child(args, rows, mode) for rows in rss_sizes}

    ratio = bare_s / synkro["seconds"]
    lines = [
        "# SQL engine benchmark",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"PostgreSQL server {sa.make_url(args.server).render_as_string(hide_password=True)}).",
        "Command: `python benchmarks/sql_bench.py"
        + (f" --rows {args.rows}" if args.rows != 1_000_000 else "")
        + "`",
        "",
        "Source: a PostgreSQL table of 9 columns (bigint, integer, text, integer, numeric(12,2), "
        "text, text with NULLs, timestamp, timestamptz; updated_at indexed) in database "
        f"`{SOURCE_DB}`; destination: a fresh migrated data layer database on the same server.",
        "",
        "| path | rows | seconds | rows/s |",
        "|---|---:|---:|---:|",
        f"| bare psycopg COPY TO STDOUT → COPY FROM STDIN (before) | {args.rows:,} | "
        f"{bare_before:.2f} | {args.rows / bare_before:,.0f} |",
        f"| bare psycopg COPY TO STDOUT → COPY FROM STDIN (after) | {args.rows:,} | "
        f"{bare_after:.2f} | {args.rows / bare_after:,.0f} |",
        "| synkro: SqlConnector → "
        + ("DataLayer.load (staging COPY + merge + cursor)" if mode == "load" else "read only")
        + f" | {args.rows:,} | {synkro['seconds']:.2f} | {args.rows / synkro['seconds']:,.0f} |",
        *(
            [
                f"| (part of it) SqlConnector read alone, records built, no load | {args.rows:,} | "
                f"{read_only['seconds']:.2f} | {args.rows / read_only['seconds']:,.0f} |"
            ]
            if read_only
            else []
        ),
        "",
        f"**Throughput ratio synkro / bare (mean of before and after): {ratio:.2f}×** "
        f"(target ≥ 0.40×: {'met' if ratio >= 0.4 else 'NOT met'}).",
        "",
        f"Machine load (1-minute load average) at the start and end of the throughput runs: "
        f"{load_before:.1f} and {load_after:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| rows | peak RSS (MB), fresh process |",
        "|---:|---:|",
        *[f"| {rows:,} | {rss[rows]['peak_rss_mb']:.0f} |" for rows in rss_sizes],
        "",
    ]
    if len(rss_sizes) >= 2:
        growth = rss[rss_sizes[-1]]["peak_rss_mb"] / rss[rss_sizes[0]]["peak_rss_mb"]
        lines += [
            f"**RSS growth {rss_sizes[0]:,} → {rss_sizes[-1]:,} rows: {growth:.2f}×** "
            f"(target ≤ 1.30×: {'met' if growth <= 1.3 else 'NOT met'}).",
            "",
        ]
    if mode == "read":
        lines += [
            "The data layer was not importable: the synkro path is the connector read alone.",
            "",
        ]
    lines += [
        "Synkro sync stats: `" + json.dumps(synkro, default=str) + "`",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Hand-written analysis below "## Notes" survives a rerun.
    notes = out.read_text(encoding="utf-8").partition("\n## Notes")[2] if out.exists() else ""
    text = "\n".join(lines) + (f"\n## Notes{notes}" if notes else "")
    out.write_text(text, encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
