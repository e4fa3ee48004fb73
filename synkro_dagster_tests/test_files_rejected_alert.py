"""Rejected files are loud: the sync succeeds with the good files, its `files_rejected` check fails
(error severity, names and reasons in the metadata), and the rejected-files alert reaches a real
local webhook once per run, with secrets removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from synkro_dagster.assets.checks import FILES_REJECTED
from synkro_dagster.assets.factory import build_spec_assets, partitions_def_for
from synkro_dagster.automation import build_automation
from synkro_dagster.automation.rejected_files_alert import (
    RejectedFile,
    RejectedFilesAlert,
    build_rejected_files_alert_sensor,
    rejection_payload,
)
from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.specs import load_specs
from synkro_dagster.tags import run_tags
from synkro_dagster_tests.files_corpus import drop, drops_spec
from synkro_dagster_tests.resources import run_resources
from synkro_dagster_tests.test_automation_alerts import Receiver
from synkro_dagster_tests.test_automation_sensors import add_integration

SAMPLES = Path(__file__).resolve().parents[1] / "synkro_dagster/demo/samples/onec"
TOKEN = "tok_live_5e4d3c2b1a09"
HEADER = "Код;Наименование;Артикул;ЕдиницаИзмерения;Группа;Цена;СтавкаНДС;Услуга;ДатаИзменения\r\n"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def _tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    cursor: str | None,
    database_url: str,
) -> str:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=run_resources(database_url)
    )
    sensor(context)
    return context.cursor


def _sync(instance: dg.DagsterInstance, database_url: str, root: Path) -> Any:
    source = load_specs()["onec"]
    instance.add_dynamic_partitions(partitions_def_for("onec").name, ["acme-1c"])
    return dg.materialize(
        [build_spec_assets(source)],
        selection=["onec/nomenclature"],
        partition_key="acme-1c",
        instance=instance,
        resources=run_resources(
            database_url,
            files_connector=FileDropConnector(inbox_root=str(root), stable_seconds=0),
        ),
        tags=run_tags("acme-1c", "onec", "acme"),
        raise_on_error=False,
    )


def _drop_exports(inbox: Path) -> None:
    drop(
        inbox, "nomenclature_2026-11-01.csv", (SAMPLES / "nomenclature_2026-11-01.csv").read_bytes()
    )
    bad_price = f"00-9;Ключ;К-1;шт;Прочее;{TOKEN};10;Нет;01.11.2026 09:15:00\r\n"
    drop(inbox, "nomenclature_2026-11-02.csv", (HEADER + bad_price).encode("cp1251"))
    drop(inbox, "nomenclature_2026-11-03.csv", b"")


def test_rejected_files_fail_the_check_and_alert_once_while_the_run_succeeds(
    engine: sa.Engine, database_url: str, tmp_path: Path, receiver: Receiver, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)
    add_integration(engine, "acme-1c", spec="onec", tenant="acme", secrets={"password": TOKEN})
    sensor = build_rejected_files_alert_sensor()
    _drop_exports(tmp_path / "acme-1c")

    with dg.instance_for_test() as instance:
        cursor = _tick(sensor, instance, None, database_url)  # starts watching
        result = _sync(instance, database_url, tmp_path)

        assert result.success
        checks = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        rejected = next(c for c in checks if c.check_name == FILES_REJECTED)
        assert not rejected.passed
        assert rejected.severity == dg.AssetCheckSeverity.ERROR
        metadata = {k: v.value for k, v in rejected.metadata.items()}
        assert metadata["files_rejected"] == 2
        assert metadata["files"] == ["nomenclature_2026-11-02.csv", "nomenclature_2026-11-03.csv"]
        assert "line 2, column 'price': '***' is not a number" in metadata["reasons"]
        assert "the file is empty (no header row)" in metadata["reasons"]
        assert TOKEN not in repr(rejected)

        cursor = _tick(sensor, instance, cursor, database_url)
        # The next tick finds nothing new: one alert per run.
        _tick(sensor, instance, cursor, database_url)

    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["event"] == "synkro.files_rejected"
    assert (body["spec"], body["integration"], body["tenant"]) == ("onec", "acme-1c", "acme")
    assert body["run_id"] == result.run_id and body["files_rejected"] == 2
    assert [f["file"] for f in body["files"]] == [
        "nomenclature_2026-11-02.csv",
        "nomenclature_2026-11-03.csv",
    ]
    assert body["files"][0]["stream"] == "nomenclature"
    assert "column 'price': '***' is not a number" in body["files"][0]["reason"]
    assert TOKEN not in str(receiver.bodies)


def test_a_clean_sync_passes_the_check_and_sends_nothing(
    engine: sa.Engine, database_url: str, tmp_path: Path, receiver: Receiver, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_FORMAT", "slack")
    add_integration(engine, "acme-1c", spec="onec", tenant="acme")
    sensor = build_rejected_files_alert_sensor()
    drop(
        tmp_path / "acme-1c",
        "nomenclature_1.csv",
        (SAMPLES / "nomenclature_2026-11-01.csv").read_bytes(),
    )
    with dg.instance_for_test() as instance:
        cursor = _tick(sensor, instance, None, database_url)
        result = _sync(instance, database_url, tmp_path)
        _tick(sensor, instance, cursor, database_url)
    check = next(
        e.event_specific_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == FILES_REJECTED
    )
    assert check.passed
    assert receiver.bodies == []


def test_slack_and_telegram_texts_name_the_files() -> None:
    alert = RejectedFilesAlert(
        spec="onec",
        integration="acme-1c",
        tenant="acme",
        job="sync_onec",
        run_id="r-1",
        files_rejected=3,
        files=[RejectedFile("sales", "sales_1.csv", "sales_1.csv: the file is empty")],
        url="http://ui/runs/r-1",
    )
    text = rejection_payload(alert, "slack")["text"]
    assert text.splitlines() == [
        "Synkro rejected 3 file(s): onec / acme-1c (tenant acme)",
        "Run r-1 of sync_onec: the files are in the inbox's quarantine/ folder",
        "sales: sales_1.csv: sales_1.csv: the file is empty",
        "... and 2 more",
        "http://ui/runs/r-1",
    ]
    assert rejection_payload(alert, "telegram", "42")["chat_id"] == "42"
    with pytest.raises(ValueError, match="TELEGRAM_CHAT_ID"):
        rejection_payload(alert, "telegram")


def test_the_alert_sensor_comes_with_files_specs_only() -> None:
    specs = load_specs()
    _, sensors = build_automation(specs)
    assert "rejected_files_alert" in {s.name for s in sensors}
    _, sensors = build_automation({k: v for k, v in specs.items() if v.engine != "files"})
    assert "rejected_files_alert" not in {s.name for s in sensors}


def test_detected_encodings_and_an_uncertain_one_show_in_the_run(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    source = drops_spec()
    add_integration(engine, "acme", spec="drops", tenant="acme")
    drop(tmp_path / "acme", "orders_ru.csv", "id,amount,note\n1,5,Ромашка ООО\n".encode("cp1251"))
    drop(tmp_path / "acme", "orders_eu.csv", "id,amount,note\n2,10,price in €\n".encode("cp1252"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(partitions_def_for("drops").name, ["acme"])
        result = dg.materialize(
            [build_spec_assets(source)],
            selection=["drops/orders"],
            partition_key="acme",
            instance=instance,
            resources=run_resources(
                database_url,
                files_connector=FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0),
            ),
            raise_on_error=False,
        )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("drops_streams")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["encodings_detected"] == "orders_ru.csv: cp1251 (detected, confidence 1.00)"
    # The readable file passed through COPY; the other took the precise path, which refused it.
    paths = dict(line.split(": ", 1) for line in metadata["fast_path"].splitlines())
    assert paths["orders_ru.csv"] == "csv_copy"
    assert paths["orders_eu.csv"].startswith(
        "records (orders_eu.csv: its text encoding is uncertain"
    )
    assert metadata["files_csv_copy"] == 1
    assert (metadata["files"], metadata["files_rejected"]) == (1, 1)
    check = next(
        e.event_specific_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == FILES_REJECTED
    )
    assert not check.passed
    reasons = check.metadata["reasons"].value
    assert "orders_eu.csv: its text encoding is uncertain: cp1252 with confidence 0.50" in reasons
