"""Pagination kinds of the HTTP connector: one class per kind of a spec's `pagination:` block.

A `Paginator` owns the first request of a stream (`start`) and the request for the page after a
response (`follow`); `register_paginator(Model)` joins a spec model (synkro_dagster/specs/http.py)
to the class that implements it, and `paginator_for` is the one place a session turns a spec's
pagination into behaviour. What every kind needs is in the base class: a page whose content, next
token or next URL repeats an earlier one fails instead of looping, `max_pages` bounds a stream,
and a next-page URL at another origin is refused, or (`follow_redirects: any`) read without
credentials, like a redirect.

The session (`HttpSession._pages`) sends the requests and reads the records; a paginator only
says where the next page is, so each kind is tested on recorded responses without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from synkro_dagster.connectors.http_errors import (
    HttpSourceError,
    PaginationLoopError,
    RedirectRefusedError,
)
from synkro_dagster.connectors.http_guard import same_origin
from synkro_dagster.connectors.http_kinds import KindMap
from synkro_dagster.specs.http import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    OffsetPagination,
    PageNumberPagination,
    SinglePage,
)


def select(body: Any, path: str | None) -> Any:
    """The value at a dotted body path: 'data', 'result.items', 'items.0.id'; '$' or '' is the body."""
    if path is None:
        return None
    path = path.strip()
    if path in ("", "$"):
        return body
    if path.startswith("$."):
        path = path[2:]
    value = body
    for key in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list) and key.lstrip("-").isdigit():
            index = int(key)
            value = value[index] if -len(value) <= index < len(value) else None
        else:
            return None
        if value is None:
            return None
    return value


@dataclass(frozen=True)
class PageRequest:
    """Where a page is asked for: URL and query parameters. `credentials` turns False for good
    once a next-page URL left the stream's origin (follow_redirects: any)."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)
    credentials: bool = True

    def with_param(self, name: str, value: Any) -> PageRequest:
        return replace(self, params={**self.params, name: value})


@dataclass(frozen=True)
class Page:
    """One response as a paginator sees it."""

    number: int  # 1 for the first page
    request: PageRequest  # what was asked for (before redirects)
    response: httpx.Response
    body: Any  # the parsed JSON
    received: int  # records received so far, this page's included (before any cursor filter)
    total: int | None  # records the source says the stream has (the spec's `total`), if known


@dataclass(frozen=True)
class PagingContext:
    """What a paginator knows of its stream and session: names for errors and the limits."""

    stream: str  # "integration 'x', stream 'y'"
    method: str
    page_size: int  # when a kind names a size parameter but no size (HttpConnector.page_size)
    max_pages: int  # HttpConnector.max_pages
    follow_redirects: str  # the spec's http.follow_redirects
    safe_url: Callable[[httpx.URL | str], str]  # the URL with secrets removed
    redact: Callable[[str], str]

    def describe(self, url: httpx.URL | str) -> str:
        return f"{self.stream}: {self.method} {self.safe_url(url)}"


_Spec = TypeVar("_Spec", bound=BaseModel)


class Paginator(Generic[_Spec]):
    """One stream's walk through the pages of one pagination kind. A subclass says where the first
    page is (`start`) and the page after a response (`follow`); this base refuses loops and
    bounds the walk. One instance per stream read: it keeps the walk's state."""

    def __init__(self, spec: _Spec, context: PagingContext) -> None:
        self.spec = spec
        self.context = context
        self._previous_content: bytes | None = None
        self._seen: set[str] = set()

    # -- what a kind says

    def start(self, request: PageRequest) -> PageRequest:
        """The first request: the stream's URL and parameters plus this kind's."""
        return request

    def follow(self, page: Page) -> PageRequest | None:
        """The request for the page after `page`, or None when `page` was the last."""
        return None

    # -- what every kind shares

    def first(self, url: str, params: Mapping[str, Any]) -> PageRequest:
        return self.start(PageRequest(url, dict(params)))

    def next(self, page: Page) -> PageRequest | None:
        """The request after `page` (None: done), within `max_pages`."""
        request = self.follow(page)
        if request is not None and page.number >= self.context.max_pages:
            raise HttpSourceError(
                f"{self.context.stream}: more than {self.context.max_pages} pages "
                "(HttpConnector.max_pages)"
            )
        return request

    def check_content(self, page_number: int, response: httpx.Response) -> None:
        """Refuse a page with the same content as the one before (called for pages with records).

        A server ignoring the page parameter sends the previous page again. Comparing the bytes is
        cheap (pages differ within the first records) and needs no hashing."""
        content = response.content
        if content == self._previous_content:
            raise PaginationLoopError(
                f"{self.context.describe(response.request.url)}: page {page_number} has the same "
                "content as the page before; the server ignores the pagination parameters, so "
                "reading on would never end"
            )
        self._previous_content = content

    def check_new(self, value: str, page: Page, what: str) -> None:
        """Refuse a next token or URL the server already sent: the walk would never end."""
        if value in self._seen:
            shown = (
                self.context.safe_url(value) if what == "next URL" else self.context.redact(value)
            )
            raise PaginationLoopError(
                f"{self.context.describe(page.response.request.url)}: the server sent the same "
                f"{what} twice ({shown!r}); reading on would never end"
            )
        self._seen.add(value)

    def with_page_size(
        self, request: PageRequest, param: str | None, size: int | None
    ) -> PageRequest:
        """The request asking for `size` records per page in `param`, when the kind names one."""
        if not param:
            return request
        return request.with_param(param, size or self.context.page_size)

    def follow_url(self, page: Page, target: Any) -> PageRequest | None:
        """The request for a next-page URL the server named (relative to the page's URL).

        A URL at another origin is a redirect the body asks for: refused unless the spec's
        `follow_redirects` is `any`, then read, like every later page, without credentials."""
        if not target:
            return None
        url = str(page.response.request.url.join(str(target)))
        self.check_new(url, page, "next URL")
        credentials = page.request.credentials
        if not same_origin(httpx.URL(page.request.url), httpx.URL(url)):
            policy = self.context.follow_redirects
            if policy != "any":
                raise RedirectRefusedError(
                    f"{self.context.describe(page.response.request.url)}: the next page URL "
                    f"{self.context.safe_url(url)} is at another origin; credentials must not "
                    f"follow it (spec http.follow_redirects: {policy}; 'any' reads it without "
                    "credentials)"
                )
            credentials = False
        # The next URL carries every query parameter already.
        return PageRequest(url, {}, credentials)


