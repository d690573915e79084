"""Browser steps in a real Chromium through the real orchestrator, against the demo site."""

from __future__ import annotations

import asyncio
import shutil
import time
import zipfile
from pathlib import Path

import orjson
import playwright
import pytest
from browser_support import DEMO_WORKSPACE, RunJob, write_workspace
from harness import require

from engine.core.state import JobStatus, StepStatus
from engine.debugreport import build_report
from engine.testing import run_task

PASSWORD = "wonderland"


def _zip_texts(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return "\n".join(archive.read(n).decode("utf-8", "replace") for n in archive.namelist())


async def test_demo_workspace_signs_in_and_extracts(demo_site: str, browser_env: str) -> None:
    result = await run_task(DEMO_WORKSPACE, "export-orders", {"site_url": demo_site},
                            environ={"DEMO_PASSWORD": PASSWORD})

    assert result.state.status == JobStatus.COMPLETED, result.state.steps
    assert result.state.steps["export"].output == {
        "order_ids": ["A-1001", "A-1002", "A-1003"], "cents": ["3450", "2200", "8999"]}
    # The script step runs in a fresh browser: signed out, it lands on the sign-in page.
    assert result.state.steps["summary"].output == {
        "orders": 3, "first": "A-1001", "heading": "Back office"}
    export = result.step_lines("export")
    assert "[3/9] fill #password ••••••" in export
    assert "[console.log] login page ready" in export
    assert any(line.startswith("trace: trace.zip") for line in export)
    assert not any(PASSWORD in line.line for line in result.logs)


async def test_artifacts_trace_and_screenshot_without_secrets(
        demo_site: str, run_job: RunJob) -> None:
    job = await run_job(DEMO_WORKSPACE, "export-orders", {"site_url": demo_site},
                        environ={"DEMO_PASSWORD": PASSWORD})

    assert job.state.status == JobStatus.COMPLETED
    step = job.step_dir("export")
    assert (step / "orders.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = _zip_texts(step / "trace.zip")
    assert "#username" in texts and "tr.order td.id" in texts  # the actions were recorded
    # With screenshots (screencast frames, JPEG resources) and DOM snapshots.
    assert "screencast-frame" in texts and "frame-snapshot" in texts
    with zipfile.ZipFile(step / "trace.zip") as archive:
        names = archive.namelist()
        assert any(n.endswith(".jpeg") for n in names), names  # the screenshots
    # The password was typed and posted; the trace keeps neither.
    assert PASSWORD not in texts
    assert not (step / "failure").exists()


async def test_script_receives_input_as_data(tmp_path: Path, demo_site: str,
                                             run_job: RunJob) -> None:
    ws = write_workspace(tmp_path / "ws", """
        tasks:
          echo:
            input:
              text: { type: string, required: true }
            flow:
              s:
                type: browser
                script: |
                  log("got", len(input["text"]), "characters")
                  await page.set_content("<p id=t></p>")
                  await page.locator("#t").evaluate("(el, v) => el.textContent = v", input["text"])
                  echo = await page.locator("#t").inner_text()
                  return {"echo": echo, "type": type(page).__name__}
                input: { text: "<< input.text >>" }
        """)
    tricky = "\"); import os; os._exit(3) #'''<< input.text >>"
    job = await run_job(ws, "echo", {"text": tricky})

    assert job.state.status == JobStatus.COMPLETED, job.state.steps["s"].error
    assert job.state.steps["s"].output == {"echo": tricky, "type": "Page"}
    assert f"got {len(tricky)} characters" in job.lines("s")


async def test_script_error_names_its_line(tmp_path: Path, run_job: RunJob) -> None:
    ws = write_workspace(tmp_path / "ws", """
        tasks:
          broken:
            flow:
              s:
                type: browser
                script: |
                  await page.set_content("<h1>hello</h1>")
                  value = {"a": 1}
                  return value["missing"]
        """)
    job = await run_job(ws, "broken")

    step = job.state.steps["s"]
    assert step.status == StepStatus.FAILED
    assert step.error is not None and step.error.startswith("script line 3: 'missing'")
    error = orjson.loads((job.step_dir("s") / "failure" / "error.json").read_bytes())
    assert error["line"] == 3 and error["type"] == "KeyError" and error["kind"] == "script"
    assert error["stack"] == ["line 3, in script: return value[\"missing\"]"]
    assert (job.step_dir("s") / "failure" / "screenshot.png").is_file()


async def test_timeout_kills_the_browser_process_groups(tmp_path: Path, run_job: RunJob) -> None:
    ws = write_workspace(tmp_path / "ws", """
        tasks:
          hang:
            flow:
              s:
                type: browser
                timeout: 6s
                script: |
                  import json, os
                  from engine.runners.browser_procs import browser_groups
                  path = os.path.join(os.environ["ARTIFACTS_DIR"], "groups.json")
                  with open(path, "w") as handle:
                      json.dump(browser_groups(), handle)
                  await asyncio.sleep(60)
        """)
    job = await run_job(ws, "hang")

    step = job.state.steps["s"]
    assert step.status == StepStatus.FAILED and step.error_kind == "timeout"
    groups = orjson.loads((job.step_dir("s") / "groups.json").read_bytes())
    assert groups, "Chromium runs in a process group of its own"
    assert "killed 1 leftover browser process group(s)" in job.lines("s")
    deadline = time.monotonic() + 3
    while any(_alive(g["pgid"]) for g in groups) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling other processes
        await asyncio.sleep(0.05)
    for group in groups:
        assert not _alive(group["pgid"]), f"Chromium group {group} survived"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"  # a zombie is dead, only not reaped


LAUNCHED = """
    tasks:
      look:
        flow:
          s:
            type: browser
            launch: { viewport: { width: 640, height: 480 }, user_agent: PartiturTest/1.0 }
            script: |
              await page.set_content("<h1 style='color: red'>recorded</h1>")
              for i in range(6):  # a page that paints again and again: frames to record
                  await page.wait_for_timeout(100)
                  await page.evaluate(f"document.querySelector('h1').textContent = 'frame {i}'")
              return await page.evaluate(
                  "({ua: navigator.userAgent, width: innerWidth, height: innerHeight})")
    """


def _fake_browsers_path(root: Path, ffmpeg: str | None) -> Path:
    """A PLAYWRIGHT_BROWSERS_PATH holding Playwright's ffmpeg (the system's), or nothing."""
    root.mkdir(parents=True, exist_ok=True)
    if ffmpeg is not None:
        browsers = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
        revision = next(b["revision"] for b in orjson.loads(browsers.read_bytes())["browsers"]
                        if b["name"] == "ffmpeg")
        (root / f"ffmpeg-{revision}").mkdir()
        (root / f"ffmpeg-{revision}" / "ffmpeg-linux").symlink_to(ffmpeg)
    return root


async def test_without_ffmpeg_the_step_says_so_and_goes_on(
        tmp_path: Path, run_job: RunJob, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(_fake_browsers_path(tmp_path / "pw",
                                                                           None)))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    job = await run_job(write_workspace(tmp_path / "ws", LAUNCHED), "look")

    assert job.state.status == JobStatus.COMPLETED, job.state.steps["s"].error
    # The launch options reached the page.
    assert job.state.steps["s"].output == {"ua": "PartiturTest/1.0", "width": 640,
                                           "height": 480}
    assert ("video: not recorded (ffmpeg is not available); the trace has screenshots"
            in job.lines("s"))
    assert not (job.step_dir("s") / "video.webm").exists()
    assert (job.step_dir("s") / "trace.zip").is_file()


async def test_with_ffmpeg_the_step_records_a_video(
        tmp_path: Path, run_job: RunJob, monkeypatch: pytest.MonkeyPatch) -> None:
    ffmpeg = shutil.which("ffmpeg")
    require("ffmpeg", ffmpeg is not None, "no ffmpeg on PATH (apt-get install ffmpeg)")
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(_fake_browsers_path(tmp_path / "pw",
                                                                           ffmpeg)))
    job = await run_job(write_workspace(tmp_path / "ws", LAUNCHED), "look")

    assert job.state.status == JobStatus.COMPLETED, job.state.steps["s"].error
    assert "video: video.webm" in job.lines("s")
    video = (job.step_dir("s") / "video.webm").read_bytes()
    assert video[:4] == b"\x1a\x45\xdf\xa3" and len(video) > 1000  # a WebM (Matroska) file
    assert not (job.step_dir("s") / ".video").exists()


async def test_goto_press_wait_for_and_expect_text(
        tmp_path: Path, demo_site: str, run_job: RunJob) -> None:
    ws = write_workspace(tmp_path / "ws", """
        tasks:
          keys:
            input:
              site_url: { type: string, required: true }
            flow:
              s:
                type: browser
                input: { site_url: "<< input.site_url >>" }
                steps:
                  - goto: "<< input.site_url >>/"
                  - fill: { selector: "#username", value: alice }
                  - fill: { selector: "#password", value: wonderland, secret: true }
                  - press: { selector: "#password", key: Enter }
                  - wait_for: { url: "**/orders" }
                  - expect_text: { selector: "#welcome", text: alice }
                  - extract: { selector: "#welcome", as: welcome }
              wrong:
                type: browser
                depends_on: [s]
                input: { site_url: "<< input.site_url >>" }
                steps:
                  - goto: "<< input.site_url >>/"
                  - expect_text: "Welcome back, mallory"
                    timeout: 1
        """)
    job = await run_job(ws, "keys", {"site_url": demo_site})

    assert job.state.steps["s"].status == StepStatus.COMPLETED, job.state.steps["s"].error
    assert "alice" in job.state.steps["s"].output["welcome"]
    assert "[4/7] press Enter in #password" in job.lines("s")
    wrong = job.state.steps["wrong"]
    assert wrong.status == StepStatus.FAILED
    assert wrong.error is not None and wrong.error.startswith("step 2 (expect_text")
    report = build_report(job.row, job.steps, job.artifacts, step="wrong")
    assert report["analysis"]["kind"] == "expectation_failed"


async def test_console_messages_and_page_errors_reach_the_step_log(
        tmp_path: Path, run_job: RunJob) -> None:
    ws = write_workspace(tmp_path / "ws", """
        tasks:
          noisy:
            flow:
              s:
                type: browser
                script: |
                  await page.set_content(
                      "<script>console.warn('low on coffee');"
                      "setTimeout(() => { throw new Error('kaboom in page') }, 0)</script>")
                  await page.wait_for_timeout(300)
                  return {}
        """)
    job = await run_job(ws, "noisy")

    assert job.state.status == JobStatus.COMPLETED, job.state.steps["s"].error
    lines = "\n".join(job.lines("s"))
    assert "[console.warning] low on coffee" in lines
    assert "[pageerror]" in lines and "kaboom in page" in lines
