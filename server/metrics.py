"""Prometheus metrics of one app (its own `CollectorRegistry`, so apps never share).

HTTP requests by route template and status; jobs by status (counted as they reach
each status) and active jobs; step durations; ready steps waiting for a worker slot;
event-append latency. Job and step metrics come from `Orchestrator.on_events`; append
latency from wrapping the store's `append`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.core import events as ev
from engine.core.state import JobState, StepStatus
from engine.store.base import EventStore
from engine.stuck import stuck_jobs

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

_JOB_STATUS_OF: dict[type[ev.Event], str] = {
    ev.JobCreated: "pending", ev.JobStarted: "running", ev.JobCompleted: "completed",
    ev.JobFailed: "failed", ev.JobCancelled: "cancelled", ev.JobSkipped: "skipped",
}
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The collectors of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "partitur_http_requests", "HTTP requests by method, route template and status",
            ["method", "route", "status"], registry=r)
        self.http_duration = Histogram(
            "partitur_http_request_duration_seconds", "HTTP request durations by route",
            ["route"], registry=r)
        self.jobs = Counter("partitur_jobs", "Jobs that reached each status", ["status"],
                            registry=r)
        self.jobs_active = Gauge("partitur_jobs_active", "Jobs not yet terminal (in memory)",
                                 registry=r)
        self.step_duration = Histogram(
            "partitur_step_duration_seconds", "Step run times by final status", ["status"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=r)
        self.ready_queue = Gauge("partitur_ready_steps",
                                 "Steps ready to run and waiting for a worker", registry=r)
        self.append_latency = Histogram(
            "partitur_event_append_seconds", "Latency of one event-store append",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r)
        self.jobs_stuck = Gauge(
            "partitur_jobs_stuck",
            "Jobs not ended with no event for longer than stuck_after (0 when unset)",
            registry=r)
        self._ready: dict[str, int] = {}
        self._active: set[str] = set()

    # --- engine hooks ----------------------------------------------------------------

    def on_events(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """`Orchestrator.on_events` listener."""
        for event in events:
            status = _JOB_STATUS_OF.get(type(event))
            if status is not None:
                self.jobs.labels(status).inc()
            if isinstance(event, ev.StepCompleted | ev.StepFailed | ev.StepCancelled):
                step = state.steps.get(event.step)
                if step is not None and step.started_at is not None:
                    end = step.completed_at or event.ts
                    self.step_duration.labels(type(event).__name__[4:].lower()).observe(
                        max(0.0, end - step.started_at))
        job_id = state.job_id
        if state.terminal:
            self._ready.pop(job_id, None)
            self._active.discard(job_id)
        else:
            self._active.add(job_id)
            self._ready[job_id] = sum(1 for s in state.steps.values()
                                      if s.status == StepStatus.READY)
        self.ready_queue.set(sum(self._ready.values()))
        self.jobs_active.set(len(self._active))

    def watch_stuck(self, orchestrator: Orchestrator, after: float | None) -> None:
        """Count stuck jobs (`engine.stuck`) among the active ones at each scrape."""
        if after is None:
            return
        self.jobs_stuck.set_function(lambda: float(len(stuck_jobs(
            orchestrator.active_states(), orchestrator.clock.now(), after))))

    def instrument_store(self, store: EventStore) -> None:
        """Time every `append` of `store` (wraps the bound method on the instance)."""
        inner: Callable[..., Awaitable[Any]] = store.append
        histogram = self.append_latency

        async def timed_append(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - started)

        store.append = timed_append  # type: ignore[method-assign]

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route that serves `scope` (`<unmatched>` for a 404)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "<unmatched>"))
    return "<unmatched>"


class MetricsMiddleware:
    """Counts HTTP requests by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_template(self.routes, scope)
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.http_duration.labels(route).observe(time.perf_counter() - started)
