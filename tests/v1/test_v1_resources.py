"""Cloud API over HTTP: credentials, schedules, pin and rollback, deployments that fail."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
from harness import ServerProcess
from v1_helpers import WORKFLOWS, call, deploy, tarball, wait_job, workspace


def test_credentials_reach_only_declaring_workflows_and_are_redacted(
        v1: httpx.Client, v1_server: ServerProcess) -> None:
    deploy(v1)
    created = call(v1, "credentials/create", {"name": "api_token", "value": "tok-s3cr3t-42"})
    assert "value" not in created["credential"]
    r = v1.post("/v1/credentials/create", json={"json": {"name": "api_token", "value": "x"}})
    assert r.status_code == 409
    listed = call(v1, "credentials/list")["credentials"]
    assert [c["name"] for c in listed] == ["api_token"] and "value" not in listed[0]
    assert call(v1, "credentials/get", {"name": "api_token"})["value"] == "tok-s3cr3t-42"
    # Encrypted at rest: the value is nowhere in the database file.
    db = sqlite3.connect(v1_server.tmp_dir / "partitur.db")
    rows = db.execute("SELECT data FROM cloud_objects WHERE kind = 'credential'").fetchall()
    db.close()
    assert rows and all("tok-s3cr3t-42" not in r[0] for r in rows)
    # The declaring workflow gets it (redacted in logs); the others never see it.
    job_id = call(v1, "jobs/create", {"workflow": "secretive", "params": {}})["job_id"]
    assert wait_job(v1, job_id)["status"] == "completed"
    lines = [e["message"] for e in call(v1, "logs/list", {"jobId": job_id})["logs"]]
    assert any(line.startswith("token=") for line in lines)
    assert not any("tok-s3cr3t-42" in line for line in lines)
    assert call(v1, "credentials/upsert", {"name": "api_token", "value": "v2"})["overwritten"]
    assert not call(v1, "credentials/upsert", {"name": "other", "value": "v"})["overwritten"]
    updated = call(v1, "credentials/update", {"id": created["credential"]["id"], "value": "v3"})
    assert updated["success"] is True
    assert call(v1, "credentials/get", {"name": "api_token"})["value"] == "v3"
    assert call(v1, "credentials/delete", {"name": "other"})["success"] is True


def test_credential_in_use_cannot_be_deleted(v1: httpx.Client) -> None:
    slow = WORKFLOWS + """
  holds:
    input:
      credentials: {type: object, secret: true, default: {held: null}}
    flow:
      wait:
        type: shell
        script: sleep 30
