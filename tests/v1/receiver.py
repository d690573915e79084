"""A real HTTP receiver of callbacks, run in a thread: records every request; the first
`fail` requests get 500, a path starting with /redirect gets 302."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fail: int = 0, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.fail = fail
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "body": body,
                                         "headers": {k.lower(): v for k, v in
                                                     self.headers.items()}})
            failing = self.server.fail > 0
            self.server.fail -= 1 if failing else 0
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("location", "/elsewhere")
        else:
            self.send_response(500 if failing else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def close(rx: Receiver) -> None:
    """Stop serving and close the listening socket."""
    rx.shutdown()
    rx.server_close()
