"""Benchmarks one sync end to end: local HTTP API -> HttpConnector -> data layer -> PostgreSQL,
run through `dg.materialize` on a partition exactly as a run of sync_<spec> does.

Run: python benchmarks/materialize_bench.py [--records 100000] [--page-size 500]
         [--out benchmarks/results/materialize.md]
     python benchmarks/materialize_bench.py --cli [--rounds 5] [--before main]
         [--out benchmarks/results/cli_run.md]

`--cli` measures instead the fixed cost of a run launched from the command line, on the local
instance (the root dagster.yaml, its storage in a scratch folder) with a real `dagster-daemon`:
`dagster asset materialize` (in process) and `synkro backfill --wait` (queued, launched by the
daemon in its own run worker), an incremental sync of the demo shop (nothing new to land), split
into phases by the run's event log. See cli_fixed_cost().

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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (  # noqa: E402
    machine,
    peak_rss_of_this_process,
    run_child,
    scratch_database,
    start_demo_api,
)

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


# ---------------------------------------------------------------- fixed cost of a CLI-launched run

# Modules a definitions load must not import: each costs tens to hundreds of milliseconds and is
# needed only inside a run that reads that kind of source (the test in test_definitions.py holds
# the same list).
HEAVY_MODULES = ("pandas", "numpy", "pyarrow", "openpyxl", "connectorx", "pymssql", "pgpq")

IMPORTS_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import dagster
t1 = time.perf_counter()
import synkro
t2 = time.perf_counter()
synkro.defs.get_repository_def()
t3 = time.perf_counter()
print(json.dumps({"dagster": t1 - t0, "synkro": t2 - t1, "resolve": t3 - t2,
                  "modules": sorted(m for m in sys.modules if "." not in m)}))
"""


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(start epoch, wall seconds) of one command."""
    import subprocess

    started_at, started = time.time(), time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return started_at, seconds


def _run_phases(instance, run_id: str) -> dict[str, float]:
    """Epoch seconds of the run's milestones from its event log."""
    import dagster as dg

    names = {
        dg.DagsterEventType.RUN_ENQUEUED: "enqueued",
        dg.DagsterEventType.RUN_STARTING: "starting",
        dg.DagsterEventType.RUN_START: "started",
        dg.DagsterEventType.RUN_SUCCESS: "success",
    }
    moments: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type in names:
            moments.setdefault(names[event.event_type], entry.timestamp)
    return moments


