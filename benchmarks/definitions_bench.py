"""Benchmarks loading the code location with many specs: 50 specs → assets, checks, jobs, sensors.

Run: python benchmarks/definitions_bench.py [--specs 50] [--out benchmarks/results/definitions.md]

Each measurement is a fresh process (as a code server starts): the imports, then reading and
validating the spec files and building the Definitions, then resolving the asset graph and jobs.
The specs are the shipped ones copied under new names (http, sql and files engines mixed).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import dagster
t1 = time.perf_counter()
from synkro_dagster.definitions import build_definitions
from synkro_dagster.specs import load_specs
t2 = time.perf_counter()
specs = load_specs()
defs = build_definitions(specs)
t3 = time.perf_counter()
defs.resolve_asset_graph()
defs.resolve_all_job_defs()
t4 = time.perf_counter()
print(json.dumps({"specs": len(specs), "import_dagster": t1 - t0, "import_synkro": t2 - t1,
                  "build": t3 - t2, "resolve": t4 - t3, "total": t4 - t0}))
"""


def make_specs(count: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="synkro-specs-"))
    shipped = sorted((ROOT / "synkro_dagster" / "specs").glob("*.yaml"))
    for i in range(count):
        source = shipped[i % len(shipped)]
        name = f"{source.stem}_{i:02d}"
        text = source.read_text(encoding="utf-8").replace(
            f"name: {source.stem}\n", f"name: {name}\n", 1
        )
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def measure(folder: Path) -> dict:
    env = {
        **os.environ,
        "SYNKRO_SPECS_DIR": str(folder),
        "SYNKRO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/definitions.md"))
    args = parser.parse_args()
    shipped = make_specs(len(list((ROOT / "synkro_dagster" / "specs").glob("*.yaml"))))
    many = make_specs(args.specs)
    rounds = {
        "shipped": [measure(shipped) for _ in range(args.rounds)],
        "many": [measure(many) for _ in range(args.rounds)],
    }

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[kind])

    rows = []
    for kind in ("shipped", "many"):
        rows.append(
            f"| {rounds[kind][0]['specs']} | {med(kind, 'import_dagster'):.2f} | "
            f"{med(kind, 'import_synkro'):.2f} | {med(kind, 'build'):.2f} | "
            f"{med(kind, 'resolve'):.2f} | {med(kind, 'total'):.2f} |"
        )
    per_spec = (
        med("many", "build")
        + med("many", "resolve")
        - med("shipped", "build")
        - med("shipped", "resolve")
    ) / (rounds["many"][0]["specs"] - rounds["shipped"][0]["specs"])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = f"""# Definitions load benchmark

Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.platform()}, Python
{platform.python_version()}, {os.cpu_count()} CPU(s), load average at the end {load}.
Command: `python benchmarks/definitions_bench.py --specs {args.specs} --rounds {args.rounds}`.
Medians of {args.rounds} fresh processes, seconds. No database or network is reachable
(SYNKRO_DATABASE_URL points at a closed port): the load touches neither.

| specs | import dagster | import synkro | read specs + build Definitions | resolve graph + jobs | total |
|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Each further spec costs about **{per_spec * 1000:.0f} ms** (read, validate, build, resolve).
"""
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
