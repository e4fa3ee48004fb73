"""A small real HTTP source for sync-state tests: it compares the cursor filter as TEXT, the way
many servers do (`WHERE updated_at >= '<param>'` on a text column), pages by page number, and can
be slowed down, made to repeat a record in a page, or changed between and during syncs.

Also the spec that reads it and a helper that runs one sync through the asset factory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from synkro_dagster.specs import SourceSpec, load_spec_file

PAGE_SIZE = 50


class TextSource:
    """Collections of records (by id) behind `GET /<collection>?since=&page=&per_page=`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.collections: dict[str, dict[Any, dict[str, Any]]] = {}
        self.cursor_fields: dict[str, str] = {}
        self.requests: list[dict[str, str]] = []
        self.delay = 0.0  # seconds before each answer
        self.repeat_in_page = False  # every page sends its first record twice
        self.url = ""

    def define(self, collection: str, cursor_field: str) -> None:
        with self.lock:
            self.collections.setdefault(collection, {})
            self.cursor_fields[collection] = cursor_field

    def put(self, collection: str, record: dict[str, Any]) -> None:
        """Insert or replace a record (keyed by its `id`)."""
        with self.lock:
            self.collections[collection][record["id"]] = dict(record)

    def delete(self, collection: str, record_id: Any) -> None:
        with self.lock:
            self.collections[collection].pop(record_id, None)

    def records(self, collection: str) -> list[dict[str, Any]]:
        with self.lock:
            return sorted(
                (dict(r) for r in self.collections[collection].values()), key=lambda r: r["id"]
            )

    def sent(self, collection: str) -> list[dict[str, str]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == f"/{collection}"]

    def page(self, collection: str, query: dict[str, str]) -> list[dict[str, Any]]:
        field = self.cursor_fields[collection]
        since = query.get("since")
        with self.lock:
            rows = [dict(r) for r in self.collections[collection].values()]
        if since is not None:
            # Text comparison, exactly like a server filtering a text column.
            rows = [r for r in rows if str(r[field]) >= since]
        rows.sort(key=lambda r: (str(r[field]), str(r["id"])))
        number = int(query.get("page", "1"))
        size = int(query.get("per_page", str(PAGE_SIZE)))
        chunk = rows[(number - 1) * size : number * size]
        if chunk and self.repeat_in_page:
            chunk = [chunk[0], *chunk]
        return chunk


def _handler(source: TextSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            collection = url.path.strip("/")
            with source.lock:
                source.requests.append({"path": url.path, **query})
            if source.delay:
                time.sleep(source.delay)
            if collection not in source.collections:
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps({"data": source.page(collection, query)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the crash steps) closes its socket: not a server error.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve_text_source(source: TextSource | None = None) -> Iterator[TextSource]:
    source = source or TextSource()
    server = _Server(("127.0.0.1", 0), _handler(source))
    source.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield source
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def text_spec_dict(name: str = "textapi", cursor: dict[str, Any] | None = None) -> dict[str, Any]:
    """A spec with an append stream `events` (cursor at) and a merge stream `items` (cursor
    updated_at), synced in that order; `cursor` settings are added to both."""
    extra = dict(cursor or {})
    return {
        "name": name,
        "engine": "http",
        "config": {"base_url": {"description": "the source's URL"}},
        "http": {
            "base_url": "{base_url}",
            "records": "data",
            "pagination": {
                "kind": "page_number",
                "page_size_param": "per_page",
                "page_size": PAGE_SIZE,
            },
        },
        "streams": [
            {
                "name": "events",
                "write_mode": "append",
                "cursor": {"field": "at", "param": "since", **extra},
                "http": {"path": "/events"},
            },
            {
                "name": "items",
                "primary_key": "id",
                "cursor": {"field": "updated_at", "param": "since", **extra},
                "http": {"path": "/items"},
            },
        ],
    }


def write_text_spec(folder: Path, name: str = "textapi", **cursor: Any) -> SourceSpec:
    """Write the spec into a specs folder (the registry validates against it) and load it."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(text_spec_dict(name, cursor), sort_keys=False))
    return load_spec_file(path)
