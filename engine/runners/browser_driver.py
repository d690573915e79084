"""The browser driver: runs one browser step in its own process (`python -m …`).

The browser runner starts it with the path of a JSON spec (the action, the step input,
launch options, file paths) and reads back a JSON result file; nothing from the workflow
is ever spliced into code. A `script:` body is compiled, as written, into
`async def script(page, input, log)` and called with the input as an argument.

Everything the step prints goes to stdout/stderr and so to the step log: one line per
declarative step, console messages and page errors. The driver always stops the trace
into `trace.zip`; on failure it also writes the evidence files of `browser_evidence`.
Right after the launch it writes the process groups of the browser to `pgids_path`, so
the runner can kill Chromium (which Playwright starts in a group of its own) on
cancellation or timeout.
"""

from __future__ import annotations

import ast
import asyncio
import linecache
import shutil
import sys
import textwrap
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.logs.redact import Redactor
from engine.runners.browser_evidence import (
    TRACE,
    VIDEO,
    ConsoleLog,
    NetworkLog,
    scrub_zip,
    write_failure_evidence,
)
from engine.runners.browser_procs import browser_groups
from engine.runners.browser_steps import BrowserStep, StepContext, StepFailed, parse_steps, run_step

SCRIPT_FILE = "<browser script>"
LAUNCH_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
)
DEFAULT_TIMEOUT = 30.0
_LAST_ACTIONS = 10

ScriptFn = Callable[[Any, Any, Callable[..., None]], Awaitable[Any]]


def emit(stream: str, text: str) -> None:
    """One log line (or several, for multi-line text) on stdout or stderr."""
    out = sys.stderr if stream == "stderr" else sys.stdout
    for line in str(text).splitlines() or [""]:
        out.write(line + "\n")
    out.flush()


def compile_script(body: str) -> ScriptFn:
    """`body` as the body of `async def script(page, input, log)`; SyntaxError propagates.

    Line numbers (in tracebacks and syntax errors) are the body's own: line 1 is its
    first line.
    """
    source = "async def script(page, input, log):\n" + textwrap.indent(
        body if body.strip() else "pass", "    ")
    try:
        tree = ast.parse(source, filename=SCRIPT_FILE)
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno -= 1
        raise
    ast.increment_lineno(tree, -1)
    # So that tracebacks can quote the script's lines.
    lines = [line + "\n" for line in body.splitlines()]
    linecache.cache[SCRIPT_FILE] = (len(body), None, lines, SCRIPT_FILE)
    code = compile(tree, SCRIPT_FILE, "exec", dont_inherit=True)
    namespace: dict[str, Any] = {"__name__": "partitur_browser_script", "asyncio": asyncio}
    exec(code, namespace)
    fn: ScriptFn = namespace["script"]
    return fn


def script_line(exc: BaseException) -> int | None:
    """The line of the script body where `exc` was raised (its innermost script frame)."""
    if isinstance(exc, SyntaxError) and exc.filename == SCRIPT_FILE:
        return exc.lineno
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == SCRIPT_FILE:
            line = lineno
    return line


def script_stack(exc: BaseException) -> list[str]:
    """The traceback entries inside the script, as `line N, in fn` strings."""
    return [f"line {fs.lineno}, in {fs.name}" + (f": {fs.line}" if fs.line else "")
            for fs in traceback.extract_tb(exc.__traceback__) if fs.filename == SCRIPT_FILE]


def _kind_of(exc: BaseException) -> str:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    text = str(exc)
    if isinstance(exc, PlaywrightTimeout):
        return "timeout"
    if "net::ERR_" in text or "NS_ERROR" in text:
        return "navigation"
    if isinstance(exc, StepFailed) and text.startswith("HTTP "):
        return "http"
    if isinstance(exc, AssertionError):
        return "assertion"
    return "error"


def _message(exc: BaseException, limit: int = 30) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    return "\n".join(lines[:limit])


def _record_browser_groups(path: str | None) -> None:
    """Write the process groups of our descendants other than ours: Chromium's."""
    if path:
        Path(path).write_bytes(orjson.dumps(browser_groups()))


