"""Step rate limits through a real `partitur serve`: a step over its limit waits for the
window (explain says until when), keys are per rendered value."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from job_polling import start_job, wait_job

WORKFLOW = """
tasks:
  call:
    input:
      customer: { type: string, required: true }
    flow:
      call:
        type: shell
        interpreter: sh
        script: "true"
        rate_limit: { key: "api-<< input.customer >>", per: 1.5s, limit: 1 }
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("ratelimit")
    ws = tmp / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(WORKFLOW)
    proc = ServerProcess(tmp, workspaces={"main": ws},
                         settings={"workers": {"local": {"concurrency": 4}}})
    proc.start()
    try:
        with httpx.Client(base_url=proc.url, timeout=15.0) as c:
            yield c
    finally:
        proc.close()


def execute(client: httpx.Client, customer: str) -> str:
    return start_job(client, "main", "call", {"input": {"customer": customer}})


def started(job: dict[str, Any]) -> float:
    assert job["status"] == "completed", job
    return datetime.fromisoformat(job["steps"][0]["started_at"].replace("Z", "+00:00")).timestamp()


def test_a_step_over_its_rate_limit_waits_for_the_window(client: httpx.Client) -> None:
    first = execute(client, "acme")
    wait_job(client, first, 20.0)
    second = execute(client, "acme")
    other = execute(client, "globex")
    # The second call of the same key waits, and explain says until when.
    explained: dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        explained = client.get(f"/api/jobs/{second}/explain").json()
        if explained["steps"] and explained["steps"][0]["code"] == "rate_limited":
            break
        time.sleep(0.05)
    step = explained["steps"][0]
    assert step["code"] == "rate_limited", explained
    assert step["reason"].startswith("rate limit until ")
    assert client.get(f"/api/jobs/{second}").json()["status"] == "running"
    # Another key has its own window and runs at once.
    assert wait_job(client, other, 20.0)["status"] == "completed"
    a, b = started(wait_job(client, first, 20.0)), started(wait_job(client, second, 20.0))
    assert b - a >= 1.4, (a, b)
