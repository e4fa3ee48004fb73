"""Randomized sync-state scenarios: a generated sequence of source changes (inserts, updates at
the boundary timestamp, late updates, deletes, a record repeated in a page) interleaved with syncs,
crashed syncs (`kill -9` of a syncing process) and two syncs at once, against the real local
text-comparing HTTP source and the real PostgreSQL data layer. After every sync the tables must
equal the model: 0 lost, 0 duplicated, 0 stale.

Used by `test_sync_state_random.py` (a few examples) and `benchmarks/sync_state_soak.py` (hundreds).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st

from synkro_dagster.connectors.http import HttpConnector
from synkro_dagster.contracts import Integration
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
from synkro_dagster.specs import SourceSpec, load_spec_file
from synkro_dagster_tests.textsource import TextSource, write_text_spec

BASE = datetime(2025, 12, 22, 0, 0, 0)
LOOKBACK_S = 3600
STREAMS = ("items", "events")


def stamp(second: int) -> str:
    """A source timestamp the way the text source writes it (no zone; text order = time order)."""
    return (BASE + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")


# --- the generated steps ------------------------------------------------------------------------

step = st.one_of(
    st.tuples(st.just("insert"), st.integers(1, 4)),
    st.tuples(st.just("update"), st.integers(0, 50)),
    st.tuples(st.just("update_at_boundary"), st.integers(0, 50)),
    st.tuples(st.just("late_update"), st.integers(0, 50), st.integers(0, LOOKBACK_S - 1)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.integers(0, 3)),
    st.tuples(st.just("event"), st.integers(1, 3)),
    st.tuples(st.just("late_event"), st.integers(0, LOOKBACK_S - 1)),
    st.tuples(st.just("repeat_in_page")),
    st.tuples(st.just("sync")),
    st.tuples(st.just("sync")),
    st.tuples(st.just("crash")),
    st.tuples(st.just("concurrent")),
)
sequences = st.lists(step, min_size=3, max_size=14)


# --- one sync, in this process or a forked one ---------------------------------------------------


def sync_once(
    database_url: str, spec_path: str, source_url: str, integration_id: str, run_id: str
) -> None:
    """Both streams of the text spec for one integration, the way a run syncs them."""
    spec = load_spec_file(Path(spec_path))
    layer = DataLayer(database_url=database_url)
    integration = Integration(integration_id, "acme", spec.name, {"base_url": source_url})
    connector = HttpConnector(max_retries=0, read_timeout=30.0)
    with connector.session(spec, integration) as session:
        for name in STREAMS:
            stream = spec.stream(name)
            layer.sync(
                TableTarget.for_stream(spec, stream),
                lambda start, stream=stream: session.read(stream, start),
                LoadContext(
                    tenant_id="acme", integration_id=integration_id, stream=name, run_id=run_id
                ),
            )


def _forked_sync(*args: str) -> None:
    # A forked child must not use the parent's pooled connections: fresh engines only.
    from synkro_dagster.database import _engine

    _engine.cache_clear()
    sync_once(*args)


# --- the scenario -------------------------------------------------------------------------------


@dataclass
class Outcome:
    syncs: int = 0
    crashes: int = 0
    concurrent: int = 0
    checks: int = 0
    problems: list[str] = field(default_factory=list)


class Scenario:
    """One generated sequence against a fresh integration id (tables are shared, rows are not)."""

    def __init__(
        self, source: TextSource, database_url: str, folder: Path, integration_id: str
    ) -> None:
        self.source = source
        self.database_url = database_url
        self.engine = sa.create_engine(database_url)
        self.spec: SourceSpec = write_text_spec(folder, lookback=f"{LOOKBACK_S}s")
        self.spec_path = str(folder / "textapi.yaml")
        self.integration = integration_id
        self.clock = 0
        self.next_id = 1
        self.next_event = 1
        self.last_synced_max = 0  # newest source timestamp at the last successful sync
        self.model_items: dict[int, tuple[str, str]] = {}
        self.model_events: dict[int, tuple[str, str]] = {}
        self.outcome = Outcome()
        self.runs = 0
        self.version = 0
        source.collections["items"] = {}
        source.collections["events"] = {}
        source.repeat_in_page = False
        source.delay = 0.0

    # -- source changes

    def _ids(self) -> list[int]:
        return sorted(self.source.collections["items"])

    def _pick(self, index: int) -> int | None:
        ids = self._ids()
        return ids[index % len(ids)] if ids else None

    def _put(self, record_id: int, second: int) -> None:
        # A fresh value every time: a stale row can never look current by accident.
        self.version += 1
        self.source.put(
            "items", {"id": record_id, "updated_at": stamp(second), "name": f"v{self.version}"}
        )

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "insert":
            for _ in range(op[1]):
                self._put(self.next_id, self.clock)
                self.next_id += 1
        elif kind == "update":
            record = self._pick(op[1])
            if record is not None:
                self._put(record, self.clock)
        elif kind == "update_at_boundary":
            # Dated exactly at the newest timestamp the last sync saw: the stored cursor.
            record = self._pick(op[1])
            if record is not None:
                self._put(record, self.last_synced_max)
        elif kind == "late_update":
            # Committed late: dated inside the lookback window before the stored cursor.
            record = self._pick(op[1])
            if record is not None:
                self._put(record, max(0, self.last_synced_max - op[2]))
        elif kind == "delete":
            record = self._pick(op[1])
            if record is not None:
                self.source.delete("items", record)
        elif kind == "tick":
            self.clock += op[1]
        elif kind == "event":
            for _ in range(op[1]):
                self._event(self.clock)
        elif kind == "late_event":
            self._event(max(0, self.last_synced_max - op[1]))
        elif kind == "repeat_in_page":
            self.source.repeat_in_page = not self.source.repeat_in_page
        elif kind == "sync":
            self.sync()
        elif kind == "crash":
            self.crash()
        elif kind == "concurrent":
            self.concurrent()

    def _event(self, second: int) -> None:
        self.source.put("events", {"id": self.next_event, "at": stamp(second), "name": "e"})
        self.next_event += 1

    # -- syncs

    def _run_id(self) -> str:
        self.runs += 1
        return f"{self.integration}-run{self.runs}"

    def _args(self) -> tuple[str, ...]:
        return (
            self.database_url,
            self.spec_path,
            self.source.url,
            self.integration,
            self._run_id(),
        )

    def _synced(self) -> None:
        """The source as it is now is what the tables must hold (deleted rows stay: deletes are
        not visible to an incremental read without a marker)."""
        for record in self.source.records("items"):
            self.model_items[record["id"]] = (record["updated_at"], record["name"])
        for record in self.source.records("events"):
            self.model_events[record["id"]] = (record["at"], record["name"])
        stamps = [r["updated_at"] for r in self.source.records("items")]
        stamps += [r["at"] for r in self.source.records("events")]
        if stamps:
            newest = max(stamps)
            self.last_synced_max = max(
                self.last_synced_max, int((datetime.fromisoformat(newest) - BASE).total_seconds())
            )

    def sync(self) -> None:
        sync_once(*self._args())
        self.outcome.syncs += 1
        self._synced()
        self.verify("after a sync")

    def crash(self) -> None:
        """A sync killed with SIGKILL in the middle of reading: nothing it did may remain."""
        self.source.delay = 0.3
        seen = len(self.source.requests)
        child = multiprocessing.get_context("fork").Process(
            target=_forked_sync, args=self._args(), daemon=True
        )
        child.start()
        deadline = time.monotonic() + 30
        while len(self.source.requests) == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        self.source.delay = 0.0
        self.outcome.crashes += 1
        self.verify("after a crashed sync")  # the model did not move

    def concurrent(self) -> None:
        """Two syncs of the same integration at once: they take turns on each stream."""
        self.source.delay = 0.02
        errors: list[BaseException] = []

        def run(args: tuple[str, ...]) -> None:
            try:
                sync_once(*args)
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=run, args=(self._args(),)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        self.source.delay = 0.0
        if errors:
            raise errors[0]
        self.outcome.concurrent += 1
        self._synced()
        self.verify("after two concurrent syncs")

    # -- the property

    def _table(self, table: str, cursor: str) -> list[tuple[int, str, str]]:
        with self.engine.connect() as conn:
            if not conn.execute(sa.text("select to_regclass(:t)"), {"t": table}).scalar():
                return []
            rows = conn.execute(
                sa.text(
                    f"select id, {cursor}::text, name from {table} where integration_id = :i"
                    " order by id"
                ),
                {"i": self.integration},
            )
            return [(int(r[0]), _iso(r[1]), r[2]) for r in rows]

    def verify(self, when: str) -> None:
        self.outcome.checks += 1
        items = self._table("public.textapi_items", "updated_at")
        events = self._table("public.textapi_events", "at")
        ids = [r[0] for r in items]
        want = {i: v for i, v in self.model_items.items()}
        got = {r[0]: (r[1], r[2]) for r in items}
        problems = []
        if len(ids) != len(set(ids)):
            problems.append(f"items duplicated: {sorted(i for i in ids if ids.count(i) > 1)}")
        lost = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        stale = sorted(i for i in set(want) & set(got) if want[i] != got[i])
        if lost:
            problems.append(f"items lost: {lost}")
        if extra:
            problems.append(f"items never in the source: {extra}")
        if stale:
            problems.append(f"items stale: {[(i, got[i], want[i]) for i in stale[:3]]}")
        event_ids = [r[0] for r in events]
        if len(event_ids) != len(set(event_ids)):
            problems.append(
                f"events appended twice: {sorted({i for i in event_ids if event_ids.count(i) > 1})}"
            )
        missing = sorted(set(self.model_events) - set(event_ids))
        if missing:
            problems.append(f"events lost: {missing}")
        if problems:
            message = f"{self.integration} {when}: " + "; ".join(problems)
            self.outcome.problems.append(message)
            raise AssertionError(message)

    def close(self) -> None:
        self.engine.dispose()


def _iso(value: str) -> str:
    return datetime.fromisoformat(value).strftime("%Y-%m-%dT%H:%M:%S")


def run_sequence(
    source: TextSource, database_url: str, folder: Path, integration_id: str, ops: list
) -> Outcome:
    """Apply `ops`, then a final sync; raise AssertionError at the first difference."""
    scenario = Scenario(source, database_url, folder, integration_id)
    try:
        for op in ops:
            scenario.apply(op)
        scenario.apply(("sync",))
        return scenario.outcome
    finally:
        scenario.close()
