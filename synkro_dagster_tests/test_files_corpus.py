"""Malformed files are quarantined with a precise reason while the good files of the same drop
load; half-written files are never read; manifests are checked; moves never overwrite."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.files_inbox import ready_files, stream_options
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import (
    corpus,
    drain,
    drop,
    drops_spec,
    good_files,
    integration,
    read_stream,
    sha256,
)


def _read_everything(root: Path, connector: FileDropConnector | None = None):
    source = drops_spec()
    connector = connector or FileDropConnector(inbox_root=str(root), stable_seconds=0)
    results = {}
    with connector.session(source, integration()) as session:
        for stream in source.streams:
            read = session.read(stream, None)
            results[stream.name] = (read, drain(read))
    return results


def test_each_malformed_file_is_quarantined_with_its_reason_and_good_files_load(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "acme"
    bad = corpus()
    assert len(bad) >= 15
    for item in bad:
        drop(inbox, item.name, item.content)
    drop(inbox, "orders_manifest.csv.sha256", f"{'0' * 64}  orders_manifest.csv\n")
    for name, content in good_files().items():
        drop(inbox, name, content)

    results = _read_everything(tmp_path)

    loaded = {name for _, out in results.values() for name in out.records}
    assert loaded == set(good_files())
    rejected = {name: error for _, out in results.values() for name, error in out.rejected.items()}
    assert set(rejected) == {item.name for item in bad}
    quarantine = inbox / "quarantine"
    for item in bad:
        assert (quarantine / item.name).read_bytes() == item.content
        report = (quarantine / f"{item.name}.error.txt").read_text(encoding="utf-8")
        for expected in item.expected:
            assert expected in report, f"{item.name}: {expected!r} not in\n{report}"
        assert f"sha256: {sha256(item.content)}" in report
        assert "stream: " in report and "integration: acme" in report
    # The manifest travels with its file.
    assert (quarantine / "orders_manifest.csv.sha256").exists()
    assert sorted(os.listdir(inbox / "processed")) == sorted(good_files())
    assert sorted(p.name for p in inbox.iterdir()) == ["processed", "quarantine"]
    stats = {name: read.stats for name, (read, _) in results.items()}
    assert sum(s.files for s in stats.values()) == len(good_files())
    assert sum(s.files_rejected for s in stats.values()) == len(bad)


def test_a_bad_row_late_in_a_file_rejects_the_whole_file(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i}.5\n" for i in range(1, 2500)) + "2500,oops\n"
    drop(tmp_path / "acme", "orders_1.csv", "id,amount\n" + rows)
    read, out = read_stream(tmp_path, "orders", batch_rows=1000)
    assert out.records == {}
    assert (
        "orders_1.csv line 2501, column 'amount': 'oops' is not a number"
        in (out.rejected["orders_1.csv"])
    )
    assert (read.stats.files, read.stats.files_rejected) == (0, 1)


def test_header_only_is_a_valid_empty_file(tmp_path: Path) -> None:
    drop(tmp_path / "acme", "orders_1.csv", b"id,amount\r\n")
    read, out = read_stream(tmp_path, "orders")
    assert out.records == {"orders_1.csv": []}
    assert (tmp_path / "acme" / "processed" / "orders_1.csv").exists()


def test_a_matching_manifest_is_accepted(tmp_path: Path) -> None:
    content = b"id,amount\n1,2\n"
    drop(tmp_path / "acme", "orders_1.csv", content)
    drop(tmp_path / "acme", "orders_1.csv.sha256", f"{sha256(content).upper()}  orders_1.csv\n")
    _, out = read_stream(tmp_path, "orders")
    assert len(out.records["orders_1.csv"]) == 1
    assert (tmp_path / "acme" / "processed" / "orders_1.csv.sha256").exists()


def _source_requiring_manifest() -> SourceSpec:
    raw = drops_spec().model_dump(by_alias=True, exclude_none=True)
    raw["files"] = {"require_manifest": True}
    return SourceSpec.model_validate(raw)


def test_a_file_waits_for_its_manifest_when_the_spec_requires_one(tmp_path: Path) -> None:
    source = _source_requiring_manifest()
    content = b"id,amount\n1,2\n"
    drop(tmp_path / "acme", "orders_1.csv", content)
    _, out = read_stream(tmp_path, "orders", source)
    assert out.records == {} and out.rejected == {}
    drop(tmp_path / "acme", "orders_1.csv.sha256", sha256(content))
    _, out = read_stream(tmp_path, "orders", source)
    assert list(out.records) == ["orders_1.csv"]


@pytest.mark.parametrize("name", ["orders_1.csv.tmp", "orders_1.csv.partial", ".orders_1.csv"])
def test_upload_in_progress_files_are_never_read(tmp_path: Path, name: str) -> None:
    drop(tmp_path / "acme", name, b"id,amount\n1,2\n")
    _, out = read_stream(tmp_path, "orders")
    assert out.records == {} and out.rejected == {}
    assert (tmp_path / "acme" / name).exists()


def test_a_file_changed_within_the_stability_window_is_not_read(tmp_path: Path) -> None:
    inbox = tmp_path / "acme"
    drop(inbox, "orders_old.csv", b"id,amount\n1,2\n", age=60)
    time.sleep(1.2)
    drop(inbox, "orders_growing.csv", b"id,amount\n1,2\n", age=0)
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=1)
    source = drops_spec()
    with connector.session(source, integration()) as session:
        out = drain(session.read(source.stream("orders"), None))
    assert list(out.records) == ["orders_old.csv"]
    assert (inbox / "orders_growing.csv").exists()
    # An old mtime set by a copy tool does not make a file that was just written look stable:
    # the change time (ctime) counts too.
    past = time.time() - 3600
    os.utime(inbox / "orders_growing.csv", (past, past))
    listed = ready_files(inbox, stream_options(source), stable_seconds=1)
    assert [f.path.name for f in listed] == []


def test_a_file_that_changes_while_being_hashed_is_left_for_later(tmp_path: Path) -> None:
    inbox = tmp_path / "acme"
    path = drop(inbox, "orders_1.csv", b"id,amount\n1,2\n")
    source = drops_spec()
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0)
    with connector.session(source, integration()) as session:
        parts = session.read(source.stream("orders"), None).parts
        # A writer appends between the listing and the hash.
        import synkro_dagster.connectors.files as files_module

        original = files_module._hashes.hash

        def hash_then_append(dropped):
            digest = original(dropped)
            with path.open("ab") as handle:
                handle.write(b"2,3\n")
            return digest

        files_module._hashes.hash = hash_then_append
        try:
            assert list(parts) == []
        finally:
            files_module._hashes.hash = original
    assert path.exists()


def test_same_named_files_are_suffixed_not_overwritten(tmp_path: Path) -> None:
    inbox = tmp_path / "acme"
    for amount in (1, 2, 3):
        drop(inbox, "orders_1.csv", f"id,amount\n1,{amount}\n")
        read_stream(tmp_path, "orders")
        drop(inbox, "orders_bad.csv", f"id,amount\n1,x{amount}\n")
        read_stream(tmp_path, "orders")
    assert sorted(os.listdir(inbox / "processed")) == [
        "orders_1.1.csv",
        "orders_1.2.csv",
        "orders_1.csv",
    ]
    assert sorted(os.listdir(inbox / "quarantine")) == [
        "orders_bad.1.csv",
        "orders_bad.1.csv.error.txt",
        "orders_bad.2.csv",
        "orders_bad.2.csv.error.txt",
        "orders_bad.csv",
        "orders_bad.csv.error.txt",
    ]
    assert "'x3' is not a number" in (inbox / "quarantine/orders_bad.2.csv.error.txt").read_text()


def test_files_without_export_timestamps_are_applied_in_name_order(tmp_path: Path) -> None:
    inbox = tmp_path / "acme"
    # Modification times say nothing here (a copy tool sets them): the names are the order.
    drop(inbox, "orders_2026-11-02.csv", b"id,amount\n1,2\n", age=100)
    drop(inbox, "orders_2026-11-01.csv", b"id,amount\n1,3\n", age=50)
    drop(inbox, "orders_2026-11-03.csv", b"id,amount\n1,4\n", age=200)
    _, out = read_stream(tmp_path, "orders")
    assert list(out.records) == [
        "orders_2026-11-01.csv",
        "orders_2026-11-02.csv",
        "orders_2026-11-03.csv",
    ]


def test_files_whose_manifests_give_export_timestamps_are_applied_oldest_export_first(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "acme"
    stamps = {"orders_a.csv": "2026-11-03T01:30:00+03:00", "orders_b.csv": "2026-11-01T23:00:00Z"}
    stamps["orders_c.csv"] = "2026-11-02T12:00:00"  # naive: read as UTC
    for name, stamp in stamps.items():
        content = f"id,amount\n1,{len(name)}\n".encode()
        drop(inbox, name, content)
        drop(inbox, f"{name}.sha256", f"{sha256(content)}  {name}\n# exported_at: {stamp}\n")
    _, out = read_stream(tmp_path, "orders")
    # 2026-11-01T23:00Z, 2026-11-02T12:00Z, 2026-11-02T22:30Z
    assert list(out.records) == ["orders_b.csv", "orders_c.csv", "orders_a.csv"]


def test_files_of_other_streams_and_other_integrations_are_not_touched(tmp_path: Path) -> None:
    drop(tmp_path / "acme", "unrelated.csv", b"id\n1\n")
    drop(tmp_path / "other", "orders_1.csv", b"id,amount\n1,2\n")
    _, out = read_stream(tmp_path, "orders")
    assert out.records == {}
    assert (tmp_path / "acme" / "unrelated.csv").exists()
    assert (tmp_path / "other" / "orders_1.csv").exists()


def test_the_inbox_root_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SYNKRO_INBOX_ROOT", str(tmp_path / "root"))
    assert FileDropConnector().inbox("acme") == tmp_path / "root" / "acme"
    monkeypatch.delenv("SYNKRO_INBOX_ROOT")
    monkeypatch.setenv("SYNKRO_TEMP_DIR", str(tmp_path / "scratch"))
    assert FileDropConnector().inbox("acme") == tmp_path / "scratch" / "inbox" / "acme"
    assert FileDropConnector(inbox_root="/srv/inbox").inbox("acme") == Path("/srv/inbox/acme")


def test_errors_name_the_physical_line_after_multi_line_fields_and_blank_lines(
    tmp_path: Path,
) -> None:
    text = 'id,amount,note\n1,2,"two\nlines"\n\n2,3,"three\nmore\nlines"\n3,x,ok\n'
    drop(tmp_path / "acme", "orders_1.csv", text)
    _, out = read_stream(tmp_path, "orders")
    assert (
        "orders_1.csv line 8, column 'amount': 'x' is not a number"
        in (out.rejected["orders_1.csv"])
    )
    drop(tmp_path / "acme", "orders_2.csv", 'id,amount\n1,"a\nb"\n\n2,3,4\n')
    _, out = read_stream(tmp_path, "orders")
    assert "orders_2.csv line 5: 3 fields, the header has 2" in out.rejected["orders_2.csv"]


def test_a_file_with_its_manifest_needs_no_stability_wait(tmp_path: Path) -> None:
    inbox = tmp_path / "acme"
    content = b"id,amount\n1,2\n"
    drop(inbox, "orders_1.csv.sha256", sha256(content), age=0)
    drop(inbox, "orders_1.csv", content, age=0)
    drop(inbox, "orders_2.csv", content + b"2,3\n", age=0)
    listed = ready_files(inbox, stream_options(drops_spec()), stable_seconds=30)
    assert [f.path.name for f in listed] == ["orders_1.csv"]
