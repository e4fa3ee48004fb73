"""Benchmarks one sync end to end: local HTTP API -> HttpConnector -> data layer -> PostgreSQL,
run through `dg.materialize` on a partition exactly as a run of sync_<spec> does.

Run: python benchmarks/materialize_bench.py [--records 100000] [--page-size 500]
         [--out benchmarks/results/materialize.md]

Each size runs in a fresh subprocess (its own scratch database and Dagster instance) so its peak
RSS (VmHWM) is its own. The API server runs in another process. Reported: records/s of the whole
materialization (run start to finish, including Dagster's own run overhead) and peak RSS at a
tenth of the records and at all of them — memory must stay flat as a stream grows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import peak_rss_of_this_process, run_child, scratch_database  # noqa: E402

SERVER_URL = os.environ.get(
    "SYNKRO_BENCH_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def child(api_url: str, records: int, page_size: int) -> dict:
    """One measured sync in this process; prints a JSON line with the numbers."""
    import dagster as dg
    import sqlalchemy as sa
    import yaml
    from http_bench import bench_spec

    from synkro_dagster.assets.factory import build_spec_assets, partitions_def_for
    from synkro_dagster.connectors.http import HttpConnector
    from synkro_dagster.datalayer.migrations import migrate
    from synkro_dagster.datalayer.resource import DataLayer
    from synkro_dagster.demo.api_server import Credentials
    from synkro_dagster.integrations.registry import IntegrationRegistry
    from synkro_dagster.integrations.resource import IntegrationsResource

    spec = bench_spec(page_size)
    specs_dir = Path(tempfile.mkdtemp(prefix="synkro-bench-specs-"))
    (specs_dir / "bench.yaml").write_text(
        yaml.safe_dump(spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    )
    os.environ["SYNKRO_SPECS_DIR"] = str(specs_dir)
    os.environ.setdefault("INTEGRATION_SECRET_KEY", "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs=")

    with scratch_database(SERVER_URL) as url:
        engine = sa.create_engine(url)
        migrate(engine)
        IntegrationRegistry(engine).add(
            "bench-1",
            spec="bench",
            tenant="bench",
            config={"base_url": api_url},
            secrets={"token": Credentials().bearer_token},
        )
        assets = build_spec_assets(spec)
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(partitions_def_for("bench").name, ["bench-1"])
            started = time.perf_counter()
            result = dg.materialize(
                [assets],
                partition_key="bench-1",
                instance=instance,
                resources={
                    "datalayer": DataLayer(database_url=url),
                    "integrations": IntegrationsResource(database_url=url),
                    "http_connector": HttpConnector(page_size=page_size),
                },
            )
            seconds = time.perf_counter() - started
        assert result.success
        with engine.connect() as conn:
            landed = conn.exec_driver_sql("select count(*) from public.bench_bench").scalar()
        engine.dispose()
    return {
        "records": records,
        "landed": landed,
        "seconds": seconds,
        "records_per_s": landed / seconds,
        "peak_rss_mb": peak_rss_of_this_process() / 2**20,
    }


def _run_child(api_url: str, records: int, page_size: int) -> dict:
    return run_child(
        __file__, "--child", api_url, "--records", str(records), "--page-size", str(page_size)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/materialize.md"))
    parser.add_argument("--child", metavar="API_URL")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.records, args.page_size)))
        return

    from http_bench import start_server

    # The API serves all of its bench records, so each size gets its own server.
    server, api_url = start_server(args.records // 10)
    try:
        small = _run_child(api_url, args.records // 10, args.page_size)
    finally:
        server.kill()
    server, api_url = start_server(args.records)
    try:
        large = _run_child(api_url, args.records, args.page_size)
    finally:
        server.kill()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = "\n".join(
        f"| {r['records']:,} | {r['landed']:,} | {r['seconds']:.1f} | {r['records_per_s']:,.0f} "
        f"| {r['peak_rss_mb']:.0f} |"
        for r in (small, large)
    )
    text = f"""# End-to-end sync benchmark (HTTP → PostgreSQL through `dg.materialize`)

Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.platform()}, Python
{platform.python_version()}, {os.cpu_count()} CPU(s), load average at the end {load}.
Command: `python benchmarks/materialize_bench.py --records {args.records} --page-size {args.page_size}`.

One partition of a one-stream HTTP spec (page-number pagination, bearer auth, `append`), the local
API in its own process, the data layer on the local PostgreSQL, Dagster's test instance. Each size
runs in a fresh process; seconds are the whole `dg.materialize` call (Dagster run overhead included).

| records | landed | seconds | records/s | peak RSS MB |
|---:|---:|---:|---:|---:|
{rows}

Peak RSS at {large["records"]:,} records / at {small["records"]:,} records:
**{large["peak_rss_mb"] / small["peak_rss_mb"]:.2f}×** for {large["records"] // small["records"]}× the data.
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