"""
    deploy(v1, workspace(slow))
    call(v1, "credentials/upsert", {"name": "held", "value": "h"})
    job_id = call(v1, "jobs/create", {"workflow": "holds", "params": {}})["job_id"]
    wait_job(v1, job_id, until={"running"})
    r = v1.post("/v1/credentials/delete", json={"json": {"name": "held"}})
    assert r.status_code == 409 and job_id in r.json()["json"]["message"]
    call(v1, "jobs/cancel", {"id": job_id})
    wait_job(v1, job_id)
    assert call(v1, "credentials/delete", {"name": "held"})["success"] is True


def test_schedule_crud_and_firing(v1: httpx.Client) -> None:
    deploy(v1)
    made = call(v1, "schedules/create", {"workflow": "greet", "params": {"name": "cron"},
                                         "cron_expr": "* * * * *", "callback_url":
                                         "http://127.0.0.1:9/x", "callback_secret": "s"})
    s = made["schedule"]
    assert made["success"] and s["timezone"] == "UTC" and s["timeout_seconds"] == 900
    assert s["enabled"] and s["next_fire_at"] and s["consecutive_failures"] == 0
    assert s["callback_url"] == "http://127.0.0.1:9/x" and "callback_secret" not in s
    cleared = call(v1, "schedules/update", {"id": s["id"], "callback_url": None,
                                            "callback_secret": None,
                                            "timezone": "Europe/Berlin"})["schedule"]
    assert cleared["callback_url"] is None and cleared["timezone"] == "Europe/Berlin"
    r = v1.post("/v1/schedules/update", json={"json": {"id": s["id"], "cron_expr": "bad"}})
    assert r.status_code == 400
    assert call(v1, "schedules/get", {"id": s["id"]})["schedule"]["id"] == s["id"]
    listed = call(v1, "schedules/list", {"workflow": "greet"})["schedules"]
    assert s["id"] in [x["id"] for x in listed]
    assert call(v1, "schedules/list", {"enabled": False})["schedules"] == [] or all(
        not x["enabled"] for x in call(v1, "schedules/list", {"enabled": False})["schedules"])
    assert call(v1, "schedules/delete", {"id": s["id"]}) == {"success": True, "id": s["id"]}
    r = v1.post("/v1/schedules/get", json={"json": {"id": s["id"]}})
    assert r.status_code == 404


def test_dst_correct_next_fire() -> None:
    from engine.cloudschedules import next_fire

    # 02:30 Berlin is 01:30Z in winter and 00:30Z in summer.
    assert next_fire("30 2 * * *", "Europe/Berlin", 1742947200.0) == 1742952600.0  # 03-26
    assert next_fire("30 2 * * *", "Europe/Berlin", 1743379200.0) == 1743381000.0  # 03-31
    # 02:30 does not exist on 2025-03-30: it runs once, at the end of the gap (03:00 CEST).
    assert next_fire("30 2 * * *", "Europe/Berlin", 1743292800.0) == 1743296400.0


def test_pin_and_rollback(v1: httpx.Client) -> None:
    first = deploy(v1)
    second = deploy(v1, workspace(WORKFLOWS.replace("Say hello", "Say hello again")))
    assert call(v1, "workflows/get", {"workflow": "greet"})["deployment_id"] == second["id"]
    rolled = call(v1, "deployments/rollback", {"workflow": "greet"})
    assert rolled["pinned_deployment_id"] != second["id"]
    wf = call(v1, "workflows/get", {"workflow": "greet"})
    assert wf["deployment_id"] == rolled["pinned_deployment_id"]
    call(v1, "deployments/pin", {"workflow": "greet", "deployment_id": first["id"]})
    job = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "p"}})
    assert wait_job(v1, job["job_id"])["deployment_id"] == first["id"]
    # A newer deployment does not move a pinned workflow; unpinning does.
    third = deploy(v1)
    assert call(v1, "workflows/get", {"workflow": "greet"})["deployment_id"] == first["id"]
    call(v1, "deployments/pin", {"workflow": "greet", "deployment_id": None})
    assert call(v1, "workflows/get", {"workflow": "greet"})["deployment_id"] == third["id"]
    names = [w["name"] for w in call(v1, "workflows/list")["deployed_workflows"]]
    assert "greet" in names
    # Delete hides the name until a later deployment brings it back.
    assert call(v1, "workflows/delete", {"workflow": "slow"})["success"] is True
    r = v1.post("/v1/workflows/get", json={"json": {"workflow": "slow"}})
    assert r.status_code == 404
    deploy(v1)
    assert call(v1, "workflows/get", {"workflow": "slow"})["workflow"] == "slow"


def test_failed_builds_name_file_and_line(v1: httpx.Client) -> None:
    bad = deploy(v1, tarball({".workflows/a.yaml": "tasks:\n  t:\n    flow:\n      s:\n"
                                                    "        action: missing\n"}),
                 expect="failed")
    assert ".workflows/a.yaml:5" in bad["build_error"]
    js = deploy(v1, tarball({"index.js": "x", "package.json": "{}"}), expect="failed")
    assert ".workflows" in js["build_error"] and "JavaScript" in js["build_error"]
    r = v1.post("/v1/deployments/create", json={"json": {"source": "!!not base64!!"}})
    dep_id = r.json()["json"]["deployment_id"]
    time.sleep(0.3)
    assert call(v1, "deployments/sync", {"id": dep_id})["status"] == "failed"


def test_unsafe_tarballs_are_refused(tmp_path: Path) -> None:
    import tarfile

    from engine.deployments import TarballRejected, TarballTooLarge, TarLimits, unpack_tarball

    def refused(source: str, error: type[Exception], limits: TarLimits | None = None) -> None:
        dest = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        try:
            unpack_tarball(source, dest, limits or TarLimits())
        except error:
            assert not dest.exists()
            return
        raise AssertionError("accepted")

    refused(tarball({"../evil": "x"}, prefix=""), TarballRejected)
    refused(tarball({"/etc/evil": "x"}, prefix=""), TarballRejected)
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    refused(tarball({}, extra=[link]), TarballRejected)
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    refused(tarball({}, extra=[dev]), TarballRejected)
    refused(tarball({"a": "1", "./a": "2"}, prefix=""), TarballRejected)
    refused(tarball({"/".join(["d"] * 40) + "/f": "x"}), TarballRejected)
    refused(tarball({f"f{i}": "x" for i in range(20)}), TarballRejected, TarLimits(members=10))
    big = tarball({"big": "0" * 2_000_000})
    refused(big, TarballTooLarge, TarLimits(unpacked=1_000_000))
    refused(big, TarballTooLarge, TarLimits(encoded=100))
    ok = tmp_path / "ok"
    assert unpack_tarball(tarball({"a/b.txt": "hi"}), ok) == 1
    assert (ok / "a" / "b.txt").read_text() == "hi"


def test_tenants_are_isolated_with_api_keys(tmp_path: Path) -> None:
    admin = {"email": "admin@example.com", "password": "admin-password-1"}
    server = ServerProcess(tmp_path, settings={"auth": {"initial_user": admin},
                                               "secrets_key": "k"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as c:
            r = c.post("/v1/jobs/list", json={"json": {}})
            assert r.status_code == 401 and r.json()["json"]["code"] == "UNAUTHORIZED"
            token = c.post("/api/auth/login", json=admin).json()["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}
            keys = {}
            for name in ("acme", "globex"):
                email = f"{name}@example.com"
                r = c.post("/api/users", headers=bearer, json={
                    "email": email, "password": "user-password-1",
                    "groups": [f"tenant:{name}"]})
                assert r.status_code == 200, r.text
                user_token = c.post("/api/auth/login", json={
                    "email": email, "password": "user-password-1"}).json()["access_token"]
                r = c.post("/api/auth/keys", headers={"Authorization": f"Bearer {user_token}"},
                           json={"name": "k"})
                assert r.status_code == 200, r.text
                keys[name] = {"x-api-key": r.json()["key"]}
            dep = deploy(c, headers=keys["acme"])
            job = call(c, "jobs/create", {"workflow": "greet", "params": {"name": "a"}},
                       headers=keys["acme"])
            # The other tenant sees none of it.
            assert call(c, "deployments/list", headers=keys["globex"])["deployments"] == []
            assert call(c, "jobs/list", headers=keys["globex"])["jobs"] == []
            r = c.post("/v1/jobs/get", json={"json": {"id": job["job_id"]}},
                       headers=keys["globex"])
            assert r.status_code == 404
            r = c.post("/v1/deployments/sync", json={"json": {"id": dep["id"]}},
                       headers=keys["globex"])
            assert r.status_code == 404
            r = c.post("/v1/jobs/create", json={"json": {"workflow": "greet",
                                                         "params": {"name": "b"}}},
                       headers=keys["globex"])
            assert r.status_code == 404
            assert wait_job(c, job["job_id"], headers=keys["acme"])["status"] == "completed"
    finally:
        server.close()
