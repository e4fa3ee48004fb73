"""A tiny real HTTP server on 127.0.0.1 for security tests: routes are functions, every request
is recorded (path, query, headers), and bodies may be streamed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


# A route answers (status, headers, body); a body may be bytes or an iterable of chunks (sent
# with chunked transfer encoding, so no Content-Length announces the size).
Answer = tuple[int, dict[str, str], bytes | Iterable[bytes]]
Route = Callable[[Seen], Answer]


@dataclass
class LocalServer:
    url: str
    routes: dict[str, Route]
    seen: list[Seen] = field(default_factory=list)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


@contextmanager
def local_server(routes: dict[str, Route] | None = None) -> Iterator[LocalServer]:
    server_routes: dict[str, Route] = dict(routes or {})
    state = LocalServer(url="", routes=server_routes)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            state.seen.append(seen)
            route = state.routes.get(parts.path)
            status, headers, body = route(seen) if route else (404, {}, b'{"error": "no route"}')
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if isinstance(body, bytes):
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in body:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = _handle

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def json_answer(text: str, status: int = 200) -> Answer:
    return status, {"Content-Type": "application/json"}, text.encode()


def redirect(location: str, status: int = 302) -> Route:
    return lambda seen: (status, {"Location": location}, b"")
