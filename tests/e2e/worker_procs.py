"""`partitur worker` as a real subprocess, for the worker end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

TOKEN = "worker-secret-token"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "workers_ws"


def remote_settings(timeout: float = 2.0, **extra: Any) -> dict[str, Any]:
    """Server settings: no embedded workers, steps queued for remote ones."""
    return {"workers": {"token": TOKEN, "mode": "remote", "local": {"concurrency": 0}},
            "recovery": {"heartbeat_timeout": timeout}, **extra}


class WorkerProcess:
    """One `python -m server.cli worker` process with its own cache folder and log."""

    def __init__(self, tmp: Path, server: str, *, tags: str = "", concurrency: int = 2,
                 token: str = TOKEN) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "worker.log"
        cmd = [sys.executable, "-m", "server.cli", "worker", "--server", server,
               "--token", token, "--concurrency", str(concurrency),
               "--cache-dir", str(tmp / "cache")]
        if tags:
            cmd += ["--tags", tags]
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PARTITUR__")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def close(self) -> None:
        if self.process.poll() is None:
            with_suppressed(lambda: os.kill(self.process.pid, signal.SIGCONT))
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def with_suppressed(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except OSError:
        pass


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.03)


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
    return data


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    terminal = {"completed", "failed", "cancelled", "skipped"}
    result: dict[str, Any] = wait_for(
        lambda: (lambda j: j if j.get("status") in terminal else None)(job(client, job_id)),
        timeout, f"job {job_id} to end")
    return result


def lines(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    text = client.get(f"/api/jobs/{job_id}/logs").json()["logs"]
    return [orjson.loads(x) for x in text.splitlines()]


def step(job_data: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in job_data["steps"] if s["step_name"] == name)
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in the process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False
