"""HttpConnector against the real local API server: pagination, auth, incremental reads, retries,
rate budget, loop detection and secret hygiene."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
import yaml

from synkro_dagster.connectors.http import (
    HttpConnector,
    HttpSession,
    HttpSourceError,
    PaginationLoopError,
    SourceUnreachableError,
    retry_after_deadline,
)
from synkro_dagster.contracts import Integration, ReadStats, Record
from synkro_dagster.demo.api_server import ApiServer, start_api_server
from synkro_dagster.specs import load_spec_file, load_specs
from synkro_dagster.specs.cursors import read_start
from synkro_dagster.specs.cursors import render as render_cursor
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.testapi import ITEMS, TESTAPI, secrets_for_testapi

# Short waits keep the file fast; the retry logic is the same as with production values.
FAST = dict(
    backoff_initial=0.05, backoff_max=0.2, max_retries=3, max_retry_wait=10.0, read_timeout=2.0
)


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with start_api_server(bench_records=1000) as server:
        yield server


@pytest.fixture(scope="module")
def testapi() -> SourceSpec:
    return load_spec_file(TESTAPI)


def _integration(api: ApiServer, spec: str = "testapi", **secrets: str) -> Integration:
    return Integration(
        id="t_acme",
        tenant="acme",
        spec=spec,
        config={"base_url": api.url},
        secrets={**secrets_for_testapi(api), **secrets},
    )


def _read(
    session: HttpSession, spec: SourceSpec, stream: str, cursor: str | None = None
) -> tuple[list[Record], ReadStats]:
    read = session.read(spec.stream(stream), cursor)
    records = [r for part in read.parts for batch in part.batches() for r in batch]
    return records, read.stats


def _read_once(
    api: ApiServer, spec: SourceSpec, stream: str, cursor: str | None = None, **connector: Any
) -> tuple[list[Record], ReadStats]:
    with HttpConnector(**{**FAST, **connector}).session(spec, _integration(api)) as session:
        return _read(session, spec, stream, cursor)


def _item_ids(api: ApiServer, since: str | None = None) -> list[int]:
    rows = api.store.records("test.items")
    return [r["id"] for r in rows if since is None or r["updated_at"] >= since]


def _with_http(spec: SourceSpec, **changes: Any) -> SourceSpec:
    raw = yaml.safe_load(TESTAPI.read_text())
    raw["http"].update(changes)
    return SourceSpec.model_validate(raw)


# --- pagination and auth ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "pages", "total"),
    [
        ("page_number", 7, ITEMS),  # 40 per page, stops at meta.total_pages
        ("offset", 9, ITEMS),  # 30 per page, stops when offset reaches the total
        ("cursor", 6, None),  # 45 per page, stops when no next token
        ("next_url", 5, ITEMS),  # 60 per page, stops when links.next is null
        ("link_header", 4, ITEMS),  # 70 per page, stops without rel="next"
        ("single", 1, ITEMS),
    ],
)
def test_every_pagination_kind_reads_exactly_the_records(
    api: ApiServer, testapi: SourceSpec, stream: str, pages: int, total: int | None
) -> None:
    records, stats = _read_once(api, testapi, stream)
    assert [r["id"] for r in records] == _item_ids(api)
    assert stats.pages == pages
    assert stats.records == ITEMS
    assert stats.source_total == total
    assert stats.bytes > 0


def test_page_number_stops_on_an_empty_page_without_a_total(api: ApiServer) -> None:
    spec = _with_http(
        load_spec_file(TESTAPI),
        pagination={"kind": "page_number", "page_size_param": "per_page", "page_size": 100},
        total=None,
    )
    records, stats = _read_once(api, spec, "page_number")
    assert len(records) == ITEMS
    assert stats.pages == 4  # 100 + 100 + 53, then an empty page
    assert stats.source_total is None


def test_pages_arrive_as_batches_bounded_by_the_page_size(
    api: ApiServer, testapi: SourceSpec
) -> None:
    with HttpConnector(**FAST).session(testapi, _integration(api)) as session:
        read = session.read(testapi.stream("page_number"), None)
        assert api.requests_to("/test") == []  # lazy: nothing fetched yet
        part = next(read.parts)
        sizes = [len(batch) for batch in part.batches()]
    assert sizes == [40] * 6 + [13]


@pytest.mark.parametrize("stream", ["bearer", "api_key_header", "api_key_query", "basic", "oauth2"])
def test_every_auth_kind_reads_exactly_the_records(
    api: ApiServer, testapi: SourceSpec, stream: str
) -> None:
    records, _ = _read_once(api, testapi, stream)
    assert [r["id"] for r in records] == _item_ids(api)
    assert all(r.status == 200 for r in api.requests_to("/test/auth"))
    if stream == "oauth2":
        assert api.tokens_issued == 1  # cached for all 7 pages


def test_wrong_credentials_fail_with_401_and_no_secret(api: ApiServer, testapi: SourceSpec) -> None:
    integration = _integration(api, token="wrong-token-value")
    with (
        HttpConnector(**FAST).session(testapi, integration) as session,
        pytest.raises(HttpSourceError) as caught,
    ):
        _read(session, testapi, "bearer")
    message = str(caught.value)
    assert "HTTP 401" in message and "stream 'bearer'" in message
    assert "wrong-token-value" not in message
    # A 4xx other than 429 is not retried.
    assert len(api.requests_to("/test/auth/bearer")) == 1


def test_shipped_shop_and_crm_specs_read_every_stream(api: ApiServer) -> None:
    specs = load_specs()
    c = api.credentials
    cases = [
        ("shop", {"api_token": c.bearer_token}, "shop"),
        ("crm", {"client_id": c.client_id, "client_secret": c.client_secret}, "crm"),
    ]
    for name, secrets, collection in cases:
        spec = specs[name]
        integration = Integration("acme", "acme", name, {"base_url": api.url}, secrets)
        with HttpConnector(**FAST).session(spec, integration) as session:
            for stream in spec.streams:
                if stream.parent is not None or stream.partitioned_by is not None:
                    continue  # children, reports: test_child_streams.py, test_report_streams.py
                start = read_start(stream.cursor, None, full_refresh=False)  # a first sync
                records, stats = _read(session, spec, stream.name, start)
                endpoint = stream.http.path.strip("/")  # price_history reads /products
                expected = api.store.records(f"{collection}.{endpoint}")
                if stream.cursor and stream.cursor.initial:
                    field = stream.cursor.field
                    expected = [r for r in expected if r[field] >= stream.cursor.initial]
                assert [r["id"] for r in records] == [r["id"] for r in expected], stream.name
                assert stats.source_total == len(expected), stream.name
    orders = api.store.records("shop.orders")
    assert isinstance(orders[0]["line_items"], list)


def test_missing_config_and_secrets_fail_before_any_request(
    api: ApiServer, testapi: SourceSpec
) -> None:
    no_url = Integration("t_acme", "acme", "testapi", {}, secrets_for_testapi(api))
    with pytest.raises(HttpSourceError, match="integration 't_acme': config 'base_url'"):
        HttpConnector().session(testapi, no_url).__enter__()
    secrets = secrets_for_testapi(api)
    del secrets["password"]
    no_password = Integration("t_acme", "acme", "testapi", {"base_url": api.url}, secrets)
    with pytest.raises(HttpSourceError, match="secret\\(s\\) 'password'"):
        HttpConnector().session(testapi, no_password).__enter__()
    assert api.requests == []


# --- incremental ------------------------------------------------------------------------------------


def test_cursor_goes_into_the_request_parameter_with_ge_semantics(
    api: ApiServer, testapi: SourceSpec
) -> None:
    rows = sorted(api.store.records("test.items"), key=lambda r: r["updated_at"])
    boundary = rows[len(rows) // 2]["updated_at"]  # e.g. 2025-06-01T10:00:00Z
    records, _ = _read_once(api, testapi, "page_number", boundary)
    # Sent back exactly as the source wrote it (format: as_stored).
    assert api.requests_to("/test/page_number")[0].query["updated_since"] == boundary
    assert sorted(r["id"] for r in records) == sorted(_item_ids(api, boundary))
    assert boundary in {r["updated_at"] for r in records}  # >=: the boundary record comes back


def test_older_records_are_dropped_when_the_api_ignores_the_filter(
    api: ApiServer, testapi: SourceSpec
) -> None:
    since = "2025-08-01T00:00:00+00:00"
    records, stats = _read_once(api, testapi, "unfiltered", since)
    sent = api.requests_to("/test/unfiltered")
    assert sent[0].query["updated_since"] == since
    assert sorted(r["id"] for r in records) == _item_ids(api, "2025-08-01T00:00:00Z")
    assert 0 < len(records) < ITEMS
    assert stats.records == len(records)


def test_second_read_from_the_new_cursor_gets_only_changed_records(
    api: ApiServer, testapi: SourceSpec
) -> None:
    first, _ = _read_once(api, testapi, "cursor")
    cursor = max(r["updated_at"] for r in first)
    api.store.update("test.items", 5, value=-1)
    added = api.store.add("test.items", name="new", value=1)
    second, _ = _read_once(api, testapi, "cursor", cursor)
    ids = {r["id"] for r in second}
    assert {5, added["id"]} <= ids
    assert len(ids) <= 3  # the two changes plus the boundary record(s) at the old cursor


def test_cursor_initial_is_used_on_the_first_sync(api: ApiServer) -> None:
    spec = load_specs()["shop"]
    integration = Integration(
        "acme", "acme", "shop", {"base_url": api.url}, {"api_token": api.credentials.bearer_token}
    )
    stream = spec.stream("orders")
    with HttpConnector(**FAST).session(spec, integration) as session:
        _read(session, spec, "orders", read_start(stream.cursor, None, full_refresh=False))
    assert api.requests_to("/shop/api/v1/orders")[0].query["updated_since"] == (
        stream.cursor.initial
    )


def test_cursor_formats() -> None:
    value = "2026-01-02T03:04:05.678+00:00"
    assert render_cursor(value, None) == value
    assert render_cursor(value, "as_stored") == value
    assert render_cursor(value, "iso8601") == "2026-01-02T03:04:05.678000Z"
    assert render_cursor(value, "date") == "2026-01-02"
    assert render_cursor(value, "unix") == "1767323045"
    assert render_cursor(value, "unix_ms") == "1767323045678"
    assert render_cursor(value, "%Y%m%d%H%M") == "202601020304"
    assert render_cursor(value, "%Y-%m-%dT%H:%M:%S.%3fZ") == "2026-01-02T03:04:05.678Z"
    assert render_cursor("12345", "unix") == "12345"  # epoch numbers already: sent as stored


def test_crm_contacts_send_the_cursor_as_unix_milliseconds(api: ApiServer) -> None:
    spec = load_specs()["crm"]
    c = api.credentials
    integration = Integration(
        "acme",
        "acme",
        "crm",
        {"base_url": api.url},
        {"client_id": c.client_id, "client_secret": c.client_secret},
    )
    with HttpConnector(**FAST).session(spec, integration) as session:
        records, _ = _read(session, spec, "contacts", "2025-07-01T00:00:00+00:00")
    assert api.requests_to("/crm/v3/contacts")[0].query["modified_after"] == "1751328000000"
    assert records and all(r["updatedAt"] >= "2025-07-01T00:00:00Z" for r in records)


# --- retries ------------------------------------------------------------------------------------------


def _gap_after_first(api: ApiServer, path: str, status: int) -> tuple[float, dict[str, str]]:
    sent = api.requests_to(path)
    index = next(i for i, r in enumerate(sent) if r.status == status)
    return sent[index + 1].time - sent[index].time, sent[index].response_headers


def test_retry_after_seconds_is_honoured(api: ApiServer, testapi: SourceSpec) -> None:
    api.rate_limit("/test/page_number", retry_after=1.2, count=1)
    records, _ = _read_once(api, testapi, "page_number")
    assert len(records) == ITEMS
    gap, headers = _gap_after_first(api, "/test/page_number", 429)
    assert headers["Retry-After"] == "1.2"
    assert gap >= 1.2


def test_retry_after_http_date_is_honoured(api: ApiServer, testapi: SourceSpec) -> None:
    api.rate_limit("/test/offset", retry_after=1, count=1, as_date=True)
    records, _ = _read_once(api, testapi, "offset")
    assert len(records) == ITEMS
    sent = api.requests_to("/test/offset")
    index = next(i for i, r in enumerate(sent) if r.status == 429)
    not_before = parsedate_to_datetime(sent[index].response_headers["Retry-After"]).timestamp()
    assert sent[index + 1].time >= not_before
    assert sent[index + 1].time - sent[index].time >= 1.0 - 0.001 or not_before > sent[index].time


def test_retry_after_parsing() -> None:
    assert retry_after_deadline("3", now=100.0) == 103.0
    assert retry_after_deadline("Wed, 21 Oct 2015 07:28:00 GMT", now=0.0) == 1445412480.0
    assert retry_after_deadline("Wed, 21 Oct 2015 07:28:00 GMT", now=2e9) == 2e9  # in the past
    assert retry_after_deadline("soon", now=1.0) is None


def test_transient_5xx_are_retried(api: ApiServer, testapi: SourceSpec) -> None:
    api.fail("/test/next_url", status=503, count=2)
    records, stats = _read_once(api, testapi, "next_url")
    assert [r["id"] for r in records] == _item_ids(api)
    statuses = [r.status for r in api.requests_to("/test/next_url")]
    assert statuses.count(503) == 2 and stats.pages == 5


def test_timeouts_are_retried(api: ApiServer, testapi: SourceSpec) -> None:
    api.slow("/test/single", seconds=1.0, count=1)
    records, _ = _read_once(api, testapi, "single", read_timeout=0.3)
    assert len(records) == ITEMS
    assert len(api.requests_to("/test/single")) == 2


def test_connection_errors_are_retried_then_named(testapi: SourceSpec) -> None:
    with start_api_server() as down:
        url = down.url
    integration = Integration("t_acme", "acme", "testapi", {"base_url": url}, {
        "token": "t" * 8, "api_key": "k" * 8, "password": "p" * 8,
        "client_id": "i" * 8, "client_secret": "s" * 8,
    })  # fmt: skip
    with (
        HttpConnector(**FAST).session(testapi, integration) as session,
        pytest.raises(HttpSourceError) as caught,
    ):
        _read(session, testapi, "single")
    message = str(caught.value)
    assert "ConnectError" in message and "gave up after 4 attempt(s)" in message
    assert f"{url}/test/single/items" in message


def test_failure_beyond_the_retry_budget_names_everything_but_secrets(
    api: ApiServer, testapi: SourceSpec
) -> None:
    api.fail_after_page("/test/auth/api_key_query", pages=2, status=502)
    got: list[Record] = []
    with (
        HttpConnector(**FAST).session(testapi, _integration(api)) as session,
        pytest.raises(HttpSourceError) as caught,
    ):
        for part in session.read(testapi.stream("api_key_query"), None).parts:
            for batch in part.batches():
                got.extend(batch)
    message = str(caught.value)
    assert len(got) == 80  # the two good pages were handed on before the failure
    assert "integration 't_acme'" in message
    assert "stream 'api_key_query'" in message
    assert f"GET {api.url}/test/auth/api_key_query/items?" in message and "page=3" in message
    assert "HTTP 502" in message and "failing after page 2" in message
    assert "gave up after 4 attempt(s)" in message
    assert api.credentials.api_key not in message and "api_key=" not in message


def test_retry_wait_is_bounded(api: ApiServer, testapi: SourceSpec) -> None:
    api.rate_limit("/test/single", retry_after=60, count=1)
    started = time.monotonic()
    with pytest.raises(HttpSourceError, match="HTTP 429") as caught:
        _read_once(api, testapi, "single", max_retry_wait=2.0)
    assert time.monotonic() - started < 5
    assert "Retry-After" in str(caught.value) and "max_retry_wait=2s" in str(caught.value)


# --- loops, rate, OAuth2 --------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["page_number", "offset", "cursor", "next_url", "link_header"])
def test_a_server_repeating_the_same_page_fails_clearly(
    api: ApiServer, testapi: SourceSpec, stream: str
) -> None:
    api.repeat_page(f"/test/{stream}")
    with pytest.raises(PaginationLoopError, match="same") as caught:
        _read_once(api, testapi, stream)
    assert f"stream '{stream}'" in str(caught.value)
    assert len(api.requests_to(f"/test/{stream}")) == 2


def test_duplicate_keys_in_one_response_are_passed_on(api: ApiServer, testapi: SourceSpec) -> None:
    api.duplicate_keys("/test/link_header")
    records, _ = _read_once(api, testapi, "link_header")
    assert len(records) == ITEMS + 4  # each of the 4 pages repeats its first record
    assert len({r["id"] for r in records}) == ITEMS


def test_rate_budget_is_shared_by_the_streams_of_a_session(api: ApiServer) -> None:
    spec = _with_http(load_spec_file(TESTAPI), rate_limit={"requests_per_second": 20})
    with HttpConnector(**FAST).session(spec, _integration(api)) as session:
        a = session.read(spec.stream("page_number"), None)
        b = session.read(spec.stream("next_url"), None)
        batches_a = next(a.parts).batches()
        batches_b = next(b.parts).batches()
        # Interleave the two streams: the budget must hold across both.
        for _ in range(5):
            next(batches_a)
            next(batches_b)
    times = sorted(r.time for r in api.requests_to("/test"))
    assert len(times) == 10
    # Arrival times carry the jitter of a busy machine scheduling the server's threads, so
    # the budget is judged over windows, not pairs: the 10 arrivals span at least 9 intervals
    # (without a budget they take ~20 ms), and no 5 consecutive ones come as a burst.
    assert times[-1] - times[0] >= 9 * 0.05 - 0.03
    for i in range(len(times) - 4):
        assert times[i + 4] - times[i] >= 4 * 0.05 - 0.08


def test_oauth2_token_is_cached_and_refreshed_on_expiry(
    api: ApiServer, testapi: SourceSpec
) -> None:
    api.set_token_ttl(0.6)
    api.slow("/test/auth/oauth2", seconds=0.2)
    records, _ = _read_once(api, testapi, "oauth2")  # 7 pages, ~1.4 s
    assert len(records) == ITEMS
    # Refreshed before expiry (no 401 below); how often depends on the machine's speed.
    assert 2 <= api.tokens_issued <= len(api.requests_to("/test/auth/oauth2"))
    assert all(r.status == 200 for r in api.requests_to("/test/auth/oauth2"))


def test_oauth2_token_is_refreshed_after_a_401(api: ApiServer, testapi: SourceSpec) -> None:
    got: list[Record] = []
    with HttpConnector(**FAST).session(testapi, _integration(api)) as session:
        for part in session.read(testapi.stream("oauth2"), None).parts:
            for number, batch in enumerate(part.batches()):
                got.extend(batch)
                if number == 1:
                    api.expire_tokens()  # the server revokes the token mid-stream
    assert [r["id"] for r in got] == _item_ids(api)
    assert api.tokens_issued == 2
    assert [r.status for r in api.requests_to("/test/auth/oauth2")].count(401) == 1


# --- secrets ------------------------------------------------------------------------------------------


def test_no_secret_appears_in_exceptions_or_logs(
    api: ApiServer, testapi: SourceSpec, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = secrets_for_testapi(api)
    integration = _integration(api)
    errors: list[str] = []
    api.fail_after_page("/test/auth/api_key_query", pages=1, status=500)
    api.fail("/test/auth/basic", status=503, count=1)
    with HttpConnector(**FAST).session(testapi, integration) as session:
        for stream in ["bearer", "api_key_header", "basic", "oauth2", "api_key_query"]:
            try:
                _read(session, testapi, stream)
            except HttpSourceError as exc:
                errors.append(str(exc))
                errors.append(repr(exc))
        errors.append(repr(session))
    # A wrong password: the server's 401 must not echo it back either.
    bad = _integration(api, password="not-the-password-123")
    with HttpConnector(**FAST).session(testapi, bad) as session:
        try:
            _read(session, testapi, "basic")
        except HttpSourceError as exc:
            errors.append(str(exc))
    errors.append(repr(integration))
    assert any("api_key_query" in e for e in errors)  # the failure did happen
    out, err = capsys.readouterr()
    everything = "\n".join([*errors, caplog.text, out, err])
    assert "HTTP Request" in caplog.text  # httpx's own request log lines were captured
    access_tokens = list(api.app.tokens)  # issued OAuth2 tokens are secrets too
    assert access_tokens
    for value in [*secrets.values(), *access_tokens, "not-the-password-123"]:
        assert value not in everything, "a secret leaked"
    assert "Basic " not in everything or "Basic ***" in everything


def _with_stream_auth(stream: str, auth: dict[str, Any]) -> SourceSpec:
    raw = yaml.safe_load(TESTAPI.read_text())
    next(s for s in raw["streams"] if s["name"] == stream)["http"]["auth"] = auth
    return SourceSpec.model_validate(raw)


@pytest.mark.parametrize(
    ("stream", "auth"),
    [
        (
            "oauth2",
            {
                "kind": "oauth2_client_credentials",
                "token_url": "{base_url}/crm/oauth/token",
                "client_id_secret": "client_id",
                "client_secret_secret": "client_secret",
                "client_auth": "basic",
                "scope": "items.read",
            },
        ),
        ("basic", {"kind": "basic", "username_secret": "client_id", "password_secret": "password"}),
    ],
)
def test_auth_variants(api: ApiServer, stream: str, auth: dict[str, Any]) -> None:
    spec = _with_stream_auth(stream, auth)
    secrets = {"client_id": api.credentials.basic_username} if auth["kind"] == "basic" else {}
    integration = _integration(api, **secrets)
    with HttpConnector(**FAST).session(spec, integration) as session:
        records, _ = _read(session, spec, stream)
    assert len(records) == ITEMS


def test_admin_endpoints_switch_faults_and_change_data(api: ApiServer, testapi: SourceSpec) -> None:
    with httpx.Client(base_url=api.url) as client:
        assert (
            client.post(
                "/_admin/faults",
                json={"kind": "status", "path": "/test/single", "count": 1, "status": 503},
            ).status_code
            == 201
        )
        changed = client.post("/_admin/records/test.items", json={"id": 3, "name": "x"}).json()
        added = client.post("/_admin/records/test.items", json={"name": "y"}).json()
    assert changed["name"] == "x" and changed["updated_at"] >= "2026-01-01"
    records, _ = _read_once(api, testapi, "single", "2026-01-01T00:00:00+00:00")
    assert sorted(r["id"] for r in records) == [3, added["id"]]
    assert [r.status for r in api.requests_to("/test/single")] == [503, 200]
    with httpx.Client(base_url=api.url) as client:
        client.delete("/_admin/faults")
    assert api.app.faults == []


# --- a dead source fails fast, and every retry is logged ---------------------------------------


def _dead_integration() -> tuple[str, Integration]:
    with start_api_server() as down:
        url = down.url
    return url, Integration("t_acme", "acme", "testapi", {"base_url": url}, {
        "token": "t" * 8, "api_key": "k" * 8, "password": "p" * 8,
        "client_id": "i" * 8, "client_secret": "s" * 8,
    })  # fmt: skip


def test_a_refused_host_fails_every_remaining_stream_at_once(testapi: SourceSpec) -> None:
    url, integration = _dead_integration()
    streams = ["page_number", "offset", "cursor", "next_url", "link_header", "single", "bearer"]
    connector = HttpConnector(**{**FAST, "max_retries": 10, "max_connection_failures": 3})
    errors: dict[str, HttpSourceError] = {}
    with connector.session(testapi, integration) as session:
        for stream in streams:
            with pytest.raises(HttpSourceError) as caught:
                _read(session, testapi, stream)
            errors[stream] = caught.value
    first = errors["page_number"]
    # The shared budget stopped the first stream after 3 refusals, not after 11 attempts.
    assert "gave up after 3 attempt(s)" in str(first)
    assert "ConnectError" in str(first) and "3 connection failures in a row" in str(first)
    for stream in streams[1:]:
        error = errors[stream]
        # Not attempted at all: no request, no backoff (the message says so, not a stopwatch).
        assert isinstance(error, SourceUnreachableError), stream
        assert f"stream '{stream}'" in str(error) and "not attempted: ConnectError" in str(error)
        assert url.split("://")[1] in str(error)


def test_a_host_that_answers_again_gets_its_budget_back(
    api: ApiServer, testapi: SourceSpec
) -> None:
    connector = HttpConnector(**{**FAST, "max_connection_failures": 2})
    with connector.session(testapi, _integration(api)) as session:
        session.breaker.failed(api.url, "ConnectError: refused")
        records, _ = _read(session, testapi, "single")  # one failure in a row: still allowed
        assert len(records) == ITEMS
        session.breaker.failed(api.url, "ConnectError: refused")
        assert session.breaker.open_reason(api.url) is None  # the success above reset the count
        session.breaker.failed(api.url, "ConnectError: refused")
        with pytest.raises(SourceUnreachableError, match="not attempted: ConnectError: refused"):
            _read(session, testapi, "single")


def test_every_retry_writes_a_log_line_without_secrets(
    api: ApiServer, testapi: SourceSpec, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail("/test/auth/api_key_query", status=503, count=2)
    with caplog.at_level(logging.DEBUG, logger="dagster.builtin.synkro.http"):
        records, _ = _read_once(api, testapi, "api_key_query")
    assert len(records) == ITEMS
    lines = [r.getMessage() for r in caplog.records if r.name == "dagster.builtin.synkro.http"]
    assert len(lines) == 2, lines
    for attempt, line in enumerate(lines, start=1):
        assert f"attempt {attempt} of 4 failed (HTTP 503)" in line
        assert "integration 't_acme', stream 'api_key_query': GET " in line
        assert f"{api.url}/test/auth/api_key_query/items" in line
        assert "retrying in " in line
        assert api.credentials.api_key not in line and "api_key=" not in line


def test_connection_retries_are_logged_with_the_reason(
    testapi: SourceSpec, caplog: pytest.LogCaptureFixture
) -> None:
    url, integration = _dead_integration()
    with (
        caplog.at_level(logging.DEBUG, logger="dagster.builtin.synkro.http"),
        HttpConnector(**FAST).session(testapi, integration) as session,
        pytest.raises(HttpSourceError),
    ):
        _read(session, testapi, "single")
    lines = [r.getMessage() for r in caplog.records if r.name == "dagster.builtin.synkro.http"]
    assert [
        f"attempt {n} of 4 failed (ConnectError" in line for n, line in enumerate(lines, 1)
    ] == [True] * 3
    assert all(f"{url}/test/single/items" in line for line in lines)
