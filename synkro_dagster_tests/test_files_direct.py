"""A file-drop first load into a new table COPYs its first clean CSV file straight into the target
(no staging, no merge) and lands exactly what staging lands: the same table (columns, types,
defaults, key, md5 of the rows), cursor, sync state, file ledger, processed and quarantined files
with the same messages. A file the direct COPY cannot land as staging would (a repeated key, a
value PostgreSQL refuses) is rolled back to its savepoint and staged; the other files still land.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.contracts import StreamRead
from synkro_dagster.datalayer.load import load_stream
from synkro_dagster.datalayer.resource import LoadContext, LoadStats, TableTarget
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import drop, integration
from synkro_dagster_tests.test_datalayer_direct import landed, sync_state

HEADER = b"id,amount,on,at,code,note\n"
GOOD_1 = HEADER + (
    b"1,1.50,2026-01-05,2026-01-05T10:00:00Z,b,x\n"
    b'2,,,,c,"multi\nline"\n'
    b"3,-2,2026-02-01,2026-02-01 00:00:00+03:00,a,\n"
)
GOOD_2 = HEADER + b"2,7,2026-03-01,,d,updated\n4,4e2,,,a,\n"
# A new column holding dates: the precise path reads it and types it.
LATER = b"id,amount,on,at,code,note,extra\n5,1,,,f,,2026-01-01\n"
# Key 1 twice: the merge keeps the latest (highest cursor).
REPEATED = GOOD_1 + b"1,9.99,2026-01-06,,e,again\n"
# A date of the right shape that PostgreSQL refuses: quarantined by the precise path.
NO_SUCH_DAY = HEADER + b"7,1,2026-02-30,,b,\n"
# An empty key, refused before PostgreSQL sees it: quarantined by the precise path.
EMPTY_KEY = HEADER + b",1,,,b,\n"


def _source() -> SourceSpec:
    stream = {
        "name": "orders",
        "primary_key": "id",
        "columns": {"id": "integer", "amount": "numeric", "on": "date", "at": "timestamptz"},
        "cursor": {"field": "code"},
        "files": {"pattern": "orders_*.csv"},
    }
    return SourceSpec.model_validate({"name": "direct", "engine": "files", "streams": [stream]})


def _load(
    engine: sa.Engine,
    root: Path,
    way: str,
    files: dict[str, bytes],
    direct: bool,
    integration_id: str = "acme",
    tenant: str = "t",
) -> tuple[StreamRead, LoadStats]:
    source = _source()
    inbox = root / way / integration_id
    for age, (name, content) in enumerate(files.items()):
        drop(inbox, name, content, age=1000 - age)
    stream = source.stream("orders")
    target = TableTarget.for_stream(source, stream)
    target = TableTarget(**{**target.__dict__, "table": f"orders_{way}"})
    connector = FileDropConnector(inbox_root=str(root / way), stable_seconds=0)
    context = LoadContext(
        tenant_id=tenant,
        integration_id=integration_id,
        stream=f"{way}_{integration_id}",
        run_id="r",
    )
    with connector.session(source, integration(integration_id, source.name)) as session:
        read = session.read(stream, None)
        stats = load_stream(engine, target, read, context, direct=direct)
    return read, stats


def _outcome(engine: sa.Engine, root: Path, way: str) -> dict[str, Any]:
    """What a reader can tell after the load, the load's own name masked."""
    inbox = root / way / "acme"
    errors = "\n".join(
        p.read_text(encoding="utf-8") for p in sorted((inbox / "quarantine").glob("*.error.txt"))
    )
    with engine.connect() as conn:
        ledger = conn.execute(
            sa.text(
                "select file_name, content_hash, dedupe, rows_loaded from synkro.processed_files"
                " where stream = :s order by file_name"
            ),
            {"s": f"{way}_acme"},
        ).all()
    table = landed(engine, f"orders_{way}")
    table["columns"] = [(c[0], *c[1:3], str(c[3]).replace(way, "<way>")) for c in table["columns"]]
    return {
        "table": table,
        "sync_state": sync_state(engine, f"{way}_acme"),
        "ledger": [tuple(row) for row in ledger],
        "processed": sorted(p.name for p in (inbox / "processed").glob("*")),
        "quarantined": sorted(p.name for p in (inbox / "quarantine").glob("*")),
        "errors": re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*", "<time>", errors),
    }


