"""`partitur pause|resume|rerun|diff|approve|reject` as real subprocesses against a real
`partitur serve` with auth on, so the events say who did it (an API key via `--token`
and via `$PARTITUR_TOKEN`); `jobs` marks a stuck job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from harness import ServerProcess

ADMIN = {"email": "admin@example.com", "password": "admin-password-1", "name": "Admin"}
WORKFLOW = """
actions:
  sign-off:
    type: approval
    message: "Ship it?"
    input:
      note: { type: string, required: true }
tasks:
  chain:
    input:
      delay: { type: number, default: 1.0 }
    flow:
      a:
        type: shell
        interpreter: sh
        input: { delay: "<< input.delay >>" }
        script: sleep << input.delay >>
      b:
        type: shell
        interpreter: sh
        depends_on: [a]
        script: "true"
  quick:
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
  echo:
    input:
      msg: { type: string, required: true }
      count: { type: integer, default: 1 }
      token: { type: string, default: not-set, secret: true }
    flow:
      say:
        type: shell
        interpreter: sh
        input: { msg: "<< input.msg >>", token: "<< input.token >>" }
        script: |
          t='<< input.token >>'
          echo "OUTPUT: {\\"said\\": \\"<< input.msg >>\\", \\"token_len\\": ${#t}}"
      tail:
        type: shell
        interpreter: sh
        depends_on: [say]
        script: |
          echo 'OUTPUT: {"done": true}'
  gate:
    flow:
      approve:
        action: sign-off
      ship:
        type: shell
        interpreter: sh
        depends_on: [approve]
        script: echo shipped
