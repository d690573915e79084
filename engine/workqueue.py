"""The remote-worker dispatcher and the engine side of the worker API (DESIGN §6).

`WorkQueue` is the orchestrator's `Dispatcher` when steps run on remote workers. A step
made ready by a decision is a queue row written in the same transaction as its
`StepReady` event (`outbox_for`: the store's outbox, DESIGN §4), so a server that dies
right after the commit loses no ready step; `dispatch` then only wakes idle claimers — in
this process through `Waker`, on other replicas through `NOTIFY partitur_work` (see
`engine.store.work`). Steps handed out again (after a load, a resume, or by the lease
sweeper's safety net) are queued by `dispatch` itself, idempotently. Approval steps need
no worker and suspend here.

It also carries what the `/worker` routes do, so they stay thin: register, heartbeat,
claim (long poll), and the calls made under a lease (heartbeat, started, logs, result).
Every call under a lease is fenced: the lease must still be open in the queue table and
the step must still be running that attempt; otherwise `LeaseRefused` (409) and nothing
changes. The command that records a result is decided on the job's current state, so a
result racing the lease sweeper is applied at most once, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.clock import new_token
from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.state import JobState, StepStatus, fold
from engine.errors import Conflict, NotFound, PartiturError, RenderError
from engine.orchestrator import Orchestrator
from engine.ratelimit import Limit, RateLimiter, limit_of
from engine.stepprep import prepare
from engine.store.ratewindows import rate_windows
from engine.store.work import Held, WorkerRow, WorkItem, WorkStore

log = logging.getLogger("partitur.workqueue")

SERVER_WORKER = "server"
# How many outbox rows `dispatch` remembers as already written. Forgetting one only costs
# a redundant (idempotent) enqueue.
_OUTBOX_MEMORY = 10_000
# How long a worker row read for a claim is trusted (its tags change only when it
# registers again, on this replica or another).
_WORKER_CACHE_S = 5.0
_TOUCH_EVERY_S = 1.0


class LeaseRefused(Conflict):
    """This lease is no longer valid: the step was lost, cancelled or finished."""

    code = "lease_refused"


class Waker:
    """Wakes every coroutine waiting for new work (no wake-up is ever lost)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """The event to wait on; take it *before* looking at the queue."""
        return self._event


@dataclass(frozen=True, slots=True)
class Assignment:
    """A claimed step, fully rendered for a worker to run."""

    job_id: str
    step: str
    attempt: int
    lease: str
    workspace: str
    revision: str
    action_type: str
    action: Mapping[str, Any]
    input: Mapping[str, Any]
    env: Mapping[str, str]
    timeout: float | None
    started: bool = False  # its start was recorded with the claim

    def to_json(self) -> dict[str, Any]:
        body = {"job_id": self.job_id, "step": self.step, "attempt": self.attempt,
                "lease": self.lease, "workspace": self.workspace, "revision": self.revision,
                "action_type": self.action_type, "action": dict(self.action),
                "input": dict(self.input), "env": dict(self.env), "timeout": self.timeout}
        if self.started:
            body["started"] = True
        return body


