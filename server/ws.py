"""`WS /api/jobs/{id}/logs/stream`: a job's log (and status) as a live stream.

Protocol (docs/api.md): the server sends the backfill, then live items, and closes with
1000 once the job is terminal and everything was sent. Every frame carries a `cursor`
`"<log_seq>.<event_version>"`: the last log line and the last job event the client has
seen. Passing it back as `?after=` resumes with no gap and no duplicate, because log
lines are filtered by `seq` and status frames by event version independently.

The stream subscribes to the live bus *before* reading the backfill, and skips live
lines it already sent (by `seq`), so nothing falls between the two. Status frames are
derived from the stored events (a live status item only says "there is more to read"),
so each frame names the exact version of its event; a step frame's `error` has the job's
secrets masked, as in the job detail. A slow client never blocks anyone:
the bus drops a subscriber that falls `buffer` items behind, and the stream then closes
with 1013 and a reason naming the cursor to resume from; a send that stays blocked for
`send_timeout` seconds ends the stream too. The log on disk is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from engine.auth.acl import Level
from engine.core import events as ev
from engine.core.events import RecordedEvent
from engine.core.state import JobState, evolve
from engine.errors import ValidationFailed
from engine.logs.model import LogLine, format_ts
from engine.logs.redact import Redactor
from engine.logs.store import check_job_id
from server.auth import task_level
from server.routes import runtime_of

CLOSE_NORMAL = 1000
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_FOUND = 4404
DEFAULT_BUFFER = 10_000
DEFAULT_SEND_TIMEOUT = 30.0

_JOB_EVENTS = (ev.JobCreated, ev.JobStarted, ev.JobCompleted, ev.JobFailed, ev.JobCancelled,
               ev.JobSkipped)


class Cursor:
    """The position of a stream: last log `seq` and last event `version` sent."""

    __slots__ = ("log", "version")

    def __init__(self, log: int = 0, version: int = 0) -> None:
        self.log = log
        self.version = version

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """`"12.7"` (log 12, version 7), or `"12"` (log 12 only)."""
        if not text:
            return cls()
        head, _, tail = text.partition(".")
        try:
            log, version = int(head), int(tail or 0)
        except ValueError:
            raise ValidationFailed(f"invalid cursor {text!r}: expected <log_seq>.<version>") \
                from None
        if log < 0 or version < 0:
            raise ValidationFailed(f"invalid cursor {text!r}")
        return cls(log, version)

    def __str__(self) -> str:
        return f"{self.log}.{self.version}"


def status_frame(event: ev.Event, state: JobState, version: int) -> dict[str, Any] | None:
    """The typed frame of an event (step or job status), or None for other events."""
    if isinstance(event, ev.StepEvent) and not isinstance(
            event, ev.StepOutput | ev.ChildJobStarted):
        step = state.steps.get(event.step)
        if step is None:
            return None
        return {"type": "step", "version": version, "ts": format_ts(event.ts),
                "step": step.name, "status": step.status.value, "attempt": step.attempt,
                "error": step.error}
    if isinstance(event, _JOB_EVENTS):
        return {"type": "job", "version": version, "ts": format_ts(event.ts),
                "status": state.status.value}
    return None


class _Stream:
    """One connection's state: what was sent, the folded job, the options."""

    def __init__(self, websocket: WebSocket, job_id: str, step: str | None, events: bool,
                 cursor: Cursor, send_timeout: float) -> None:
        self.ws = websocket
        self.job_id = job_id
        self.step = step
        self.events = events
        self.cursor = cursor
        self.send_timeout = send_timeout
        self.state: JobState | None = None
        self.folded = 0
        # Masks the job's secrets in step errors (a render error may quote a secret input).
        self.redactor: Redactor | None = None

    # --- status frames from the store --------------------------------------------------

    def fold(self, records: Iterable[RecordedEvent]) -> list[dict[str, Any]]:
        """Fold new events; return the frames of those after the cursor's version."""
        frames: list[dict[str, Any]] = []
        for record in records:
            if record.version <= self.folded:
                continue
            event = record.event()
            self.state = evolve(self.state, event)
            self.folded = record.version
            if record.version <= self.cursor.version:
                continue
            frame = status_frame(event, self.state, record.version)
            if frame is None or (self.step is not None and frame["type"] == "step"
                                 and frame["step"] != self.step):
                continue
            frames.append(frame)
        return frames

    async def read_frames(self) -> list[dict[str, Any]]:
        runtime = runtime_of(self.ws)
        frames = self.fold(await runtime.store.read(self.job_id, after_version=self.folded))
        if self.redactor is None and self.state is not None:
            self.redactor = runtime.orchestrator.redactor(self.state)
        return frames

    # --- sending -----------------------------------------------------------------------

    async def _send(self, payload: bytes) -> None:
        await asyncio.wait_for(self.ws.send_text(payload.decode()), self.send_timeout)

    async def send_line(self, line: LogLine) -> None:
        if line.seq <= self.cursor.log:
            return
        if self.step is not None and line.step != self.step:
            return
        self.cursor.log = line.seq
        data: dict[str, Any]
        if self.events:
            data = {"type": "log", "cursor": str(self.cursor), "ts": format_ts(line.ts),
                    "step": line.step, "stream": line.stream, "line": line.line}
        else:
            data = {**line.to_dict(), "cursor": str(self.cursor)}
        await self._send(orjson.dumps(data))

    async def send_frame(self, frame: dict[str, Any]) -> None:
        version = frame.pop("version")
        if version <= self.cursor.version:
            return
        self.cursor.version = version
        if isinstance(frame.get("error"), str) and self.redactor:
            frame["error"] = self.redactor.redact(frame["error"])
        await self._send(orjson.dumps({"type": frame["type"], "cursor": str(self.cursor),
                                       **{k: v for k, v in frame.items() if k != "type"}}))

    async def send_merged(self, lines: list[LogLine], frames: list[dict[str, Any]]) -> None:
        """Send lines and frames interleaved by time (each kind keeps its own order)."""
        tagged: Iterable[tuple[str, int, Any]] = heapq.merge(
            ((format_ts(line.ts), 1, line) for line in lines),
            ((frame["ts"], 0, frame) for frame in frames),
            key=lambda item: (item[0], item[1]),
        )
        for _, kind, item in tagged:
            if kind == 1:
                await self.send_line(item)
            else:
                await self.send_frame(item)


