"""A real local HTTP server with the shop and CRM APIs (and test endpoints) for tests and the demo.

It listens on 127.0.0.1 (port 0 picks a free one) in a background thread and serves seeded,
deterministic data with the behaviour real APIs have: every pagination kind, `updated_since`
filtering, bearer / API key / basic / OAuth2 client-credentials auth with expiring tokens, and
faults a test can switch on: 429 with Retry-After (seconds or HTTP-date), transient 5xx, slow
responses, a server that repeats the same page, failure after page N, duplicate primary keys, an
endpoint ignoring the filter. Tests mutate data through the handle (or POST /_admin/...).

    with start_api_server() as api:
        api.url                      # http://127.0.0.1:PORT
        api.store.add("shop.customers", name="New")
        api.rate_limit("/shop/api/v1/orders", retry_after=1)

Routes (all JSON):
    /shop/api/v1/{customers,products,orders}   bearer; page_number (page, per_page); updated_since
    /shop/api/v1/orders/{id}/lines             bearer; one order's lines (a child endpoint)
    /shop/api/v1/reports/sales?date=YYYY-MM-DD bearer; one day's sales report
    /crm/oauth/token                           POST, client credentials -> access_token
    /crm/v3/contacts                           OAuth2; cursor (after, limit); modified_after
    /crm/v3/deals                              OAuth2; offset (offset, limit); modified_after
    /crm/v3/companies                          OAuth2; Link header (page, per_page); modified_after
    /test/{kind}/{collection}                  no auth; kind = page_number | offset | cursor |
                                               next_url | link_header | single | unfiltered
    /test/auth/{auth}/{collection}             auth = bearer | api_key_header | api_key_query |
                                               basic | oauth2; page_number
    /_admin/faults  /_admin/records/{collection}  /_admin/requests  /_admin/tokens/expire
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import random
import secrets
import socketserver
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

SEED_START = datetime(2025, 1, 1, tzinfo=UTC)
MUTATION_START = datetime(2026, 1, 1, tzinfo=UTC)
PAGINATION_KINDS = ("page_number", "offset", "cursor", "next_url", "link_header", "single")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Credentials:
    """What the server accepts; tests hand the same values to integrations as secrets."""

    bearer_token: str = "shop-token-7f3a9c2e5194"
    api_key: str = "apikey-4b8d1e6f0a27"
    basic_username: str = "synkro"
    basic_password: str = "basic-pass-9c1e7a33"
    client_id: str = "crm-client-2d5f81"
    client_secret: str = "crm-secret-8e4b6a1c90"


# --- data ---------------------------------------------------------------------------------------


class BenchRecords(Sequence[dict[str, Any]]):
    """A large read-only collection generated on demand, so a benchmark needs no memory for it."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(self.size))]
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(index)
        return self._record(index)

    @staticmethod
    def _record(i: int) -> dict[str, Any]:
        return {
            "id": i + 1,
            "name": f"item {i + 1}",
            "sku": f"SKU-{i + 1:07d}",
            "price": round(1 + (i * 7919 % 10000) / 100, 2),
            "active": i % 3 != 0,
            "updated_at": iso(SEED_START + timedelta(seconds=i)),
        }


