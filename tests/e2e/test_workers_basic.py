"""A server with no embedded workers and real `partitur worker` processes."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from harness import ServerProcess, free_port, run_sync
from invariants import check_invariants
from worker_procs import (
    FIXTURE,
    TOKEN,
    WorkerProcess,
    lines,
    remote_settings,
    step,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.e2e


def test_remote_worker_runs_steps_with_tags_and_workspace_files(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings())
    plain = WorkerProcess(tmp_path / "plain", server.url)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = client.post("/api/workspaces/w/tasks/hello/execute",
                                 json={}).json()["job_id"]
            # The untagged worker runs `greet`, never the `gpu`-tagged step.
            wait_for(lambda: step(client.get(f"/api/jobs/{job_id}").json(),
                                  "greet")["status"] == "completed", 20, "greet")
            time.sleep(0.5)
            assert step(client.get(f"/api/jobs/{job_id}").json(), "tagged")["status"] == "ready"
            gpu = WorkerProcess(tmp_path / "gpu", server.url, tags="gpu,linux")
            try:
                done = wait_job(client, job_id)
            finally:
                gpu.close()
            assert done["status"] == "completed"
            text = [x["line"] for x in lines(client, job_id)]
            assert "hello from greet" in text
            assert "message from the workspace" in text  # the revision tarball
            assert "tagged ran" in text
            workers = client.get("/api/workers").json()
            assert {tuple(w["tags"]) for w in workers} >= {(), ("gpu", "linux")}
            gpu_id = next(w["worker_id"] for w in workers if w["tags"] == ["gpu", "linux"])
            detail = client.get(f"/api/workers/{gpu_id}").json()
            assert [s["step"] for s in detail["steps"]] == ["tagged"]
            assert detail["status"] in ("active", "offline")
    finally:
        plain.close()
    run_sync(check_invariants(f"sqlite:///{server.tmp_dir / 'partitur.db'}",
                              logs_dir=server.tmp_dir / "logs", acknowledged_jobs=[job_id]))


def test_worker_api_needs_the_token(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings())
    with httpx.Client(base_url=server.url, timeout=10) as client:
        body = {"name": "x", "tags": [], "concurrency": 1}
        assert client.post("/worker/register", json=body).status_code == 401
        assert client.post("/worker/register", json=body,
                           headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = client.post("/worker/register", json=body, headers=auth)
        assert r.status_code == 200
        wid = r.json()["worker_id"]
        # An idle claim long-polls, then answers 204.
        t0 = time.monotonic()
        r = client.post("/worker/claim", json={"worker_id": wid, "timeout": 0.3}, headers=auth)
        assert r.status_code == 204 and time.monotonic() - t0 >= 0.25
        # A lease nobody holds is refused.
        r = client.post("/worker/leases/nope/result", json={"status": "completed"},
                        headers=auth)
        assert r.status_code == 409


def test_idle_worker_starts_new_work_within_milliseconds(
        make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30) as client, \
            httpx.Client(base_url=server.url, timeout=30) as poller:
        wid = client.post("/worker/register", json={"name": "x", "concurrency": 1},
                          headers=auth).json()["worker_id"]
        import threading

        got: dict[str, float] = {}

        def poll() -> None:
            r = poller.post("/worker/claim", json={"worker_id": wid, "timeout": 10},
                            headers=auth)
            got["at"] = time.monotonic()
            got["status"] = r.status_code

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.3)  # the claim is waiting
        t0 = time.monotonic()
        client.post("/api/workspaces/w/tasks/hello/execute", json={})
        sent = time.monotonic()
        thread.join(15)
        assert got["status"] == 200
        assert got["at"] - sent < 0.5, got["at"] - t0


def test_revision_tarball_is_cached_by_etag(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    worker = WorkerProcess(tmp_path / "w", server.url, tags="gpu,linux", concurrency=1)
    revisions = tmp_path / "w" / "cache" / "revisions"
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            first = client.post("/api/workspaces/w/tasks/hello/execute", json={}).json()["job_id"]
            assert wait_job(client, first)["status"] == "completed"
            revision = client.get(f"/api/jobs/{first}").json()["revision"]
            path = f"/worker/revisions/w/{revision}"
            assert client.get(path).status_code == 401
            r = client.get(path, headers=auth)
            assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
            etag = r.headers["etag"]
            with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
                names = set(tar.getnames())
            assert {"data/message.txt", ".workflows"} <= names
            again = client.get(path, headers={**auth, "If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == etag
            assert client.get(path, headers={**auth, "If-None-Match": '"other"'}
                              ).status_code == 200
            assert client.get("/worker/revisions/w/nope", headers=auth).status_code == 404
            # The worker kept the revision and its ETag; a second job of the same revision
            # revalidates it (304) instead of unpacking it again.
            (unpacked,) = [p for p in revisions.iterdir() if p.is_dir()]
            assert (revisions / f"{unpacked.name}.etag").read_text() == etag
            inode = unpacked.stat().st_ino
            second = client.post("/api/workspaces/w/tasks/hello/execute",
                                 json={}).json()["job_id"]
            assert wait_job(client, second)["status"] == "completed"
            assert "message from the workspace" in [x["line"] for x in lines(client, second)]
            assert unpacked.stat().st_ino == inode
    finally:
        worker.close()


MANY_STEPS = 55


def test_workers_list_and_detail_page_with_limit_and_offset(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    flow = {f"s{i:02}": {"type": "shell", "interpreter": "sh", "script": "true"}
            for i in range(MANY_STEPS)}
    (ws / ".workflows" / "many.yaml").write_text(
        orjson.dumps({"tasks": {"many": {"flow": flow}}}).decode(), "utf-8")
    server = make_server(workspaces={"w": ws}, settings=remote_settings(timeout=30.0))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ids = [client.post("/worker/register", json={"name": f"n{i}", "tags": [f"t{i}"],
                                                     "concurrency": 1},
                           headers=auth).json()["worker_id"] for i in range(3)]
        r = client.get("/api/workers")
        assert r.headers["X-Total-Count"] == "3"
        listed = r.json()
        assert {w["worker_id"] for w in listed} == set(ids)
        page = client.get("/api/workers", params={"limit": 2, "offset": 1})
        assert page.headers["X-Total-Count"] == "3"
        assert [w["worker_id"] for w in page.json()] == [w["worker_id"] for w in listed[1:3]]
        assert client.get("/api/workers", params={"limit": 2, "offset": 3}).json() == []
        # One worker runs every step of a job (claimed and completed through the API).
        wid = ids[0]
        job_id = client.post("/api/workspaces/w/tasks/many/execute", json={}).json()["job_id"]
        for _ in range(MANY_STEPS):
            held = client.post("/worker/claim", json={"worker_id": wid, "timeout": 20},
                               headers=auth).json()
            r = client.post(f"/worker/leases/{held['lease']}/result",
                            json={"status": "completed"}, headers=auth)
            assert r.status_code == 200
        assert wait_job(client, job_id)["status"] == "completed"
        detail = client.get(f"/api/workers/{wid}").json()
        assert detail["status"] == "active" and detail["tags"] == ["t0"]
        assert detail["last_heartbeat"].endswith("Z")
        steps = detail["steps"]
        assert len(steps) == 50  # the recent steps, newest first, at most 50
        assert all(s["job_id"] == job_id and s["outcome"] == "completed" for s in steps)
        assert len({s["step"] for s in steps}) == 50
        assert len(client.get(f"/api/workers/{wid}", params={"limit": 500}).json()["steps"]) \
            == 50
        window = client.get(f"/api/workers/{wid}", params={"limit": 10, "offset": 5}).json()
        assert window["steps"] == steps[5:15]
        other = client.get(f"/api/workers/{ids[1]}").json()
        assert other["steps"] == [] and other["tags"] == ["t1"]
        assert client.get("/api/workers/nope").status_code == 404


LINES = 3000


def _requests(text: str, route: str) -> int:
    total = 0
    for row in text.splitlines():
        if row.startswith("partitur_http_requests_total{") and f'route="{route}"' in row:
            total += int(float(row.rsplit(" ", 1)[1]))
    return total


def test_a_worker_ships_lines_in_batches(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "chatty.yaml").write_text(orjson.dumps({"tasks": {"chatty": {
        "flow": {"burst": {"type": "shell", "interpreter": "sh",
                           "script": f"seq 1 {LINES}"}}}}}).decode(), "utf-8")
    server = make_server(workspaces={"w": ws}, settings=remote_settings())
    worker = WorkerProcess(tmp_path / "w", server.url, concurrency=1)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = client.post("/api/workspaces/w/tasks/chatty/execute",
                                 json={}).json()["job_id"]
            assert wait_job(client, job_id)["status"] == "completed"
            shipped = [x["line"] for x in lines(client, job_id) if x["step"] == "burst"]
            assert shipped == [str(n) for n in range(1, LINES + 1)]
            posts = _requests(client.get("/metrics").text, "/worker/leases/{lease}/logs")
            # Every line arrived, in far fewer calls than lines.
            assert 1 <= posts <= LINES // 20, posts
    finally:
        worker.close()


RUNNERS = """
tasks:
  mixed:
    flow:
      py:
        type: python
        script: |
          import json, pathlib
          text = pathlib.Path("data/note.txt").read_text().strip()
          print("python read " + text)
          print("OUTPUT: " + json.dumps({"note": text}))
      web:
        depends_on: [py]
        type: http
        method: GET
        url: "http://127.0.0.1:{port}/healthz"
"""


def test_a_remote_worker_runs_python_and_http_steps_too(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    port = free_port()
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / "data").mkdir()
    (ws / "data" / "note.txt").write_text("from the revision\n", "utf-8")
    (ws / ".workflows" / "mixed.yaml").write_text(RUNNERS.replace("{port}", str(port)),
                                                 "utf-8")
    server = make_server(workspaces={"w": ws}, settings=remote_settings(), port=port)
    worker = WorkerProcess(tmp_path / "w", server.url, concurrency=1)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = client.post("/api/workspaces/w/tasks/mixed/execute",
                                 json={}).json()["job_id"]
            done = wait_job(client, job_id)
            assert done["status"] == "completed", done
            remote = {w["worker_id"] for w in client.get("/api/workers").json()
                      if w["kind"] == "remote"}
            assert len(remote) == 1
            for name in ("py", "web"):
                assert step(done, name)["worker_id"] in remote
            assert step(done, "py")["output"] == {"note": "from the revision"}
            assert step(done, "web")["output"]["status"] == 200
            assert "python read from the revision" in [x["line"] for x in lines(client, job_id)]
    finally:
        worker.close()
