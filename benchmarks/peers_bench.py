"""Peers benchmark: MariaDB / HTTP -> PostgreSQL by Synkro, bare pipes, dlt and pandas, interleaved.

Run (from the repository root, after `bash benchmarks/peers_venv.sh` built temp/bench-venv):
    python benchmarks/peers_bench.py --rows 200000 --rounds 3 --out benchmarks/results/peers.md
    python benchmarks/peers_bench.py --source http --rows 200000 --rounds 3 \
        --out benchmarks/results/peers_http.md

Every method moves the same MariaDB table (10 columns: bigint key, int, varchar, int,
decimal(12,2), varchar, nullable varchar, datetime, datetime(6), decimal(18,6)) into a new table in a
scratch PostgreSQL database on the same machine, as a first load:

- bare pipe: `mysql --batch --quick ... | psql -c "\\copy ... from stdin"` (no Python at all);
- Synkro: SqlConnector + DataLayer.load (merge into an empty table by primary key, cursor and
  staging in one transaction), with its fast path (connectorx -> Arrow -> binary COPY) and with
  `fast_paths=False` (Python records, the path before this benchmark);
- dlt `sql_database` with its default (SQLAlchemy) and `pyarrow` backends, and pandas
  `read_sql` + `to_sql`, each run in the separate benchmark environment (temp/bench-venv), which
  Synkro never depends on.

The methods run interleaved, round after round, each in a fresh process; the seconds are the
child's own timing of the load (interpreter start and imports excluded for every Python method),
the bare pipe's is the pipe's wall time. Results are medians; ratios are medians of one run's
rows/s. pandas runs on at most `--pandas-rows` rows (it is slow) and its rate is extrapolated.

`--source http`: the same paginated JSON (the demo API's benchmark collection: 6 fields a record,
pages of 1,000 by page number, its own process, pages served pre-encoded after a warm-up pass)
landed in a new PostgreSQL table merged by primary key, by Synkro in process (HttpConnector +
DataLayer.load, no Dagster run around it) and by dlt's `rest_api` source (merge on the same key,
and dlt's default append).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


MARIADB = "mysql+pymysql://root@127.0.0.1:3306/"
SOURCE_DB = "synkro_bench_peers"
COLUMNS = [
    "id",
    "customer_id",
    "sku",
    "quantity",
    "amount",
    "status",
    "note",
    "created_at",
    "updated_at",
    "ratio",
]
MARIADB_DDL = """
create table {table} (
  id bigint primary key, customer_id int not null, sku varchar(20) not null,
  quantity int not null, amount decimal(12,2) not null, status varchar(10) not null,
  note varchar(100), created_at datetime not null, updated_at datetime(6) not null,
  ratio decimal(18,6) not null
)"""
MARIADB_FILL = """
insert into {table}
select seq, mod(seq, 5000) + 1, concat('SKU-', lpad(mod(seq, 997), 5, '0')), mod(seq, 17) + 1,
       mod(seq, 100000) / 100, elt(mod(seq, 3) + 1, 'open', 'paid', 'void'),
       if(mod(seq, 4) = 0, null, concat('order note ', seq)),
       timestamp '2026-01-01 00:00:00' + interval seq second,
       timestamp '2026-01-01 00:00:00' + interval seq second + interval mod(seq, 1000) microsecond,
       seq / 7