async def logs_stream(websocket: WebSocket) -> None:
    """The endpoint (registered by `server.routes.logs`)."""
    app_state = websocket.app.state
    runtime = runtime_of(websocket)
    job_id = str(websocket.path_params.get("id", ""))
    params = websocket.query_params
    await websocket.accept()
    try:
        check_job_id(job_id)
        cursor = Cursor.parse(params.get("after"))
        fmt = params.get("format") or "jsonl"
        if fmt not in ("jsonl", "events"):
            raise ValidationFailed(f"unknown format {fmt!r} (jsonl or events)")
    except ValidationFailed as exc:
        await websocket.close(CLOSE_BAD_REQUEST, exc.message[:120])
        return
    stream = _Stream(websocket, job_id, params.get("step") or None, fmt == "events", cursor,
                     getattr(app_state, "ws_send_timeout", DEFAULT_SEND_TIMEOUT))
    # Subscribe first, then read the backfill: nothing can fall between the two.
    subscription = runtime.bus.subscribe(job_id,
                                         maxsize=getattr(app_state, "ws_buffer", DEFAULT_BUFFER))
    watcher = asyncio.ensure_future(_watch_disconnect(websocket, subscription))
    try:
        row = await runtime.store.get_job(job_id)
        if row is None or task_level(websocket, row.workspace, row.task_name) < Level.VIEW:
            await websocket.close(CLOSE_NOT_FOUND, "job not found")
            return
        frames = await stream.read_frames()
        terminal = stream.state is not None and stream.state.terminal
        if terminal:
            subscription.close()  # nothing more will come; the backfill is everything
        lines = await runtime.logs.read(job_id, step=stream.step, after=stream.cursor.log)
        await stream.send_merged(lines, frames if stream.events else [])
        async for item in subscription:
            if isinstance(item, LogLine):
                await stream.send_line(item)
            elif stream.events:
                for frame in await stream.read_frames():
                    await stream.send_frame(frame)
        if subscription.overflowed:
            await websocket.close(CLOSE_TRY_AGAIN,
                                  f"client too slow; reconnect with ?after={stream.cursor}")
            return
        if websocket.client_state != WebSocketState.CONNECTED or watcher.done():
            return
        # The job ended: send whatever the live items did not carry, then say so.
        lines = await runtime.logs.read(job_id, step=stream.step, after=stream.cursor.log)
        frames = await stream.read_frames()
        await stream.send_merged(lines, frames if stream.events else [])
        if stream.events:
            status = stream.state.status.value if stream.state is not None else None
            await stream._send(orjson.dumps({"type": "end", "cursor": str(stream.cursor),
                                             "status": status}))
        await websocket.close(CLOSE_NORMAL)
    except (WebSocketDisconnect, OSError):
        pass
    except TimeoutError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(
                CLOSE_TRY_AGAIN, f"client too slow; reconnect with ?after={stream.cursor}"), 1)
    except RuntimeError:
        pass  # sending on a connection the client already closed
    finally:
        subscription.close()
        watcher.cancel()


async def _watch_disconnect(websocket: WebSocket, subscription: Any) -> None:
    """End the subscription as soon as the client goes away (or sends anything odd)."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    except Exception:
        pass
    subscription.close()