class Driver:
    """One browser step: launch, run the steps or the script, keep the evidence."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.artifacts = Path(spec["artifacts_dir"])
        self.launch: dict[str, Any] = spec.get("launch") or {}
        self.steps: list[BrowserStep] = parse_steps(spec["steps"]) if spec.get("steps") else []
        secrets = [str(v) for v in spec.get("secret_values") or []]
        secrets += [str(s.args["value"]) for s in self.steps if s.secret]
        self.redactor = Redactor(secrets)
        self.console = ConsoleLog(emit)
        self.network = NetworkLog()
        self.last_actions: deque[str] = deque(maxlen=_LAST_ACTIONS)
        self.current: BrowserStep | None = None
        self.phase = "launch"

    def log(self, text: str) -> None:
        emit("stdout", text)

    async def run(self) -> dict[str, Any]:
        from playwright.async_api import async_playwright

        self.artifacts.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=self.spec["executable"],
                headless=bool(self.launch.get("headless", True)),
                args=list(LAUNCH_ARGS),
            )
            _record_browser_groups(self.spec.get("pgids_path"))
            try:
                return await self._in_browser(browser)
            finally:
                await browser.close()

    async def _in_browser(self, browser: Any) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.launch.get("viewport"):
            options["viewport"] = self.launch["viewport"]
        if self.launch.get("user_agent"):
            options["user_agent"] = self.launch["user_agent"]
        if self.spec.get("storage_state_in"):
            options["storage_state"] = self.spec["storage_state_in"]
        video_dir = self.artifacts / ".video"
        if self.spec.get("video"):
            options["record_video_dir"] = str(video_dir)
        else:
            self.log("video: not recorded (ffmpeg is not available); the trace has screenshots")
        context = await browser.new_context(**options)
        self.network.attach(context)
        await context.tracing.start(screenshots=True, snapshots=True)
        page = await context.new_page()
        timeout = float(self.launch.get("timeout") or DEFAULT_TIMEOUT) * 1000
        page.set_default_timeout(timeout)
        page.set_default_navigation_timeout(timeout)
        self.console.attach(page)
        context.on("page", lambda p: self.console.attach(p) if p is not page else None)
        result: dict[str, Any]
        try:
            output = await self._perform(page)
            try:
                orjson.dumps(output, option=orjson.OPT_NON_STR_KEYS)
            except TypeError as exc:
                raise ValueError(f"the step output is not JSON: {exc}") from None
            if self.spec.get("storage_state_out"):
                await context.storage_state(path=self.spec["storage_state_out"])
            result = {"status": "completed", "output": output}
        except Exception as exc:
            result = await self._failed(page, exc)
        finally:
            await self._stop_recording(context, page, video_dir)
        return result

    async def _perform(self, page: Any) -> Any:
        start_url = self.launch.get("start_url")
        if start_url:
            self.phase = "start_url"
            self.log(f"start_url {start_url}")
            self.last_actions.append(f"goto {start_url}")
            await page.goto(str(start_url))
        if self.spec.get("script") is not None:
            self.phase = "script"
            fn = compile_script(self.spec["script"])

            def script_log(*args: Any) -> None:
                emit("stdout", " ".join(str(a) for a in args))

            return await fn(page, self.spec.get("input") or {}, script_log)
        self.phase = "steps"
        ctx = StepContext(artifacts_dir=self.artifacts, log=self.log)
        total = len(self.steps)
        for step in self.steps:
            self.current = step
            text = step.describe()
            self.log(f"[{step.index + 1}/{total}] {text}")
            self.last_actions.append(text)
            started = time.monotonic()
            await run_step(page, step, ctx)
            if step.kind == "extract":
                self.log(f"  {step.args['as']} = {_short_json(ctx.output[step.args['as']])}")
            elif time.monotonic() - started > 1:
                self.log(f"  took {time.monotonic() - started:.1f}s")
        self.current = None
        return ctx.output

    async def _failed(self, page: Any, exc: Exception) -> dict[str, Any]:
        kind = _kind_of(exc)
        if self.phase == "script" and not _is_playwright(exc):
            kind = "script" if kind == "error" else kind
        error: dict[str, Any] = {
            "message": _message(exc), "type": type(exc).__name__, "kind": kind,
            "phase": self.phase, "step_index": None, "step": None, "action": None,
            "selector": None, "line": None,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        if self.current is not None and self.phase == "steps":
            step = self.current
            error.update(step_index=step.index, step=step.safe_dict(), action=step.kind,
                         selector=step.selector)
        if self.phase == "script":
            error["line"] = script_line(exc)
            error["stack"] = script_stack(exc)
        error["last_actions"] = list(self.last_actions)
        try:
            await write_failure_evidence(page, self.artifacts, error, self.console,
                                         self.network, self.redactor, self.log)
        except Exception as evidence_exc:  # the step's own error matters more
            emit("stderr", f"evidence: {evidence_exc}")
        where = _where(error)
        emit("stderr", f"{where}: {error['message']}")
        return {"status": "failed", "error": f"{where}: {_message(exc, 8)}", "kind": kind,
                "details": error}

    async def _stop_recording(self, context: Any, page: Any, video_dir: Path) -> None:
        trace = self.artifacts / TRACE
        try:
            await context.tracing.stop(path=trace)
            scrub_zip(trace, self.redactor)
            self.log(f"trace: {TRACE} ({trace.stat().st_size} bytes)")
        except Exception as exc:
            emit("stderr", f"trace: not saved ({_message(exc, 1)})")
        video = page.video if self.spec.get("video") else None
        await context.close()
        if video is not None:
            try:
                await video.save_as(self.artifacts / VIDEO)
                self.log(f"video: {VIDEO}")
            except Exception as exc:
                emit("stderr", f"video: not saved ({_message(exc, 1)})")
        shutil.rmtree(video_dir, ignore_errors=True)


def _is_playwright(exc: BaseException) -> bool:
    from playwright.async_api import Error as PlaywrightError

    return isinstance(exc, PlaywrightError | AssertionError)


def _where(error: dict[str, Any]) -> str:
    if error["step_index"] is not None:
        step = error["step"] or {}
        return f"step {error['step_index'] + 1} ({error['action']}{_sel(step)})"
    if error["phase"] == "script":
        return f"script line {error['line']}" if error["line"] else "script"
    return str(error["phase"])


def _sel(step: dict[str, Any]) -> str:
    for args in step.values():
        if isinstance(args, dict) and args.get("selector"):
            return f" {args['selector']}"
    return ""


def _short_json(value: Any, limit: int = 200) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the step the spec describes; the result is what goes into the result file."""
    try:
        driver = Driver(spec)
    except ValueError as exc:
        return {"status": "failed", "error": str(exc), "kind": "error"}
    try:
        return await driver.run()
    except Exception as exc:  # launch failures and the like: no page to take evidence of
        return {"status": "failed", "error": f"browser: {_message(exc, 8)}",
                "kind": _kind_of(exc)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        emit("stderr", "usage: python -m engine.runners.browser_driver SPEC.json")
        return 2
    spec = orjson.loads(Path(argv[1]).read_bytes())
    result = asyncio.run(drive(spec))
    try:
        payload = orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        payload = orjson.dumps({"status": "failed", "kind": "error",
                                "error": f"the step output is not JSON: {exc}"})
    Path(spec["result_path"]).write_bytes(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
