"""Attacks through an HTTP source: credentials on redirects, SSRF, huge bodies, hostile JSON.

Every server here is a real one on 127.0.0.1 (two of them on different ports are two origins).
Refused addresses (link-local, metadata) are checked before any connection is made, and the
tests prove that no socket was opened: no traffic ever leaves loopback.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from synkro_dagster.connectors.http import (
    ForbiddenDestinationError,
    HttpConnector,
    HttpSourceError,
    RedirectRefusedError,
    ResponseTooLargeError,
)
from synkro_dagster.connectors.http_guard import (
    ALLOW_ENV,
    DestinationRefused,
    check_host,
    check_url,
)
from synkro_dagster.contracts import Integration, SourceDataError
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.hostile import deep_json
from synkro_dagster_tests.localhttp import json_answer, local_server, redirect

KEY = "key/Zq81+secret=value"
TOKEN = "bearer-Tok-9917"
FAST = dict(backoff_initial=0.01, backoff_max=0.02, max_retries=1, read_timeout=5.0)
ITEMS = json.dumps([{"id": 1}, {"id": 2}])


def spec(auth: dict | None, **http: Any) -> SourceSpec:
    raw = {
        "name": "api",
        "engine": "http",
        "config": {"base_url": {}},
        "secrets": ["key", "token", "client_id", "client_secret"],
        "http": {"base_url": "{base_url}", **({"auth": auth} if auth else {}), **http},
        "streams": [{"name": "items", "primary_key": "id", "http": {"path": "/items"}}],
    }
    return SourceSpec.model_validate(yaml.safe_load(json.dumps(raw)))


def integration(base_url: str) -> Integration:
    secrets = {"key": KEY, "token": TOKEN, "client_id": "cid-123456", "client_secret": "csec-7788"}
    return Integration("acme-api", "acme", "api", {"base_url": base_url}, secrets)


def read(source: SourceSpec, base_url: str) -> list[dict]:
    records: list[dict] = []
    with HttpConnector(**FAST).session(source, integration(base_url)) as session:
        for part in session.read(source.stream("items"), None).parts:
            for batch in part.batches():
                records.extend(batch)
    return records


AUTHS = {
    "api_key_header": {"kind": "api_key", "key_secret": "key", "name": "X-Api-Key"},
    "api_key_query": {"kind": "api_key", "key_secret": "key", "location": "query", "name": "k"},
    "bearer": {"kind": "bearer", "token_secret": "token"},
    "basic": {"kind": "basic", "username": "erp", "password_secret": "key"},
}


def _carries_credentials(seen: Any) -> bool:
    text = json.dumps([seen.headers, seen.query]).lower()
    return any(
        secret.lower() in text
        for secret in (KEY, quote(KEY, safe=""), TOKEN, "authorization", "x-api-key", '"k"')
    )


# -- 1. credentials never follow a redirect to another origin ------------------------------------


@pytest.mark.parametrize("auth", AUTHS)
def test_redirect_to_another_origin_is_refused_by_default(auth: str) -> None:
    with local_server({"/items": lambda s: json_answer(ITEMS)}) as other:
        with (
            local_server({"/items": redirect(f"{other.url}/items")}) as api,
            pytest.raises(RedirectRefusedError) as refused,
        ):
            read(spec(AUTHS[auth]), api.url)
            assert len(api.requests_to("/items")) == 1
        assert other.seen == []  # nothing, credentials or not, reached the other origin
    message = str(refused.value)
    assert "leaves the origin" in message and "follow_redirects: same_origin" in message
    assert KEY not in message and quote(KEY, safe="") not in message


@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_with_any_every_credential_is_dropped_when_the_origin_changes(
    auth: str, status: int
) -> None:
    with local_server({"/items": lambda s: json_answer(ITEMS)}) as other:
        # Two hops: the second one back to the first origin must not regain the credentials.
        with local_server() as api:
            api.routes["/items"] = redirect(f"{other.url}/hop", status)
            other.routes["/hop"] = redirect(f"{api.url}/back", status)
            api.routes["/back"] = lambda s: json_answer(ITEMS)
            assert read(spec(AUTHS[auth], follow_redirects="any"), api.url) == [
                {"id": 1},
                {"id": 2},
            ]
            [first] = api.requests_to("/items")
            assert _carries_credentials(first)  # the origin itself got them
            [back] = api.requests_to("/back")
            assert not _carries_credentials(back)
        [hop] = other.requests_to("/hop")
        assert not _carries_credentials(hop), hop


def test_oauth2_token_is_not_sent_to_another_origin() -> None:
    oauth = {
        "kind": "oauth2_client_credentials",
        "token_url": "{base_url}/token",
        "client_id_secret": "client_id",
        "client_secret_secret": "client_secret",
    }
    token = json.dumps({"access_token": "access-Tok-5566", "expires_in": 3600})
    with local_server({"/items": lambda s: json_answer(ITEMS)}) as other:
        with local_server({"/token": lambda s: json_answer(token)}) as api:
            api.routes["/items"] = redirect(f"{other.url}/items")
            with pytest.raises(RedirectRefusedError):
                read(spec(oauth), api.url)
            assert other.seen == []
            assert len(read(spec(oauth, follow_redirects="any"), api.url)) == 2
            assert (
                api.requests_to("/items")[-1].headers["authorization"] == "Bearer access-Tok-5566"
            )
        [seen] = other.requests_to("/items")
        assert "authorization" not in seen.headers

        # A token request redirected elsewhere would resend the client secret: refused.
        with (
            local_server({"/token": redirect(f"{other.url}/token", 307)}) as api,
            pytest.raises(RedirectRefusedError, match="body carries credentials"),
        ):
            read(spec(oauth, follow_redirects="any"), api.url)
        assert other.requests_to("/token") == []


def test_same_origin_redirects_keep_working_with_credentials() -> None:
    with local_server({"/new": lambda s: json_answer(ITEMS)}) as api:
        api.routes["/items"] = redirect("/new", 301)
        assert len(read(spec(AUTHS["api_key_header"]), api.url)) == 2
        assert api.requests_to("/new")[0].headers["x-api-key"] == KEY


def test_follow_redirects_none_fails_on_any_redirect() -> None:
    with local_server({"/new": lambda s: json_answer(ITEMS)}) as api:
        api.routes["/items"] = redirect("/new")
        with pytest.raises(HttpSourceError, match="HTTP 302.*not followed.*follow_redirects: none"):
            read(spec(None, follow_redirects="none"), api.url)
        assert api.requests_to("/new") == []


def test_a_next_page_url_at_another_origin_gets_no_credentials() -> None:
    with local_server({"/p2": lambda s: json_answer('{"data": [{"id": 3}]}')}) as other:
        with local_server() as api:
            page1 = json.dumps({"data": [{"id": 1}], "next": f"{other.url}/p2"})
            api.routes["/items"] = lambda s: json_answer(page1)
            paged = dict(pagination={"kind": "next_url", "path": "next"}, records="data")
            with pytest.raises(RedirectRefusedError, match="next page URL"):
                read(spec(AUTHS["api_key_header"], **paged), api.url)
            assert other.seen == []
            got = read(spec(AUTHS["api_key_header"], follow_redirects="any", **paged), api.url)
            assert got == [{"id": 1}, {"id": 3}]
        assert not _carries_credentials(other.requests_to("/p2")[0])


# -- 2. server-side request forgery ----------------------------------------------------------------


@pytest.fixture
def no_connections(monkeypatch) -> list[Any]:
    """Fails the test if any socket connects anywhere but loopback."""
    attempts: list[Any] = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        attempts.append(address)
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a connection to {address} was attempted")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return attempts


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file:' is not allowed"),
        ("ftp://example.com/x", "scheme 'ftp:' is not allowed"),
        ("gopher://127.0.0.1:70/", "scheme 'gopher:' is not allowed"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://169.254.170.2/v2/credentials", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "AWS instance-metadata"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://100.100.100.200/", "Alibaba"),
        ("http://metadata.google.internal/computeMetadata/v1/", "instance-metadata endpoint"),
        ("http://METADATA.google.internal./", "instance-metadata endpoint"),
    ],
)
def test_forbidden_base_urls_are_refused_before_connecting(
    base_url: str, reason: str, no_connections: list
) -> None:
    with pytest.raises(ForbiddenDestinationError) as refused:
        read(spec(AUTHS["bearer"]), base_url)
    assert reason in str(refused.value)
    assert TOKEN not in str(refused.value)
    assert no_connections == []


def test_a_host_name_resolving_to_a_metadata_address_is_refused(
    monkeypatch, no_connections: list
) -> None:
    # DNS is the one thing a local server cannot play: the resolver answers for one name only.
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(ForbiddenDestinationError, match=r"rebind\.example \(169\.254\.169\.254\)"):
        read(spec(None), "http://rebind.example")
    # ... also when a (loopback) API redirects there, whatever follow_redirects says.
    with (
        local_server({"/items": redirect("http://rebind.example/latest/meta-data")}) as api,
        pytest.raises(RedirectRefusedError, match="leaves the origin"),
    ):
        read(spec(None), api.url)
        with pytest.raises(ForbiddenDestinationError, match="link-local"):
            read(spec(None, follow_redirects="any"), api.url)
    assert all(address[0] == "127.0.0.1" for address in no_connections)


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "http://[fd00:ec2::254]/"],
)
def test_redirects_to_forbidden_destinations_are_refused(location: str, no_connections) -> None:
    with (
        local_server({"/items": redirect(location)}) as api,
        pytest.raises(ForbiddenDestinationError, match="redirect to .* refused"),
    ):
        read(spec(None, follow_redirects="any"), api.url)


def test_loopback_and_private_addresses_stay_allowed_and_the_operator_can_allow_more(
    monkeypatch,
) -> None:
    for url in ("http://127.0.0.1:1/", "http://localhost/", "http://10.1.2.3/", "http://[::1]/",
                "https://192.168.10.5:8443/", "http://172.20.0.4/"):  # fmt: skip
        check_url(url)  # no connection: only the URL and literal addresses are checked
    check_host("erp.internal", ["10.0.0.7", "fd12::7"])
    with pytest.raises(DestinationRefused):
        check_host("link.example", ["169.254.10.20"])
    monkeypatch.setenv(ALLOW_ENV, "169.254.10.0/24, metadata.google.internal")
    check_host("link.example", ["169.254.10.20"])
    check_url("http://metadata.google.internal/")
    with pytest.raises(DestinationRefused):
        check_host("link.example", ["169.254.169.254"])


# -- 4. bounded memory: the response size limit ------------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False])
def test_a_huge_response_fails_the_stream_naming_url_and_limit(chunked: bool) -> None:
    chunk = b"[" + b'{"id": 1},' * 10_000

    def huge(seen):
        # 200 chunks of ~100 KB = 20 MB if anyone read it all; the limit stops it at 1 MB.
        body = (chunk for _ in range(200)) if chunked else chunk * 20
        return 200, {"Content-Type": "application/json"}, body

    with local_server({"/items": huge}) as api, pytest.raises(ResponseTooLargeError) as refused:
        read(spec(None, max_response_bytes=1_000_000), api.url)
    message = str(refused.value)
    assert f"GET {api.url}/items" in message
    assert "larger than 1000000 bytes" in message
    assert "http.max_response_bytes or SYNKRO_HTTP_MAX_RESPONSE_BYTES" in message


def test_the_response_limit_comes_from_the_environment(monkeypatch) -> None:
    body = json.dumps([{"id": i, "pad": "x" * 100} for i in range(100)])
    with local_server({"/items": lambda s: json_answer(body)}) as api:
        monkeypatch.setenv("SYNKRO_HTTP_MAX_RESPONSE_BYTES", "5000")
        with pytest.raises(ResponseTooLargeError, match="larger than 5000 bytes"):
            read(spec(None), api.url)
        monkeypatch.setenv("SYNKRO_HTTP_MAX_RESPONSE_BYTES", "50000")
        assert len(read(spec(None), api.url)) == 100


# -- 4./5. hostile JSON: depth, lone surrogates, bare values --------------------------------------


def test_deep_nesting_is_a_clear_error_not_a_recursion_error() -> None:
    deep = "[" + '{"a":' * 100_000 + "1" + "}" * 100_000 + "]"
    with local_server({"/items": lambda s: json_answer(deep)}) as api:
        with pytest.raises(SourceDataError) as refused:
            read(spec(None), api.url)
        message = str(refused.value)
        assert "stream 'items'" in message and "page 1" in message
        assert "nested deeper than 100 levels" in message and "SYNKRO_JSON_MAX_DEPTH" in message
        # Deeper than the limit but parseable: named down to the record and field, also when
        # the records before it are flat.
        flat_then_deep = '[{"id": 0, "v": 1}, ' + deep_json(150).removeprefix("[")
        api.routes["/items"] = lambda s: json_answer(flat_then_deep)
        with pytest.raises(
            SourceDataError, match="record 2, field 'v': JSON nested deeper than 100"
        ):
            read(spec(None), api.url)
        # Within the limit, nesting is fine.
        ok = "[" + '{"id": 1, "n": ' + '{"a":' * 50 + "1" + "}" * 50 + "}]"
        api.routes["/items"] = lambda s: json_answer(ok)
        assert read(spec(None), api.url)[0]["id"] == 1


def test_a_record_that_is_not_an_object_is_named_by_its_position() -> None:
    body = json.dumps([{"id": 1, "name": "ok"}, ["id", 2]])
    with (
        local_server({"/items": lambda s: json_answer(body)}) as api,
        pytest.raises(SourceDataError, match=r"page 1: record 2 of the records path .* is list"),
    ):
        read(spec(None), api.url)


def test_a_lone_surrogate_is_named_with_stream_page_and_position() -> None:
    body = '[{"id": 1, "name": "ok \\ud83d\\ude00"},\n {"id": 2, "name": "bad \\ud800 here"}]'
    with (
        local_server({"/items": lambda s: json_answer(body)}) as api,
        pytest.raises(SourceDataError) as refused,
    ):
        read(spec(None), api.url)
    message = str(refused.value)
    assert "stream 'items'" in message and "page 1" in message
    assert "lone UTF-16 surrogate escape \\ud800 at line 2, column 25" in message


@pytest.mark.parametrize(
    ("body", "shown"),
    [('[{"id": 1}, "just text"]', "record 2 of the records path '$' is str 'just text'"),
     ("[42]", "record 1 of the records path '$' is int 42"),
     ('[{"id": 1}, [1, 2]]', "record 2 of the records path '$' is list [1, 2]")],
)  # fmt: skip
def test_a_bare_value_where_a_record_is_expected_is_a_clear_error(body: str, shown: str) -> None:
    with (
        local_server({"/items": lambda s: json_answer(body)}) as api,
        pytest.raises(SourceDataError) as refused,
    ):
        read(spec(None), api.url)
    message = str(refused.value)
    assert "stream 'items'" in message and "page 1" in message and shown in message


# -- 7. redaction of an echoed, encoded key -----------------------------------------------------------


def test_an_error_body_echoing_the_url_encoded_key_is_redacted() -> None:
    def echo(seen):
        key = quote(seen.query["k"][0], safe="")
        return json_answer(json.dumps({"error": f"bad key in /items?k={key}"}), status=403)

    with local_server({"/items": echo}) as api, pytest.raises(HttpSourceError) as refused:
        read(spec(AUTHS["api_key_query"]), api.url)
    message = str(refused.value)
    assert "HTTP 403" in message and "bad key in /items?k=***" in message
    assert KEY not in message and quote(KEY, safe="") not in message
