"""What every workload shares: the report (JSON lines and summaries), statistics, peak RSS
sampling over process trees, machine facts, benchmark workspaces and a server process.

A workload module exposes `async def run(ctx: Context) -> None`; it records one value
per repetition with `ctx.rep(...)` and closes each figure with `ctx.summary(...)`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from engine import eventloop

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ENV = "PARTITUR_BENCH_PG"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
CONCURRENCY = 8


# --- statistics ----------------------------------------------------------------------


def nearest_rank(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (`pct` in 0..100) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of the repetitions."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# --- the report ----------------------------------------------------------------------


@dataclass
class Context:
    """One harness invocation: backend, mode, W0 limits measured so far, the records."""

    backend: str
    quick: bool
    db_admin_url: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    limits: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="partitur-bench-")))
    _values: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    @property
    def reps(self) -> int:
        return 3

    def emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        print(json.dumps(record), flush=True)

    def rep(self, workload: str, figure: str, metric: str, rep: int, value: float,
            unit: str, **extra: Any) -> None:
        """Record one repetition's value of `figure.metric`."""
        self._values.setdefault((figure, metric), []).append(value)
        self.emit({"workload": workload, "figure": figure, "peer": "partitur",
                   "backend": self.backend, "metric": metric, "rep": rep,
                   "value": _round(value), "unit": unit, **extra})

    def summary(self, workload: str, figure: str, metric: str, unit: str, *,
                limit: str | None = None, higher_is_better: bool = False,
                **extra: Any) -> dict[str, Any]:
        """Summarise the repetitions of `figure.metric`: min/median/max, W0 limit, ratio.

        `limit` names the W0 figure in `ctx.limits`; the ratio reads "× the physical
        limit": median / limit, or limit / median when `higher_is_better` (rates).
        """
        values = self._values.get((figure, metric), [])
        if not values:
            return {}
        record: dict[str, Any] = {"workload": workload, "figure": figure, "peer": "partitur",
                                  "backend": self.backend, "metric": metric,
                                  "stat": "summary", "unit": unit, "reps": len(values)}
        record.update({k: _round(v) for k, v in spread(values).items()})
        if limit is not None and limit in self.limits:
            base = self.limits[limit]
            med = record["median"]
            record["limit_figure"] = limit
            record["limit"] = _round(base)
            if higher_is_better:
                record["ratio"] = _round(base / med) if med else None
            else:
                record["ratio"] = _round(med / base) if base else None
        record.update({k: _round(v) if isinstance(v, float) else v for k, v in extra.items()})
        self.emit(record)
        return record

    def derived(self, workload: str, figure: str, metric: str, value: float, unit: str,
                **extra: Any) -> dict[str, Any]:
        """A summary computed from other summaries (e.g. W1's overhead per step)."""
        record = {"workload": workload, "figure": figure, "peer": "partitur",
                  "backend": self.backend, "metric": metric, "stat": "summary",
                  "unit": unit, "median": _round(value),
                  **{k: _round(v) if isinstance(v, float) else v for k, v in extra.items()}}
        self.emit(record)
        return record

    def note(self, key: str, text: str) -> None:
        self.notes[key] = text
        self.emit({"note": key, "text": text, "backend": self.backend})


def _round(value: float) -> float:
    return float(f"{value:.6g}") if isinstance(value, float) and math.isfinite(value) else value


# --- peak RSS ------------------------------------------------------------------------


