"""An unexpected failure inside the server is a JSON 500, never a traceback or HTML.

The failure is real: a stored event is corrupted in the SQLite file under a running
server, so reading that job's history fails deep in the store. The client keeps its
connection: the requests after a 500 go over the same one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from api_helpers import api_workspaces, execute, wait_job
from harness import ServerProcess


def test_a_corrupt_event_is_a_json_500_and_other_jobs_still_answer(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, workspaces=api_workspaces()).start()
    try:
        with httpx.Client(base_url=server.url, timeout=15) as client:
            broken, fine = execute(client, "hello"), execute(client, "hello")
            wait_job(client, broken)
            wait_job(client, fine)
            with sqlite3.connect(tmp_path / "partitur.db") as db:
                db.execute("UPDATE events SET data = '{not json' "
                           "WHERE stream_id = ? AND version = 2", (broken,))
            for path in (f"/api/jobs/{broken}", f"/api/jobs/{broken}/events"):
                r = client.get(path)
                assert r.status_code == 500, path
                assert r.headers["content-type"].startswith("application/json")
                assert r.json() == {"error": "internal server error"}
                assert "Traceback" not in r.text
            assert client.get(f"/api/jobs/{fine}").json()["status"] == "completed"
    finally:
        server.close()