def _both(
    engine: sa.Engine, root: Path, files: dict[str, bytes], shared: bool = False
) -> tuple[StreamRead, LoadStats, LoadStats]:
    """The same files loaded with the direct path allowed and with it off; everything equal."""
    if shared:
        for way in ("direct", "staging"):
            other = {"orders_0.csv": HEADER + b"1,1,,,z,other\n9,9,,,y,\n"}
            _load(engine, root, way, other, direct=False, integration_id="other", tenant="u")
    direct_read, direct = _load(engine, root, "direct", files, direct=True)
    staging_read, staging = _load(engine, root, "staging", files, direct=False)
    assert _outcome(engine, root, "direct") == _outcome(engine, root, "staging")
    for key in (
        "cursor_after",
        "rows_read",
        "rows_inserted",
        "rows_updated",
        "duplicates_collapsed",
        "parts_loaded",
        "parts_rejected",
        "parts_skipped",
        "table_created",
        "columns_added",
        "types_widened",
    ):
        assert getattr(direct, key) == getattr(staging, key), key
    for stat in ("files", "files_rejected", "records", "bytes", "rejected", "read_paths"):
        assert getattr(direct_read.stats, stat) == getattr(staging_read.stats, stat), stat
    assert staging.load_path == "staging"
    return direct_read, direct, staging


@pytest.mark.parametrize(
    ("files", "path", "loaded", "rejected"),
    [
        ({"orders_1.csv": GOOD_1}, "direct", 1, 0),
        (
            {"orders_1.csv": GOOD_1, "orders_2.csv": GOOD_2, "orders_3.csv": LATER},
            "direct, then staging",
            3,
            0,
        ),
        ({"orders_1.csv": REPEATED, "orders_2.csv": GOOD_1}, "staging", 2, 0),
        ({"orders_1.csv": NO_SUCH_DAY, "orders_2.csv": GOOD_1}, "staging", 1, 1),
        (
            {"orders_1.csv": EMPTY_KEY, "orders_2.csv": GOOD_1, "orders_3.csv": GOOD_2},
            "direct, then staging",
            2,
            1,
        ),
        ({"orders_1.csv": HEADER, "orders_2.csv": GOOD_1}, "staging", 2, 0),
    ],
    ids=[
        "one-file",
        "several-files",
        "repeated-key",
        "refused-value-first",
        "empty-key-first",
        "header-only-first",
    ],
)
def test_a_first_file_load_lands_what_staging_lands(
    engine: sa.Engine,
    tmp_path: Path,
    files: dict[str, bytes],
    path: str,
    loaded: int,
    rejected: int,
) -> None:
    read, direct, _ = _both(engine, tmp_path, files)
    assert direct.load_path == path
    assert (direct.parts_loaded, direct.parts_rejected) == (loaded, rejected)
    assert read.stats.read_paths[name_of(files, GOOD_1)] == "csv_copy"


def name_of(files: dict[str, bytes], content: bytes) -> str:
    return next(name for name, found in files.items() if found == content)


def test_a_repeated_key_is_staged_and_keeps_the_latest_record(
    engine: sa.Engine, tmp_path: Path
) -> None:
    read, direct, _ = _both(engine, tmp_path, {"orders_1.csv": REPEATED})
    assert direct.load_path == "staging" and direct.duplicates_collapsed == 1
    assert read.stats.read_paths == {"orders_1.csv": "csv_copy"}
    assert read.stats.files == 1 and read.stats.records == 4  # the undone attempt not counted
    with engine.connect() as conn:
        assert conn.execute(sa.text("select code from orders_direct where id = 1")).scalar() == "e"


def test_a_refused_value_in_the_first_file_quarantines_it_with_the_precise_message(
    engine: sa.Engine, tmp_path: Path
) -> None:
    read, direct, _ = _both(engine, tmp_path, {"orders_1.csv": NO_SUCH_DAY, "orders_2.csv": GOOD_1})
    assert "orders_1.csv line 2" in read.stats.rejected[0][1]
    assert direct.rows_inserted == 3


def test_a_shared_table_with_another_integrations_rows_is_staged(
    engine: sa.Engine, tmp_path: Path
) -> None:
    _, direct, _ = _both(engine, tmp_path, {"orders_1.csv": GOOD_1}, shared=True)
    assert direct.load_path == "staging"
    assert landed(engine, "orders_direct")["rows"] == 5


def test_a_direct_file_is_loaded_once(engine: sa.Engine, tmp_path: Path) -> None:
    """The file's identity is recorded with its rows: dropped again, it is skipped."""
    _, first = _load(engine, tmp_path, "direct", {"orders_1.csv": GOOD_1}, direct=True)
    shutil.rmtree(tmp_path / "direct" / "acme" / "processed")
    read, again = _load(engine, tmp_path, "direct", {"orders_1.csv": GOOD_1}, direct=True)
    assert first.load_path == "direct"
    assert (first.parts_loaded, again.parts_loaded, again.parts_skipped) == (1, 0, 1)
    assert read.stats.records == 0 and landed(engine, "orders_direct")["rows"] == 3