class RssSampler:
    """Peak RSS of the process trees of `roots` (summed), sampled every 50 ms by a process
    of its own (`benchmarks.rss_watch`), so that sampling takes no GIL of the process
    being measured.

    `peak_total` is the peak of the sum over every process of every tree;
    `peak_largest` the peak of the largest single process; `peak_of[pid]` the peak of
    one root's tree (e.g. the server alone). A child that has not called `exec` yet is
    left out: it shares its parent's pages (see `rss_watch.before_exec`).
    """

    def __init__(self, roots: Sequence[int], interval: float = 0.05) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.peak_total = 0
        self.peak_largest = 0
        self.peak_of: dict[int, int] = {pid: 0 for pid in self.roots}
        self._watch: subprocess.Popen[str] | None = None

    def add(self, pid: int) -> None:
        self.roots.append(pid)
        self.peak_of.setdefault(pid, 0)
        if self._watch is not None and self._watch.stdin is not None:
            self._watch.stdin.write(f"add {pid}\n")
            self._watch.stdin.flush()

    def __enter__(self) -> RssSampler:
        self._watch = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.rss_watch", str(self.interval),
             *map(str, self.roots)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._watch.stdout is not None
        if self._watch.stdout.readline().strip() != "ready":
            raise RuntimeError("the RSS sampler did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        watch, self._watch = self._watch, None
        if watch is None:
            return
        out, _ = watch.communicate("stop\n", timeout=30)
        peaks = json.loads(out.strip().splitlines()[-1])
        self.peak_total = int(peaks["total"])
        self.peak_largest = int(peaks["largest"])
        self.peak_of.update({int(k): int(v) for k, v in peaks["of"].items()})


MiB = 1024 * 1024


# --- machine -------------------------------------------------------------------------


def cpu_gauge_ms() -> float:
    """Milliseconds one core takes for a fixed pure-Python loop (best of three): how fast
    this VM's CPU is right now (one VM here read 107–198 ms across one afternoon). It
    sees a slow or shared CPU, not everything: on that VM engine figures were ~3× the
    morning's while the gauge moved less than 2×."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(best * 3000, 1)  # scaled to 3 million iterations


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, Python and package versions, date, and how fast the
    CPU is at the start (`cpu_gauge_ms`)."""
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in ("partitur", "starlette", "uvicorn", "httptools", "uvloop", "pydantic",
                 "orjson", "asyncpg", "httpx", "websockets", "psutil"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    commit = os.environ.get("PARTITUR_BENCH_COMMIT", "")
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "memory_mib": psutil.virtual_memory().total // MiB,
        "cpu": model, "os": platform.platform(), "python": platform.python_version(),
        "packages": packages, "commit": commit, "event_loop": eventloop.loop_name(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_gauge_ms_at_start": cpu_gauge_ms(),
    }


# --- workspaces ----------------------------------------------------------------------

WORKSPACE_SRC = Path(__file__).resolve().parent / "workspaces"


def chain_yaml(task: str, n: int) -> str:
    """A task of `n` steps `s0 → s1 → …`, step N printing `step N` (W1)."""
    lines = ["tasks:", f"  {task}:", "    flow:"]
    for i in range(n):
        lines += [f"      s{i}:", "        type: shell", "        interpreter: sh",
                  f"        script: echo step {i}"]
        if i:
            lines.append(f"        depends_on: [s{i - 1}]")
    return "\n".join(lines) + "\n"


def fan_yaml(task: str, n: int) -> str:
    """`first` → `n` explicit steps `b0…` (`sh -c true`) → `join` (W2, explicit)."""
    lines = ["tasks:", f"  {task}:", "    flow:",
             "      first: { type: shell, interpreter: sh, script: 'true' }"]
    for i in range(n):
        lines.append(f"      b{i}: {{ type: shell, interpreter: sh, script: 'true', "
                     "depends_on: [first] }")
    deps = ", ".join(f"b{i}" for i in range(n))
    lines.append(f"      join: {{ type: shell, interpreter: sh, script: 'true', "
                 f"depends_on: [{deps}] }}")
    return "\n".join(lines) + "\n"


def foreach_yaml(task: str, n: int, script: str = "true") -> str:
    """`first` → a `for_each` step over `n` items (`sh -c script`, by default `true`) →
    `join` (W2, loop)."""
    return (
        "tasks:\n"
        f"  {task}:\n"
        "    flow:\n"
        "      first: { type: shell, interpreter: sh, script: 'true' }\n"
        "      fan:\n"
        "        type: shell\n"
        "        interpreter: sh\n"
        f"        script: '{script}'\n"
        "        depends_on: [first]\n"
        f"        for_each: [{', '.join(str(i) for i in range(n))}]\n"
        "      join: { type: shell, interpreter: sh, script: 'true', depends_on: [fan] }\n"
    )


def sized_task_yaml(task: str) -> str:
    """The workspace text of `chainN`, `explicitN` or `foreachN` (W1/W2 shapes of N steps
    or branches)."""
    for prefix, make in (("chain", chain_yaml), ("explicit", fan_yaml),
                         ("foreach", foreach_yaml)):
        if task.startswith(prefix) and task[len(prefix):].isdigit():
            return make(task, int(task[len(prefix):]))
    raise SystemExit(f"unknown task {task!r} (chainN, explicitN, foreachN)")


def make_workspace(root: Path, extra: dict[str, str] | None = None) -> Path:
    """A workspace folder: the static benchmark tasks plus generated files `extra`."""
    target = root / "bench"
    flows = target / ".workflows"
    flows.mkdir(parents=True, exist_ok=True)
    for src in (WORKSPACE_SRC / ".workflows").glob("*.yaml"):
        shutil.copy(src, flows / src.name)
    for name, text in (extra or {}).items():
        (flows / f"gen-{name}.yaml").write_text(text)
    return target


# --- stores --------------------------------------------------------------------------


def db_url(ctx: Context, name: str) -> str:
    """A fresh store URL for this invocation (SQLite file, or a new Postgres database)."""
    if ctx.backend == "sqlite":
        return f"sqlite:///{ctx.tmp / (name + '.db')}"
    import asyncio

    import asyncpg

    dbname = f"bench_{name}_{os.getpid()}_{int(time.time() * 1000) % 10**8}".replace("-", "_")
    admin = ctx.db_admin_url or os.environ.get(PG_ENV) or PG_DEFAULT

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await conn.close()

    asyncio.run(create()) if not _loop_running() else _run_in_thread(create)
    ctx.databases.append(dbname)
    base = admin.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(factory: Callable[[], Any]) -> None:
    import asyncio

    box: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(factory())
        except BaseException as exc:  # re-raised in the caller
            box.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if box:
        raise box[0]


# --- a real `partitur serve` process ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`python -m server.cli serve` on a free port with a generated config."""

    def __init__(self, root: Path, db: str, workspace: Path, *,
                 concurrency: int = CONCURRENCY, workers_extra: str = "",
                 extra_config: str = "", python_args: Sequence[str] = ()) -> None:
        self.root = root
        self.python_args = list(python_args)  # e.g. ["-m", "pyinstrument", …] to profile
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.db = db
        self.config = root / "server-config.yaml"
        self.config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"db:\n  url: {json.dumps(db)}\n"
            f"workspaces:\n  bench: {{ path: {json.dumps(str(workspace))} }}\n"
            f"logs:\n  dir: {json.dumps(str(root / 'logs'))}\n"
            f"workers:\n  local:\n    concurrency: {concurrency}\n"
            + workers_extra +
            "retention:\n  job_days: 0\n"
            "shutdown:\n  grace: 1s\n"
            + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, *self.python_args, "-m", "server.cli", "serve", "--config",
             str(self.config)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"partitur serve exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return self
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"partitur serve not healthy after {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self) -> str:
        path = self.root / "server.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as elapsed: …; elapsed()` in seconds (perf_counter)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def drop_databases(ctx: Context) -> None:
    """Drop the Postgres databases this invocation created."""
    if not ctx.databases:
        return
    import asyncio

    import asyncpg

    admin = ctx.db_admin_url or os.environ.get(PG_ENV) or PG_DEFAULT

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            for name in ctx.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
