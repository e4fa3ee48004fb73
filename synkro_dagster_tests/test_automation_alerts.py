"""Run-failure alerts: payload formats, delivery to a real local webhook, secrets removed."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from synkro_dagster.automation.alerts import (
    FailureAlert,
    build_failure_alert_sensor,
    post_webhook,
    redact_secrets,
    webhook_payload,
)
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.integrations.resource import IntegrationsResource
from synkro_dagster.tags import run_tags
from synkro_dagster_tests.test_automation_sensors import add_integration

TOKEN = "tok_live_9f8e7d6c5b4a"


class Receiver:
    """A local webhook endpoint that records JSON bodies; `fail_first` answers 503 first."""

    def __init__(self, fail_first: int = 0, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                outer.hits += 1
                if outer.hits <= fail_first:
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                outer.bodies.append(json.loads(body))
                outer.paths.append(self.path)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/secret-path"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dg.op
def fetch_orders() -> None:
    raise RuntimeError(
        f"GET https://api.example/orders?api_key={TOKEN} failed: 401 Unauthorized "
        "(sent Authorization: Bearer eyJhbGciOi.abc.def; db postgresql://svc:pa55word@db/x; "
        "password=hunter2)"
    )


@dg.job(tags={"synkro/spec": "shop"})
def sync_shop() -> None:
    fetch_orders()


@dg.op
def sync_streams() -> None:
    raise dg.Failure(
        description="1 stream(s) of integration 'acme-shop' failed",
        metadata={"failed_streams": f"orders: HTTPStatusError: 401 for token {TOKEN}"},
    )


@dg.job
def sync_crm() -> None:
    sync_streams()


def _failure_context(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    tags: dict[str, str],
    integrations: IntegrationsResource,
) -> dg.RunStatusSensorContext:
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"integrations": integrations},
    )


@pytest.fixture
def registry(engine, integrations) -> IntegrationsResource:
    """The `integrations` resource on a registry holding acme-shop."""
    add_integration(engine, "acme-shop", spec="shop", tenant="acme", secrets={"token": TOKEN})
    return integrations


def test_generic_alert_names_spec_integration_tenant_run_and_link(registry, receiver, monkeypatch):
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("SYNKRO_UI_URL", "https://synkro.example/")
    sensor = build_failure_alert_sensor()
    with dg.instance_for_test() as instance:
        context = _failure_context(
            instance, sync_shop, run_tags("acme-shop", "shop", "acme"), registry
        )
        sensor(context)
        run_id = context.dagster_run.run_id

    [body] = receiver.bodies
    assert body["event"] == "synkro.run_failed"
    assert (body["spec"], body["integration"], body["tenant"]) == ("shop", "acme-shop", "acme")
    assert body["job"] == "sync_shop" and body["run_id"] == run_id
    assert body["url"] == f"https://synkro.example/runs/{run_id}"
    assert body["error"].startswith("fetch_orders: RuntimeError: GET https://api.example/orders")
    assert "401 Unauthorized" in body["error"]


def test_alert_error_has_no_secrets(registry, receiver, monkeypatch):
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)
    sensor = build_failure_alert_sensor()
    with dg.instance_for_test() as instance:
        sensor(
            _failure_context(instance, sync_shop, run_tags("acme-shop", "shop", "acme"), registry)
        )
    text = json.dumps(receiver.bodies)
    for secret in (TOKEN, "eyJhbGciOi", "pa55word", "hunter2"):
        assert secret not in text
    error = receiver.bodies[0]["error"]
    assert "Bearer ***" in error and "password=***" in error
    assert "postgresql://***@db/x" in error


def test_failure_description_and_metadata_reach_the_alert_redacted(registry, receiver, monkeypatch):
    # A run started from the UI or a backfill has no synkro tags: the partition is the id and
    # the tenant comes from the registry.
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)
    sensor = build_failure_alert_sensor()
    with dg.instance_for_test() as instance:
        sensor(_failure_context(instance, sync_crm, {"dagster/partition": "acme-shop"}, registry))
    [body] = receiver.bodies
    assert (body["integration"], body["tenant"]) == ("acme-shop", "acme")
    assert body["error"] == (
        "sync_streams: 1 stream(s) of integration 'acme-shop' failed\n"
        "failed_streams: orders: HTTPStatusError: 401 for token ***"
    )


def test_slack_and_telegram_formats(registry, receiver, monkeypatch):
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)
    sensor = build_failure_alert_sensor()
    with dg.instance_for_test() as instance:
        context = _failure_context(
            instance, sync_shop, run_tags("acme-shop", "shop", "acme"), registry
        )
        monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_FORMAT", "slack")
        sensor(context)
        monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_FORMAT", "telegram")
        monkeypatch.setenv("SYNKRO_ALERT_TELEGRAM_CHAT_ID", "-100123")
        sensor(context)
    slack, telegram = receiver.bodies
    assert set(slack) == {"text"}
    assert slack["text"].startswith("Synkro sync failed: shop / acme-shop (tenant acme)\n")
    assert TOKEN not in slack["text"]
    assert telegram["chat_id"] == "-100123"
    assert telegram["text"] == slack["text"]


def test_webhook_5xx_is_retried(monkeypatch):
    flaky = Receiver(fail_first=2)
    try:
        alert = FailureAlert("shop", "acme-shop", "acme", "sync_shop", "r1", "boom", "u")
        post_webhook(flaky.url, webhook_payload(alert, "generic"), backoff=0.01)
    finally:
        flaky.close()
    assert flaky.hits == 3 and len(flaky.bodies) == 1


def test_unreachable_webhook_is_logged_not_raised(registry, monkeypatch, capfd):
    monkeypatch.setenv(
        "SYNKRO_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{_closed_port()}/bot123:SECRET/send"
    )
    sensor = build_failure_alert_sensor()
    monkeypatch.setattr("synkro_dagster.automation.alerts.time.sleep", lambda _: None)
    with dg.instance_for_test() as instance:
        context = _failure_context(
            instance, sync_shop, run_tags("acme-shop", "shop", "acme"), registry
        )
        capfd.readouterr()
        assert sensor(context) is None
    logged = capfd.readouterr().err
    assert "not delivered" in logged and "unreachable" in logged
    assert "SECRET" not in logged


def test_rejected_webhook_is_not_retried(registry, monkeypatch):
    rejecting = Receiver(status=400)
    try:
        alert = FailureAlert("shop", "acme-shop", "acme", "sync_shop", "r1", "boom", "u")
        with pytest.raises(RuntimeError, match="HTTP 400"):
            post_webhook(rejecting.url, webhook_payload(alert, "slack"), backoff=0.01)
    finally:
        rejecting.close()
    assert rejecting.hits == 1


def test_without_webhook_url_nothing_is_sent(registry, receiver, monkeypatch):
    monkeypatch.delenv("SYNKRO_ALERT_WEBHOOK_URL", raising=False)
    sensor = build_failure_alert_sensor()
    with dg.instance_for_test() as instance:
        sensor(
            _failure_context(instance, sync_shop, run_tags("acme-shop", "shop", "acme"), registry)
        )
    assert receiver.hits == 0


def test_alert_goes_out_when_the_registry_is_unreachable(receiver, monkeypatch):
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)

    class Unreachable(IntegrationsResource):
        def get_registry(self) -> IntegrationRegistry:
            raise ConnectionError("data layer down")

    registry = Unreachable()
    sensor = build_failure_alert_sensor()
    with dg.instance_for_test() as instance:
        sensor(_failure_context(instance, sync_shop, run_tags("acme-shop", "shop"), registry))
    [body] = receiver.bodies
    assert body["tenant"] is None
    assert "password=***" in body["error"] and "Bearer ***" in body["error"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abc123&x=1", "token=***&x=1"),
        ('{"api_key": "k-123456"}', '{"api_key": "***"}'),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        ("https://user:pw@host:5432/db", "https://***@host:5432/db"),
        ("client_secret: s3cr3t, next", "client_secret: ***, next"),
        ("nothing secret here: 42 rows", "nothing secret here: 42 rows"),
    ],
)
def test_generic_secret_patterns(text, expected):
    assert redact_secrets(text) == expected


def test_asset_backfill_run_with_only_a_partition_range_is_alerted_by_name(
    registry, receiver, monkeypatch
):
    # What a run of the UI's multi-partition "Launch backfill" carries: the range, nothing else.
    monkeypatch.setenv("SYNKRO_ALERT_WEBHOOK_URL", receiver.url)
    sensor = build_failure_alert_sensor()
    tags = {
        "dagster/asset_partition_range_start": "acme-shop",
        "dagster/asset_partition_range_end": "acme-shop",
    }
    with dg.instance_for_test() as instance:
        sensor(_failure_context(instance, sync_crm, tags, registry))
    [body] = receiver.bodies
    assert (body["spec"], body["integration"], body["tenant"]) == ("shop", "acme-shop", "acme")
    assert TOKEN not in json.dumps(body)


def test_integration_of_run_reads_every_launch_path():
    from synkro_dagster.automation.alerts import integration_of_run

    assert integration_of_run({"synkro/integration": "a", "dagster/partition": "b"}) == "a"
    assert integration_of_run({"dagster/partition": "b"}) == "b"
    start, end = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
    assert integration_of_run({start: "c", end: "c"}) == "c"
    assert integration_of_run({start: "c", end: "d"}) is None  # several integrations: no one name
    assert integration_of_run({}) is None


def test_the_alert_sensor_watches_every_code_location():
    sensor = build_failure_alert_sensor()
    assert sensor._monitor_all_code_locations is True  # noqa: SLF001 - no public accessor in 1.13
