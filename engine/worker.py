"""The remote worker: `partitur worker --server URL --token T` (DESIGN §6).

It registers, heartbeats, and long-polls `POST /worker/claim` for its `concurrency`
slots: a poll asks for as many steps as slots are free and not asked for by another poll
(one poll per slot with a server that predates `max`). A claimed step runs with the same
runners as the embedded executor, in the step's workspace revision (fetched as a tarball
and cached under `cache_dir`, its ETag checked again after `REVALIDATE_AFTER`). While it
runs, its lease is renewed every `heartbeat_interval` seconds and its lines are shipped
in batches; its result, presenting the lease, carries its last lines and claims the
slot's next step. The server records a step's start with its claim: a busy worker's
short step costs the server one call (a server without these features, announced by
`register`, gets the calls of the first protocol). When the
server refuses the lease (409: the step was declared lost, or finished elsewhere), the
step is cancelled, which kills its process group, and nothing more is reported. When the
job was cancelled, the step is killed and reported as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import shutil
import socket
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import eventloop
from engine.runners import get_runner
from engine.runners.base import RunResult, StepRun
from engine.workerclient import Reply, ServerRefused, ServerUnreachable, WorkerClient

log = logging.getLogger("partitur.worker")

BATCH_INTERVAL = 0.1
BATCH_LINES = 500
# A revision's files are fixed by its id (a commit, or a hash of the files), so a fetched
# revision is used as it is for this long before its ETag is checked again.
REVALIDATE_AFTER = 60.0


class LeaseLost(Exception):
    """The server refused this lease: stop the step and report nothing."""


@dataclass
class WorkerOptions:
    server: str
    token: str
    tags: tuple[str, ...] = ()
    concurrency: int = 1
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "partitur-worker")
    claim_timeout: float = 20.0


class _Lines:
    """Collects a step's lines for batched shipping (the runners' `LogSink`)."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.sent = 0
        self.ready = asyncio.Event()

    def line(self, stream: str, text: str) -> None:
        self.pending.append({"ts": time.time(), "stream": stream, "line": text})
        if len(self.pending) >= BATCH_LINES:
            self.ready.set()


