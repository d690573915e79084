"""OpenTelemetry tracing: spans for jobs, steps and HTTP requests (optional).

With `tracing.otlp_endpoint` set, `configure()` builds a tracer provider exporting over
OTLP/HTTP; tests pass an exporter of their own (the SDK's in-memory one). A job is one
trace: its span starts at `JobCreated` and ends with the job; each step attempt is a child
span from its claim to its end; the step's process gets the W3C `TRACEPARENT` of its span,
so what it calls can join the trace. HTTP requests get server spans from
`TracingMiddleware`.

When tracing is not configured nothing here runs: no listener is registered, no
middleware is added, `step_env` returns an empty mapping after one `None` check, and the
`opentelemetry` packages are never imported (they are an optional dependency).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.core import events as ev
from engine.core.state import JobState

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("partitur.tracing")

_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled, ev.JobSkipped)
_STEP_ENDS = (ev.StepCompleted, ev.StepFailed, ev.StepCancelled, ev.StepSkipped)
_active: JobTracer | None = None


def _ns(ts: float) -> int:
    return int(ts * 1_000_000_000)


class JobTracer:
    """Turns a process's job and step events into spans (an `Orchestrator.on_events`
    listener) and knows the trace context of each running step."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("partitur")
        self._jobs: dict[str, Span] = {}
        self._steps: dict[tuple[str, str], Span] = {}

    def on_events(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """Start and end spans for the events one decision appended."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        job_id = state.job_id
        for event in events:
            job_span = self._jobs.get(job_id)
            if job_span is None and not isinstance(event, _ENDS):
                job_span = self.tracer.start_span(
                    f"job {state.workspace}/{state.task}", start_time=_ns(state.created_at),
                    attributes={"partitur.job_id": job_id, "partitur.task": state.task,
                                "partitur.workspace": state.workspace})
                self._jobs[job_id] = job_span
            if isinstance(event, ev.StepClaimed | ev.StepStarted | ev.StepSuspended):
                key = (job_id, event.step)
                if key not in self._steps and job_span is not None:
                    context = trace.set_span_in_context(job_span)
                    step = state.steps.get(event.step)
                    self._steps[key] = self.tracer.start_span(
                        f"step {event.step}", context=context, start_time=_ns(event.ts),
                        attributes={"partitur.job_id": job_id, "partitur.step": event.step,
                                    "partitur.attempt": step.attempt if step else 0})
            elif isinstance(event, _STEP_ENDS):
                span = self._steps.pop((job_id, event.step), None)
                if span is not None:
                    span.set_attribute("partitur.status", type(event).__name__[4:].lower())
                    if isinstance(event, ev.StepFailed):
                        span.set_status(Status(StatusCode.ERROR, event.error[:200]))
                    span.end(end_time=_ns(event.ts))
            elif isinstance(event, _ENDS):
                span = self._jobs.pop(job_id, None)
                if span is not None:
                    span.set_attribute("partitur.status", state.status.value)
                    if isinstance(event, ev.JobFailed):
                        span.set_status(Status(StatusCode.ERROR, event.error[:200]))
                    span.end(end_time=_ns(event.ts))

    def step_env(self, job_id: str, step: str) -> dict[str, str]:
        """`TRACEPARENT` (and `TRACESTATE` if any) of a running step's span."""
        span = self._steps.get((job_id, step))
        if span is None:
            return {}
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
        return {key.upper(): value for key, value in carrier.items()}

    def shutdown(self) -> None:
        self.provider.shutdown()


def configure(
    endpoint: str | None, *, service_name: str = "partitur",
    exporter: SpanExporter | None = None,
) -> JobTracer | None:
    """The process's job tracer, exporting to `endpoint` (OTLP/HTTP) or `exporter`;
    None (and nothing imported) when neither is given."""
    global _active
    if endpoint is None and exporter is None:
        _active = None
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("tracing.otlp_endpoint is set but the opentelemetry packages are "
                           "not installed (pip install opentelemetry-sdk "
                           "opentelemetry-exporter-otlp-proto-http)") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint.rstrip("/") if endpoint else ""
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _active = JobTracer(provider)
    return _active


def step_env(job_id: str, step: str) -> Mapping[str, str]:
    """The trace context to pass to a step's process (empty when tracing is off)."""
    if _active is None:
        return {}
    return _active.step_env(job_id, step)


class TracingMiddleware:
    """An ASGI middleware giving each HTTP request a server span (and reading an
    incoming `traceparent`)."""

    def __init__(self, app: Any, tracer: JobTracer) -> None:
        self.app = app
        self.tracer = tracer.tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        context = TraceContextTextMapPropagator().extract(headers)
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        name = f"{scope['method']} {scope['path']}"
        with self.tracer.start_as_current_span(name, context=context,
                                               kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", scope["method"])
            span.set_attribute("url.path", scope["path"])
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                span.set_attribute("http.response.status_code", status)
