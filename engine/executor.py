"""The embedded executor: runs ready steps in this process, up to a concurrency limit.

For each dispatched step it claims the step (with a lease), prepares the run, starts the
runner of the action type, streams its lines into the job's log and reports the result
back to the orchestrator as a command. Approval steps need no process: they suspend.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine import tracing
from engine.artifacts import ArtifactLimits, SpareFolders, enforce_limits
from engine.clock import new_token
from engine.core import commands as cmd
from engine.core.plan import plan_index
from engine.core.state import JobState, StepStatus
from engine.errors import Conflict, NotFound, PartiturError, RenderError
from engine.logs.redact import Redactor
from engine.orchestrator import Orchestrator
from engine.priority import PrioritySlots
from engine.ratelimit import RateLimiter, limit_of
from engine.runners import get_runner
from engine.runners.base import RunResult
from engine.stepprep import prepare
from engine.store.ratewindows import rate_windows

log = logging.getLogger("partitur.executor")

# How long a step's start may wait for an append of its job to ride along with. Steps
# that start while others of their job end (a fan-out) or that end at once get no append
# of their own; a crash within this window leaves the start unrecorded (docs/guarantees.md).
START_DELAY = 0.005


def _redact_value(redactor: Redactor, value: Any) -> Any:
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(redactor, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(redactor, v) for v in value]
    return value


class _StepSink:
    """Binds a job's log writer to one step (the runners' `LogSink`)."""

    __slots__ = ("_step", "_writer")

    def __init__(self, orchestrator: Orchestrator, job_id: str, step: str) -> None:
        self._writer = orchestrator.writer(job_id)
        self._step = step

    def line(self, stream: str, text: str) -> None:
        self._writer.line(self._step, stream, text)

    async def flush(self) -> None:
        await self._writer.flush()

    def in_flight(self) -> asyncio.Task[None] | None:
        return self._writer.in_flight()


class LocalExecutor:
    """Runs steps in this process with at most `concurrency` at a time."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        concurrency: int,
        artifacts_root: Path,
        worker_id: str | None = None,
        artifact_limits: ArtifactLimits | None = None,
        aging: float | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.concurrency = max(1, concurrency)
        self.artifacts_root = artifacts_root
        self.artifact_limits = artifact_limits or ArtifactLimits.from_env()
        self.spare_folders = SpareFolders(artifacts_root, keep=4 * self.concurrency)
        self.worker_id = worker_id or f"local:{socket.gethostname()}"
        # Slots go to waiting steps by job priority, FIFO within one, with aging.
        self._slots = PrioritySlots(self.concurrency, aging=aging)
        self.rates = RateLimiter(rate_windows(orchestrator.store))  # shared via the store
        self.slot_waiting: set[tuple[str, str]] = set()
        self._running: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._inner: dict[tuple[str, str], asyncio.Task[RunResult]] = {}
        # Steps claimed with the completion of the step whose slot they took: the state
        # after that append (None: not claimed, the step claims itself).
        self._preclaims: dict[tuple[str, str], asyncio.Future[JobState | None]] = {}
        # StepStarted of a job's steps whose processes started and that are not written
        # yet: they go into the job's next append of a step's end, or are written on
        # their own `START_DELAY` seconds after the first of them (`_write_starts`).
        self._starts: dict[str, list[tuple[cmd.MarkStarted, asyncio.Future[None]]]] = {}
        self._start_timers: dict[str, asyncio.TimerHandle] = {}
        self._start_writers: set[asyncio.Task[None]] = set()
        self.started_steps = 0
        self._closing = False
        self._job_folders: dict[str, Path] = {}

    # --- Dispatcher ------------------------------------------------------------------

    def dispatch(self, state: JobState, step: str) -> None:
        key = (state.job_id, step)
        attempt = state.steps[step].attempt
        task = asyncio.ensure_future(self._run(state.job_id, step, attempt, state.priority))
        self._running[key] = task
        task.add_done_callback(functools.partial(self._done, key))

    def cancel(self, job_id: str, step: str) -> None:
        inner = self._inner.get((job_id, step))
        if inner is not None:
            inner.cancel()

    def owns(self, worker_id: str | None) -> bool:
        return worker_id is None or worker_id == self.worker_id

    @property
    def busy(self) -> int:
        return len(self._inner)

    def slot_holders(self) -> list[str]:
        """The jobs whose steps hold the executor's slots now."""
        return self._slots.holders()

    async def close(self, grace: float = 0.0) -> None:
        """Stop: running steps get `grace` seconds, then their process groups are killed.

        Steps stopped this way are not reported; after a restart they are handled as
        after a crash (failed with kind `worker_lost`, re-run only on opt-in).
        """
        self._closing = True
        for job_id in list(self._starts):
            self._start_timers.pop(job_id).cancel()
            self._flush_starts(job_id)
        if grace > 0 and self._inner:
            await asyncio.wait(list(self._inner.values()), timeout=grace)
        for task in list(self._running.values()):
            task.cancel()
        for inner in list(self._inner.values()):
            inner.cancel()
        pending = [*self._running.values(), *self._inner.values()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        self._preclaims.clear()
        self.spare_folders.close()

    # --- running a step --------------------------------------------------------------

    def _done(self, key: tuple[str, str], task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("step %s of job %s crashed", key[1], key[0], exc_info=task.exception())

    async def _run(self, job_id: str, step: str, attempt: int, priority: int) -> None:
        ticket = await self._acquire(job_id, step, attempt, priority)
        try:
            claimed = None
            pending = self._preclaims.pop((job_id, step), None)
            if pending is not None:
                claimed = await pending
            following = await self._run_held(job_id, step, attempt, ticket, claimed)
            while following is not None:  # claimed with the end of the step before it
                step, attempt, claimed = following
                following = await self._run_held(job_id, step, attempt, ticket, claimed)
        finally:
            self._slots.release(ticket)

    async def _acquire(self, job_id: str, step: str, attempt: int, priority: int) -> int:
        """A slot for the step, once its rate limit (if any) lets it start."""
        key = (job_id, step)
        orch = self.orchestrator
        try:
            while True:
                self.slot_waiting.add(key)
                try:
                    ticket = await self._slots.acquire(priority, job_id, (job_id, step, attempt))
                finally:
                    self.slot_waiting.discard(key)
                state = orch.active_state(job_id)
                limit = limit_of(orch.workspaces, state, step) if state is not None else None
                now = orch.clock.now()
                until = await self.rates.reserve(limit, now) if limit is not None else None
                if until is None:
                    return ticket
                # Over the limit: wait without holding a slot, then queue again.
                self._slots.release(ticket)
                self.rates.waiting[key] = until
                await asyncio.sleep(max(0.0, until - now))
        finally:
            self.rates.waiting.pop(key, None)

    async def _run_held(self, job_id: str, step: str, attempt: int, ticket: int,
                        claimed: JobState | None = None) -> tuple[str, int, JobState] | None:
        """Run one claimed (or to be claimed) step in the slot of `ticket`; the step it
        claimed with its end to run next in the same slot, if any."""
        orch = self.orchestrator
        if claimed is not None:
            state = claimed
        else:
            try:
                state = await orch.command(job_id, cmd.Claim(
                    step=step, attempt=attempt, worker_id=self.worker_id, lease=new_token(12)))
            except (Conflict, NotFound):
                return None  # cancelled or taken meanwhile
        plan_step = state.plan_step(step)
        if plan_step.action_type == "approval":
            await self._suspend(state, step, attempt)
            return None
        try:
            run = self._prepare(state, step)
        except RenderError as exc:
            await self._report(job_id, cmd.Fail(step=step, attempt=attempt, error=exc.message,
                                                kind="render"))
            return None
        try:
            runner = get_runner(plan_step.action_type)
        except PartiturError as exc:
            await self._report(job_id, cmd.Fail(step=step, attempt=attempt, error=exc.message))
            return None
        started: list[asyncio.Future[None]] = []

        def on_start(pid: int | None) -> None:
            started.append(self._mark_started(job_id, cmd.MarkStarted(
                step=step, attempt=attempt, worker_id=self.worker_id, pid=pid,
                at=orch.clock.now())))

        # The runners that start a program create the artifacts folder as they spawn it.
        sink = _StepSink(orch, job_id, step)
        inner = asyncio.ensure_future(runner.run(run, sink, on_start))
        self._inner[(job_id, step)] = inner
        self.started_steps += 1
        try:
            result = await inner
        except asyncio.CancelledError:
            if self._closing or not inner.cancelled():
                raise  # this task itself is being cancelled (shutdown): report nothing
            result = None
        finally:
            self._inner.pop((job_id, step), None)
        self._free_slot_early(job_id, ticket, result)
        if started and not started[0].done() and not self._queued(job_id, started[0]):
            await asyncio.gather(*started, return_exceptions=True)  # being written now
        # The step's lines are stored before its end is (nothing to wait for with the
        # JSONL store). A completion is decided while they are written, and its append
        # waits for them; the other ends wait here.
        if result is None:
            await sink.flush()
            await self._report(job_id, cmd.CancelStep(step=step, attempt=attempt,
                                                      reason="cancelled"))
            return None
        result = self._redacted(job_id, result)
        if result.state is not None:
            await sink.flush()
            await self._report(job_id, cmd.SaveState(step=step, attempt=attempt,
                                                     state=result.state))
        result = self._check_artifacts(job_id, step, result, run.artifacts_dir)
        if result.status == "completed":
            complete = cmd.Complete(step=step, attempt=attempt, output=result.output)
            lines = sink.in_flight()
            if await self._complete_and_claim(job_id, complete, ticket, lines):
                return None
            return await self._complete_and_follow(job_id, step, complete, ticket, lines)
        await sink.flush()
        if result.status == "suspended":
            await self._report(job_id, cmd.Suspend(step=step, attempt=attempt,
                                                   message=result.message))
        else:
            await self._report(job_id, cmd.Fail(
                step=step, attempt=attempt, error=result.error or "failed",
                exit_code=result.exit_code, kind=result.kind))
        return None

    def _free_slot_early(self, job_id: str, ticket: int, result: RunResult | None) -> None:
        """The step's process has ended: its slot goes to the next waiting step now, while
        the step's end is still being recorded — unless that step is of the same job and
        this one completed (it is then claimed in the append of this end,
        `_complete_and_claim`), or no step waits (a step this end makes ready may then be
        claimed with it, `_complete_and_follow`)."""
        waiter = self._slots.next_waiter()
        if waiter is None:
            return  # nobody waits: the slot may run a step this end makes ready
        tag = waiter.tag
        if (result is not None and result.status == "completed" and isinstance(tag, tuple)
                and tag[0] == job_id):
            return
        self._slots.release(ticket)

    def _mark_started(self, job_id: str, command: cmd.MarkStarted) -> asyncio.Future[None]:
        """Record that a step's process started: in the job's next append of a step's
        end (usually that of another step, or of this one when it ends at once), or with
        the other starts of its job in one append of their own `START_DELAY` seconds
        later. The future resolves once it is written (or dropped: cancelled meanwhile).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        queued = self._starts.get(job_id)
        if queued is None:
            queued = self._starts[job_id] = []
            self._start_timers[job_id] = loop.call_later(
                START_DELAY, self._flush_starts, job_id)
        queued.append((command, done))
        return done

    def _queued(self, job_id: str, done: asyncio.Future[None]) -> bool:
        return any(d is done for _, d in self._starts.get(job_id, ()))

    def _take_starts(self, job_id: str) -> list[tuple[cmd.MarkStarted, asyncio.Future[None]]]:
        """The job's starts not written yet, for an append about to be made."""
        timer = self._start_timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        return self._starts.pop(job_id, [])

    def _flush_starts(self, job_id: str) -> None:
        self._start_timers.pop(job_id, None)
        self._spawn_start_writer(job_id, self._starts.pop(job_id, []))

    def _spawn_start_writer(
            self, job_id: str, starts: list[tuple[cmd.MarkStarted, asyncio.Future[None]]]
    ) -> None:
        writer = asyncio.ensure_future(self._write_starts(job_id, starts))
        self._start_writers.add(writer)
        writer.add_done_callback(self._starts_written)

    async def _command(self, job_id: str, command: cmd.Command,
                       more: tuple[cmd.Command, ...] = (), *,
                       after: asyncio.Future[None] | None = None
                       ) -> tuple[JobState, list[bool]]:
        """`command` (then `more`) on a job, with its starts not written yet ahead of it,
        appended once `after` is done. When `command` is refused, those starts are
        written on their own."""
        starts = self._take_starts(job_id)
        if not starts:
            return await self.orchestrator.command_many(job_id, command, more, after=after)
        try:
            result = await self.orchestrator.command_many(
                job_id, command, more, before=[c for c, _ in starts], after=after)
        except BaseException:
            self._spawn_start_writer(job_id, starts)
            raise
        for _, done in starts:
            if not done.done():
                done.set_result(None)
        return result

    def _starts_written(self, task: asyncio.Task[None]) -> None:
        self._start_writers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("step starts not recorded", exc_info=task.exception())

    async def _write_starts(
            self, job_id: str, queued: list[tuple[cmd.MarkStarted, asyncio.Future[None]]]
    ) -> None:
        try:
            while queued:
                (first, _), rest = queued[0], queued[1:]
                try:
                    await self.orchestrator.command_many(job_id, first, [c for c, _ in rest])
                except (Conflict, NotFound) as exc:
                    # Not allowed (cancelled meanwhile): the others are written without it.
                    log.info("start of %s for job %s not recorded: %s", first.step, job_id,
                             exc)
                    queued[0][1].set_result(None)
                    queued = rest
                    continue
                break
        finally:
            for _, done in queued:
                if not done.done():
                    done.set_result(None)

    async def _complete_and_claim(self, job_id: str, complete: cmd.Complete, ticket: int,
                                  lines: asyncio.Future[None] | None) -> bool:
        """When the step next in line for this slot is of the same job (and has no rate
        limit), hand it the slot now and claim it in the append of `complete` (made once
        `lines` are stored): one append instead of two. False when there is no such step
        (nothing was done)."""
        waiter = self._slots.next_waiter()
        tag = waiter.tag if waiter is not None else None
        if waiter is None or not isinstance(tag, tuple) or tag[0] != job_id:
            return False
        _, step, attempt = tag
        orch = self.orchestrator
        state = orch.active_state(job_id)
        if (state is None or self._closing or (job_id, step) in self._preclaims
                or limit_of(orch.workspaces, state, step) is not None):
            return False
        if not self._slots.hand_over(ticket, waiter):
            return False
        # The next step waits for this append before it runs (it claims itself if the
        # claim was not recorded).
        pending: asyncio.Future[JobState | None] = asyncio.get_running_loop().create_future()
        self._preclaims[(job_id, step)] = pending
        claimed: JobState | None = None
        try:
            new_state, recorded = await self._command(job_id, complete, (cmd.Claim(
                step=step, attempt=attempt, worker_id=self.worker_id, lease=new_token(12)),),
                after=lines)
            if recorded[0]:
                claimed = new_state
        except (Conflict, NotFound) as exc:
            log.info("result of Complete for job %s not recorded: %s", job_id, exc)
        finally:
            pending.set_result(claimed)
        return True

    def _check_artifacts(self, job_id: str, step: str, result: RunResult,
                         folder: Path) -> RunResult:
        """Enforce the artifact limits; a step that broke one fails, saying which."""
        if self.spare_folders.give_if_empty(folder):
            return result  # the usual case: it wrote nothing (its folder is kept for reuse)
        try:
            problems = enforce_limits(self.artifacts_root, job_id, step, self.artifact_limits)
        except OSError as exc:
            problems = [f"cannot check the artifacts: {exc}"]
        if not problems:
            return result
        writer = self.orchestrator.writer(job_id)
        for problem in problems:
            writer.line("_server", "stderr", f"step {step}: {problem}")
        if result.status != "completed":
            return result
        return replace(result, status="failed", kind="error", error="; ".join(problems))

    def _redacted(self, job_id: str, result: RunResult) -> RunResult:
        """Secret values never reach the event log through an output or an error."""
        try:
            redactor = self.orchestrator.writer(job_id).redactor
        except NotFound:
            return result
        if not redactor:
            return result
        return replace(result, output=_redact_value(redactor, result.output),
                       state=_redact_value(redactor, result.state),
                       error=None if result.error is None else redactor.redact(result.error),
                       message=None if result.message is None else redactor.redact(result.message))

    def _prepare(self, state: JobState, step: str) -> Any:
        orch = self.orchestrator
        real_input = orch.real_renderer(state).input(state, step)
        loaded = orch.workspaces.revision(state.workspace, state.revision)
        run = prepare(
            state, step, real_input=real_input, secrets=orch.secrets_of(state),
            workdir=loaded.path, artifacts_dir=self._job_folder(state.job_id) / step,
        )
        # The task state this job started with, for scripts (templates see `state`).
        env = {**run.env, "PARTITUR_STATE": json.dumps(state.task_state, default=str),
               **tracing.step_env(state.job_id, step)}
        return replace(run, env=env)

    async def _complete_and_follow(
            self, job_id: str, step: str, complete: cmd.Complete, ticket: int,
            lines: asyncio.Future[None] | None) -> tuple[str, int, JobState] | None:
        """Record `complete` (appended once `lines` are stored); when no step waits for a
        slot, claim in the same append a step it makes ready (the next step of a chain),
        to run next in this slot."""
        claim = self._following_claim(job_id, step, ticket)
        if claim is None:
            await self._report(job_id, complete, after=lines)
            return None
        try:
            new_state, recorded = await self._command(job_id, complete, (claim,), after=lines)
        except (Conflict, NotFound) as exc:
            log.info("result of Complete for job %s not recorded: %s", job_id, exc)
            return None
        if not recorded[0]:
            return None
        return claim.step, claim.attempt, new_state

    def _following_claim(self, job_id: str, step: str, ticket: int) -> cmd.Claim | None:
        """A claim for the first step that depends on `step` and may become ready with its
        end, if this slot is free for it: nothing else waits, the step is one this
        executor runs, with no rate limit. (Dropped when the end does not make it ready.)"""
        if self._closing or self._slots.next_waiter() is not None or not self._slots.holds(
                ticket):
            return None
        orch = self.orchestrator
        state = orch.active_state(job_id)
        if state is None or state.paused or state.cancel_requested:
            return None
        current = state.steps.get(step)
        if current is None or current.loop_of is not None:
            return None
        for name in plan_index(state.plan).dependents.get(step, ()):
            plan_step = state.plan.steps[name]
            following = state.steps[name]
            if (following.status is not StepStatus.PENDING or plan_step.for_each is not None
                    or plan_step.action_type == "task"
                    or limit_of(orch.workspaces, state, name) is not None
                    or not all(state.steps[d].terminal or d == step
                               for d in reversed(plan_step.depends_on))):
                continue
            return cmd.Claim(step=name, attempt=following.attempt + 1,
                             worker_id=self.worker_id, lease=new_token(12))
        return None

    def _job_folder(self, job_id: str) -> Path:
        """`<artifacts root>/<job>`, made once per job (paths cost a step ~10 µs each)."""
        folder = self._job_folders.get(job_id)
        if folder is None:
            if len(self._job_folders) >= 1024:
                self._job_folders.clear()
            folder = self._job_folders[job_id] = self.artifacts_root / job_id
        return folder

    async def _suspend(self, state: JobState, step: str, attempt: int) -> None:
        plan_step = state.plan_step(step)
        message = None
        try:
            run = self._prepare(state, step)
            message = run.action.get("message")
        except RenderError as exc:
            await self._report(state.job_id, cmd.Fail(step=step, attempt=attempt,
                                                      error=exc.message, kind="render"))
            return
        timeout_at = None
        if plan_step.timeout:
            timeout_at = self.orchestrator.clock.now() + plan_step.timeout
        await self._report(state.job_id, cmd.Suspend(
            step=step, attempt=attempt, message=None if message is None else str(message),
            timeout_at=timeout_at))

    async def _report(self, job_id: str, command: cmd.Command, *,
                      after: asyncio.Future[None] | None = None) -> None:
        if isinstance(command, cmd.Fail):
            # Render errors quote values rendered with the real secrets.
            try:
                redactor = self.orchestrator.writer(job_id).redactor
            except NotFound:
                redactor = None
            if redactor:
                command = replace(command, error=redactor.redact(command.error))
        try:
            await self._command(job_id, command, after=after)
        except (Conflict, NotFound) as exc:
            log.info("result of %s for job %s not recorded: %s", type(command).__name__,
                     job_id, exc)
