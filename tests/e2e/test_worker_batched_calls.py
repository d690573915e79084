"""The worker calls that save round trips, through a real server (SQLite and PostgreSQL).

- `register` announces them (`features`).
- A claim with `max` takes every queued step in one call, and with `start: true` each
  step's `StepStarted` is appended with its claim (the step says `started: true`).
- A result carries the step's last lines (stored once, from `offset`) and, with `claim`,
  answers the worker's next step: a queued step of the same job (claimed in the append
  of the end), then the step a completion made ready, then none.
- Each step ends with StepClaimed, StepStarted, StepCompleted, once each, in that order;
  a result sent again under its finished lease is 409 and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness import ServerProcess
from worker_procs import TOKEN, lines, remote_settings, wait_job

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _shell(text: str, after: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "shell", "interpreter": "sh", "script": f"echo {text}"}
    if after:
        spec["depends_on"] = [after]
    return spec


def _workspace(root: Path) -> Path:
    ws = root / "ws"
    (ws / ".workflows").mkdir(parents=True)
    flow = {"a": _shell("a"), "b": _shell("b"), "c": _shell("c"),
            "d": _shell("d", after="a")}
    (ws / ".workflows" / "trio.yaml").write_text(
        orjson.dumps({"tasks": {"trio": {"flow": flow}}}).decode(), "utf-8")
    return ws


def _line(text: str) -> dict[str, Any]:
    return {"ts": 1.0, "stream": "stdout", "line": text}


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_claim_many_started_with_the_claim_and_a_result_that_claims_the_next(
        make_server: Callable[..., ServerProcess], tmp_path: Path, db: str,
        request: pytest.FixtureRequest) -> None:
    extra = {"db": {"url": request.getfixturevalue("pg_url")}} if db == "postgres" else {}
    server = make_server(workspaces={"w": _workspace(tmp_path)},
                         settings=remote_settings(timeout=60.0, **extra))
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
        registered = client.post("/worker/register", json={"name": "manual",
                                                           "concurrency": 4}).json()
        assert {"claim-many", "claim-start", "result-lines", "result-claim"} <= \
            set(registered["features"])
        worker_id = registered["worker_id"]
        job_id = client.post("/api/workspaces/w/tasks/trio/execute", json={}).json()["job_id"]
        held: dict[str, dict[str, Any]] = {}
        while len(held) < 2:
            r = client.post("/worker/claim", json={"worker_id": worker_id, "timeout": 20,
                                                   "max": 2 - len(held), "start": True})
            assert r.status_code == 200, r.text
            for item in r.json()["steps"]:
                held[item["step"]] = item
        assert sorted(held) == ["a", "b"]  # claim order: ready time, then step name
        assert all(item["started"] is True and item["job_id"] == job_id
                   for item in held.values())

        # a's result carries its lines and claims c, queued in the same job.
        r = client.post(f"/worker/leases/{held['a']['lease']}/result", json={
            "status": "completed", "output": {"n": 1}, "offset": 0,
            "lines": [_line("a one"), _line("a two")], "claim": {"max": 1, "start": True}})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["status"] == "completed"
        assert [(s["step"], s["started"]) for s in answer["steps"]] == [("c", True)]
        held["c"] = answer["steps"][0]
        # b shipped one batch while it ran; its result carries the rest from offset 1 and
        # claims d, which a's completion made ready.
        prefix = f"/worker/leases/{held['b']['lease']}"
        assert client.post(f"{prefix}/logs", json={"offset": 0, "lines": [_line("b one")]}
                           ).json() == {"next": 1}
        r = client.post(f"{prefix}/result", json={
            "status": "completed", "offset": 1, "lines": [_line("b two")],
            "claim": {"max": 1, "start": True}})
        assert r.status_code == 200, r.text
        assert [(s["step"], s["started"]) for s in r.json()["steps"]] == [("d", True)]
        held["d"] = r.json()["steps"][0]
        # Nothing else is queued: a claim that does not wait answers no step.
        r = client.post("/worker/claim", json={"worker_id": worker_id, "timeout": 0,
                                               "max": 4, "start": True})
        assert r.json() == {"steps": []}
        r = client.post(f"/worker/leases/{held['c']['lease']}/result", json={
            "status": "completed", "offset": 0, "lines": [],
            "claim": {"max": 1, "start": True}})
        assert r.status_code == 200 and r.json() == {"status": "completed", "steps": []}
        r = client.post(f"/worker/leases/{held['d']['lease']}/result", json={
            "status": "completed", "offset": 0, "lines": []})
        assert r.status_code == 200 and r.json() == {"status": "completed"}

        done = wait_job(client, job_id)
        assert done["status"] == "completed"
        events = client.get(f"/api/jobs/{job_id}/events").json()
        for name in ("a", "b", "c", "d"):
            kinds = [e["type"] for e in events if e["data"].get("step") == name
                     and e["type"] in ("StepClaimed", "StepStarted", "StepCompleted")]
            assert kinds == ["StepClaimed", "StepStarted", "StepCompleted"], (name, kinds)
        # c was claimed and started in the append of a's end: one timestamp for all three.
        stamps = {(e["type"], e["data"].get("step")): e["ts"] for e in events}
        assert stamps[("StepCompleted", "a")] == stamps[("StepClaimed", "c")] == \
            stamps[("StepStarted", "c")]
        logged = [(x["step"], x["line"]) for x in lines(client, job_id)
                  if x["step"] in ("a", "b", "c", "d")]
        assert sorted(logged) == [("a", "a one"), ("a", "a two"), ("b", "b one"),
                                  ("b", "b two")]
        # The same result again, under the finished lease: refused, nothing changes.
        r = client.post(f"/worker/leases/{held['a']['lease']}/result", json={
            "status": "completed", "offset": 2, "lines": [_line("late")],
            "claim": {"max": 1, "start": True}})
        assert r.status_code == 409
        assert client.get(f"/api/jobs/{job_id}/events").json() == events
        assert ("a", "late") not in [(x["step"], x["line"]) for x in lines(client, job_id)]