class Worker:
    """One worker process: registration, heartbeats, claim loops, step runs."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.worker_id: str | None = None
        self.heartbeat_interval = 5.0
        self.client = WorkerClient(options.server, options.token,
                                   read_timeout=options.claim_timeout + 10.0)
        self.completed = 0
        self.features: frozenset[str] = frozenset()  # what the server announced
        self._claim_failures = 0
        self._validated: dict[str, float] = {}  # revision key → when its ETag was checked
        self._stopping = asyncio.Event()
        self._revision_locks: dict[str, asyncio.Lock] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Register and work until `stop()`."""
        await self._register()
        if "claim-many" in self.features:
            loops = [asyncio.ensure_future(self._claim_many_loop())]
        else:
            loops = [asyncio.ensure_future(self._claim_loop(i))
                     for i in range(max(1, self.options.concurrency))]
        beat = asyncio.ensure_future(self._heartbeat_loop())
        try:
            await self._stopping.wait()
        finally:
            for task in [*loops, beat]:
                task.cancel()
            await asyncio.gather(*loops, beat, return_exceptions=True)
            await self.client.aclose()

    def stop(self) -> None:
        self._stopping.set()

    async def _register(self) -> None:
        delay = 0.2
        while True:
            try:
                r = await self.client.post("/worker/register", json={
                    "name": self.options.name, "tags": list(self.options.tags),
                    "concurrency": self.options.concurrency, "worker_id": self.worker_id})
            except ServerUnreachable as exc:
                log.warning("cannot reach %s: %s", self.options.server, exc)
            else:
                if r.status_code == 401:
                    raise SystemExit("partitur worker: the server refused the worker token")
                if r.status_code == 200:
                    data = r.json()
                    self.worker_id = data["worker_id"]
                    self.heartbeat_interval = float(data.get("heartbeat_interval", 5.0))
                    self.features = frozenset(data.get("features") or ())
                    log.info("registered as %s", self.worker_id)
                    return
                log.warning("register: %s %s", r.status_code, r.text[:200])
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                r = await self.client.post("/worker/heartbeat", json={"worker_id": self.worker_id})
                if r.status_code == 404:
                    await self._register()
            except ServerUnreachable as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _claim_loop(self, _index: int) -> None:
        delay = 0.2
        while True:
            try:
                r = await self.client.post("/worker/claim", json={
                    "worker_id": self.worker_id, "timeout": self.options.claim_timeout})
            except ServerUnreachable as exc:
                log.warning("claim failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            delay = 0.2
            if r.status_code == 204:
                continue
            if r.status_code == 404:
                await self._register()
                continue
            if r.status_code != 200:
                log.warning("claim: %s %s", r.status_code, r.text[:200])
                await asyncio.sleep(1.0)
                continue
            await self._slot(r.json())

    async def _claim_many_loop(self) -> None:
        """Long polls that ask for as many steps as slots are free: when slots free up
        while other polls wait, one more poll asks for those; each step runs in a slot
        of its own."""
        free = max(1, self.options.concurrency)
        asked = 0  # slots the polls under way ask for
        changed = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            changed.set()

        def slot_done(task: asyncio.Task[None]) -> None:
            nonlocal free
            free += 1
            done(task)

        async def poll(count: int) -> None:
            nonlocal asked, free
            try:
                try:
                    steps = await self._claim_steps(count)
                except Exception:
                    log.exception("claim failed")
                    await asyncio.sleep(1.0)
                    steps = []
            finally:
                asked -= count
            for job in steps:
                free -= 1
                task = asyncio.ensure_future(self._slot(job))
                tasks.add(task)
                task.add_done_callback(slot_done)

        try:
            while True:
                changed.clear()
                if free - asked > 0:
                    count = free - asked
                    asked += count
                    task = asyncio.ensure_future(poll(count))
                    tasks.add(task)
                    task.add_done_callback(done)
                await changed.wait()
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim_steps(self, count: int) -> list[dict[str, Any]]:
        """One long poll for up to `count` steps (after a failure: a pause, then [])."""
        try:
            r = await self.client.post("/worker/claim", json={
                "worker_id": self.worker_id, "timeout": self.options.claim_timeout,
                "max": count, "start": "claim-start" in self.features})
        except ServerUnreachable as exc:
            log.warning("claim failed: %s", exc)
            self._claim_failures += 1
            await asyncio.sleep(min(5.0, 0.2 * 2 ** min(5, self._claim_failures - 1)))
            return []
        self._claim_failures = 0
        if r.status_code == 404:
            await self._register()
            return []
        if r.status_code != 200:
            log.warning("claim: %s %s", r.status_code, r.text[:200])
            await asyncio.sleep(1.0)
            return []
        steps: list[dict[str, Any]] = r.json().get("steps") or []
        return steps

    async def _slot(self, job: dict[str, Any]) -> None:
        """Run `job`, then the steps its result call claimed for this slot."""
        todo = [job]
        while todo:
            try:
                todo.extend(await self._execute(todo.pop(0)))
            except Exception:
                log.exception("step failed in the worker")

    # --- one step --------------------------------------------------------------------

    async def _execute(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """Run one step and report it; the steps the report claimed for this slot."""
        lease = job["lease"]
        prefix = f"/worker/leases/{lease}"
        lines = _Lines()
        try:
            workdir = await self._revision(job["workspace"], job["revision"])
        except (ServerUnreachable, ServerRefused, OSError, tarfile.TarError, LeaseLost) as exc:
            return await self._report(prefix, lines, {
                "status": "failed", "kind": "error",
                "error": f"cannot fetch the workspace: {exc}"})
        artifacts = self.options.cache_dir / "artifacts" / job["job_id"] / job["step"]
        artifacts.mkdir(parents=True, exist_ok=True)
        run = StepRun(
            job_id=job["job_id"], step=job["step"], attempt=int(job["attempt"]),
            action_type=job["action_type"], action=job["action"], input=job["input"],
            workdir=workdir, artifacts_dir=artifacts,
            env={**job["env"], "ARTIFACTS_DIR": str(artifacts)}, timeout=job.get("timeout"))
        try:
            runner = get_runner(run.action_type)
        except Exception as exc:
            return await self._report(prefix, lines, {"status": "failed", "error": str(exc)})

        notes: list[asyncio.Future[Any]] = []
        along = "result-lines" in self.features

        def on_start(pid: int | None) -> None:
            if job.get("started"):
                return  # the server recorded it with the claim
            notes.append(asyncio.ensure_future(
                self._post(f"{prefix}/started", {"pid": pid}, quiet=True)))

        inner = asyncio.ensure_future(runner.run(run, lines, on_start))
        stop_reason: list[str] = []
        done = asyncio.Event()
        shipper = asyncio.ensure_future(
            self._ship_loop(prefix, lines, inner, stop_reason, done))
        keeper = asyncio.ensure_future(self._keep_lease(prefix, inner, stop_reason))
        result: RunResult | None
        try:
            result = await inner
        except asyncio.CancelledError:
            if not inner.cancelled():
                raise
            result = None
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            done.set()  # a call under way ends first: its answer says what it stored
            lines.ready.set()
            if inner.cancelled() or not along:
                shipper.cancel()
        await asyncio.gather(shipper, *notes, return_exceptions=True)
        if stop_reason and stop_reason[0] == "lost":
            log.warning("lease of step %s (job %s) refused: step killed, nothing reported",
                        run.step, run.job_id)
            return []
        if result is None:
            body: dict[str, Any] = {"status": "cancelled"}
        else:
            body = {"status": result.status, "output": result.output, "error": result.error,
                    "exit_code": result.exit_code, "kind": result.kind,
                    "message": result.message}
        return await self._report(prefix, lines, body)

    async def _keep_lease(self, prefix: str, inner: asyncio.Future[Any],
                          reason: list[str]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                r = await self.client.post(f"{prefix}/heartbeat", json={})
            except ServerUnreachable as exc:
                log.warning("lease heartbeat failed: %s", exc)
                continue
            if r.status_code == 409:
                reason.append("lost")
                inner.cancel()  # the runner kills the step's process group
                return
            if r.status_code == 200 and r.json().get("cancel"):
                reason.append("cancelled")
                inner.cancel()
                return

    async def _ship_loop(self, prefix: str, lines: _Lines, inner: asyncio.Future[Any],
                         reason: list[str], done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lines.ready.wait(), BATCH_INTERVAL)
            lines.ready.clear()
            if done.is_set():
                return  # the result carries what is left
            try:
                await self._ship(prefix, lines)
            except LeaseLost:
                reason.append("lost")
                inner.cancel()
                return

    async def _ship(self, prefix: str, lines: _Lines, keep: int = 0) -> None:
        """Ship pending lines in batches until at most `keep` are left (they go with the
        result)."""
        while len(lines.pending) > keep:
            batch = lines.pending[:BATCH_LINES]
            r = await self._post(f"{prefix}/logs", {"offset": lines.sent, "lines": batch})
            if r is None:
                return  # unreachable for now: keep the lines for the next try
            del lines.pending[:len(batch)]
            lines.sent += len(batch)

    async def _report(self, prefix: str, lines: _Lines,
                      body: dict[str, Any]) -> list[dict[str, Any]]:
        """Report the result; with a server that takes them, the last lines (up to one
        batch) go in the same call, and it claims this slot's next step (returned)."""
        along = "result-lines" in self.features
        claim = "result-claim" in self.features and not self._stopping.is_set()
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline:
            try:
                await self._ship(prefix, lines, keep=BATCH_LINES if along else 0)
                if len(lines.pending) > (BATCH_LINES if along else 0):
                    raise ServerUnreachable("log lines not shipped yet")
                full = body
                if along:
                    full = {**body, "offset": lines.sent, "lines": lines.pending}
                if claim:
                    full = {**full, "claim": {"max": 1,
                                              "start": "claim-start" in self.features}}
                r = await self._post(f"{prefix}/result", full)
            except LeaseLost as exc:
                log.warning("result refused: the lease is no longer held (%s)", exc)
                return []
            except ServerUnreachable:
                r = None
            if r is not None:
                self.completed += 1
                steps: list[dict[str, Any]] = r.json().get("steps") or [] if claim else []
                return steps
            await asyncio.sleep(0.5)
        log.error("gave up reporting the result of %s", prefix)
        return []

    async def _post(self, path: str, body: dict[str, Any], *,
                    quiet: bool = False) -> Reply | None:
        """POST; None when the server is unreachable (or erred); `LeaseLost` on 409."""
        try:
            r = await self.client.post(path, json=body)
        except ServerUnreachable as exc:
            if not quiet:
                log.warning("POST %s failed: %s", path, exc)
            return None
        if r.status_code == 409:
            if quiet:
                return None
            raise LeaseLost(r.text)
        if r.status_code >= 400:
            log.warning("POST %s: %s %s", path, r.status_code, r.text[:200])
            return None
        return r

    # --- workspace revisions ---------------------------------------------------------

    async def _revision(self, workspace: str, revision: str) -> Path:
        key = hashlib.sha256(f"{workspace}\0{revision}".encode()).hexdigest()[:24]
        lock = self._revision_locks.setdefault(key, asyncio.Lock())
        async with lock:
            base = self.options.cache_dir / "revisions"
            target = base / key
            etag_file = base / f"{key}.etag"
            headers = {}
            if target.is_dir() and etag_file.exists():
                checked = self._validated.get(key)
                if checked is not None and time.monotonic() - checked < REVALIDATE_AFTER:
                    return target
                headers["If-None-Match"] = etag_file.read_text().strip()
            r = await self.client.get(f"/worker/revisions/{workspace}/{revision}",
                                      headers=headers)
            if r.status_code == 304:
                self._validated[key] = time.monotonic()
                return target
            r.raise_for_status()
            await asyncio.to_thread(_unpack, r.content, target)
            etag_file.write_text(r.headers.get("etag", ""))
            self._validated[key] = time.monotonic()
            return target


def _unpack(data: bytes, target: Path) -> None:
    """Unpack a revision tarball into a fresh folder, then swap it in."""
    fresh = target.with_name(target.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(fresh, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    fresh.rename(target)


def main(options: WorkerOptions) -> int:
    """Run a worker until SIGINT/SIGTERM."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def go() -> None:
        worker = Worker(options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    eventloop.run(go())
    return 0
