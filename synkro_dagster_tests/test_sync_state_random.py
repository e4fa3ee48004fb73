"""Randomized sync state: generated sequences of source changes, syncs, crashed syncs (kill -9)
and concurrent syncs; after every sync the tables equal the source — 0 lost, 0 duplicated,
0 stale. A few examples here; `benchmarks/sync_state_soak.py` runs hundreds."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from synkro_dagster_tests.statemodel import run_sequence, sequences
from synkro_dagster_tests.textsource import TextSource, serve_text_source


@pytest.fixture(scope="module")
def source() -> Iterator[TextSource]:
    with serve_text_source() as server:
        server.define("items", "updated_at")
        server.define("events", "at")
        yield server


_numbers = itertools.count(1)


def test_the_model_checks_what_it_claims(source: TextSource, database_url: str, tmp_path: Path):
    # A fixed sequence with every kind of step, so the property below is known to bite.
    ops = [
        ("insert", 3),
        ("sync",),
        ("update_at_boundary", 1),
        ("insert", 1),
        ("repeat_in_page",),
        ("sync",),
        ("late_update", 0, 600),
        ("late_event", 300),
        ("event", 2),
        ("crash",),
        ("tick", 2),
        ("delete", 0),
        ("concurrent",),
    ]
    outcome = run_sequence(source, database_url, tmp_path, "fixed", ops)
    assert outcome.syncs == 3 and outcome.crashes == 1 and outcome.concurrent == 1
    assert outcome.problems == []


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=sequences)
def test_generated_sequences_keep_tables_equal_to_the_source(
    source: TextSource, database_url: str, tmp_path: Path, ops: list
) -> None:
    folder = tmp_path / f"seq{next(_numbers)}"
    folder.mkdir()
    outcome = run_sequence(source, database_url, folder, f"seq{next(_numbers)}", ops)
    assert outcome.problems == []
