"""Pagination kinds of the HTTP connector, each on its own, walked over recorded responses.

Each test builds the `httpx.Response`s a server would send and asks the paginator for the first
request and the request after each page; no server, no session. test_http_connector.py reads the
same kinds from a real local API end to end.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import httpx
import pytest

from synkro_dagster.connectors.http_errors import (
    HttpSourceError,
    PaginationLoopError,
    RedirectRefusedError,
)
from synkro_dagster.connectors.http_paging import (
    Page,
    PageRequest,
    Paginator,
    PagingContext,
    paginator_for,
    register_paginator,
    registered_pagination_models,
)
from synkro_dagster.specs.http import (
    PAGINATION_KINDS,
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    OffsetPagination,
    PageNumberPagination,
    Pagination,
    RateLimit,
    SinglePage,
)

SECRET = "s3cret"
API = "https://api.test/v1/items"


def _redact(text: str) -> str:
    return text.replace(SECRET, "[redacted]")


def _context(**changes: Any) -> PagingContext:
    fields: dict[str, Any] = {
        "stream": "integration 'acme', stream 'items'",
        "method": "GET",
        "page_size": 100,
        "max_pages": 1000,
        "follow_redirects": "same_origin",
        "safe_url": lambda url: _redact(str(url)),
        "redact": _redact,
    }
    return PagingContext(**{**fields, **changes})


def _paginator(spec: Any, **context: Any) -> Paginator[Any]:
    return paginator_for(spec, _context(**context))


def _page(
    request: PageRequest,
    body: Any = None,
    *,
    number: int = 1,
    received: int = 10,
    total: int | None = None,
    headers: dict[str, str] | None = None,
) -> Page:
    """The page a server answered `request` with."""
    sent = httpx.Request("GET", request.url, params=request.params)
    content = json.dumps(body if body is not None else [{"id": number}]).encode()
    response = httpx.Response(200, content=content, headers=headers, request=sent)
    return Page(number, request, response, body, received, total)


def _walk(paginator: Paginator[Any], bodies: list[Any], **page: Any) -> list[PageRequest]:
    """The requests the paginator makes while the server answers with `bodies` in turn."""
    request: PageRequest | None = paginator.first(API, {"status": "open"})
    made = []
    for number, body in enumerate(bodies, start=1):
        assert request is not None, f"stopped after {number - 1} page(s)"
        made.append(request)
        request = paginator.next(_page(request, body, number=number, received=10 * number, **page))
    assert request is None, "asked for a page after the last recorded one"
    return made


# -- the map from spec models to paginators


def test_every_pagination_kind_of_the_spec_has_exactly_one_paginator() -> None:
    models = typing.get_args(typing.get_args(Pagination)[0])
    assert set(models) == registered_pagination_models()
    assert len(PAGINATION_KINDS) == len(models)


def test_a_pagination_model_without_a_paginator_is_refused_by_kind() -> None:
    with pytest.raises(HttpSourceError, match="stream 'items': pagination kind 'RateLimit' has no"):
        _paginator(RateLimit(requests_per_second=1))


def test_registering_a_second_paginator_for_one_kind_fails() -> None:
    with pytest.raises(ValueError, match="SinglePage is registered twice"):
        register_paginator(SinglePage)(type("AnotherSingle", (Paginator,), {}))


# -- the kinds


def test_single_page_reads_the_stream_url_once() -> None:
    made = _walk(_paginator(SinglePage(kind="single")), [{"items": []}])
    assert made == [PageRequest(API, {"status": "open"})]


def test_page_number_asks_for_the_page_size_then_counts_pages_to_the_last_the_body_names() -> None:
    spec = PageNumberPagination(
        kind="page_number", page_size_param="per_page", total_pages="meta.total_pages"
    )
    bodies = [{"meta": {"total_pages": 3}}] * 3
    made = _walk(_paginator(spec, page_size=25), bodies)
    # Parameter order is the stream's, then the size, then the page (as the URL shows them).
    assert [list(r.params.items()) for r in made] == [
        [("status", "open"), ("per_page", 25), ("page", n)] for n in (1, 2, 3)
    ]


def test_page_number_counts_the_last_page_from_its_start() -> None:
    spec = PageNumberPagination(kind="page_number", param="p", start=0, total_pages="pages")
    made = _walk(_paginator(spec), [{"pages": "2"}] * 2)
    assert [r.params["p"] for r in made] == [0, 1]


def test_page_number_stops_once_the_reported_total_is_received() -> None:
    spec = PageNumberPagination(kind="page_number", page_size=10, page_size_param="size")
    paginator = _paginator(spec)
    first = paginator.first(API, {})
    assert first.params == {"size": 10, "page": 1}
    second = paginator.next(_page(first, received=10, total=15))
    assert second is not None and second.params["page"] == 2
    assert paginator.next(_page(second, number=2, received=15, total=15)) is None


def test_offset_moves_by_the_limit_until_the_total() -> None:
    spec = OffsetPagination(kind="offset", limit=50, offset_param="skip", limit_param="take")
    made = _walk(_paginator(spec), [{}] * 3, total=120)
    assert [r.params for r in made] == [
        {"status": "open", "skip": n, "take": 50} for n in (0, 50, 100)
    ]


def test_offset_without_a_total_goes_on_until_the_session_sees_an_empty_page() -> None:
    paginator = _paginator(OffsetPagination(kind="offset", limit=2, start=4))
    first = paginator.first(API, {})
    after = paginator.next(_page(first))
    assert first.params == {"offset": 4, "limit": 2}
    assert after is not None and after.params == {"offset": 6, "limit": 2}


def test_cursor_sends_the_token_the_body_names_until_there_is_none() -> None:
    spec = CursorPagination(kind="cursor", token="paging.next", param="after", page_size_param="n")
    bodies = [{"paging": {"next": "b"}}, {"paging": {"next": 7}}, {"paging": {"next": ""}}]
    made = _walk(_paginator(spec), bodies)
    assert [r.params for r in made] == [
        {"status": "open", "n": 100},
        {"status": "open", "n": 100, "after": "b"},
        {"status": "open", "n": 100, "after": "7"},
    ]


def test_a_repeated_cursor_token_is_a_loop_and_the_error_hides_secrets() -> None:
    spec = CursorPagination(kind="cursor", token="next", param="after")
    paginator = _paginator(spec)
    first = paginator.first(API, {})
    second = paginator.next(_page(first, {"next": f"tok-{SECRET}"}))
    assert second is not None
    with pytest.raises(PaginationLoopError) as raised:
        paginator.next(_page(second, {"next": f"tok-{SECRET}"}, number=2))
    message = str(raised.value)
    assert message.startswith("integration 'acme', stream 'items': GET https://api.test/v1/items")
    assert "the same next token twice ('tok-[redacted]')" in message
    assert SECRET not in message


def test_next_url_is_read_relative_to_the_page_and_carries_its_own_parameters() -> None:
    spec = NextUrlPagination(kind="next_url", path="links.next")
    bodies = [{"links": {"next": "/v1/items?cursor=2"}}, {"links": {"next": None}}]
    made = _walk(_paginator(spec), bodies)
    assert made[1] == PageRequest("https://api.test/v1/items?cursor=2", {}, credentials=True)


def test_a_next_url_seen_before_is_a_loop() -> None:
    paginator = _paginator(NextUrlPagination(kind="next_url", path="next"))
    first = paginator.first(API, {})
    second = paginator.next(_page(first, {"next": f"{API}?page=2"}))
    assert second is not None
    with pytest.raises(PaginationLoopError, match=r"same next URL twice \('https://api.test/v1"):
        paginator.next(_page(second, {"next": f"{API}?page=2"}, number=2))


def test_a_next_url_at_another_origin_is_refused_by_default_without_showing_secrets() -> None:
    paginator = _paginator(NextUrlPagination(kind="next_url", path="next"))
    first = paginator.first(API, {"key": SECRET})
    with pytest.raises(RedirectRefusedError) as raised:
        paginator.next(_page(first, {"next": f"https://elsewhere.test/items?key={SECRET}"}))
    message = str(raised.value)
    assert "the next page URL https://elsewhere.test/items?key=[redacted] is at another origin" in (
        message
    )
    assert "(spec http.follow_redirects: same_origin; 'any' reads it without credentials)" in (
        message
    )
    assert SECRET not in message


def test_a_next_url_on_another_port_is_another_origin() -> None:
    paginator = _paginator(NextUrlPagination(kind="next_url", path="next"))
    with pytest.raises(RedirectRefusedError):
        paginator.next(_page(paginator.first(API, {}), {"next": "https://api.test:8443/v1/items"}))


def test_with_follow_redirects_any_a_next_url_elsewhere_is_read_without_credentials_for_good() -> (
    None
):
    paginator = _paginator(NextUrlPagination(kind="next_url", path="next"), follow_redirects="any")
    first = paginator.first(API, {})
    away = paginator.next(_page(first, {"next": "https://mirror.test/items?page=2"}))
    assert away == PageRequest("https://mirror.test/items?page=2", {}, credentials=False)
    # Back at the first origin, the credentials still stay behind.
    back = paginator.next(_page(away, {"next": f"{API}?page=3"}, number=2))
    assert back == PageRequest(f"{API}?page=3", {}, credentials=False)


def test_link_header_follows_the_rel_next_link() -> None:
    spec = LinkHeaderPagination(kind="link_header", page_size_param="per_page", page_size=5)
    paginator = _paginator(spec)
    first = paginator.first(API, {})
    link = f'<{API}?page=2&per_page=5>; rel="next", <{API}?page=9&per_page=5>; rel="last"'
    second = paginator.next(_page(first, headers={"Link": link}))
    assert first.params == {"per_page": 5}
    assert second == PageRequest(f"{API}?page=2&per_page=5", {})
    last = f'<{API}?page=1&per_page=5>; rel="first"'
    assert paginator.next(_page(second, headers={"Link": last}, number=2)) is None


# -- what every kind shares


def test_a_page_with_the_same_content_as_the_one_before_is_a_loop() -> None:
    paginator = _paginator(PageNumberPagination(kind="page_number"))
    first = paginator.first(API, {})
    paginator.check_content(1, _page(first, [{"id": 1}]).response)
    paginator.check_content(2, _page(first, [{"id": 2}]).response)
    with pytest.raises(PaginationLoopError, match="page 3 has the same content as the page before"):
        paginator.check_content(3, _page(first, [{"id": 2}]).response)


def test_max_pages_bounds_a_stream_but_allows_exactly_that_many() -> None:
    spec = PageNumberPagination(kind="page_number")
    _walk(_paginator(spec, max_pages=3), [{}] * 3, total=30)  # the third page is the last
    with pytest.raises(HttpSourceError, match=r"stream 'items': more than 3 pages \(Http"):
        _walk(_paginator(spec, max_pages=3), [{}] * 4)
