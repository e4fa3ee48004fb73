"""Soak test of the sync state: hundreds of generated sequences of source changes, syncs, crashed
syncs (kill -9) and concurrent syncs against the real text-comparing HTTP source and PostgreSQL.

    python benchmarks/sync_state_soak.py --sequences 200

Prints one JSON line (sequences, syncs, crashes, concurrent pairs, checks, failures, seconds) and
exits non-zero on any lost, duplicated or stale row. docs/reliability.md reports the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_SERVER_URL, machine, scratch_database
from hypothesis import HealthCheck, given, settings

from synkro_dagster.database import get_engine
from synkro_dagster.datalayer.migrations import migrate
from synkro_dagster_tests.statemodel import Outcome, run_sequence, sequences
from synkro_dagster_tests.textsource import serve_text_source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL)
    args = parser.parse_args()

    totals = Outcome()
    failures: list[str] = []
    numbers = itertools.count(1)
    started = time.monotonic()
    with (
        scratch_database(args.server_url, prefix="synkro_soak") as url,
        serve_text_source() as source,
        tempfile.TemporaryDirectory() as scratch,
    ):
        migrate(get_engine(url))
        source.define("items", "updated_at")
        source.define("events", "at")

        @settings(
            max_examples=args.sequences,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(ops=sequences)
        def soak(ops: list) -> None:
            number = next(numbers)
            folder = Path(scratch) / f"seq{number}"
            folder.mkdir()
            try:
                outcome = run_sequence(source, url, folder, f"soak{number}", ops)
            except AssertionError as error:
                failures.append(f"{error} (steps: {ops})")
                raise
            totals.syncs += outcome.syncs
            totals.crashes += outcome.crashes
            totals.concurrent += outcome.concurrent
            totals.checks += outcome.checks

        # A failure is reported below (hypothesis shrinks it to the smallest failing sequence).
        with contextlib.suppress(AssertionError):
            soak()
        get_engine(url).dispose()
    result = {
        "sequences": next(numbers) - 1,
        "syncs": totals.syncs,
        "crashed_syncs": totals.crashes,
        "concurrent_pairs": totals.concurrent,
        "table_checks": totals.checks,
        "failures": len(failures),
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine(),
    }
    for failure in failures[:3]:
        print(failure, file=sys.stderr)
    print(json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
