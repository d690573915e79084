"""Step rate limits hold across two `partitur serve` replicas on one PostgreSQL and across
a restart: the window is rows of the shared database (`engine.store.ratewindows`).

`limit: 1` per ten minutes on one key: a step started on replica one fills the window,
so the same key's step of a job on replica two waits (explain: rate limited until T),
and still waits after replica two restarts; another key runs at once.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from job_polling import start_job, wait_job

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WORKSPACE = """
tasks:
  call:
    input:
      account: { type: string, required: true }
    flow:
      call:
        type: shell
        interpreter: sh
        script: "true"
        rate_limit: { key: "api-<< input.account >>", per: 10m, limit: 1 }
"""


def _execute(client: httpx.Client, account: str) -> str:
    return start_job(client, "w", "call", {"input": {"account": account}})


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _rate_limited(client: httpx.Client, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The explanation of the job's step once it says `rate_limited`."""
    deadline = time.monotonic() + timeout
    while True:
        explained = client.get(f"/api/jobs/{job_id}/explain").json()
        steps = explained.get("steps") or []
        if steps and steps[0]["code"] == "rate_limited":
            step: dict[str, Any] = steps[0]
            return step
        assert time.monotonic() < deadline, f"job {job_id} is not rate limited: {explained}"
        time.sleep(0.1)


def test_a_rate_window_is_shared_by_replicas_and_kept_across_a_restart(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "call.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    settings = {"db": {"url": pg_url}, "workers": {"local": {"concurrency": 2}}}
    one = make_server(workspaces={"w": ws}, settings=settings)
    two = make_server(workspaces={"w": ws}, settings=settings)
    with httpx.Client(base_url=one.url, timeout=15) as a:
        first = wait_job(a, _execute(a, "acme"))
        assert first["status"] == "completed"
        first_start = _when(first["steps"][0]["started_at"])
    with httpx.Client(base_url=two.url, timeout=15) as b:
        waiting = _execute(b, "acme")
        step = _rate_limited(b, waiting)
        assert step["reason"].startswith("rate limit until "), step
        assert b.get(f"/api/jobs/{waiting}").json()["steps"][0]["status"] == "ready"
        # Another key has its own window.
        assert wait_job(b, _execute(b, "globex"))["status"] == "completed"
    two.restart()
    with httpx.Client(base_url=two.url, timeout=15) as b:
        # After the restart the window is still full: the step still waits, and a new
        # job's step of the key waits too.
        _rate_limited(b, waiting)
        fresh = _execute(b, "acme")
        _rate_limited(b, fresh)
        for job in (waiting, fresh):
            assert b.get(f"/api/jobs/{job}").json()["steps"][0]["status"] == "ready"
        assert time.time() < first_start + 600, "the test ran past the window"
        for job in (waiting, fresh):
            r = b.post(f"/api/jobs/{job}/cancel")
            assert r.status_code in (200, 202), r.text