def _redact(redactor: Any, value: Any) -> Any:
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, dict):
        return {k: _redact(redactor, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(redactor, v) for v in value]
    return value


class WorkQueue:
    """Dispatches ready steps to the queue and serves the workers that claim them."""

    def __init__(self, orchestrator: Orchestrator, work: WorkStore, *,
                 lease_timeout: float = 30.0, aging: float | None = None) -> None:
        self.orchestrator = orchestrator
        self.work = work
        self.lease_timeout = lease_timeout
        self.aging = aging  # scheduling.aging: claims order by effective priority
        self.waker = Waker()
        self.rates = RateLimiter(rate_windows(orchestrator.store))  # shared via the store
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outboxed: dict[tuple[str, str, int], None] = {}
        # Registered workers as last read here (worker id → row, when read): a claim
        # needs the worker's tags, which change only when it registers again.
        self._workers: dict[str, tuple[WorkerRow, float]] = {}
        self._touched: dict[str, float] = {}  # worker id → when a claim last touched it

    # --- Dispatcher ------------------------------------------------------------------

    def outbox_for(self, state: JobState, events: Sequence[ev.Event]) -> list[WorkItem]:
        """Queue rows for the steps `events` made ready (not approvals nor sub-jobs)."""
        if state.paused or state.cancel_requested:
            return []
        items: list[WorkItem] = []
        for event in events:
            if not isinstance(event, ev.StepReady):
                continue
            current = state.steps.get(event.step)
            if (current is None or current.status is not StepStatus.READY
                    or current.attempt != event.attempt
                    or state.plan_step(event.step).action_type in ("approval", "task")):
                continue
            if limit_of(self.orchestrator.workspaces, state, event.step) is not None:
                continue  # rate-limited: `dispatch` queues it when its window allows
            items.append(self._item(state, event.step))
        for item in items:
            self._outboxed[(item.job_id, item.step, item.attempt)] = None
        while len(self._outboxed) > _OUTBOX_MEMORY:
            del self._outboxed[next(iter(self._outboxed))]
        return items

    def dispatch(self, state: JobState, step: str) -> None:
        plan_step = state.plan_step(step)
        current = state.steps[step]
        if plan_step.action_type == "approval":
            self._spawn(self._suspend(state, step, current.attempt))
            return
        if (state.job_id, step, current.attempt) in self._outboxed:
            del self._outboxed[(state.job_id, step, current.attempt)]
            self.waker.wake()  # the row was committed with the event
            return
        limit = limit_of(self.orchestrator.workspaces, state, step)
        if limit is not None:
            self._spawn(self._enqueue_limited(self._item(state, step), limit))
            return
        self._spawn(self._enqueue(self._item(state, step)))

    async def _enqueue_limited(self, item: WorkItem, limit: Limit) -> None:
        """Queue a rate-limited step once its window allows (the start is counted when
        the step is queued, not when a worker claims it)."""
        key = (item.job_id, item.step)
        clock = self.orchestrator.clock
        try:
            while (until := await self.rates.reserve(limit, clock.now())) is not None:
                self.rates.waiting[key] = until
                await asyncio.sleep(max(0.0, until - clock.now()))
        finally:
            self.rates.waiting.pop(key, None)
        await self._enqueue(item)

    def _item(self, state: JobState, step: str) -> WorkItem:
        current = state.steps[step]
        return WorkItem(state.job_id, step, current.attempt, state.priority,
                        current.ready_at or self.orchestrator.clock.now(),
                        tuple(state.plan_step(step).tags))

    def cancel(self, job_id: str, step: str) -> None:
        """Nothing to do here: the worker learns of the cancel from its next heartbeat."""

    def owns(self, worker_id: str | None) -> bool:
        # Steps of the embedded executor (an earlier configuration) died with the server;
        # remote workers' steps are the lease sweeper's to judge.
        return worker_id is None or worker_id.startswith("local:") or worker_id == SERVER_WORKER

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enqueue(self, item: WorkItem) -> None:
        for delay in (0.0, 0.2, 1.0, 5.0):
            await asyncio.sleep(delay)
            try:
                await self.work.enqueue([item])
            except PartiturError as exc:
                log.warning("cannot queue step %s of job %s: %s", item.step, item.job_id, exc)
                continue
            self.waker.wake()
            return
        # The leader's sweeper re-queues ready steps that have no queue row.

    async def _suspend(self, state: JobState, step: str, attempt: int) -> None:
        orch = self.orchestrator
        plan_step = state.plan_step(step)
        try:
            run = self._prepare(state, step, Path("."))
            message = run.action.get("message")
            timeout_at = orch.clock.now() + plan_step.timeout if plan_step.timeout else None
            command: cmd.Command = cmd.Suspend(
                step=step, attempt=attempt, message=None if message is None else str(message),
                timeout_at=timeout_at)
        except RenderError as exc:
            command = cmd.Fail(step=step, attempt=attempt, error=exc.message, kind="render")
        try:
            await orch.command(state.job_id, command)
        except (Conflict, NotFound) as exc:
            log.info("approval step %s of job %s: %s", step, state.job_id, exc)

    def _prepare(self, state: JobState, step: str, workdir: Path) -> Any:
        orch = self.orchestrator
        real_input = orch.real_renderer(state).input(state, step)
        return prepare(state, step, real_input=real_input, secrets=orch.secrets_of(state),
                       workdir=workdir, artifacts_dir=workdir / ".artifacts")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    # --- workers ---------------------------------------------------------------------

    async def register(self, name: str, tags: Sequence[str], concurrency: int,
                       worker_id: str | None = None) -> WorkerRow:
        now = time.time()
        existing = await self.work.worker(worker_id) if worker_id else None
        row = WorkerRow(worker_id or new_token(12), name, tuple(sorted(set(tags))),
                        max(1, concurrency), existing.registered_at if existing else now, now)
        await self.work.register(row)
        self._workers[row.worker_id] = (row, time.monotonic())
        return row

    async def worker_heartbeat(self, worker_id: str) -> None:
        if not await self.work.touch(worker_id, time.time()):
            raise NotFound(f"worker {worker_id!r} is not registered")

    async def claim(self, worker_id: str, timeout: float,
                    gone: asyncio.Event | None = None) -> Assignment | None:
        """The next step for the worker, waiting up to `timeout` seconds for one.

        Once `gone` is set (the worker hung up) nothing more is claimed: a step claimed
        for a worker that is no longer listening would only wait for the lease sweeper.
        """
        found = await self.claim_many(worker_id, timeout, 1, gone)
        return found[0] if found else None

    async def claim_many(self, worker_id: str, timeout: float, limit: int,
                         gone: asyncio.Event | None = None, *,
                         start: bool = False) -> list[Assignment]:
        """Up to `limit` steps for the worker (as many as are queued for it now, at least
        one unless `timeout` passes first); see `claim`. `start`: record each step's
        start with its claim (`_assign`)."""
        worker = await self._worker(worker_id)
        deadline = time.monotonic() + max(0.0, timeout)
        limit = max(1, limit)
        while gone is None or not gone.is_set():
            event = self.waker.current()
            taken = await self.work.claim_many(
                worker_id, worker.tags, [new_token(16) for _ in range(limit)], time.time(),
                aging=self.aging)
            if taken:
                # Claims on different jobs are decided concurrently; on one job the
                # orchestrator serializes them.
                assigned = await asyncio.gather(*(self._assign(h, start) for h in taken),
                                                return_exceptions=True)
                found = [a for a in assigned if isinstance(a, Assignment)]
                if found:
                    return found  # a failed one was put back in the queue (`_assign`)
                for outcome in assigned:
                    if isinstance(outcome, BaseException):
                        raise outcome
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            waits = [asyncio.ensure_future(event.wait())]
            if gone is not None:
                waits.append(asyncio.ensure_future(gone.wait()))
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
        return []

    async def _worker(self, worker_id: str) -> WorkerRow:
        """The registered worker, read at most every few seconds per worker."""
        cached = self._workers.get(worker_id)
        now = time.monotonic()
        if cached is not None and now - cached[1] < _WORKER_CACHE_S:
            return cached[0]
        worker = await self.work.worker(worker_id)
        if worker is None:
            self._workers.pop(worker_id, None)
            raise NotFound(f"worker {worker_id!r} is not registered")
        if len(self._workers) > _OUTBOX_MEMORY:
            self._workers.clear()
        self._workers[worker_id] = (worker, now)
        return worker

    async def touch_after_claim(self, worker_id: str) -> None:
        """Record that the worker is alive (a claim call shows it), at most once a
        second per worker: its own heartbeats record it anyway."""
        now = time.monotonic()
        if now - self._touched.get(worker_id, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S:
            return
        if len(self._touched) > _OUTBOX_MEMORY:
            self._touched.clear()
        self._touched[worker_id] = now
        await self.work.touch(worker_id, time.time())

    async def _assign(self, held: Held, start: bool = False) -> Assignment | None:
        """Record the claim of a taken row and render the step; with `start`, its start
        too (`StepStarted`, in the claim's append: the worker starts it right away and
        does not report the start)."""
        orch = self.orchestrator
        claim = cmd.Claim(step=held.step, attempt=held.attempt, worker_id=held.worker_id,
                          lease=held.lease)
        try:
            started = False
            if start:
                state, started = await orch.command_then(held.job_id, claim, cmd.MarkStarted(
                    step=held.step, attempt=held.attempt, worker_id=held.worker_id))
            else:
                state = await orch.command(held.job_id, claim)
        except (Conflict, NotFound) as exc:
            # The step is no longer ready at this attempt (cancelled, or claimed before).
            log.info("queued step %s of job %s dropped: %s", held.step, held.job_id, exc)
            await self.work.finish(held.lease, "dropped", time.time())
            return None
        except BaseException:
            await asyncio.shield(self.work.release(held.lease))
            raise
        return await self._assignment(held, state, started)

    async def _assignment(self, held: Held, state: JobState,
                          started: bool) -> Assignment | None:
        """The claimed step (its claim recorded in `state`) rendered for the worker; a
        step that does not render fails here instead."""
        try:
            run = self._prepare(state, held.step, Path("."))
        except RenderError as exc:
            await self._record(held, cmd.Fail(step=held.step, attempt=held.attempt,
                                              error=exc.message, kind="render"), "failed")
            return None
        await self._renew_if_old(held)
        return Assignment(
            job_id=held.job_id, step=held.step, attempt=held.attempt, lease=held.lease,
            workspace=state.workspace, revision=state.revision, action_type=run.action_type,
            action=run.action, input=run.input,
            env={k: v for k, v in run.env.items() if k != "ARTIFACTS_DIR"},
            timeout=run.timeout, started=started)

    async def _renew_if_old(self, held: Held) -> None:
        """Renew a lease whose last renewal is older than a quarter of the timeout: a
        claim or result that waited long (for the job's lock, for the store) must not
        let the sweeper take the step before the worker heard of it or was answered."""
        now = time.time()
        if now - held.renewed_at > self.lease_timeout / 4:
            await self.work.renew(held.lease, now)

    # --- calls under a lease ---------------------------------------------------------

    async def fenced(self, lease: str) -> tuple[Held, JobState]:
        """The open lease and its job's state; `LeaseRefused` unless it still holds."""
        found = await self.work.fence(lease)
        held = None if found is None else found[0]
        if found is None or found[0].finished_at is not None:
            raise LeaseRefused(f"lease {lease[:8]}… is not held "
                               f"({'unknown' if held is None else held.outcome})")
        held, version = found
        state = await self.current_state(held.job_id, version)
        step = state.steps.get(held.step)
        if (step is None or step.attempt != held.attempt or step.lease != held.lease
                or step.status is not StepStatus.RUNNING):
            raise LeaseRefused(f"step {held.step} of job {held.job_id} no longer runs "
                               f"under this lease")
        return held, state

    async def current_state(self, job_id: str, version: int | None = None) -> JobState:
        """The job's state with every event in the log (another replica may have
        appended since this one last decided on the job). `version`: the job's version
        as just read from the store; a state already that far needs no read."""
        state = await self.orchestrator.get_state(job_id)
        if version is not None and state.version >= version:
            return state
        newer = await self.orchestrator.store.read(job_id, after_version=state.version)
        return fold((r.event() for r in newer), state) if newer else state

    async def lease_heartbeat(self, lease: str) -> bool:
        """Renew the lease; True when the job was cancelled and the step must stop."""
        _, state = await self.fenced(lease)
        if not await self.work.renew(lease, time.time()):
            raise LeaseRefused("lease closed meanwhile")
        return state.cancel_requested

    async def started(self, lease: str, pid: int | None) -> None:
        held, _ = await self.fenced(lease)
        await self._command(held, cmd.MarkStarted(step=held.step, attempt=held.attempt,
                                                  worker_id=held.worker_id, pid=pid))
        await self.work.renew(lease, time.time())

    async def logs(self, lease: str, offset: int, lines: Sequence[Mapping[str, Any]]) -> int:
        """Store a batch of lines (index `offset`… in this lease's output); lines already
        stored by an earlier try of the same batch, on any replica, are skipped (the log
        store keeps the lease's position with its lines). Returns the next offset."""
        held, _ = await self.fenced(lease)
        end = await self._store_lines(held, offset, lines)
        await self.work.renew(lease, time.time())
        return end

    async def _store_lines(self, held: Held, offset: int,
                           lines: Sequence[Mapping[str, Any]]) -> int:
        writer = await self._writer(held.job_id)
        entries = [("stderr" if e.get("stream") == "stderr" else "stdout",
                    str(e.get("line", "")),
                    float(ts) if isinstance(ts := e.get("ts"), int | float) else None)
                   for e in lines]
        end: int = await writer.batch(held.step, held.lease, offset, entries)
        return end

    async def result(self, lease: str, body: Mapping[str, Any], *,
                     lines: Sequence[Mapping[str, Any]] | None = None,
                     offset: int = 0) -> str:
        """Record how the step ended (`status`: completed|failed|suspended|cancelled).

        `lines` (from index `offset` of the lease's output) are the step's last lines,
        stored first as `logs` would. Without `lines` the lease may have stored lines
        before; with them, the worker says how many it ever sent (`offset + len(lines)`).
        """
        held, _ = await self.fenced(lease)
        await self._renew_if_old(held)
        return await self._result(held, body, lines, offset)

    async def _result(self, held: Held, body: Mapping[str, Any],
                      lines: Sequence[Mapping[str, Any]] | None, offset: int,
                      then: Callable[[], Awaitable[Any]] | None = None,
                      record: Callable[[cmd.Command], Awaitable[None]] | None = None) -> str:
        """`result` on a fenced lease; `record` appends the step's end instead of a
        command of its own, and `then` runs once it is recorded, alongside the closing
        of its queue row."""
        lease = held.lease
        if lines:
            await self._store_lines(held, offset, lines)
        writer = await self._writer(held.job_id)
        await writer.flush()
        redactor = writer.redactor
        status = str(body.get("status", "failed"))
        output = _redact(redactor, body.get("output"))
        step, attempt = held.step, held.attempt
        command: cmd.Command
        if status == "completed":
            command = cmd.Complete(step=step, attempt=attempt, output=output)
        elif status == "suspended":
            command = cmd.Suspend(step=step, attempt=attempt,
                                  message=_redact(redactor, body.get("message")))
        elif status == "cancelled":
            command = cmd.CancelStep(step=step, attempt=attempt, reason="cancelled")
        else:
            status = "failed"
            kind = str(body.get("kind") or "error")
            command = cmd.Fail(step=step, attempt=attempt,
                               error=_redact(redactor, str(body.get("error") or "failed")),
                               exit_code=body.get("exit_code"),
                               kind=kind if kind in ("error", "timeout") else "error")
        if then is None:
            await self._record(held, command, status)
        else:
            await (self._command(held, command) if record is None else record(command))
            outcomes: tuple[Any, ...] = await asyncio.gather(
                self.work.finish(held.lease, status, time.time()), then(),
                return_exceptions=True)
            closed, followed = outcomes
            if isinstance(closed, BaseException):
                # The lease sweeper closes it: the step no longer runs under it.
                log.warning("cannot close the lease %s…: %s", lease[:8], closed)
            if isinstance(followed, BaseException):  # the end is recorded all the same
                log.warning("after the result of lease %s…: %s", lease[:8], followed)
        if lines is None or offset + len(lines) > 0:  # else no position was ever kept
            self._spawn(self._forget(held.job_id, lease))
        return status

    async def result_then_claim(self, lease: str, body: Mapping[str, Any], *,
                                lines: Sequence[Mapping[str, Any]] | None = None,
                                offset: int = 0, limit: int = 1,
                                start: bool = False) -> tuple[str, list[Assignment]]:
        """`result`, then up to `limit` queued steps for the same worker, without waiting
        (a busy worker's slot goes on with its next step: one call instead of two).

        The next rows are taken first: the claims (and starts) of those of the same job
        go into the append of the step's end (`Orchestrator.command_many`), so a fan-out
        costs one append per step; the others are claimed as `claim` would once the end
        is recorded. When none was queued, the claim is tried again after the end (the
        steps it made ready are queued by then)."""
        held, _ = await self.fenced(lease)
        await self._renew_if_old(held)
        worker_id = held.worker_id
        taken: list[Held] = []
        try:
            worker = await self._worker(worker_id)
            taken = await self.work.claim_many(
                worker_id, worker.tags, [new_token(16) for _ in range(max(1, limit))],
                time.time(), aging=self.aging)
        except PartiturError as exc:
            log.info("no claim with the result of lease %s…: %s", lease[:8], exc)
        same = [h for h in taken if h.job_id == held.job_id]
        others = [h for h in taken if h.job_id != held.job_id]
        found: list[Assignment] = []
        handed: list[tuple[Held, bool, bool]] = []  # (row, claim recorded, start recorded)
        after: list[JobState] = []

        async def record(command: cmd.Command) -> None:
            per = 2 if start else 1
            more: list[cmd.Command] = []
            for h in same:
                more.append(cmd.Claim(step=h.step, attempt=h.attempt, worker_id=worker_id,
                                      lease=h.lease))
                if start:
                    more.append(cmd.MarkStarted(step=h.step, attempt=h.attempt,
                                                worker_id=worker_id))
            try:
                state, recorded = await self.orchestrator.command_many(
                    held.job_id, command, more)
            except Conflict as exc:
                raise LeaseRefused(str(exc)) from exc
            after.append(state)
            handed.extend((h, recorded[i * per], start and recorded[i * per + per - 1])
                          for i, h in enumerate(same))

        async def claim() -> None:
            for h, claimed, started in handed:
                if not claimed:  # not ready at that attempt any more (paused, cancelled)
                    await self.work.finish(h.lease, "dropped", time.time())
                elif (a := await self._assignment(h, after[0], started)) is not None:
                    found.append(a)
            if others:
                assigned = await asyncio.gather(*(self._assign(h, start) for h in others),
                                                return_exceptions=True)
                found.extend(a for a in assigned if isinstance(a, Assignment))
            elif not taken:
                try:
                    found.extend(await self.claim_many(worker_id, 0.0, limit, start=start))
                except PartiturError as exc:
                    log.info("no claim after the result of lease %s…: %s", lease[:8], exc)

        try:
            status = await self._result(held, body, lines, offset, claim, record)
        except BaseException:
            if not after:  # the rows taken for the next steps were not claimed: put back
                for h in taken:
                    await asyncio.shield(self.work.release(h.lease))
            raise
        return status, found

    async def _forget(self, job_id: str, lease: str) -> None:
        try:
            await self.orchestrator.logs.forget(job_id, lease)
        except PartiturError:  # the job's end drops it anyway (`LogStore.finish`)
            log.warning("cannot drop the log position of lease %s…", lease[:8])

    async def _record(self, held: Held, command: cmd.Command, outcome: str) -> None:
        await self._command(held, command)
        await self.work.finish(held.lease, outcome, time.time())

    async def _command(self, held: Held, command: cmd.Command) -> None:
        try:
            await self.orchestrator.command(held.job_id, command)
        except Conflict as exc:
            raise LeaseRefused(str(exc)) from exc

    async def _writer(self, job_id: str) -> Any:
        orch = self.orchestrator
        try:
            return orch.writer(job_id)
        except NotFound:
            await orch.command(job_id, cmd.Tick())  # loads the job into memory
            return orch.writer(job_id)
