"""Benchmarks the HTTP engine: HttpConnector records/s vs a bare httpx.Client loop, same pages.

Run: python benchmarks/http_bench.py [--pages 200] [--page-size 500] [--rounds 3]
         [--out benchmarks/results/http.md]

The local API (synkro_dagster/demo/api_server.py) runs in its own process so the client being
measured does not share a GIL with the server. Both paths fetch the same 200 pages x 500 records
over one pooled keep-alive connection and parse every page's JSON:
  - bare:   `client.get(url, params={page, per_page})`, `response.json()["data"]`, count;
  - synkro: `HttpConnector().session(spec, integration).read(stream, None)` with page-number
            pagination, bearer auth, retries, loop detection and stats, iterating the batches.
Rounds alternate bare / synkro so drift on the machine hits both alike; medians are the headline,
best rounds and client CPU time are shown too, and every round is listed.

The end-to-end HTTP -> PostgreSQL part (dg.materialize, peak RSS) is benchmarks/materialize_bench.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import start_demo_api  # noqa: E402
from synkro_dagster.connectors.http import HttpConnector  # noqa: E402
from synkro_dagster.contracts import Integration  # noqa: E402
from synkro_dagster.demo.api_server import Credentials  # noqa: E402
from synkro_dagster.specs.models import SourceSpec  # noqa: E402


def bench_spec(page_size: int) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": "bench",
            "engine": "http",
            "config": {"base_url": {}},
            "secrets": ["token"],
            "http": {
                "base_url": "{base_url}/test",
                "auth": {"kind": "bearer", "token_secret": "token"},
                "records": "data",
                "total": {"path": "meta.total"},
                "pagination": {
                    "kind": "page_number",
                    "page_size_param": "per_page",
                    "page_size": page_size,
                    "total_pages": "meta.total_pages",
                },
            },
            "streams": [
                {
                    "name": "bench",
                    "primary_key": "id",
                    "write_mode": "append",
                    "http": {"path": "/page_number/bench"},
                }
            ],
        }
    )


def run_bare(url: str, pages: int, page_size: int, token: str) -> tuple[int, float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    with httpx.Client(
        timeout=httpx.Timeout(60.0, connect=10.0),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    ) as client:
        for page in range(1, pages + 1):
            response = client.get(
                f"{url}/test/page_number/bench", params={"page": page, "per_page": page_size}
            )
            response.raise_for_status()
            count += len(response.json()["data"])
    return count, time.perf_counter() - started, time.process_time() - cpu


def run_synkro(url: str, page_size: int, token: str) -> tuple[int, float, float, int]:
    spec = bench_spec(page_size)
    integration = Integration(
        id="bench", tenant="bench", spec="bench", config={"base_url": url}, secrets={"token": token}
    )
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    with HttpConnector().session(spec, integration) as session:
        read = session.read(spec.streams[0], None)
        for part in read.parts:
            for batch in part.batches():
                count += len(batch)
    return count, time.perf_counter() - started, time.process_time() - cpu, read.stats.pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "http.md")
    args = parser.parse_args()
    total = args.pages * args.page_size
    token = Credentials().bearer_token
    process, url = start_demo_api(total)
    rows: list[tuple[int, str, float, float]] = []  # round, client, wall s, client CPU s
    try:
        # One unmeasured pass: the server encodes each page once and serves it from memory after,
        # so the rounds measure the clients.
        run_bare(url, args.pages, args.page_size, token)
        for number in range(1, args.rounds + 1):
            count, wall, cpu = run_bare(url, args.pages, args.page_size, token)
            assert count == total, count
            rows.append((number, "bare", wall, cpu))
            count, wall, cpu, pages = run_synkro(url, args.page_size, token)
            assert count == total and pages == args.pages, (count, pages)
            rows.append((number, "synkro", wall, cpu))
            print(f"round {number}: bare {rows[-2][2]:.2f}s, HttpConnector {wall:.2f}s")
    finally:
        process.terminate()
        process.wait(timeout=10)

    def median(client: str, index: int) -> float:
        values = sorted(row[index] for row in rows if row[1] == client)
        return values[len(values) // 2]

    def best(client: str, index: int) -> float:
        return min(row[index] for row in rows if row[1] == client)

    wall_ratio = median("bare", 2) / median("synkro", 2)
    best_ratio = best("bare", 2) / best("synkro", 2)
    cpu_ratio = median("bare", 3) / median("synkro", 3)
    names = {"bare": "bare httpx.Client loop", "synkro": "HttpConnector"}
    lines = [
        "# HTTP engine benchmark",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} on {platform.platform()}, "
        f"Python {platform.python_version()}, httpx {httpx.__version__}, "
        f"{os.cpu_count()} CPU(s), load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (other work shares the machine). "
        "Command: `python benchmarks/http_bench.py "
        f"--pages {args.pages} --page-size {args.page_size} --rounds {args.rounds}`.",
        "",
        f"{args.pages} pages x {args.page_size} records = {total:,} records from the local API "
        "(`synkro_dagster/demo/api_server.py`, its own process, HTTP/1.1 keep-alive, "
        "page-number pagination, bearer auth). Both clients parse every page's JSON.",
        "",
        "| round | client | seconds | records/s | client CPU s |",
        "|---|---|---:|---:|---:|",
    ]
    for number, client, wall, cpu in rows:
        lines.append(
            f"| {number} | {names[client]} | {wall:.2f} | {total / wall:,.0f} | {cpu:.2f} |"
        )
    lines += [
        "",
        "| measure | bare httpx.Client loop | HttpConnector | HttpConnector / bare |",
        "|---|---:|---:|---:|",
        f"| median records/s | {total / median('bare', 2):,.0f} | "
        f"{total / median('synkro', 2):,.0f} | **{wall_ratio:.2f}x** |",
        f"| best records/s | {total / best('bare', 2):,.0f} | {total / best('synkro', 2):,.0f} | "
        f"{best_ratio:.2f}x |",
        f"| median client CPU s | {median('bare', 3):.2f} | {median('synkro', 3):.2f} | "
        f"{cpu_ratio:.2f}x (speed) |",
        "",
        f"Target >= 0.8x of the bare loop's records/s (median rounds): "
        f"**{'met' if wall_ratio >= 0.8 else 'NOT met'}**.",
        "",
        "What HttpConnector does per page on top of the bare loop: rate budget check, auth "
        "header, a tenacity retry wrapper, a byte comparison with the previous page (repeated-page detection), the "
        "records selector, the total and stats, and one batch handed on.",
        "",
        "The server answers from pre-encoded pages after the warm-up pass, so most of each "
        "round is client work (HTTP parsing, JSON decoding). Other processes share the "
        "machine's CPUs, so single rounds vary; the rounds alternate the two clients and the "
        "medians are the headline, with client CPU time as a second, less noisy view.",
        "",
        "End-to-end HTTP -> PostgreSQL through `dg.materialize` (records/s, peak RSS): "
        "see materialize.md (`benchmarks/materialize_bench.py`).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
