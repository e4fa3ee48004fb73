"""The file-drop sensor: new complete files → one run per integration with a stable run key;
quiet inboxes, half-written files and disabled integrations → skip, with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from synkro_dagster.automation.file_drop import build_file_drop_sensor, build_file_drop_sensors
from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.datalayer.resource import DataLayer
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.specs import load_specs
from synkro_dagster_tests.files_corpus import drop, drops_spec, sha256
from synkro_dagster_tests.resources import run_resources

SALES = "НомерДокумента;ДатаДокумента;НомерСтроки\r\nРТ-1;01.11.2026;1\r\n".encode("cp1251")


@pytest.fixture
def registry(engine: sa.Engine) -> IntegrationRegistry:
    registry = IntegrationRegistry(engine)
    registry.add("acme-1c", spec="onec", tenant="acme")
    registry.add("beta-1c", spec="onec", tenant="beta")
    registry.add("gamma-1c", spec="onec", tenant="gamma", enabled=False)
    return registry


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    # One instance for the module: the sensor only reads it, and starting one is slow.
    with dg.instance_for_test() as instance:
        yield instance


def _tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    root: Path,
    cursor: str | None = None,
    stable_seconds: float = 0,
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "files_connector": FileDropConnector(
                inbox_root=str(root), stable_seconds=stable_seconds
            ),
            # The registry the `registry` fixture filled: SYNKRO_DATABASE_URL names its database.
            "integrations": IntegrationsResource(),
        },
    )
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _sensor() -> dg.SensorDefinition:
    return build_file_drop_sensor(load_specs()["onec"])


def test_new_files_give_one_run_per_integration_with_a_stable_run_key(
    registry: IntegrationRegistry, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    drop(tmp_path / "acme-1c", "sales_2026-11-01.csv", SALES)
    drop(tmp_path / "acme-1c", "nomenclature_2026-11-01.csv", b"x")
    drop(tmp_path / "beta-1c", "sales_2026-11-01.csv", SALES + b"\r\n")
    drop(tmp_path / "beta-1c", "notes.txt", b"not a stream's file")
    sensor = _sensor()
    assert sensor.name == "onec_file_drop" and sensor.job_name == "sync_onec"

    result = _tick(sensor, instance, tmp_path)
    requests = {r.partition_key: r for r in result.run_requests}
    assert set(requests) == {"acme-1c", "beta-1c"}
    assert requests["acme-1c"].tags == {
        "synkro/integration": "acme-1c",
        "synkro/tenant": "acme",
        "synkro/spec": "onec",
    }
    assert requests["acme-1c"].run_key.startswith("acme-1c:")
    # Partitions the registry sensor has not added yet are added in the same result.
    (added,) = result.dynamic_partitions_requests
    assert added.partitions_def_name == "onec__integrations"
    assert sorted(added.partition_keys) == ["acme-1c", "beta-1c"]
    assert len(result.cursor) <= 32

    # A fresh evaluation of the same files gives the same keys: Dagster never runs them twice.
    again = _tick(sensor, instance, tmp_path)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in result.run_requests]


def test_repeated_ticks_with_no_new_files_skip(
    registry: IntegrationRegistry, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    sensor = _sensor()
    empty = _tick(sensor, instance, tmp_path)
    assert not empty.run_requests
    assert "no new files in 2 inbox(es) of 'onec'" in empty.skip_reason.skip_message

    drop(tmp_path / "acme-1c", "sales_1.csv", SALES)
    first = _tick(sensor, instance, tmp_path)
    assert len(first.run_requests) == 1
    second = _tick(sensor, instance, tmp_path, cursor=first.cursor)
    assert not second.run_requests
    assert "no change since the last tick" in second.skip_reason.skip_message

    drop(tmp_path / "acme-1c", "sales_2.csv", SALES + b"\r\n")
    third = _tick(sensor, instance, tmp_path, cursor=second.cursor)
    (request,) = third.run_requests
    assert request.run_key != first.run_requests[0].run_key


def test_disabled_integrations_are_skipped_with_a_reason(
    registry: IntegrationRegistry, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    drop(tmp_path / "gamma-1c", "sales_1.csv", SALES)
    sensor = _sensor()
    result = _tick(sensor, instance, tmp_path)
    assert not result.run_requests
    assert "disabled, skipped: gamma-1c: 1 file(s) waiting" in result.skip_reason.skip_message

    registry.enable("gamma-1c")
    (request,) = _tick(sensor, instance, tmp_path).run_requests
    assert request.partition_key == "gamma-1c"


def test_files_still_being_written_do_not_trigger(
    registry: IntegrationRegistry, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    drop(tmp_path / "acme-1c", "sales_1.csv.tmp", SALES)
    sensor = _sensor()
    assert not _tick(sensor, instance, tmp_path).run_requests
    # Just written (the change time is now) and no manifest: inside the stability window.
    (tmp_path / "acme-1c" / "sales_1.csv.tmp").rename(tmp_path / "acme-1c" / "sales_1.csv")
    assert not _tick(sensor, instance, tmp_path, stable_seconds=30).run_requests
    assert len(_tick(sensor, instance, tmp_path, stable_seconds=0).run_requests) == 1
    # With its manifest beside it, a file came through the upload protocol: no wait.
    drop(tmp_path / "beta-1c", "sales_1.csv.sha256", sha256(SALES), age=0)
    drop(tmp_path / "beta-1c", "sales_1.csv", SALES, age=0)
    (request,) = _tick(sensor, instance, tmp_path, stable_seconds=30).run_requests
    assert request.partition_key == "beta-1c"


def test_a_manifest_spares_hashing_and_gives_the_same_key(
    registry: IntegrationRegistry, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    drop(tmp_path / "acme-1c", "sales_1.csv", SALES)
    sensor = _sensor()
    hashed = _tick(sensor, instance, tmp_path).run_requests[0].run_key
    drop(tmp_path / "acme-1c", "sales_1.csv.sha256", f"{sha256(SALES)}  sales_1.csv\r\n")
    assert _tick(sensor, instance, tmp_path).run_requests[0].run_key == hashed


def test_only_files_specs_get_a_sensor() -> None:
    specs = load_specs()
    names = [s.name for s in build_file_drop_sensors(specs)]
    assert "onec_file_drop" in names
    assert all(specs[n.removesuffix("_file_drop")].engine == "files" for n in names)
    with pytest.raises(ValueError, match="not a files spec"):
        build_file_drop_sensor(next(s for s in specs.values() if s.engine != "files"))
    assert build_file_drop_sensor(drops_spec()).name == "drops_file_drop"


def test_a_failed_run_is_retried_under_a_new_key_a_few_times(
    registry: IntegrationRegistry, tmp_path: Path
) -> None:
    from dagster._core.test_utils import create_run_for_test

    drop(tmp_path / "acme-1c", "sales_1.csv", SALES)
    sensor = build_file_drop_sensor(load_specs()["onec"], max_retries=2)
    with dg.instance_for_test() as instance:

        def launched(key: str, status: dg.DagsterRunStatus) -> None:
            tags = {"dagster/run_key": key, "dagster/sensor_name": sensor.name}
            create_run_for_test(instance, job_name="sync_onec", status=status, tags=tags)

        (first,) = _tick(sensor, instance, tmp_path).run_requests
        launched(first.run_key, dg.DagsterRunStatus.FAILURE)
        (second,) = _tick(sensor, instance, tmp_path).run_requests
        assert second.run_key == f"{first.run_key}:retry1"
        launched(second.run_key, dg.DagsterRunStatus.FAILURE)
        (third,) = _tick(sensor, instance, tmp_path).run_requests
        assert third.run_key == f"{first.run_key}:retry2"
        launched(third.run_key, dg.DagsterRunStatus.FAILURE)
        spent = _tick(sensor, instance, tmp_path)
        assert not spent.run_requests
        assert "2 failed runs, not retried again: acme-1c" in spent.skip_reason.skip_message

        # A cancelled run was stopped on purpose: its key is not retried.
        drop(tmp_path / "beta-1c", "sales_1.csv", SALES)
        (beta,) = _tick(sensor, instance, tmp_path).run_requests
        launched(beta.run_key, dg.DagsterRunStatus.CANCELED)
        (again,) = _tick(sensor, instance, tmp_path).run_requests
        assert again.run_key == beta.run_key


def test_the_sensor_loads_in_a_code_location_beside_its_job(
    registry: IntegrationRegistry, database_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    from synkro_dagster.assets.factory import build_spec_assets, build_spec_job

    source = load_specs()["onec"]
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0)
    defs = dg.Definitions(
        assets=[build_spec_assets(source)],
        jobs=[build_spec_job(source)],
        sensors=build_file_drop_sensors({"onec": source}),
        resources=run_resources(DataLayer(), files_connector=connector),
    )
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def("onec_file_drop")
    assert sensor.job_name == "sync_onec" and repository.has_job("sync_onec")
    drop(tmp_path / "acme-1c", "sales_1.csv", SALES)
    context = dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        resources=run_resources(database_url, files_connector=connector),
    )
    result = sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["acme-1c"]


def test_identical_content_under_a_new_name_is_a_new_drop(
    registry: IntegrationRegistry, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    # Weekend exports with a header only: the same bytes, a new file each day.
    header_only = "НомерДокумента;ДатаДокумента;НомерСтроки\r\n".encode("cp1251")
    inbox = tmp_path / "acme-1c"
    sensor = _sensor()
    drop(inbox, "sales_2026-11-28.csv", header_only)
    saturday = _tick(sensor, instance, tmp_path)
    (inbox / "sales_2026-11-28.csv").rename(tmp_path / "moved-by-the-run.csv")
    drop(inbox, "sales_2026-11-29.csv", header_only)
    sunday = _tick(sensor, instance, tmp_path, cursor=saturday.cursor)
    assert len(sunday.run_requests) == 1
    assert sunday.run_requests[0].run_key != saturday.run_requests[0].run_key


def test_the_same_file_dropped_again_later_is_a_new_drop(
    registry: IntegrationRegistry, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme-1c"
    sensor = _sensor()
    drop(inbox, "sales_2026-11-01.csv", SALES, age=120)
    first = _tick(sensor, instance, tmp_path)
    (inbox / "sales_2026-11-01.csv").unlink()  # a run loaded and moved it
    drop(inbox, "sales_2026-11-01.csv", SALES, age=30)  # the sender sent it once more
    second = _tick(sensor, instance, tmp_path, cursor=first.cursor)
    # A run takes it (and skips it as a duplicate upload) instead of leaving it in the inbox.
    assert len(second.run_requests) == 1
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_no_second_run_while_a_run_of_the_integration_is_in_flight(
    registry: IntegrationRegistry, tmp_path: Path
) -> None:
    from dagster._core.test_utils import create_run_for_test

    # The run in flight has moved sales_2026-11-01.csv already; the second is still waiting.
    drop(tmp_path / "acme-1c", "sales_2026-11-02.csv", SALES + b"\r\n")
    sensor = _sensor()
    with dg.instance_for_test() as instance:
        run = create_run_for_test(
            instance,
            job_name="sync_onec",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": "acme-1c", "synkro/integration": "acme-1c"},
        )
        during = _tick(sensor, instance, tmp_path)
        assert during.run_requests == []
        assert (
            "a run is still in progress for acme-1c: 1 file(s)" in during.skip_reason.skip_message
        )

        # The run ended without taking the file (it arrived too late): now it gets its run.
        instance.report_run_canceled(run)
        after = _tick(sensor, instance, tmp_path, cursor=during.cursor)
        assert [r.partition_key for r in after.run_requests] == ["acme-1c"]
