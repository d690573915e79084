"""A real HTTP server for tests of http steps, run in a thread on a free local port.

Routes:
- `/echo/...` answers JSON describing the request: method, path (as sent, still encoded),
  decoded query pairs, headers, body text.
- `/status/<n>` answers status n with a short text body.
- `/text` answers `text/plain`; `/bad-json` claims JSON but is not.
- `/slow?secs=S` answers after S seconds.
- `/big?bytes=N` answers N bytes of text.
- `/redirect` answers 302 to `/echo/redirected`.
- `/flaky/<key>?fail=N` answers 503 to the first N requests for `key`, then 200.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


class EchoServer(ThreadingHTTPServer):
    """The server; `url` is its base URL, `hits` counts requests per flaky key."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: EchoServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        parts = urlsplit(self.path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if parts.path.startswith("/echo"):
            echo = {
                "method": self.command, "path": parts.path, "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
            }
            self._send(200, json.dumps(echo).encode(), "application/json; charset=utf-8",
                       X_Echo="yes")
        elif parts.path.startswith("/status/"):
            status = int(parts.path.rsplit("/", 1)[1])
            self._send(status, f"status {status} says no ".encode() * 30, "text/plain")
        elif parts.path == "/text":
            self._send(200, b"plain words", "text/plain; charset=utf-8")
        elif parts.path == "/bad-json":
            self._send(200, b"{not json", "application/json")
        elif parts.path == "/slow":
            time.sleep(float(dict(query).get("secs", "5")))
            self._send(200, b"late", "text/plain")
        elif parts.path == "/big":
            self._send(200, b"x" * int(dict(query)["bytes"]), "text/plain")
        elif parts.path == "/redirect":
            self._send(302, b"", "text/plain", Location="/echo/redirected")
        elif parts.path.startswith("/flaky/"):
            key = parts.path.rsplit("/", 1)[1]
            with self.server.lock:
                self.server.hits[key] += 1
                hit = self.server.hits[key]
            if hit <= int(dict(query).get("fail", "1")):
                self._send(503, b"try again", "text/plain")
            else:
                self._send(200, json.dumps({"hit": hit}).encode(), "application/json")
        else:
            self._send(404, b"no such route", "text/plain")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


@contextmanager
def echo_server() -> Iterator[EchoServer]:
    """Start the server in a thread; stop it on exit."""
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
