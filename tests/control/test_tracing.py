"""Tracing: job, step and HTTP spans in the SDK's in-memory exporter, TRACEPARENT in the
step's environment, and nothing imported when tracing is off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine import tracing
from engine.runtime import Runtime, RuntimeOptions

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

WS = Path(__file__).resolve().parents[1] / "fixtures" / "control_ws"


async def test_job_and_step_spans_and_traceparent(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    tracer = tracing.configure(None, exporter=exporter)
    assert tracer is not None
    runtime = Runtime(RuntimeOptions(
        db_url=f"sqlite:///{tmp_path / 'partitur.db'}", logs_dir=tmp_path / "logs",
        artifacts_dir=tmp_path / "artifacts", workspaces={"main": WS}, concurrency=2))
    runtime.orchestrator.on_events(tracer.on_events)
    await runtime.open()
    try:
        job_id = await runtime.orchestrator.create_job("main", "traced", {})
        state = await runtime.orchestrator.wait(job_id, 20)
    finally:
        await runtime.close()
        tracing.configure(None)
    assert state.status.value == "completed"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    job = spans["job main/traced"]
    show, failed = spans["step show"], spans["step fail-once"]
    assert job.attributes is not None and job.attributes["partitur.job_id"] == job_id
    # Steps are children of the job, in the same trace.
    for step in (show, failed):
        assert step.parent is not None and step.parent.span_id == job.context.span_id
        assert step.context.trace_id == job.context.trace_id
    assert failed.status.status_code is StatusCode.ERROR
    assert job.start_time is not None and show.start_time is not None
    assert job.start_time <= show.start_time
    # The step saw its own span as TRACEPARENT.
    ctx = show.context
    traceparent = state.steps["show"].output["tp"]
    assert traceparent.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    assert int(traceparent[-2:], 16) & 1  # sampled
    assert tracing.step_env(job_id, "show") == {}


async def test_http_requests_get_server_spans() -> None:
    exporter = InMemorySpanExporter()
    tracer = tracing.configure(None, exporter=exporter)
    assert tracer is not None

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    try:
        wrapped = tracing.TracingMiddleware(app, tracer)
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped),
                                     base_url="http://test") as client:
            r = await client.get("/api/jobs", headers={"traceparent": parent})
        assert r.status_code == 204
    finally:
        tracing.configure(None)
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /api/jobs" and span.kind is SpanKind.SERVER
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 204
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"


def test_without_the_setting_nothing_is_imported() -> None:
    code = (
        "import sys\n"
        "from server.config import load_settings\n"
        "from server.app import create_app\n"
        "from engine import tracing\n"
        "create_app(load_settings(None))\n"
        "assert tracing.step_env('j', 's') == {}\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
