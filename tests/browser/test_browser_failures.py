"""A failing browser step keeps its evidence, and the debug report reads it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import orjson
from browser_support import RunJob, write_workspace
from harness import free_port

from engine.core.state import JobStatus, StepStatus
from engine.debugreport import build_report

FLOW = """
    tasks:
      sign-in:
        input:
          site_url: { type: string, required: true }
        flow:
          login:
            type: browser
            input: { site_url: "<< input.site_url >>" }
            launch: { start_url: "<< input.site_url >>", timeout: 2s }
            steps:
              - fill: { selector: "#username", value: alice }
              - fill: { selector: "#password", value: wonderland, secret: true }
              - click: "#sign-in-button"
    """


async def test_missing_element_keeps_evidence_and_gets_a_report(
        tmp_path: Path, demo_site: str, run_job: RunJob) -> None:
    ws = write_workspace(tmp_path / "ws", FLOW)
    job = await run_job(ws, "sign-in", {"site_url": demo_site})

    assert job.state.status == JobStatus.FAILED
    step = job.state.steps["login"]
    assert step.status == StepStatus.FAILED
    assert step.error is not None and step.error.startswith("step 3 (click #sign-in-button)")
    assert "step 3 (click #sign-in-button): " in "\n".join(job.lines("login"))

    # The evidence files.
    failure = job.step_dir("login") / "failure"
    assert (failure / "screenshot.png").read_bytes()[:4] == b"\x89PNG"
    assert 'id="sign-in"' in (failure / "dom.html").read_text()
    assert "[console.log] login page ready" in (failure / "console.log").read_text()
    network = [orjson.loads(line) for line in (failure / "network.jsonl").read_text().splitlines()]
    page_load = next(e for e in network if e["url"] == demo_site + "/")
    assert page_load["method"] == "GET" and page_load["status"] == 200
    assert isinstance(page_load["duration_ms"], float)
    error = orjson.loads((failure / "error.json").read_bytes())
    assert error["step_index"] == 2 and error["action"] == "click"
    assert error["selector"] == "#sign-in-button" and error["kind"] == "timeout"
    assert error["url"] == demo_site + "/"
    assert error["last_actions"] == ["goto " + demo_site, "fill #username alice",
                                     "fill #password ••••••", "click #sign-in-button"]
    with zipfile.ZipFile(job.step_dir("login") / "trace.zip") as trace:
        assert trace.testzip() is None
    for path in [*failure.iterdir(), job.step_dir("login") / "trace.zip"]:
        assert b"wonderland" not in path.read_bytes(), path

    # The report: a missing element, with the real button as the nearest candidate.
    report = build_report(job.row, job.steps, job.artifacts, base_url="http://partitur")
    assert report["analysis"]["kind"] == "missing_element"
    assert report["analysis"]["candidates"][0]["selector"] == "#sign-in"
    assert "no element matches `#sign-in-button`" in report["tldr"]
    assert "`#sign-in`" in report["tldr"]
    assert report["error"] == step.error.splitlines()[0]
    assert report["screenshot_url"] == (
        f"http://partitur/api/jobs/{job.row.job_id}/artifacts/failure/screenshot.png?step=login")
    assert report["dom_snapshot_url"].endswith("/artifacts/failure/dom.html?step=login")
    assert report["recording_url"].startswith("http://partitur/trace/index.html?trace=")
    assert report["job_workflow"] == "sign-in" and report["job_params"] == {
        "site_url": demo_site}
    prompt = report["handoff_prompt"]
    for needle in ("`login`", "#sign-in-button", "  - #sign-in", "4. click #sign-in-button",
                   report["screenshot_url"], report["recording_url"]):
        assert needle in prompt


async def test_http_and_navigation_errors_are_told_apart(
        tmp_path: Path, demo_site: str, run_job: RunJob) -> None:
    ws = write_workspace(tmp_path / "ws", """
        tasks:
          two:
            input:
              site_url: { type: string, required: true }
            flow:
              missing-page:
                type: browser
                input: { site_url: "<< input.site_url >>" }
                steps:
                  - goto: "<< input.site_url >>/no-such-page"
              closed-port:
                type: browser
                steps:
                  - goto: "http://127.0.0.1:CLOSED/"
        """.replace("CLOSED", str(free_port())))
    job = await run_job(ws, "two", {"site_url": demo_site})

    assert job.state.status == JobStatus.FAILED
    by_step = {name: build_report(job.row, job.steps, job.artifacts, step=name)["analysis"]
               for name in ("missing-page", "closed-port")}
    assert by_step["missing-page"]["kind"] == "http_error"
    assert "HTTP 404" in by_step["missing-page"]["summary"]
    assert by_step["closed-port"]["kind"] == "navigation_error"
    assert "ERR_CONNECTION_REFUSED" in by_step["closed-port"]["summary"]