_PAGINATORS: KindMap[type[Paginator[Any]]] = KindMap(
    "pagination", "synkro_dagster.connectors.http_paging.register_paginator"
)
# Class decorator: the class implements the pagination kind of a spec model.
register_paginator = _PAGINATORS.register
registered_pagination_models = _PAGINATORS.models


def paginator_for(spec: BaseModel, context: PagingContext) -> Paginator[Any]:
    """A fresh paginator for one read of a stream paginated as `spec` says."""
    return _PAGINATORS.implementation(spec, f"{context.stream}: ")(spec, context)


# ---------------------------------------------------------------------------------------------
# The kinds


@register_paginator(SinglePage)
class Single(Paginator[SinglePage]):
    """One request returns every record."""


@register_paginator(PageNumberPagination)
class PageNumber(Paginator[PageNumberPagination]):
    """?page=1, 2, 3 ... until an empty page, the last page the body names, or the total."""

    def start(self, request: PageRequest) -> PageRequest:
        spec = self.spec
        request = self.with_page_size(request, spec.page_size_param, spec.page_size)
        return request.with_param(spec.param, spec.start)

    def follow(self, page: Page) -> PageRequest | None:
        spec = self.spec
        number = page.request.params[spec.param]
        total_pages = select(page.body, spec.total_pages) if spec.total_pages else None
        if (
            isinstance(total_pages, int | str)
            and str(total_pages).isdigit()
            and number - spec.start + 1 >= int(total_pages)
        ):
            return None
        if page.total is not None and page.received >= page.total:
            return None
        return page.request.with_param(spec.param, number + 1)


@register_paginator(OffsetPagination)
class Offset(Paginator[OffsetPagination]):
    """?offset=0&limit=100, then offset=100 ... until an empty page or the total."""

    def start(self, request: PageRequest) -> PageRequest:
        spec = self.spec
        request = request.with_param(spec.offset_param, spec.start)
        return request.with_param(spec.limit_param, spec.limit)

    def follow(self, page: Page) -> PageRequest | None:
        spec = self.spec
        offset = page.request.params[spec.offset_param] + spec.limit
        if page.total is not None and offset >= page.total:
            return None
        return page.request.with_param(spec.offset_param, offset)


@register_paginator(CursorPagination)
class Cursor(Paginator[CursorPagination]):
    """The body names the next page's token; it goes back in a request parameter."""

    def start(self, request: PageRequest) -> PageRequest:
        return self.with_page_size(request, self.spec.page_size_param, self.spec.page_size)

    def follow(self, page: Page) -> PageRequest | None:
        token = select(page.body, self.spec.token)
        if token in (None, ""):
            return None
        token = str(token)
        self.check_new(token, page, "next token")
        return page.request.with_param(self.spec.param, token)


@register_paginator(NextUrlPagination)
class NextUrl(Paginator[NextUrlPagination]):
    """The body holds the next page's URL."""

    def start(self, request: PageRequest) -> PageRequest:
        return self.with_page_size(request, self.spec.page_size_param, self.spec.page_size)

    def follow(self, page: Page) -> PageRequest | None:
        return self.follow_url(page, select(page.body, self.spec.path))


@register_paginator(LinkHeaderPagination)
class LinkHeader(Paginator[LinkHeaderPagination]):
    """RFC 8288: the `Link` response header names the next page (rel="next")."""

    def start(self, request: PageRequest) -> PageRequest:
        return self.with_page_size(request, self.spec.page_size_param, self.spec.page_size)

    def follow(self, page: Page) -> PageRequest | None:
        return self.follow_url(page, (page.response.links.get(self.spec.rel) or {}).get("url"))
