"""Tracing through a real `partitur serve` with `tracing.otlp_endpoint` set: the server
exports job, step and HTTP spans over OTLP/HTTP to a real receiver, and the step's
`TRACEPARENT` is its own span."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2")

WS = Path(__file__).resolve().parents[1] / "fixtures" / "control_ws"


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Any] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = trace_service.ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            self.server.paths.append(self.path)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.server.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_with_otlp_endpoint_exports_job_step_and_http_spans(
        make_server: Callable[..., ServerProcess]) -> None:
    with receiver() as otlp:
        server = make_server(workspaces={"main": WS},
                             settings={"tracing": {"otlp_endpoint": otlp.url}})
        with httpx.Client(base_url=server.url, timeout=15.0) as client:
            job_id = client.post("/api/workspaces/main/tasks/traced/execute",
                                 json={}).json()["job_id"]
            deadline = time.monotonic() + 30
            while (job := client.get(f"/api/jobs/{job_id}").json())["status"] != "completed":
                assert job["status"] not in ("failed", "cancelled"), job
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
        wanted = {"job main/traced", "step show", "step fail-once",
                  "POST /api/workspaces/main/tasks/traced/execute"}
        deadline = time.monotonic() + 30
        while True:  # the batch processor exports every few seconds
            with otlp.lock:
                spans = {s.name: s for s in otlp.spans}
            if wanted <= set(spans):
                break
            assert time.monotonic() < deadline, sorted(spans)
            time.sleep(0.2)
        assert set(otlp.paths) == {"/v1/traces"}
        root, show = spans["job main/traced"], spans["step show"]
        assert show.trace_id == root.trace_id and show.parent_span_id == root.span_id
        tp = next(s for s in job["steps"] if s["step_name"] == "show")["output"]["tp"]
        assert tp.startswith(f"00-{show.trace_id.hex()}-{show.span_id.hex()}-")