"""
TERMINAL = {"completed", "failed", "cancelled", "skipped"}


@dataclass
class Server:
    url: str
    client: httpx.Client
    key: str
    who: str

    def partitur(self, *args: str, token: bool = True,
                 env_token: bool = False) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PARTITUR_TOKEN", "PARTITUR_SERVER")}
        if env_token:
            env["PARTITUR_TOKEN"] = self.key
        extra = ["--server", self.url] + (["--token", self.key] if token else [])
        return subprocess.run([sys.executable, "-m", "server.cli", *args, *extra],
                              capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ops-cli")
    ws = tmp / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(WORKFLOW)
    proc = ServerProcess(tmp, workspaces={"main": ws}, settings={
        "auth": {"initial_user": ADMIN}, "workers": {"local": {"concurrency": 2}},
        "stuck_after": "1s"})
    proc.start()
    try:
        with httpx.Client(base_url=proc.url, timeout=15.0) as c:
            r = c.post("/api/auth/login", json={"email": ADMIN["email"],
                                                "password": ADMIN["password"]})
            assert r.status_code == 200, r.text
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            r = c.post("/api/auth/keys", json={"name": "cli"})
            assert r.status_code == 200, r.text
            key = r.json()["key"]
            who = c.get("/api/auth/me").json()["email"]
            yield Server(proc.url, c, key, who)
    finally:
        proc.close()


def execute(server: Server, task: str, data: dict[str, Any] | None = None) -> str:
    r = server.client.post(f"/api/workspaces/main/tasks/{task}/execute",
                           json={"input": data or {}})
    assert r.status_code == 200, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def wait_for(server: Server, job_id: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = server.client.get(f"/api/jobs/{job_id}").json()
        if check(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} never got there: {job}"
        time.sleep(0.05)


def wait_job(server: Server, job_id: str) -> dict[str, Any]:
    return wait_for(server, job_id, lambda j: j["status"] in TERMINAL)


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in job["steps"] if s["step_name"] == name)
    return found


def events(server: Server, job_id: str, kind: str) -> list[dict[str, Any]]:
    found = server.client.get(f"/api/jobs/{job_id}/events").json()
    return [e for e in found if e["type"] == kind]


def test_pause_and_resume_a_job(server: Server) -> None:
    job_id = execute(server, "chain")
    wait_for(server, job_id, lambda j: step(j, "a")["status"] == "running")
    paused = server.partitur("pause", job_id, "--reason", "maintenance")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"job {job_id}: paused by {server.who}"
    # The running step finishes; the next one does not start while paused.
    job = wait_for(server, job_id, lambda j: step(j, "a")["status"] == "completed")
    assert job["status"] == "paused" and step(job, "b")["status"] == "pending"
    listed = server.partitur("jobs", "--workspace", "main", "--task", "chain")
    assert f"{job_id}  paused" in listed.stdout, listed.stdout

    # The token from the environment works the same.
    resumed = server.partitur("resume", job_id, "--json", token=False, env_token=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["paused"] is False
    assert wait_job(server, job_id)["status"] == "completed"
    (pause_event,) = events(server, job_id, "JobPaused")
    (resume_event,) = events(server, job_id, "JobResumed")
    assert pause_event["data"]["by"] == server.who
    assert pause_event["data"]["reason"] == "maintenance"
    assert resume_event["data"]["by"] == server.who

    # An ended job: the server's 409 and exit 1; no token: 401.
    again = server.partitur("pause", job_id)
    assert again.returncode == 1 and "409" in again.stderr
    anonymous = server.partitur("pause", job_id, token=False)
    assert anonymous.returncode == 1 and "401" in anonymous.stderr


def test_jobs_marks_a_stuck_job(server: Server) -> None:
    job_id = execute(server, "chain", {"delay": 30})
    deadline = time.monotonic() + 30
    while True:
        listed = server.partitur("jobs", "--workspace", "main", "--task", "chain")
        line = next(x for x in listed.stdout.splitlines() if x.startswith(job_id))
        if line.endswith("  stuck"):
            break
        assert time.monotonic() < deadline, listed.stdout
        time.sleep(0.3)
    assert server.partitur("cancel", job_id).returncode == 0
    assert wait_job(server, job_id)["status"] == "cancelled"
    listed = server.partitur("jobs", "--workspace", "main", "--task", "chain")
    line = next(x for x in listed.stdout.splitlines() if x.startswith(job_id))
    assert "cancelled" in line and "stuck" not in line


def test_pause_and_resume_a_task_and_a_workspace(server: Server) -> None:
    paused = server.partitur("pause", "--workspace", "main", "--task", "quick",
                             "--reason", "upgrade")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"task main/quick: paused by {server.who}: upgrade"
    held = execute(server, "quick")
    time.sleep(0.5)
    assert server.client.get(f"/api/jobs/{held}").json()["status"] == "pending"
    why = server.partitur("explain", held)
    assert f"task quick paused by {server.who}: upgrade" in why.stdout, why.stdout
    resumed = server.partitur("resume", "--workspace", "main", "--task", "quick")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "task main/quick: resumed"
    assert wait_job(server, held)["status"] == "completed"

    paused = server.partitur("pause", "--workspace", "main", "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["paused_by"] == server.who
    held = execute(server, "quick")
    # Resuming the task alone does not free it while its workspace is paused.
    still = server.partitur("resume", "--workspace", "main", "--task", "quick")
    assert "still paused" in still.stdout and "workspace main is paused" in still.stdout
    time.sleep(0.3)
    assert server.client.get(f"/api/jobs/{held}").json()["status"] == "pending"
    resumed = server.partitur("resume", "--workspace", "main")
    assert resumed.stdout.strip() == "workspace main: resumed", resumed.stderr
    assert wait_job(server, held)["status"] == "completed"
    workspaces = server.client.get("/api/workspaces").json()
    assert next(w for w in workspaces if w["name"] == "main")["paused"] is False


def test_pause_usage_errors_exit_2(server: Server) -> None:
    for args in (["pause"], ["resume", "--task", "quick"],
                 ["pause", "some-job", "--workspace", "main"]):
        result = server.partitur(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "partitur: error:" in result.stderr


def test_rerun_with_edited_input_then_diff(server: Server) -> None:
    first = execute(server, "echo", {"msg": "one", "count": 2, "token": "t0ps3cret"})
    assert wait_job(server, first)["status"] == "completed"

    rerun = server.partitur("rerun", first, "-i", "msg=two")
    assert rerun.returncode == 0, rerun.stderr
    second = rerun.stdout.split()[1]
    assert rerun.stdout.strip() == f"job {second} (re-run of {first})"
    job = wait_job(server, second)
    assert job["status"] == "completed" and job["retry_of_job_id"] == first
    # Only msg changed: count and the secret token are the original's values.
    assert job["input"]["msg"] == "two" and job["input"]["count"] == 2
    assert step(job, "say")["output"] == {"said": "two", "token_len": len("t0ps3cret")}
    (created,) = events(server, second, "JobCreated")
    assert created["data"]["by"] == server.who

    diff = server.partitur("diff", first, second)
    assert diff.returncode == 0, diff.stderr
    out = diff.stdout
    assert out.splitlines()[0] == f"job {first} → {second} (main/echo)"
    assert "input: 1 change(s)" in out and '  msg: "one" → "two"' in out
    say = next(line for line in out.splitlines() if line.lstrip().startswith("say "))
    assert "output differs" in say and "completed" in say
    assert '      said: "one" → "two"' in out
    tail = next(line for line in out.splitlines() if line.lstrip().startswith("tail "))
    assert "differs" not in tail
    as_json = json.loads(server.partitur("diff", first, second, "--json").stdout)
    assert as_json["summary"]["steps_with_other_output"] == ["say"]

    # From a step: upstream outputs are reused; a bad edited value is refused.
    resumed = json.loads(server.partitur("rerun", second, "--from-step", "tail",
                                         "--json").stdout)
    third = wait_job(server, resumed["job_id"])
    assert third["status"] == "completed"
    assert step(third, "say")["output"]["said"] == "two"
    bad = server.partitur("rerun", first, "-i", "count=many")
    assert bad.returncode == 1 and "400" in bad.stderr and "count" in bad.stderr
    both = server.client.post(f"/api/jobs/{first}/rerun", json={
        "input": {"msg": "x"}, "input_changes": {"msg": "y"}})
    assert both.status_code == 400 and "input_changes" in both.text
    usage = server.partitur("rerun", first, "-i", "nokey")
    assert usage.returncode == 2
    missing = server.partitur("diff", first, "0190c0de-0000-7000-8000-000000000000")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_approve_and_reject(server: Server) -> None:
    approved = execute(server, "gate")
    rejected = execute(server, "gate")
    for job_id in (approved, rejected):
        wait_for(server, job_id, lambda j: step(j, "approve")["status"] == "suspended")

    missing = server.partitur("approve", approved, "approve")
    assert missing.returncode == 1 and "400" in missing.stderr and "note" in missing.stderr
    ok = server.partitur("approve", approved, "approve", "-i", "note=looks good")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"job {approved}: step approve approved (now completed)"
    job = wait_job(server, approved)
    assert job["status"] == "completed" and step(job, "ship")["status"] == "completed"
    (event,) = events(server, approved, "StepApproved")
    assert event["data"]["by"] == server.who

    no = server.partitur("reject", rejected, "approve", "--reason", "not today")
    assert no.returncode == 0, no.stderr
    assert no.stdout.strip() == f"job {rejected}: step approve rejected (now failed)"
    assert wait_job(server, rejected)["status"] == "failed"
    (event,) = events(server, rejected, "StepRejected")
    assert event["data"]["by"] == server.who and event["data"]["reason"] == "not today"

    again = server.partitur("approve", approved, "approve")
    assert again.returncode == 1 and "409" in again.stderr


def test_execute_with_priority_follow_and_dry_run(server: Server) -> None:
    started = server.partitur("execute", "echo", "--workspace", "main", "-i", "msg=hi",
                              "-i", "count=3", "--priority", "1")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.split()[1]
    job = wait_job(server, job_id)
    assert step(job, "say")["output"]["said"] == "hi" and job["input"]["count"] == 3
    (created,) = events(server, job_id, "JobCreated")
    assert created["data"]["priority"] == 1 and created["data"]["by"] == server.who

    followed = server.partitur("execute", "echo", "--workspace", "main", "-i", "msg=yo",
                               "--follow")
    assert followed.returncode == 0, followed.stderr
    first, *rest = followed.stdout.splitlines()
    assert first.startswith("job ") and any(x.startswith("say | ") for x in rest)
    assert f"{first} completed" in followed.stderr

    before = server.client.get("/api/jobs").headers["X-Total-Count"]
    plan = server.partitur("execute", "echo", "--workspace", "main", "-i", "msg=hi",
                           "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("dry run of main/echo")
    assert "say: run" in plan.stdout and '"msg":"hi"' in plan.stdout
    assert "not-set" not in plan.stdout  # the secret input's default is masked
    as_json = json.loads(server.partitur("execute", "echo", "--workspace", "main", "-i",
                                         "msg=hi", "--dry-run", "--json").stdout)
    assert [s["action"] for s in as_json["steps"]] == ["run", "run"]
    assert server.client.get("/api/jobs").headers["X-Total-Count"] == before

    bad = server.partitur("execute", "echo", "--workspace", "main", "-i", "count=x")
    assert bad.returncode == 1 and "400" in bad.stderr
    assert "input.count" in bad.stderr or "count" in bad.stderr
    assert "msg" in bad.stderr  # every bad field is named
    assert server.partitur("execute", "echo", "--workspace", "main",
                           "--priority", "9").returncode == 2