class CliCheckout:
    """One checkout of the project (this one, or an exported commit) with its own local instance
    (its dagster.yaml, storage in a scratch folder), data layer database and dagster-daemon."""

    def __init__(self, label: str, root: Path, api_url: str, database_url: str) -> None:
        from synkro_dagster.demo.api_server import Credentials

        self.label, self.root = label, root
        self.home = Path(tempfile.mkdtemp(prefix=f"synkro-bench-cli-{label}-"))
        text = (root / "dagster.yaml").read_text(encoding="utf-8")
        (self.home / "dagster.yaml").write_text(
            text.replace("temp/dagster_home", str(self.home / "storage")), encoding="utf-8"
        )
        self.bin = Path(sys.executable).parent
        self.env = {
            **os.environ,
            # The checkout's code first: an exported commit runs with this environment's packages.
            "PYTHONPATH": str(root),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_HOME": str(self.home),
            # As `. .venv/bin/activate` sets it for commands without a workspace.
            "DAGSTER_MODULE_NAME": "synkro",
            "SYNKRO_DATABASE_URL": database_url,
            "INTEGRATION_SECRET_KEY": "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs=",
            "BENCH_SHOP_TOKEN": Credentials().bearer_token,
            # No sensor ticks in the daemons while runs are timed.
            "SYNKRO_AUTOMATION_DEFAULT_STATUS": "stopped",
        }
        self.run([str(self.bin / "synkro"), "db", "migrate"])
        self.run(
            [str(self.bin / "synkro"), "integrations", "add", "bench-shop", "--spec", "shop",
             "--tenant", "bench", "--config", f"base_url={api_url}",
             "--secret", "api_token=@env:BENCH_SHOP_TOKEN"]
        )  # fmt: skip
        self.daemon: Any = None

    def run(self, args: list[str]) -> tuple[float, float]:
        return _timed(args, self.env, self.root)

    def start_daemon(self) -> None:
        import subprocess

        self.daemon = subprocess.Popen(
            [str(self.bin / "dagster-daemon"), "run"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop_daemon(self) -> None:
        import signal

        if self.daemon is not None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            self.daemon.wait(timeout=60)

    def imports(self) -> dict:
        """Import times of a fresh interpreter loading the definitions (code server, run worker)."""
        import subprocess

        out = subprocess.run(
            [sys.executable, "-c", IMPORTS_CHILD],
            cwd=self.root,
            env={**self.env, "SYNKRO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])

    def round(self) -> dict[str, float]:
        import dagster as dg

        materialize = [
            str(self.bin / "dagster"), "asset", "materialize",
            "--select", "group:shop and not key:shop/daily_sales", "--partition", "bench-shop",
        ]  # fmt: skip
        backfill = [str(self.bin / "synkro"), "backfill", "shop", "-i", "bench-shop", "--wait"]
        _, materialize_s = self.run(materialize)
        started_at, backfill_s = self.run(backfill)
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            [run] = instance.get_runs(limit=1)
            m = _run_phases(instance, run.run_id)
        return {
            "backfill": backfill_s,
            "submit": m["enqueued"] - started_at,
            "queue": m["starting"] - m["enqueued"],
            "worker": m["started"] - m["starting"],
            "sync": m["success"] - m["started"],
            "notice": started_at + backfill_s - m["success"],
            "materialize": materialize_s,
        }


def export_commit(ref: str) -> tuple[str, Path]:
    """`ref` of this repository exported (git archive) into temp/; (short hash, folder)."""
    import subprocess

    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = ROOT / "temp" / f"bench-checkout-{sha}"
    if not folder.exists():
        folder.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", sha], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return sha, folder


def cli_fixed_cost(rounds: int, before_ref: str | None) -> dict:
    """Rounds of both ways of launching, this checkout and (interleaved) `before_ref`'s."""
    import statistics

    roots = {"now": ROOT}
    before_sha = None
    if before_ref:
        before_sha, roots["before"] = export_commit(before_ref)
    server, api_url = start_demo_api(1_000)
    results: dict[str, list[dict]] = {label: [] for label in roots}
    imports: dict[str, list[dict]] = {label: [] for label in roots}
    checkouts: list[CliCheckout] = []
    try:
        with (
            scratch_database(SERVER_URL) as url_now,
            scratch_database(SERVER_URL) as url_before,
        ):
            urls = {"now": url_now, "before": url_before}
            for label, root in roots.items():
                checkout = CliCheckout(label, root, api_url, urls[label])
                checkout.start_daemon()
                checkouts.append(checkout)
            for checkout in checkouts:
                # The first full load, and each daemon's code server started.
                checkout.run([str(checkout.bin / "synkro"), "backfill", "shop", "-i", "bench-shop"])
            for checkout in checkouts:
                checkout.round()
            for _ in range(rounds):
                for checkout in checkouts:
                    results[checkout.label].append(checkout.round())
                    imports[checkout.label].append(checkout.imports())
    finally:
        for checkout in checkouts:
            checkout.stop_daemon()
        server.kill()

    def med(of: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in of)

    return {
        "before_ref": before_sha,
        "rounds": results,
        "median": {
            label: {key: med(rows, key) for key in rows[0]} for label, rows in results.items()
        },
        "imports": {
            label: {key: med(rows, key) for key in ("dagster", "synkro", "resolve")}
            for label, rows in imports.items()
        },
        "heavy": {
            label: sorted(set(HEAVY_MODULES) & set(rows[0]["modules"]))
            for label, rows in imports.items()
        },
        "load": os.getloadavg(),
    }


CLI_PHASES = (
    ("backfill", "`synkro backfill shop -i <id> --wait`, end to end"),
    ("submit", "… command start → run queued (CLI start, backfill submitted)"),
    ("queue", "… queued → launched by the daemon's run queue"),
    ("worker", "… launched → run worker started (process, imports, definitions, instance)"),
    ("sync", "… run started → success (the sync: 6 streams, resources, events)"),
    ("notice", "… run success → command exits (polling, summary)"),
    ("materialize", "`dagster asset materialize` (one process, no queue), end to end"),
)
IMPORT_PHASES = (
    ("dagster", "fresh process: `import dagster`"),
    ("synkro", "fresh process: `import synkro` after it (specs → Definitions)"),
    ("resolve", "fresh process: resolve the repository"),
)


def cli_main(args: argparse.Namespace) -> None:
    load_start = os.getloadavg()
    result = cli_fixed_cost(args.rounds, args.before)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    labels = list(result["median"])
    med, imports = result["median"], result["imports"]
    if len(labels) == 2:
        head = f"| phase | before (`{result['before_ref']}`) s | now s | now ÷ before |"
        head += "\n|---|---:|---:|---:|"
    else:
        head = "| phase | s |\n|---|---:|"

    def row(label: str, values: dict[str, dict], key: str) -> str:
        if len(labels) == 1:
            return f"| {label} | {values['now'][key]:.2f} |"
        then, now = values["before"][key], values["now"][key]
        return f"| {label} | {then:.2f} | {now:.2f} | {now / then:.2f} |"

    rows = [row(label, med, key) for key, label in CLI_PHASES]
    rows += [row(label, imports, key) for key, label in IMPORT_PHASES]
    rounds = "\n".join(
        f"- {label}: "
        + "; ".join(
            f"{r['backfill']:.1f} / {r['materialize']:.1f}" for r in result["rounds"][label]
        )
        for label in labels
    )
    heavy = "; ".join(f"{label}: {', '.join(v) or 'none'}" for label, v in result["heavy"].items())
    load = " / ".join(f"{x[0]:.1f}" for x in (load_start, result["load"]))
    before = f" --before {args.before}" if args.before else ""
    text = f"""# Fixed cost of a CLI-launched run

Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}; Python
{platform.python_version()}; load average (1 min) at start / end: {load} (the machine is shared).
Command: `python benchmarks/materialize_bench.py --cli --rounds {args.rounds}{before}`.

Each checkout (this one and, with `--before`, an exported commit) gets its local instance (its
root `dagster.yaml`: SQLite storage, the run queue, runs in local processes) in a scratch folder,
its own `dagster-daemon` and data layer database; the demo shop API runs in its own process. After
a first full load, each round runs an incremental sync of one integration of the shipped `shop`
spec (6 streams, nothing new to land) both ways, the checkouts interleaved round by round; medians
of {args.rounds} rounds, seconds. The phases come from the run's event log (`RUN_ENQUEUED`,
`RUN_STARTING`, `RUN_START`, `RUN_SUCCESS`).

{head}
{chr(10).join(rows)}

Rounds (backfill / materialize, s):
{rounds}

Modules among {", ".join(HEAVY_MODULES)} that a definitions load imports: {heavy}.
"""
    out = Path(args.out or ROOT / "benchmarks/results/cli_run.md")
    out.write_text(text, encoding="utf-8")
    print(text)


def _run_child(api_url: str, records: int, page_size: int) -> dict:
    return run_child(
        __file__, "--child", api_url, "--records", str(records), "--page-size", str(page_size)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", metavar="API_URL")
    parser.add_argument("--cli", action="store_true", help="the fixed cost of a CLI-launched run")
    parser.add_argument("--rounds", type=int, default=5, help="with --cli: rounds (medians)")
    parser.add_argument("--json", help="with --cli: also write the raw numbers here")
    parser.add_argument(
        "--before", help="with --cli: a git ref (e.g. main) to measure interleaved beside this one"
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.records, args.page_size)))
        return
    if args.cli:
        cli_main(args)
        return
    args.out = args.out or str(ROOT / "benchmarks/results/materialize.md")

    # The API serves all of its bench records, so each size gets its own server.
    server, api_url = start_demo_api(args.records // 10)
    try:
        small = _run_child(api_url, args.records // 10, args.page_size)
    finally:
        server.kill()
    server, api_url = start_demo_api(args.records)
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