class DataStore:
    """Seeded collections keyed by "<api>.<name>", each ordered by id; mutations bump updated_at."""

    def __init__(self, seed: int = 7, bench_records: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._clock = MUTATION_START
        self._bench = BenchRecords(bench_records)
        self.collections: dict[str, dict[int, dict[str, Any]]] = {}
        self.reports: dict[str, list[dict[str, Any]]] = {}  # day -> sales report rows (override)
        rng = random.Random(seed)
        self._seed(rng)

    def _stamp(self, rng: random.Random) -> str:
        return iso(SEED_START + timedelta(seconds=rng.randrange(0, 300 * 86400)))

    def _seed(self, rng: random.Random) -> None:
        first = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
        last = ["Ng", "Ortiz", "Patel", "Quinn", "Rossi", "Sato", "Tan", "Ueda", "Voss", "Weber"]
        countries = ["DE", "FR", "NL", "US", "JP", "BR"]
        customers: dict[int, dict[str, Any]] = {}
        for i in range(1, 138):
            name = f"{rng.choice(first)} {rng.choice(last)}"
            customers[i] = {
                "id": i,
                "email": f"customer{i}@example.com",
                "name": name,
                "country": rng.choice(countries),
                "accepts_marketing": rng.random() < 0.4,
                "created_at": iso(SEED_START - timedelta(days=rng.randrange(1, 900))),
                "updated_at": self._stamp(rng),
            }
        products: dict[int, dict[str, Any]] = {}
        for i in range(1, 43):
            products[i] = {
                "id": i,
                "sku": f"SKU-{i:04d}",
                "title": f"Product {i}",
                "price": f"{rng.randrange(199, 19999) / 100:.2f}",
                "tags": rng.sample(["new", "sale", "eco", "bundle", "gift"], k=rng.randrange(0, 3)),
                "stock": rng.randrange(0, 500),
                "updated_at": self._stamp(rng),
            }
        orders: dict[int, dict[str, Any]] = {}
        for i in range(1, 251):
            items: list[dict[str, Any]] = []
            for _ in range(rng.randrange(1, 5)):
                product = products[rng.randrange(1, 43)]
                items.append(
                    {
                        "product_id": product["id"],
                        "sku": product["sku"],
                        "quantity": rng.randrange(1, 6),
                        "unit_price": product["price"],
                    }
                )
            total = sum(float(x["unit_price"]) * x["quantity"] for x in items)
            orders[i] = {
                "id": 1000 + i,
                "customer_id": rng.randrange(1, 138),
                "status": rng.choice(["paid", "shipped", "refunded", "pending"]),
                "currency": "EUR",
                "total": f"{total:.2f}",
                "line_items": items,
                "updated_at": self._stamp(rng),
            }
        self.collections["shop.customers"] = customers
        self.collections["shop.products"] = products
        self.collections["shop.orders"] = {o["id"]: o for o in orders.values()}

        companies: dict[int, dict[str, Any]] = {}
        for i in range(1, 62):
            companies[i] = {
                "id": i,
                "name": f"Company {i} {rng.choice(['GmbH', 'Ltd', 'Inc', 'BV'])}",
                "domain": f"company{i}.example",
                "employees": rng.randrange(1, 5000),
                "updatedAt": self._stamp(rng),
            }
        contacts: dict[int, dict[str, Any]] = {}
        for i in range(1, 174):
            contacts[i] = {
                "id": i,
                "firstName": rng.choice(first),
                "lastName": rng.choice(last),
                "email": f"contact{i}@company{rng.randrange(1, 62)}.example",
                "companyId": rng.randrange(1, 62),
                "properties": {"lifecycle": rng.choice(["lead", "customer", "opportunity"])},
                "updatedAt": self._stamp(rng),
            }
        deals: dict[int, dict[str, Any]] = {}
        for i in range(1, 96):
            deals[i] = {
                "id": i,
                "name": f"Deal {i}",
                "amount": rng.randrange(500, 250000),
                "stage": rng.choice(["open", "won", "lost"]),
                "companyId": rng.randrange(1, 62),
                "contactIds": rng.sample(range(1, 174), k=rng.randrange(1, 4)),
                "updatedAt": self._stamp(rng),
            }
        self.collections["crm.companies"] = companies
        self.collections["crm.contacts"] = contacts
        self.collections["crm.deals"] = deals

        test_items: dict[int, dict[str, Any]] = {}
        for i in range(1, 254):
            test_items[i] = {
                "id": i,
                "name": f"item {i}",
                "value": rng.randrange(0, 10_000),
                "updated_at": self._stamp(rng),
            }
        self.collections["test.items"] = test_items

    @staticmethod
    def cursor_field(collection: str) -> str:
        return "updatedAt" if collection.startswith("crm.") else "updated_at"

    def now(self) -> str:
        """The next mutation time: one second after the last, always newer than the seed data."""
        self._clock += timedelta(seconds=1)
        return iso(self._clock)

    def records(self, collection: str, since: datetime | None = None) -> Sequence[dict[str, Any]]:
        """A snapshot of the collection ordered by id, optionally only records updated >= since."""
        if collection == "test.bench":
            if since is None:
                return self._bench
            return [r for r in self._bench if _parse_time(r["updated_at"]) >= since]
        with self._lock:
            rows = list(self.collections[collection].values())
        if since is None:
            return rows
        key = self.cursor_field(collection)
        return [r for r in rows if _parse_time(r[key]) >= since]

    def add(self, collection: str, **fields: Any) -> dict[str, Any]:
        """A new record with the next id and a fresh updated_at."""
        with self._lock:
            rows = self.collections[collection]
            record = {"id": max(rows, default=0) + 1, **fields}
            record[self.cursor_field(collection)] = self.now()
            rows[record["id"]] = record
            return dict(record)

    def update(self, collection: str, record_id: int, **fields: Any) -> dict[str, Any]:
        """Change fields of a record; its updated_at moves forward."""
        with self._lock:
            record = self.collections[collection][record_id]
            record.update(fields)
            record[self.cursor_field(collection)] = self.now()
            return dict(record)

    def delete(self, collection: str, *record_ids: int) -> None:
        """Remove records, as a source does when a row is deleted (no trace left)."""
        with self._lock:
            for record_id in record_ids:
                del self.collections[collection][record_id]

    def upsert(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        if "id" in record and record["id"] in self.collections[collection]:
            fields = {k: v for k, v in record.items() if k != "id"}
            return self.update(collection, record["id"], **fields)
        if "id" in record:
            with self._lock:
                stored = dict(record)
                stored[self.cursor_field(collection)] = self.now()
                rows = self.collections[collection]
                rows[stored["id"]] = stored
                # Keep id order after inserting an explicit id.
                self.collections[collection] = dict(sorted(rows.items()))
                return dict(stored)
        return self.add(collection, **record)


def _parse_time(value: str) -> datetime:
    """ISO-8601 text or unix seconds / milliseconds, as an aware UTC datetime."""
    text = str(value).strip()
    if text.lstrip("-").replace(".", "", 1).isdigit():
        number = float(text)
        if number > 1e11:  # milliseconds
            number /= 1000
        return datetime.fromtimestamp(number, UTC)
    moment = datetime.fromisoformat(text.replace(" ", "T"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- faults -------------------------------------------------------------------------------------


@dataclass
class Fault:
    """A switchable misbehaviour for requests whose path starts with `path`."""

    kind: str  # status | rate_limit | slow | repeat_page | fail_after_page | duplicate_keys | ignore_filter
    path: str = "/"
    count: int | None = None  # how many requests it affects; None: until cleared
    status: int = 500
    retry_after: float = 1.0
    as_date: bool = False
    seconds: float = 0.0
    after: int = 0  # fail_after_page: requests that still succeed
    seen: int = 0

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) and (self.count is None or self.count > 0)

    def use(self) -> None:
        if self.count is not None:
            self.count -= 1


@dataclass
class RequestLog:
    time: float
    method: str
    path: str
    query: dict[str, str]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    finished: float | None = None  # when the answer was ready (time.time()), to measure overlap


# --- the app ------------------------------------------------------------------------------------


class Response:
    def __init__(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.raw: bytes | None = None  # the encoded body, when kept in the benchmark cache


class ApiApp:
    """Routes requests to the fake APIs; shared state lives here (data, tokens, faults, log)."""

    def __init__(self, store: DataStore, credentials: Credentials, token_ttl: float) -> None:
        self.store = store
        self.credentials = credentials
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self.tokens_issued = 0
        self.faults: list[Fault] = []
        self.requests: list[RequestLog] = []
        self.lock = threading.Lock()
        # Encoded pages of the read-only benchmark collection, so the benchmark measures the
        # client rather than this server's JSON encoding.
        self._bench_cache: dict[str, Response] = {}

    # -- dispatch

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes, host: str
    ) -> Response:
        split = urlsplit(target)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        entry = RequestLog(time.time(), method, path, query, headers=dict(headers))
        with self.lock:
            self.requests.append(entry)
        slow = None if path.startswith("/_admin/") else self._fault("slow", path)
        if slow is not None:
            slow.use()
        cacheable = path == "/test/page_number/bench" and method == "GET" and not self.faults
        key = f"{path}?{sorted(query.items())}"  # parameter order must not matter
        cached = self._bench_cache.get(key) if cacheable else None
        if cached is not None:
            response = cached
        else:
            response = self._dispatch(method, path, query, headers, body, host)
            if cacheable and response.status == 200:
                response.raw = json.dumps(response.body).encode()
                self._bench_cache[key] = response
        if slow is not None:
            # Slow after the work (auth checked on arrival), as when a big response is produced.
            time.sleep(slow.seconds)
        entry.status = response.status
        entry.response_headers = dict(response.headers)
        entry.finished = time.time()
        return response

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        host: str,
    ) -> Response:
        if path.startswith("/_admin/"):
            return self._admin(method, path, body)
        injected = self._fault_response(path)
        if injected is not None:
            return injected
        parts = [p for p in path.split("/") if p]
        base = f"http://{host}"
        if path == "/crm/oauth/token" and method == "POST":
            return self._token(headers, body)
        if path == "/shop/api/v1/reports/sales":
            denied = self._check_bearer(headers, self.credentials.bearer_token)
            return denied or self._sales_report(query.get("date", ""))
        if len(parts) == 6 and parts[:4] == ["shop", "api", "v1", "orders"] and parts[5] == "lines":
            denied = self._check_bearer(headers, self.credentials.bearer_token)
            return denied or self._order_lines(parts[4], query)
        if len(parts) == 4 and parts[:3] == ["shop", "api", "v1"]:
            denied = self._check_bearer(headers, self.credentials.bearer_token)
            return denied or self._list(
                f"shop.{parts[3]}", "page_number", query, base + path, "updated_since", "shop"
            )
        if len(parts) == 3 and parts[:2] == ["crm", "v3"]:
            denied = self._check_oauth(headers)
            if denied:
                return denied
            kind = {"contacts": "cursor", "deals": "offset", "companies": "link_header"}.get(
                parts[2]
            )
            if kind is None:
                return Response(404, {"error": f"no such resource {parts[2]}"})
            return self._list(f"crm.{parts[2]}", kind, query, base + path, "modified_after", "crm")
        if len(parts) == 4 and parts[:2] == ["test", "auth"]:
            denied = self._check_auth(parts[2], headers, query)
            return denied or self._list(
                f"test.{parts[3]}", "page_number", query, base + path, "updated_since", "test"
            )
        if len(parts) == 3 and parts[0] == "test":
            kind = parts[1]
            ignore = kind == "unfiltered"
            if ignore:
                kind = "page_number"
            if kind not in PAGINATION_KINDS:
                return Response(404, {"error": f"no pagination kind {kind}"})
            return self._list(
                f"test.{parts[2]}", kind, query, base + path, "updated_since", "test", ignore
            )
        return Response(404, {"error": f"no route {method} {path}"})

    # -- faults

    def _fault(self, kind: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.kind == kind and fault.matches(path):
                    return fault
        return None

    def _fault_response(self, path: str) -> Response | None:
        limited = self._fault("rate_limit", path)
        if limited is not None:
            limited.use()
            if limited.as_date:
                # Whole seconds (HTTP-date resolution), rounded up so the wait is never shorter.
                moment = datetime.fromtimestamp(math.ceil(time.time() + limited.retry_after), UTC)
                value = format_datetime(moment, usegmt=True)
            else:
                value = f"{limited.retry_after:g}"
            return Response(429, {"error": "rate limited"}, {"Retry-After": value})
        failing = self._fault("status", path)
        if failing is not None:
            failing.use()
            return Response(failing.status, {"error": "transient failure", "detail": "try later"})
        after = self._fault("fail_after_page", path)
        if after is not None:
            with self.lock:
                after.seen += 1
                seen = after.seen
            if seen > after.after:
                return Response(after.status, {"error": f"failing after page {after.after}"})
        return None

    # -- auth

    @staticmethod
    def _unauthorized(message: str) -> Response:
        return Response(401, {"error": message}, {"WWW-Authenticate": 'Bearer realm="api"'})

    def _check_bearer(self, headers: dict[str, str], token: str) -> Response | None:
        if headers.get("authorization") != f"Bearer {token}":
            return self._unauthorized("missing or wrong bearer token")
        return None

    def _check_oauth(self, headers: dict[str, str]) -> Response | None:
        value = headers.get("authorization", "")
        token = value[7:] if value.startswith("Bearer ") else ""
        with self.lock:
            expiry = self.tokens.get(token)
        if expiry is None:
            return self._unauthorized("unknown access token")
        if time.monotonic() >= expiry:
            return self._unauthorized("access token expired")
        return None

    def _check_auth(
        self, kind: str, headers: dict[str, str], query: dict[str, str]
    ) -> Response | None:
        c = self.credentials
        if kind == "bearer":
            return self._check_bearer(headers, c.bearer_token)
        if kind == "api_key_header":
            ok = headers.get("x-api-key") == c.api_key
        elif kind == "api_key_query":
            ok = query.get("api_key") == c.api_key
        elif kind == "basic":
            expected = base64.b64encode(f"{c.basic_username}:{c.basic_password}".encode()).decode()
            ok = headers.get("authorization") == f"Basic {expected}"
        elif kind == "oauth2":
            return self._check_oauth(headers)
        else:
            return Response(404, {"error": f"no auth kind {kind}"})
        return None if ok else self._unauthorized(f"{kind}: missing or wrong credentials")

    def _token(self, headers: dict[str, str], body: bytes) -> Response:
        form = dict(parse_qsl(body.decode()))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
        c = self.credentials
        if (client_id, client_secret) != (c.client_id, c.client_secret):
            return Response(401, {"error": "invalid_client"})
        token = "at-" + secrets.token_hex(12)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_ttl
            self.tokens_issued += 1
        return Response(
            200,
            {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl},
            {"Cache-Control": "no-store"},
        )

    # -- listing

    def _list(
        self,
        collection: str,
        kind: str,
        query: dict[str, str],
        url: str,
        filter_param: str,
        style: str,
        ignore_filter: bool = False,
    ) -> Response:
        if collection not in self.store.collections and collection != "test.bench":
            return Response(404, {"error": f"no such collection {collection}"})
        since = None
        path = urlsplit(url).path
        ignore_filter = ignore_filter or self._fault("ignore_filter", path) is not None
        if query.get(filter_param) and not ignore_filter:
            try:
                since = _parse_time(query[filter_param])
            except ValueError:
                return Response(400, {"error": f"bad {filter_param}: {query[filter_param]!r}"})
        rows = self.store.records(collection, since)
        total = len(rows)
        repeat = self._fault("repeat_page", path) is not None
        duplicate = self._fault("duplicate_keys", path) is not None

        def size(param: str, default: int) -> int:
            return max(1, min(int(query.get(param, default)), 1000))

        headers: dict[str, str] = {}
        if kind == "page_number":
            per_page = size("per_page", 50)
            page = 1 if repeat else max(1, int(query.get("page", 1)))
            chunk = list(rows[(page - 1) * per_page : page * per_page])
            meta = {
                "page": page,
                "per_page": per_page,
                "total": total,
                "total_pages": math.ceil(total / per_page),
            }
            headers["X-Total-Count"] = str(total)
            body: Any = {"data": chunk, "meta": meta}
        elif kind == "offset":
            limit = size("limit", 50)
            offset = 0 if repeat else max(0, int(query.get("offset", 0)))
            chunk = list(rows[offset : offset + limit])
            body = {"results": chunk, "total": total, "offset": offset, "limit": limit}
        elif kind == "cursor":
            limit = size("limit", 50)
            after = query.get("after")
            start = 0
            if after and not repeat:
                last_id = int(base64.urlsafe_b64decode(after.encode()).decode())
                start = next((i for i, r in enumerate(rows) if r["id"] > last_id), len(rows))
            chunk = list(rows[start : start + limit])
            token = None
            if start + limit < len(rows):
                token = base64.urlsafe_b64encode(str(chunk[-1]["id"]).encode()).decode()
            next_page = {"after": token} if token else None
            if style == "crm":
                body = {"results": chunk, "paging": {"next": next_page}, "total": total}
            else:
                body = {"items": chunk, "next_cursor": token}
        elif kind in ("next_url", "link_header"):
            per_page = size("per_page", 50)
            page = 1 if repeat else max(1, int(query.get("page", 1)))
            chunk = list(rows[(page - 1) * per_page : page * per_page])
            next_url = None
            if page * per_page < total:
                next_query = {**query, "page": str(page + 1), "per_page": str(per_page)}
                next_url = f"{url}?{urlencode(next_query)}"
            if kind == "next_url":
                body = {"data": chunk, "links": {"next": next_url}, "count": total}
            else:
                body = chunk
                headers["X-Total-Count"] = str(total)
                links = [f'<{url}?{urlencode({**query, "page": "1"})}>; rel="first"']
                if next_url:
                    links.append(f'<{next_url}>; rel="next"')
                headers["Link"] = ", ".join(links)
        else:  # single
            chunk = list(rows)
            body = {"result": {"items": chunk, "count": total}}
        if duplicate and chunk:
            chunk.append(dict(chunk[0]))
        return Response(200, body, headers)

    def _sales_report(self, day: str) -> Response:
        """A report per day (units and revenue per product); tests change a day through
        `store.reports[day]`."""
        try:
            moment = datetime.strptime(day, "%Y-%m-%d").date()
        except ValueError:
            return Response(400, {"error": f"date must be YYYY-MM-DD, got {day!r}"})
        rows = self.store.reports.get(moment.isoformat())
        if rows is None:
            rows = []
            for product_id in range(1, 6):
                units = (moment.toordinal() * 7 + product_id * 13) % 9
                rows.append(
                    {
                        "day": moment.isoformat(),
                        "product_id": product_id,
                        "units": units,
                        "revenue": f"{units * (product_id + 0.5):.2f}",
                    }
                )
        return Response(200, {"data": rows, "meta": {"date": moment.isoformat()}})

    def _order_lines(self, order_id: str, query: dict[str, str]) -> Response:
        """One order's lines (a child endpoint), page_number paginated like the collections."""
        orders = self.store.collections["shop.orders"]
        order = orders.get(int(order_id)) if order_id.isdigit() else None
        if order is None:
            return Response(404, {"error": f"no order {order_id}"})
        lines = [
            {"line_no": number, **item}
            for number, item in enumerate(order.get("line_items") or [], start=1)
        ]
        per_page = max(1, min(int(query.get("per_page", 50)), 1000))
        page = max(1, int(query.get("page", 1)))
        chunk = lines[(page - 1) * per_page : page * per_page]
        meta = {"page": page, "per_page": per_page, "total": len(lines)}
        meta["total_pages"] = math.ceil(len(lines) / per_page)
        return Response(200, {"data": chunk, "meta": meta}, {"X-Total-Count": str(len(lines))})

    # -- admin

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        payload = json.loads(body) if body else {}
        if path == "/_admin/faults" and method == "POST":
            self.add_fault(Fault(**payload))
            return Response(201, {"faults": len(self.faults)})
        if path == "/_admin/faults" and method == "DELETE":
            self.clear_faults()
            return Response(200, {"faults": 0})
        if path == "/_admin/requests" and method == "GET":
            with self.lock:
                log = [
                    {"time": r.time, "method": r.method, "path": r.path, "status": r.status}
                    for r in self.requests
                ]
            return Response(200, log)
        if path == "/_admin/tokens/expire" and method == "POST":
            self.expire_tokens()
            return Response(200, {"expired": True})
        if path.startswith("/_admin/records/") and method == "POST":
            collection = path.removeprefix("/_admin/records/")
            if collection not in self.store.collections:
                return Response(404, {"error": f"no such collection {collection}"})
            return Response(200, self.store.upsert(collection, payload))
        return Response(404, {"error": f"no admin route {method} {path}"})

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()


def _host_and_port(server: socketserver.BaseServer) -> tuple[str, int]:
    """The (host, port) a TCP server listens on."""
    address = server.server_address
    assert isinstance(address, tuple), address
    return str(address[0]), int(address[1])


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, so a pooled client reuses connections as it would against a real API.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    app: ApiApp

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        host = self.headers.get("Host") or "{}:{}".format(*_host_and_port(self.server))
        try:
            response = self.app.handle(self.command, self.path, headers, body, host)
        except Exception as exc:  # a bug in the fake API shows as a 500, as on a real server
            response = Response(500, {"error": f"server error: {type(exc).__name__}: {exc}"})
        data = response.raw
        if data is None:
            data = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the app keeps its own request log; stderr stays clean for tests


class ApiServer(AbstractContextManager["ApiServer"]):
    """A running server: `.url`, `.store`, `.credentials`, fault switches, `.requests`, `.stop()`."""

    def __init__(self, app: ApiApp, server: ThreadingHTTPServer) -> None:
        self.app = app
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="api-server")
        self._thread.start()
        host, port = _host_and_port(server)
        self.url = f"http://{host}:{port}"

    # data and auth
    @property
    def store(self) -> DataStore:
        return self.app.store

    @property
    def credentials(self) -> Credentials:
        return self.app.credentials

    @property
    def requests(self) -> list[RequestLog]:
        return self.app.requests

    @property
    def tokens_issued(self) -> int:
        return self.app.tokens_issued

    def set_token_ttl(self, seconds: float) -> None:
        self.app.token_ttl = seconds

    def expire_tokens(self) -> None:
        """Every issued OAuth2 access token is refused from now on (the next call gets a 401)."""
        self.app.expire_tokens()

    def requests_to(self, path_prefix: str) -> list[RequestLog]:
        with self.app.lock:
            return [r for r in self.app.requests if r.path.startswith(path_prefix)]

    # faults
    def rate_limit(
        self, path: str = "/", retry_after: float = 1.0, count: int = 1, as_date: bool = False
    ) -> None:
        """The next `count` requests under `path` get 429 with Retry-After (seconds or HTTP-date)."""
        self.app.add_fault(
            Fault("rate_limit", path, count, retry_after=retry_after, as_date=as_date)
        )

    def fail(self, path: str = "/", status: int = 500, count: int | None = 1) -> None:
        """The next `count` requests under `path` get `status` (None: until cleared)."""
        self.app.add_fault(Fault("status", path, count, status=status))

    def slow(self, path: str = "/", seconds: float = 1.0, count: int | None = None) -> None:
        self.app.add_fault(Fault("slow", path, count, seconds=seconds))

    def repeat_page(self, path: str = "/") -> None:
        """Pagination under `path` ignores page/offset/token: every request returns the first page."""
        self.app.add_fault(Fault("repeat_page", path))

    def fail_after_page(self, path: str = "/", pages: int = 3, status: int = 500) -> None:
        """The first `pages` requests under `path` succeed, every later one gets `status`."""
        self.app.add_fault(Fault("fail_after_page", path, after=pages, status=status))

    def duplicate_keys(self, path: str = "/") -> None:
        """Each page under `path` repeats its first record at the end (same primary key)."""
        self.app.add_fault(Fault("duplicate_keys", path))

    def ignore_filter(self, path: str = "/") -> None:
        """Endpoints under `path` ignore updated_since / modified_after."""
        self.app.add_fault(Fault("ignore_filter", path))

    def clear_faults(self) -> None:
        self.app.clear_faults()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_api_server(
    port: int = 0,
    host: str = "127.0.0.1",
    seed: int = 7,
    token_ttl: float = 3600.0,
    credentials: Credentials | None = None,
    bench_records: int = 100_000,
) -> ApiServer:
    """Start the server in a daemon thread; use as a context manager or call `.stop()`."""
    app = ApiApp(DataStore(seed, bench_records), credentials or Credentials(), token_ttl)
    handler = type("ApiHandler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return ApiServer(app, server)


def main() -> None:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(description="Serve the demo shop and CRM APIs locally.")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--bench-records", type=int, default=100_000)
    args = parser.parse_args()
    with start_api_server(port=args.port, bench_records=args.bench_records) as api:
        # The first line is the URL, so a parent process can read where to connect.
        print(api.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()
