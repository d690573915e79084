"""Auto-repair through a real server: a failure of an `auto_repair` deployment runs the
configured repair task, its proposal waits in an approval step, and only an approval
deploys it. Without `debug.repair_task` the debug report says it is not configured."""

from __future__ import annotations

import base64
import io
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from v1_helpers import call, deploy, wait_job, workspace

from engine.autorepair import NOT_CONFIGURED

BROKEN = """
tasks:
  boom:
    flow:
      explode:
        type: shell
        script: |
          echo "going down" >&2
          exit 3
"""
FIXED = BROKEN.replace("exit 3", "echo 'OUTPUT: {\"fixed\": true}'")


def repair_workspace(folder: Path) -> Path:
    """A workspace whose task `fix` proposes the FIXED workflow (and shows what it got)."""
    proposal = workspace(FIXED)
    (folder / ".workflows").mkdir(parents=True)
    (folder / ".workflows" / "main.yaml").write_text(textwrap.dedent(f"""
        tasks:
          fix:
            input:
              job_id: {{type: string}}
              workflow: {{type: string}}
              error: {{type: string}}
              source: {{type: string}}
            flow:
              propose:
                type: shell
                script: |
                  echo 'OUTPUT: {{"summary": "explode exits 0 now", "source": "{proposal}"}}'
        """), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def repair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("autorepair")
    server = ServerProcess(tmp, workspaces={"repairs": repair_workspace(tmp / "repairs")},
                           settings={"secrets_key": "test-secrets-key",
                                     "debug": {"repair_task": "repairs/fix"}})
    server.start()
    try:
        yield server
    finally:
        server.close()


def report_until(client: httpx.Client, job_id: str, status: str,
                 timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report: dict[str, Any] = call(client, "jobs/debugReport", {"id": job_id})
        if report["autofix_status"] == status:
            return report
        assert report["autofix_status"] not in ("repair_failed", "rejected", "no_proposal"), \
            report
        assert time.monotonic() < deadline, report
        time.sleep(0.1)


def members(source: str) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(source)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def test_a_failure_proposes_a_repair_that_deploys_only_when_approved(
        repair_server: ServerProcess) -> None:
    with httpx.Client(base_url=repair_server.url, timeout=15.0) as client:
        created = call(client, "deployments/create",
                       {"source": workspace(BROKEN), "auto_repair": True})
        dep = deploy_wait(client, created["deployment_id"])
        job_id = call(client, "jobs/create", {"workflow": "boom", "params": {}})["job_id"]
        assert wait_job(client, job_id)["status"] == "failed"

        report = report_until(client, job_id, "awaiting_approval")
        assert report["autofix_summary"] == "explode exits 0 now"
        assert report["debug_agent_mode"] == "autofix"
        assert report["autofix_deployment_id"] is None
        # The repair task got the failure and the failing deployment's workspace.
        repair = client.get(f"/api/jobs/{report['autofix_repair_job_id']}").json()
        assert repair["workspace"] == "repairs" and repair["input"]["job_id"] == job_id
        assert repair["input"]["workflow"] == "boom" and "exit 3" in "".join(
            members(repair["input"]["source"]).values())
        # Nothing is deployed before the approval: the broken deployment still serves.
        assert [d["id"] for d in call(client, "deployments/list")["deployments"]] == [dep["id"]]
        assert call(client, "workflows/get", {"workflow": "boom"})["deployment_id"] == dep["id"]
        approval_id = report["autofix_approval_job_id"]
        approval = client.get(f"/api/jobs/{approval_id}").json()
        gate = {s["step_name"]: s for s in approval["steps"]}["approve"]
        assert gate["status"] == "suspended"

        answer = client.post(f"/api/jobs/{approval_id}/steps/approve/approve",
                             json={"approved": True})
        assert answer.status_code == 200, answer.text
        report = report_until(client, job_id, "deployed")
        fixed_id = report["autofix_deployment_id"]
        assert fixed_id and fixed_id != dep["id"]
        fixed = deploy_wait(client, fixed_id)
        assert fixed["workflows"] == ["boom"]
        deadline = time.monotonic() + 20
        while call(client, "workflows/get", {"workflow": "boom"})["deployment_id"] != fixed_id:
            assert time.monotonic() < deadline, "the repaired deployment does not serve"
            time.sleep(0.1)
        again = call(client, "jobs/create", {"workflow": "boom", "params": {}})["job_id"]
        done = wait_job(client, again)
        assert done["status"] == "completed" and done["result"] == {"explode": {"fixed": True}}


def test_a_rejected_proposal_deploys_nothing(repair_server: ServerProcess) -> None:
    with httpx.Client(base_url=repair_server.url, timeout=15.0) as client:
        created = call(client, "deployments/create",
                       {"source": workspace(BROKEN.replace("boom", "bust")),
                        "auto_repair": True})
        deploy_wait(client, created["deployment_id"])
        before = {d["id"] for d in call(client, "deployments/list")["deployments"]}
        job_id = call(client, "jobs/create", {"workflow": "bust", "params": {}})["job_id"]
        assert wait_job(client, job_id)["status"] == "failed"
        report = report_until(client, job_id, "awaiting_approval")
        answer = client.post(f"/api/jobs/{report['autofix_approval_job_id']}/steps/approve/"
                             "approve", json={"approved": False, "rejection_reason": "no"})
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 20
        while (report := call(client, "jobs/debugReport",
                              {"id": job_id}))["autofix_status"] != "rejected":
            assert time.monotonic() < deadline, report
            time.sleep(0.1)
        assert report["autofix_deployment_id"] is None
        assert {d["id"] for d in call(client, "deployments/list")["deployments"]} == before


def test_without_auto_repair_on_the_deployment_nothing_runs(
        repair_server: ServerProcess) -> None:
    with httpx.Client(base_url=repair_server.url, timeout=15.0) as client:
        deploy(client, workspace(BROKEN.replace("boom", "plain")))
        job_id = call(client, "jobs/create", {"workflow": "plain", "params": {}})["job_id"]
        assert wait_job(client, job_id)["status"] == "failed"
        report = call(client, "jobs/debugReport", {"id": job_id})
        assert report["autofix_status"] is None
        assert "auto_repair: false" in report["autofix_summary"]
        assert report["autofix_repair_job_id"] is None


def test_without_a_repair_task_the_report_says_not_configured(v1: httpx.Client) -> None:
    created = call(v1, "deployments/create", {"source": workspace(BROKEN), "auto_repair": True})
    deploy_wait(v1, created["deployment_id"])
    job_id = call(v1, "jobs/create", {"workflow": "boom", "params": {}})["job_id"]
    assert wait_job(v1, job_id)["status"] == "failed"
    report = call(v1, "jobs/debugReport", {"id": job_id})
    assert report["autofix_status"] == "not_configured"
    assert report["autofix_summary"] == NOT_CONFIGURED
    assert "not configured" in report["autofix_summary"]
    assert report["autofix_deployment_id"] is None
    # The same on the workspace API's report.
    api = v1.get(f"/api/jobs/{job_id}/debug-report")
    assert api.status_code == 200 and api.json()["autofix_summary"] == NOT_CONFIGURED


def deploy_wait(client: httpx.Client, dep_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        dep: dict[str, Any] = call(client, "deployments/sync", {"id": dep_id})
        if dep["status"] != "building":
            assert dep["status"] == "ready", dep
            return dep
        assert time.monotonic() < deadline, dep
        time.sleep(0.1)