from seq_1_to_{rows}"""
PG_DDL = """
create table {table} (
  id bigint primary key, customer_id integer, sku text, quantity integer, amount numeric(12,2),
  status text, note text, created_at timestamp, updated_at timestamp, ratio numeric(18,6)
)"""


def source_table(rows: int) -> str:
    return f"orders_v2_{rows}"


def prepare_source(rows: int) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(MARIADB)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"create database if not exists {SOURCE_DB}")
    admin.dispose()
    engine = sa.create_engine(MARIADB + SOURCE_DB)
    table = source_table(rows)
    with engine.begin() as conn:
        have = conn.exec_driver_sql(
            "select count(*) from information_schema.tables"
            f" where table_schema = '{SOURCE_DB}' and table_name = '{table}'"
        ).scalar()
        if have and conn.exec_driver_sql(f"select count(*) from {table}").scalar() == rows:
            return
        conn.exec_driver_sql(f"drop table if exists {table}")
        conn.exec_driver_sql(MARIADB_DDL.format(table=table))
        conn.exec_driver_sql(MARIADB_FILL.format(table=table, rows=rows))
    engine.dispose()


# --- the methods, each in its own process ----------------------------------------------------


def run_bare(rows: int, dest: str, table: str) -> float:
    import sqlalchemy as sa

    engine = sa.create_engine(dest)
    with engine.begin() as conn:
        conn.exec_driver_sql(PG_DDL.format(table=table))
    engine.dispose()
    url = sa.make_url(dest)
    started = time.perf_counter()
    mysql = subprocess.Popen(
        ["mysql", "--batch", "--quick", "--skip-column-names", "-h", "127.0.0.1", "-u", "root"]
        + [SOURCE_DB, "-e", f"select {', '.join(COLUMNS)} from {source_table(rows)}"],
        stdout=subprocess.PIPE,
    )
    psql = subprocess.run(
        ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", str(url.database)]
        + ["-c", f"\\copy {table} from stdin (null 'NULL')"],
        stdin=mysql.stdout,
        capture_output=True,
        text=True,
    )
    mysql.wait()
    seconds = time.perf_counter() - started
    if psql.returncode or mysql.returncode:
        raise RuntimeError(f"bare pipe failed: {psql.stderr[-2000:]}")
    return seconds


def child_synkro(rows: int, dest: str, table: str, fast: bool) -> dict:
    from synkro_dagster.connectors.sql import SqlConnector
    from synkro_dagster.contracts import Integration
    from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
    from synkro_dagster.specs.models import SourceSpec

    spec = SourceSpec.model_validate(
        {
            "name": "peers",
            "engine": "sql",
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
    stream = spec.stream("orders")
    integration = Integration(
        id="bench", tenant="bench", spec="peers", config={"url": MARIADB + SOURCE_DB}
    )
    layer = DataLayer(database_url=dest)
    target = TableTarget(
        schema="public",
        table=table,
        primary_key=["id"],
        write_mode="merge",
        cursor_field="updated_at",
    )
    started = time.perf_counter()
    with SqlConnector(fast_paths=fast).session(spec, integration) as session:
        stats = layer.load(
            target,
            session.read(stream, None),
            LoadContext(tenant_id="bench", integration_id="bench", stream="orders", run_id="b"),
        )
    seconds = time.perf_counter() - started
    assert stats.rows_inserted == rows, stats
    return {"seconds": seconds}


def child_dlt(rows: int, dest: str, table: str, backend: str) -> dict:
    import dlt
    import sqlalchemy as sa
    from dlt.sources.sql_database import sql_database

    url = sa.make_url(dest)
    # dlt insists on a password; the local server trusts its loopback connections and ignores it.
    credentials = url.set(drivername="postgresql", password=url.password or "unused")
    credentials = credentials.render_as_string(hide_password=False)
    pipeline = dlt.pipeline(
        pipeline_name=f"peers_{table}",
        destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name=table,
        pipelines_dir=str(ROOT / "temp" / "bench-dlt" / table),
    )
    source = sql_database(
        credentials=MARIADB + SOURCE_DB,
        table_names=[source_table(rows)],
        backend=backend,
        chunk_size=10_000,
    )
    started = time.perf_counter()
    info = pipeline.run(source)
    seconds = time.perf_counter() - started
    info.raise_on_failed_jobs()
    return {"seconds": seconds}


def child_pandas(rows: int, dest: str, table: str, limit: int) -> dict:
    import pandas as pd
    import sqlalchemy as sa

    source = sa.create_engine(MARIADB + SOURCE_DB)
    target = sa.create_engine(dest)
    started = time.perf_counter()
    query = f"select {', '.join(COLUMNS)} from {source_table(rows)} limit {limit}"
    for chunk in pd.read_sql(query, source, chunksize=10_000):
        chunk.to_sql(table, target, if_exists="append", index=False)
    return {"seconds": time.perf_counter() - started}


# --- HTTP -> PostgreSQL ---------------------------------------------------------------------------

HTTP_PAGE_SIZE = 1000


def start_http_source(rows: int) -> tuple[subprocess.Popen[str], str]:
    """The demo API in its own process, serving `rows` benchmark records; (process, base URL)."""
    from benchmarks.common import start_demo_api

    process, url = start_demo_api(rows)
    # One pass over every page, so each method is then served the same pre-encoded bodies.
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        for page in range(1, -(-rows // HTTP_PAGE_SIZE) + 1):
            client.get(
                "/test/page_number/bench", params={"page": page, "per_page": HTTP_PAGE_SIZE}
            ).raise_for_status()
    return process, url


def child_synkro_http(rows: int, dest: str, table: str, api: str) -> dict:
    from synkro_dagster.connectors.http import HttpConnector
    from synkro_dagster.contracts import Integration
    from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
    from synkro_dagster.specs.models import SourceSpec

    spec = SourceSpec.model_validate(
        {
            "name": "peers_http",
            "engine": "http",
            "config": {"base_url": {}},
            "http": {
                "base_url": "{base_url}/test",
                "records": "data",
                "pagination": {
                    "kind": "page_number",
                    "page_size_param": "per_page",
                    "page_size": HTTP_PAGE_SIZE,
                    "total_pages": "meta.total_pages",
                },
            },
            "streams": [
                {"name": "bench", "primary_key": "id", "http": {"path": "/page_number/bench"}}
            ],
        }
    )
    stream = spec.stream("bench")
    integration = Integration(
        id="bench", tenant="bench", spec="peers_http", config={"base_url": api}
    )
    layer = DataLayer(database_url=dest)
    target = TableTarget(schema="public", table=table, primary_key=["id"], write_mode="merge")
    started = time.perf_counter()
    with HttpConnector().session(spec, integration) as session:
        stats = layer.load(
            target,
            session.read(stream, None),
            LoadContext(tenant_id="bench", integration_id="bench", stream="bench", run_id="b"),
        )
    seconds = time.perf_counter() - started
    assert stats.rows_inserted == rows, stats
    return {"seconds": seconds}


def child_dlt_rest_api(rows: int, dest: str, table: str, api: str, disposition: str) -> dict:
    import dlt
    import sqlalchemy as sa
    from dlt.sources.rest_api import rest_api_source

    url = sa.make_url(dest)
    credentials = url.set(drivername="postgresql", password=url.password or "unused")
    pipeline = dlt.pipeline(
        pipeline_name=f"peers_{table}",
        destination=dlt.destinations.postgres(
            credentials=credentials.render_as_string(hide_password=False)
        ),
        dataset_name=table,
        pipelines_dir=str(ROOT / "temp" / "bench-dlt" / table),
    )
    source = rest_api_source(
        {
            "client": {
                "base_url": f"{api}/test/page_number/",
                "paginator": {
                    "type": "page_number",
                    "base_page": 1,
                    "page_param": "page",
                    "total_path": "meta.total_pages",
                },
            },
            "resource_defaults": {
                "primary_key": "id",
                "write_disposition": disposition,
                "endpoint": {"params": {"per_page": HTTP_PAGE_SIZE}},
            },
            "resources": [
                {"name": "bench", "endpoint": {"path": "bench", "data_selector": "data"}}
            ],
        }
    )
    started = time.perf_counter()
    info = pipeline.run(source)
    seconds = time.perf_counter() - started
    info.raise_on_failed_jobs()
    return {"seconds": seconds}


# --- the orchestration --------------------------------------------------------------------------


def _child(
    python: str,
    method: str,
    rows: int,
    dest: str,
    table: str,
    limit: int = 0,
    api: str = "",
    code: Path | None = None,
) -> float:
    args = [python, __file__, "--child", method, "--rows", str(rows), "--dest", dest]
    args += ["--pandas-rows", str(limit or rows), "--api", api]
    # dlt's pyarrow backend sees MariaDB's DOUBLE as decimals whose precision varies by batch;
    # without lossless promotion it refuses the second batch.
    env = {**os.environ, "DATA_WRITER__ARROW_CONCAT_PROMOTE_OPTIONS": "default"}
    if code is not None:
        # Synkro's code from another checkout (an exported commit) in front of this one.
        env["PYTHONPATH"] = str(code)
    child = subprocess.run(
        [*args, "--table", table], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if child.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{child.stderr[-3000:]}")
    return float(json.loads(child.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pandas-rows", type=int, default=50_000)
    parser.add_argument(
        "--bench-python", default=str(ROOT / "temp" / "bench-venv" / "bin" / "python")
    )
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--skip-records", action="store_true", help="leave out Synkro's (slow) records path"
    )
    parser.add_argument(
        "--skip-dlt-default",
        action="store_true",
        help="leave out dlt's default (SQLAlchemy) backend, the slowest method",
    )
    parser.add_argument("--source", choices=("mariadb", "http"), default="mariadb")
    parser.add_argument("--child", default=None)
    parser.add_argument("--dest", default=None)
    parser.add_argument("--table", default=None)
    parser.add_argument("--api", default="")
    parser.add_argument(
        "--before", default=None, help="with --source http: also Synkro as of this git ref"
    )
    args = parser.parse_args()

    if args.child:
        method, rows, dest, table = args.child, args.rows, args.dest, args.table
        if method == "synkro-http":
            result = child_synkro_http(rows, dest, table, args.api)
        elif method.startswith("dlt-rest_api-"):
            disposition = method.removeprefix("dlt-rest_api-")
            result = child_dlt_rest_api(rows, dest, table, args.api, disposition)
        elif method == "synkro":
            result = child_synkro(rows, dest, table, fast=True)
        elif method == "synkro-records":
            result = child_synkro(rows, dest, table, fast=False)
        elif method.startswith("dlt-"):
            result = child_dlt(rows, dest, table, method.removeprefix("dlt-"))
        elif method == "pandas":
            result = child_pandas(rows, dest, table, args.pandas_rows)
        else:
            raise SystemExit(f"unknown method {method}")
        print(json.dumps(result))
        return

    if args.source == "http":
        main_http(args)
        return

    # Only the parent imports Synkro's helpers: the peers' children run in their own environment.
    from benchmarks.common import machine, scratch_database

    prepare_source(args.rows)
    if args.pandas_rows > args.rows:
        args.pandas_rows = args.rows
    bench = args.bench_python
    peers = os.path.exists(bench)
    methods = ["bare", "synkro"] if args.skip_records else ["bare", "synkro", "synkro-records"]
    if peers:
        methods += ["dlt-pyarrow", "pandas"] if args.skip_dlt_default else [
            "dlt-pyarrow", "dlt-sqlalchemy", "pandas",
        ]  # fmt: skip
    load_start = os.getloadavg()[0]
    started_at = dt.datetime.now(dt.UTC)
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    with scratch_database(prefix="synkro_bench_peers", migrated=True) as dest:
        for round_no in range(args.rounds):
            for method in methods:
                table = f"{method.replace('-', '_')}_{round_no}"
                if method == "bare":
                    took = run_bare(args.rows, dest, table)
                elif method in ("synkro", "synkro-records"):
                    took = _child(sys.executable, method, args.rows, dest, table)
                elif method == "pandas":
                    took = _child(bench, method, args.rows, dest, table, args.pandas_rows)
                    took *= args.rows / args.pandas_rows
                else:
                    took = _child(bench, method, args.rows, dest, table)
                seconds[method].append(took)
                print(f"round {round_no + 1} {method}: {took:.2f} s", file=sys.stderr)
    load_end = os.getloadavg()[0]
    rate = {m: args.rows / statistics.median(s) for m, s in seconds.items()}
    lines = [
        "## Peers benchmark (MariaDB → PostgreSQL, first load)",
        "",
        f"Run {started_at:%Y-%m-%d %H:%M} UTC on {machine()}; load average (1 min) at start / end:"
        f" {load_start:.1f} / {load_end:.1f} (the machine is shared with other work).",
        f"Command: `python benchmarks/peers_bench.py --rows {args.rows} --rounds {args.rounds}"
        f" --pandas-rows {args.pandas_rows}{' --skip-records' if args.skip_records else ''}"
        f"{' --skip-dlt-default' if args.skip_dlt_default else ''}`. {args.rows:,} rows × 10 columns, methods"
        f" interleaved in {args.rounds} rounds, each in a fresh process; medians.",
        "",
        "| method | seconds per round | median rows/s | ÷ bare pipe |",
        "|---|---|---:|---:|",
    ]
    names = {
        "bare": "bare pipe `mysql --batch --quick \\| psql \\copy`",
        "synkro": "Synkro: connectorx → Arrow → binary COPY → merge (fast path)",
        "synkro-records": "Synkro: Python records (`fast_paths=False`)",
        "dlt-pyarrow": 'dlt `sql_database(backend="pyarrow")` → postgres',
        "dlt-sqlalchemy": "dlt `sql_database()` (default backend) → postgres",
        "pandas": f"pandas `read_sql` + `to_sql` ({args.pandas_rows:,} rows, extrapolated)",
    }
    for method in methods:
        runs = ", ".join(f"{s:.1f}" for s in seconds[method])
        lines.append(
            f"| {names[method]} | {runs} | {rate[method]:,.0f} | {rate[method] / rate['bare']:.2f}× |"
        )
    lines.append("")
    if peers:
        lines.append(
            f"Synkro fast path ÷ dlt pyarrow: **{rate['synkro'] / rate['dlt-pyarrow']:.2f}×**;"
            + (
                f" ÷ dlt default: {rate['synkro'] / rate['dlt-sqlalchemy']:.2f}×;"
                if "dlt-sqlalchemy" in rate
                else ""
            )
            + f" ÷ pandas: {rate['synkro'] / rate['pandas']:.1f}×."
        )
    lines.append(f"Synkro fast path ÷ bare pipe: **{rate['synkro'] / rate['bare']:.2f}×**.")
    if "synkro-records" in rate:
        lines.append(f"Fast path ÷ records path: {rate['synkro'] / rate['synkro-records']:.2f}×.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def main_http(args: argparse.Namespace) -> None:
    from benchmarks.common import machine, scratch_database

    bench = args.bench_python
    if not os.path.exists(bench):
        raise SystemExit(f"no benchmark environment at {bench}: bash benchmarks/peers_venv.sh")
    methods = ["synkro-http", "dlt-rest_api-merge", "dlt-rest_api-append"]
    code: dict[str, Path] = {}
    before_sha = ""
    if args.before:
        # Synkro as of another commit, interleaved beside this checkout's.
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from materialize_bench import export_commit

        before_sha, code["synkro-http-before"] = export_commit(args.before)
        methods.insert(1, "synkro-http-before")
    server, api = start_http_source(args.rows)
    load_start = os.getloadavg()[0]
    started_at = dt.datetime.now(dt.UTC)
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    try:
        with scratch_database(prefix="synkro_bench_peers", migrated=True) as dest:
            for round_no in range(args.rounds):
                for method in methods:
                    table = f"{method.replace('-', '_')}_{round_no}"
                    python = sys.executable if method.startswith("synkro") else bench
                    took = _child(
                        python, method.removesuffix("-before"), args.rows, dest, table,
                        api=api, code=code.get(method),
                    )  # fmt: skip
                    seconds[method].append(took)
                    print(f"round {round_no + 1} {method}: {took:.2f} s", file=sys.stderr)
    finally:
        server.kill()
    load_end = os.getloadavg()[0]
    rate = {m: args.rows / statistics.median(s) for m, s in seconds.items()}
    names = {
        "synkro-http": "Synkro: HttpConnector → DataLayer.load (merge by `id`), in process",
        "synkro-http-before": f"the same, Synkro as of commit `{before_sha}`"
        if args.before
        else "",
        "dlt-rest_api-merge": 'dlt `rest_api` → postgres, `write_disposition="merge"` on `id`',
        "dlt-rest_api-append": "dlt `rest_api` → postgres, default `append`",
    }
    lines = [
        "## Peers benchmark (HTTP → PostgreSQL, first load)",
        "",
        f"Run {started_at:%Y-%m-%d %H:%M} UTC on {machine()}; load average (1 min) at start / end:"
        f" {load_start:.1f} / {load_end:.1f} (the machine is shared with other work).",
        f"Command: `python benchmarks/peers_bench.py --source http --rows {args.rows}"
        f" --rounds {args.rounds}{f' --before {args.before}' if args.before else ''}`. {args.rows:,} records of 6 fields from the demo API (pages of"
        f" {HTTP_PAGE_SIZE:,} by page number, its own process, bodies pre-encoded by a warm-up"
        f" pass), methods interleaved in {args.rounds} rounds, each in a fresh process; medians of"
        " the child's own timing (imports excluded).",
        "",
        "| method | seconds per round | median records/s | ÷ dlt merge |",
        "|---|---|---:|---:|",
    ]
    for method in methods:
        runs = ", ".join(f"{s:.1f}" for s in seconds[method])
        lines.append(
            f"| {names[method]} | {runs} | {rate[method]:,.0f} |"
            f" {rate[method] / rate['dlt-rest_api-merge']:.2f}× |"
        )
    lines += [
        "",
        f"Synkro ÷ dlt `rest_api` (merge): **{rate['synkro-http'] / rate['dlt-rest_api-merge']:.2f}×**;"
        f" ÷ dlt `rest_api` (append): {rate['synkro-http'] / rate['dlt-rest_api-append']:.2f}×"
        " (target ≥ 5× in process).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
