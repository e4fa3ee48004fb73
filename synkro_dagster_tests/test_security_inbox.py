"""A client controls its inbox, so symbolic links in it are never followed: a linked file is
quarantined (the link itself), a linked or blocked processed/ or quarantine/ stops the run before
anything is committed, and moves cannot be redirected into another tenant's inbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.files_inbox import InboxError, move_to_processed, move_to_quarantine
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
from synkro_dagster_tests.files_corpus import drop, drops_spec, integration

ORDERS = "id,amount\n1,10.5\n2,20\n"
SECRET = "id,amount\n666,999\n"


def _sync(database_url: str, root: Path, id: str = "acme") -> None:
    source = drops_spec()
    stream = source.stream("orders")
    connector = FileDropConnector(inbox_root=str(root), stable_seconds=0)
    with connector.session(source, integration(id, "drops")) as session:
        DataLayer(database_url=database_url).load(
            TableTarget.for_stream(source, stream),
            session.read(stream, None),
            LoadContext(tenant_id=f"tenant-{id}", integration_id=id, stream="orders", run_id="r"),
        )


def _ids(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        exists = conn.exec_driver_sql("select to_regclass('public.drops_orders')").scalar()
        if exists is None:
            return []
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "select tenant_id, id from public.drops_orders order by 1, 2"
            )
        ]


@pytest.fixture
def inboxes(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "inbox"
    (root / "acme").mkdir(parents=True)
    (root / "bolt").mkdir(parents=True)
    return root, root / "acme", root / "bolt"


def test_a_symlinked_processed_folder_cannot_move_files_into_another_inbox(
    database_url: str, engine: sa.Engine, inboxes
) -> None:
    root, acme, bolt = inboxes
    drop(acme, "orders_1.csv", ORDERS)
    (acme / "processed").symlink_to("../bolt", target_is_directory=True)
    with pytest.raises(InboxError) as refused:
        _sync(database_url, root)
    assert f"{acme / 'processed'} is a symbolic link (to ../bolt)" in str(refused.value)
    assert _ids(engine) == []  # nothing committed
    assert (acme / "orders_1.csv").is_file()
    assert sorted(p.name for p in bolt.iterdir()) == []
    # bolt's own sync does not pick up anything of acme's either.
    _sync(database_url, root, "bolt")
    assert _ids(engine) == []


def test_a_symlinked_quarantine_folder_is_refused(
    database_url: str, engine: sa.Engine, inboxes, tmp_path: Path
) -> None:
    root, acme, _ = inboxes
    outside = tmp_path / "outside"
    outside.mkdir()
    drop(acme, "orders_1.csv", "not,a\nvalid")
    (acme / "quarantine").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InboxError, match="quarantine is a symbolic link"):
        _sync(database_url, root)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("folder", ["processed", "quarantine"])
def test_a_plain_file_named_like_a_folder_is_a_clear_error_before_commit(
    database_url: str, engine: sa.Engine, inboxes, folder: str
) -> None:
    root, acme, _ = inboxes
    drop(acme, "orders_1.csv", ORDERS)
    (acme / folder).write_text("I am a file")
    with pytest.raises(InboxError) as refused:
        _sync(database_url, root)
    assert f"{acme / folder} is a file, not a folder" in str(refused.value)
    assert "Rename or remove the file" in str(refused.value)
    assert _ids(engine) == []
    assert (acme / "orders_1.csv").is_file()


def test_a_symlinked_data_file_is_quarantined_not_read(
    database_url: str, engine: sa.Engine, inboxes
) -> None:
    root, acme, bolt = inboxes
    drop(bolt, "orders_secret.csv", SECRET)
    drop(acme, "orders_1.csv", ORDERS)
    (acme / "orders_2.csv").symlink_to("../bolt/orders_secret.csv")
    (acme / "orders_3.csv").symlink_to("/etc/passwd")
    _sync(database_url, root)
    assert _ids(engine) == [("tenant-acme", 1), ("tenant-acme", 2)]
    for name, target in (
        ("orders_2.csv", "../bolt/orders_secret.csv"),
        ("orders_3.csv", "/etc/passwd"),
    ):
        moved = acme / "quarantine" / name
        assert moved.is_symlink() and os.readlink(moved) == target  # the link moved, not its target
        note = (acme / "quarantine" / f"{name}.error.txt").read_text()
        assert f"error: {name} is a symbolic link (to {target})" in note
    assert (bolt / "orders_secret.csv").read_text() == SECRET
    assert not (acme / "orders_2.csv").exists()


def test_a_symlinked_manifest_is_quarantined_with_its_file(
    database_url: str, engine: sa.Engine, inboxes
) -> None:
    root, acme, _ = inboxes
    drop(acme, "orders_1.csv", ORDERS)
    (acme / "orders_1.csv.sha256").symlink_to("/etc/hostname")
    _sync(database_url, root)
    assert _ids(engine) == []
    note = (acme / "quarantine" / "orders_1.csv.error.txt").read_text()
    assert "its manifest orders_1.csv.sha256 is a symbolic link (to /etc/hostname)" in note
    assert (acme / "quarantine" / "orders_1.csv.sha256").is_symlink()


def test_a_symlinked_inbox_is_refused(database_url: str, engine: sa.Engine, inboxes) -> None:
    root, acme, bolt = inboxes
    drop(bolt, "orders_secret.csv", SECRET)
    os.rmdir(acme)
    acme.symlink_to(bolt, target_is_directory=True)
    with pytest.raises(InboxError, match="is a symbolic link"):
        _sync(database_url, root)
    assert _ids(engine) == []
    assert (bolt / "orders_secret.csv").is_file()


def test_moves_do_not_follow_a_folder_swapped_for_a_link_after_the_check(inboxes) -> None:
    _, acme, bolt = inboxes
    loaded = drop(acme, "orders_1.csv", ORDERS)
    drop(acme, "orders_1.csv.sha256", "x")
    (acme / "processed").symlink_to(bolt, target_is_directory=True)
    with pytest.raises(InboxError):
        move_to_processed(loaded)
    (acme / "quarantine").symlink_to(bolt, target_is_directory=True)
    with pytest.raises(InboxError):
        move_to_quarantine(loaded, "bad", {})
    assert loaded.is_file() and (acme / "orders_1.csv.sha256").is_file()
    assert list(bolt.iterdir()) == []
