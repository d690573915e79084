"""Jobs over real HTTP: execute, detail, logs, list filters, cancel, approve, rerun,
events, artifacts, idempotency and the error format."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import orjson
from api_helpers import BODY_LIMIT, execute, wait_job, wait_step

STEP_FIELDS = {"step_name", "action_name", "action_type", "runner", "input", "output",
               "status", "worker_id", "started_at", "completed_at", "error_message",
               "attempt", "loop_index"}
JOB_FIELDS = {"job_id", "workspace", "task_name", "mode", "status", "source_type",
              "source_id", "created_at", "started_at", "completed_at"}


def test_execute_then_detail_and_logs(client: httpx.Client) -> None:
    job_id = execute(client, "hello", {"name": "Ada"})
    job = wait_job(client, job_id)
    assert JOB_FIELDS <= set(job) and job["status"] == "completed"
    assert job["source_type"] == "api" and job["input"] == {"name": "Ada"}
    assert job["created_at"].endswith("Z")
    (step,) = job["steps"]
    assert STEP_FIELDS <= set(step)
    assert step["output"] == {"greeting": "Hello Ada"} and step["attempt"] == 1
    assert step["action_name"] == "greet" and step["action_type"] == "shell"
    logs = client.get(f"/api/jobs/{job_id}/logs").json()["logs"]
    lines = [orjson.loads(x) for x in logs.splitlines()]
    assert all(set(x) == {"ts", "stream", "step", "line"} for x in lines)
    assert {"step": "say-hello", "line": "Hello Ada"}.items() <= next(
        x for x in lines if x["step"] == "say-hello").items()
    step_logs = client.get(f"/api/jobs/{job_id}/steps/say-hello/logs").json()["logs"]
    assert step_logs and all(orjson.loads(x)["step"] == "say-hello"
                             for x in step_logs.splitlines())
    server = client.get(f"/api/jobs/{job_id}/steps/_server/logs").json()["logs"]
    notes = [orjson.loads(x)["line"] for x in server.splitlines()]
    assert notes[0].startswith("job created") and notes[-1] == "job completed"


def test_server_notes_name_every_step_transition(client: httpx.Client) -> None:
    job_id = execute(client, "notes")
    assert wait_job(client, job_id)["status"] == "failed"
    logs = client.get(f"/api/jobs/{job_id}/steps/_server/logs").json()["logs"]
    notes = [orjson.loads(x)["line"] for x in logs.splitlines()]

    def index(prefix: str) -> int:
        return next(i for i, note in enumerate(notes) if note.startswith(prefix))

    assert notes[0] == "job created: task notes (source api)"
    assert notes[-1].startswith("job failed")
    # flaky: ready, started, failed, a retry scheduled, ready again, started, completed.
    order = [index("step flaky ready (attempt 1)"), index("step flaky started on "),
             index("step flaky failed (error): exit code 4"),
             index("step flaky: attempt 2 scheduled in "), index("step flaky ready (attempt 2)"),
             index("step flaky completed")]
    assert order == sorted(order)
    assert "step never skipped: when was false (rendered: False)" in notes
    assert index("step last failed (error): exit code 5") > order[-1]


def test_unknown_job_and_step_are_404(client: httpx.Client) -> None:
    job_id = execute(client, "hello")
    wait_job(client, job_id)
    missing = str(uuid.uuid4())
    for path in (f"/api/jobs/{missing}", f"/api/jobs/{missing}/logs", f"/api/jobs/{missing}/events",
                 f"/api/jobs/{missing}/artifacts", "/api/jobs/..%2F..%2Fetc/logs",
                 f"/api/jobs/{job_id}/steps/nope/logs"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert set(r.json()) == {"error"}
    assert client.post(f"/api/jobs/{missing}/cancel").status_code == 404
    r = client.post(f"/api/jobs/{job_id}/steps/nope/approve", json={"approved": True})
    assert r.status_code == 404


def test_invalid_input_names_every_field(client: httpx.Client) -> None:
    r = client.post("/api/workspaces/main/tasks/typed/execute",
                    json={"input": {"count": "many", "mode": "medium", "bogus": 1}})
    assert r.status_code == 400
    body = r.json()
    assert {i["path"] for i in body["issues"]} == {"count", "mode", "bogus"}
    assert "count" in body["error"] and "mode" in body["error"]
    r = client.post("/api/workspaces/main/tasks/typed/execute", json={"input": {}})
    assert r.status_code == 400 and [i["path"] for i in r.json()["issues"]] == ["count"]
    r = client.post("/api/workspaces/main/tasks/typed/execute", json={"input": [1]})
    assert r.status_code == 400 and r.json()["issues"][0]["path"] == "input"
    # Nothing was created by the refused requests.
    rows = client.get("/api/jobs", params={"workspace": "main", "task_name": "typed"})
    assert rows.json() == []


def test_malformed_json_and_wrong_body_type_are_400(client: httpx.Client) -> None:
    url = "/api/workspaces/main/tasks/hello/execute"
    for body in (b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"):
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, body
        assert "error" in r.json()


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    url = "/api/workspaces/main/tasks/hello/execute"
    big = orjson.dumps({"input": {"name": "x" * (BODY_LIMIT + 10)}})
    r = client.post(url, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size decides
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = client.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()


def test_unknown_route_and_method_are_json(client: httpx.Client) -> None:
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": "not found"}
    r = client.delete("/api/jobs")
    assert r.status_code == 405 and r.json() == {"error": "method not allowed"}


def test_idempotency_key_returns_the_same_job(client: httpx.Client) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = execute(client, "hello", {"name": "Once"}, headers=key)
    second = execute(client, "hello", {"name": "Once"}, headers=key)
    assert first == second
    wait_job(client, first)
    jobs = client.get("/api/jobs", params={"workspace": "main", "task_name": "hello",
                                           "limit": 1000}).json()
    assert sum(1 for j in jobs if j["job_id"] == first) == 1
    assert all(j["input"] if "input" in j else True for j in jobs)
    other = execute(client, "hello", {"name": "Once"})
    assert other != first


def test_job_list_filters_and_paging(client: httpx.Client) -> None:
    ok = execute(client, "hello")
    bad = execute(client, "broken-step")
    wait_job(client, ok)
    assert wait_job(client, bad)["status"] == "failed"
    r = client.get("/api/jobs", params={"workspace": "main", "status": "failed"})
    assert r.status_code == 200
    assert bad in [j["job_id"] for j in r.json()]
    assert all(j["status"] == "failed" for j in r.json())
    assert int(r.headers["X-Total-Count"]) >= 1
    both = client.get("/api/jobs", params={"status": "failed,completed", "limit": 1000}).json()
    assert {ok, bad} <= {j["job_id"] for j in both}
    assert client.get("/api/jobs", params={"source_type": "trigger"}).json() == []
    future = client.get("/api/jobs", params={"since": "2999-01-01T00:00:00Z"})
    assert future.json() == [] and future.headers["X-Total-Count"] == "0"
    page = client.get("/api/jobs", params={"limit": 1, "offset": 0})
    assert len(page.json()) == 1 and int(page.headers["X-Total-Count"]) >= 2
    newest = page.json()[0]
    assert set(newest) >= JOB_FIELDS
    for params in ({"status": "weird"}, {"limit": "-1"}, {"offset": "x"}, {"since": "yesterday"},
                   {"task_name": "hello"}):
        r = client.get("/api/jobs", params=params)
        assert r.status_code == 400, params
        assert "error" in r.json()


def test_cancel_running_job_then_409(client: httpx.Client) -> None:
    job_id = execute(client, "slow", {"lines": 200, "delay": 0.05})
    wait_step(client, job_id, "tick", "running")
    r = client.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["job_id"] == job_id
    job = wait_job(client, job_id)
    assert job["status"] == "cancelled"
    r = client.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "ended" in r.json()["error"]


def test_approve_validates_input_then_resumes(client: httpx.Client) -> None:
    job_id = execute(client, "approve-me")
    suspended = wait_step(client, job_id, "gate", "suspended")
    gate = next(s for s in suspended["steps"] if s["step_name"] == "gate")
    assert gate["message"] == "Ship release?"  # rendered
    url = f"/api/jobs/{job_id}/steps/gate/approve"
    r = client.post(url, json={"approved": True, "input": {"ticket": "abc", "extra": 1}})
    assert r.status_code == 400
    # `what` is not asked again: the step was given it.
    assert {i["path"] for i in r.json()["issues"]} == {"input.ticket", "input.extra"}
    r = client.post(url, json={"approved": "yes"})
    assert r.status_code == 400 and r.json()["issues"][0]["path"] == "approved"
    r = client.post(f"/api/jobs/{job_id}/steps/prepare/approve", json={"approved": True})
    assert r.status_code == 409
    r = client.post(url, json={"approved": True, "input": {"ticket": "42", "what": "v1"}})
    assert r.status_code == 200 and r.json()["status"] == "completed"
    job = wait_job(client, job_id)
    assert job["status"] == "completed"
    output = next(s for s in job["steps"] if s["step_name"] == "gate")["output"]
    assert output["approved"] is True and output["input"] == {"ticket": 42, "what": "v1"}
    assert {"approved_by", "approved_at"} <= set(output)
    events = client.get(f"/api/jobs/{job_id}/events").json()
    assert [e["type"] for e in events].count("StepApproved") == 1
    assert client.post(url, json={"approved": True}).status_code == 409


def test_reject_fails_the_step(client: httpx.Client) -> None:
    job_id = execute(client, "approve-me")
    wait_step(client, job_id, "gate", "suspended")
    r = client.post(f"/api/jobs/{job_id}/steps/gate/approve",
                    json={"approved": False, "rejection_reason": "not today"})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    job = wait_job(client, job_id)
    assert job["status"] == "failed"
    gate = next(s for s in job["steps"] if s["step_name"] == "gate")
    assert gate["status"] == "failed"


def test_rerun_from_a_failed_step_reuses_upstream(client: httpx.Client) -> None:
    job_id = execute(client, "broken-step")
    assert wait_job(client, job_id)["status"] == "failed"
    r = client.post(f"/api/jobs/{job_id}/rerun", json={"from_step": "boom"})
    assert r.status_code == 200
    new_id = r.json()["job_id"]
    assert new_id != job_id
    new = wait_job(client, new_id)
    assert new["retry_of_job_id"] == job_id
    first = next(s for s in new["steps"] if s["step_name"] == "first")
    assert first["status"] == "completed"
    notes = client.get(f"/api/jobs/{new_id}/steps/_server/logs").json()["logs"]
    assert f"step first reused the output of job {job_id}" in notes
    r = client.post(f"/api/jobs/{job_id}/rerun", json={"from_step": "nope"})
    assert r.status_code == 404
    r = client.post(f"/api/jobs/{job_id}/rerun", json={"input": "x"})
    assert r.status_code == 400
    plain = client.post(f"/api/jobs/{job_id}/rerun").json()["job_id"]
    assert wait_job(client, plain)["status"] == "failed"


def test_events_history(client: httpx.Client) -> None:
    job_id = execute(client, "hello")
    wait_job(client, job_id)
    r = client.get(f"/api/jobs/{job_id}/events")
    events = r.json()
    assert r.headers["X-Total-Count"] == str(len(events))
    assert events[0]["type"] == "JobCreated" and events[-1]["type"] == "JobCompleted"
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["stream_id"] == job_id and e["time"].endswith("Z") for e in events)


def test_events_mask_secret_inputs(client: httpx.Client) -> None:
    job_id = execute(client, "secret-input", {"password": "pw-given-9876"})
    job = wait_job(client, job_id)
    assert job["status"] == "failed" and job["input"]["password"] == "••••••"
    probe = next(s for s in job["steps"] if s["step_name"] == "probe")
    assert "'••••••' is undefined" in probe["error_message"]
    r = client.get(f"/api/jobs/{job_id}/events")
    assert r.status_code == 200 and "pw-given-9876" not in r.text
    assert any(e["type"] == "StepFailed" and "••••••" in e["data"]["error"]
               for e in r.json())
    events = r.json()
    assert events[0]["type"] == "JobCreated"
    assert events[0]["data"]["input"] == {"password": "••••••"}
    ready = next(e for e in events if e["type"] == "StepReady")
    assert ready["data"]["input"] == {"password": "••••••"}
    assert "got ••••••" in client.get(f"/api/jobs/{job_id}/logs").json()["logs"]
    explained = client.get(f"/api/jobs/{job_id}/explain")
    assert explained.status_code == 200 and "pw-given-9876" not in explained.text
    assert "••••••" in explained.text  # the failed step's reason, masked


def test_artifacts_list_download_and_safety(client: httpx.Client) -> None:
    job_id = execute(client, "artifacts")
    assert wait_job(client, job_id)["status"] == "completed"
    r = client.get(f"/api/jobs/{job_id}/artifacts")
    items = {a["name"]: a for a in r.json()}
    assert set(items) == {"report.txt", "sub/data.json", "page.html"}
    assert r.headers["X-Total-Count"] == "3"
    report = items["report.txt"]
    assert report["step"] == "write" and report["size"] == len("a report\n")
    assert report["content_type"] == "text/plain"
    got = client.get(report["url"])
    assert got.status_code == 200 and got.text == "a report\n"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert not got.headers.get("content-disposition", "").startswith("attachment")
    data = client.get(f"/api/jobs/{job_id}/artifacts/sub/data.json")
    assert data.json() == {"ok": True}
    page = client.get(items["page.html"]["url"])
    assert page.headers["content-disposition"].startswith("attachment")
    for bad in ("../../partitur.db", "..%2F..%2Fpartitur.db", "/etc/passwd", "sub/../../x"):
        r = client.get(f"/api/jobs/{job_id}/artifacts/{bad}")
        assert r.status_code == 404, bad
    r = client.get(f"/api/jobs/{job_id}/artifacts/report.txt", params={"step": "../write"})
    assert r.status_code == 404
