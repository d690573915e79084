"""The browser runner: a `browser` step driven by Playwright in a process of its own.

Each attempt runs `python -m engine.runners.browser_driver SPEC` through `run_process`,
so a crash or a hang of the browser cannot take the server down and a timeout or a
cancellation kills the driver's process group — and Chromium's, which Playwright starts
in a group of its own and the driver reports right after launch. The action and its input
travel as a JSON file in a private temporary folder; the result comes back the same way.

Configuration, read when a step runs (constructor arguments win over the environment):
`PARTITUR_BROWSER_EXECUTABLE` (default: Playwright's Chromium, else /usr/bin/chromium),
`PARTITUR_SECRETS_KEY` (needed for profiles) and `PARTITUR_PROFILES_DIR` (default: a
`profiles` folder next to the artifacts folder). `configure()` sets them for the
registered runner from the server config. The secrets key never reaches the driver.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from engine.profiles import ProfileError, ProfileStore
from engine.runners.base import COMPLETED, FAILED, LogSink, RunResult, StepRun
from engine.runners.browser_evidence import default_executable, playwright_ffmpeg
from engine.runners.browser_procs import kill_groups
from engine.runners.browser_steps import StepsInvalid, parse_steps
from engine.runners.process import run_process

EXECUTABLE_ENV = "PARTITUR_BROWSER_EXECUTABLE"
SECRETS_KEY_ENV = "PARTITUR_SECRETS_KEY"
PROFILES_DIR_ENV = "PARTITUR_PROFILES_DIR"
# Never handed to the driver, which runs workflow code.
_HIDDEN_ENV = (SECRETS_KEY_ENV, "PARTITUR__SECRETS_KEY")


class BrowserRunner:
    """Runs browser steps; see the module docstring."""

    def __init__(
        self,
        *,
        executable: str | None = None,
        secrets_key: str | None = None,
        profiles_dir: Path | None = None,
        grace: float = 2.0,
    ) -> None:
        self.executable = executable
        self.secrets_key = secrets_key
        self.profiles_dir = profiles_dir
        self.grace = grace

    def resolved_executable(self) -> str:
        """The Chromium this runner launches."""
        return self.executable or os.environ.get(EXECUTABLE_ENV) or default_executable()

    def profile_store(self, artifacts_dir: Path) -> ProfileStore:
        """The profile store; its default folder is `profiles/` beside the artifacts root."""
        root = self.profiles_dir or (
            Path(os.environ[PROFILES_DIR_ENV]) if os.environ.get(PROFILES_DIR_ENV)
            else artifacts_dir.parent.parent.parent / "profiles")
        return ProfileStore(root, self.secrets_key or os.environ.get(SECRETS_KEY_ENV) or None)

    async def run(
        self, run: StepRun, log: LogSink, on_start: Callable[[int | None], None]
    ) -> RunResult:
        action = run.action
        script, steps = action.get("script"), action.get("steps")
        if script is None and not steps:
            return RunResult(FAILED, error="browser action has no 'steps' or 'script'")
        if script is not None and steps:
            return RunResult(FAILED, error="a browser action takes 'steps' or 'script', not both")
        if script is not None and not isinstance(script, str):
            return RunResult(FAILED, error="browser 'script' must be text")
        if steps:
            try:
                parse_steps(steps)
            except StepsInvalid as exc:
                return RunResult(FAILED, error=f"invalid browser steps: {exc}")
        executable = self.resolved_executable()
        problem = _executable_problem(executable)
        if problem is not None:
            return RunResult(FAILED, error=problem)
        run.artifacts_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="partitur-browser-") as tmp:
            return await self._run_in(Path(tmp), run, log, on_start, executable)

    async def _run_in(self, tmp: Path, run: StepRun, log: LogSink,
                      on_start: Callable[[int | None], None], executable: str) -> RunResult:
        action = run.action
        profile = action.get("profile") or None
        workspace = run.env.get("PARTITUR_WORKSPACE") or "default"
        store = self.profile_store(run.artifacts_dir)
        state_in: str | None = None
        if profile is not None:
            name, persist = str(profile.get("name")), bool(profile.get("persist"))
            try:
                state = store.load(workspace, name)
            except ProfileError as exc:
                return RunResult(FAILED, error=exc.message)
            if state is None and not persist:
                return RunResult(FAILED, error=(
                    f"browser profile {name!r} does not exist; a step with "
                    f"'profile: {{name: {name}, persist: true}}' creates it"))
            if state is not None:
                state_in = _write_private(tmp / "state-in.json", orjson.dumps(state))
                log.line("stdout", f"profile {name}: loaded")
            else:
                log.line("stdout", f"profile {name}: new")
        spec = {
            "executable": executable,
            "artifacts_dir": str(run.artifacts_dir),
            "launch": action.get("launch") or {},
            "steps": action.get("steps"),
            "script": action.get("script"),
            "input": dict(run.input),
            "secret_values": _secret_inputs(action, run.input),
            "storage_state_in": state_in,
            "storage_state_out": str(tmp / "state-out.json") if profile else None,
            "video": playwright_ffmpeg() is not None,
            "result_path": str(tmp / "result.json"),
            "pgids_path": str(tmp / "pgids.json"),
        }
        spec_path = _write_private(tmp / "spec.json", orjson.dumps(spec, default=str))
        env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_ENV}
        env.update(run.env)
        env.setdefault("ARTIFACTS_DIR", str(run.artifacts_dir))
        argv = [sys.executable, "-P", "-m", "engine.runners.browser_driver", spec_path]
        try:
            result = await run_process(argv, cwd=run.workdir, env=env, log=log,
                                       on_start=on_start, timeout=run.timeout, grace=self.grace)
        except OSError as exc:
            on_start(None)
            return RunResult(FAILED, error=f"cannot start the browser driver: {exc}")
        finally:
            killed = _kill_browsers(tmp / "pgids.json")
            if killed:
                log.line("stderr", f"killed {killed} leftover browser process group(s)")
        if result.timed_out:
            return RunResult(FAILED, error=f"timed out after {run.timeout:g}s", kind="timeout")
        try:
            outcome = orjson.loads((tmp / "result.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            tail = "\n".join(result.stderr_tail)
            return RunResult(FAILED, exit_code=result.returncode, error=(
                f"the browser driver ended without a result (exit code {result.returncode})"
                + (f"\n{tail}" if tail else "")))
        if outcome.get("status") != COMPLETED:
            return RunResult(FAILED, error=str(outcome.get("error") or "browser step failed"),
                             exit_code=result.returncode)
        if profile is not None and profile.get("persist"):
            try:
                saved = orjson.loads((tmp / "state-out.json").read_bytes())
                store.save(workspace, str(profile["name"]), saved)
            except (OSError, orjson.JSONDecodeError, ProfileError) as exc:
                return RunResult(FAILED, error=f"browser profile not saved: {exc}")
            log.line("stdout", f"profile {profile['name']}: saved")
        return RunResult(COMPLETED, output=outcome.get("output"), exit_code=0)


def _write_private(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return str(path)


def _secret_inputs(action: Mapping[str, Any], values: Mapping[str, Any]) -> list[str]:
    """Values of the step input whose field the action declares `secret: true`."""
    out: list[str] = []
    for name, field in (action.get("input") or {}).items():
        if isinstance(field, Mapping) and field.get("secret") and values.get(name) is not None:
            out.append(str(values[name]))
    return out


def _kill_browsers(pgids_file: Path) -> int:
    """Kill the browser process groups the driver reported, if they are still there."""
    try:
        groups = orjson.loads(pgids_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return 0
    return kill_groups(groups)


def _executable_problem(path: str) -> str | None:
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return None
    return (f"Chromium not found at {path} (set browser.executable in the server config "
            f"or {EXECUTABLE_ENV})")


_default = BrowserRunner()


def default_runner() -> BrowserRunner:
    """The runner registered for `browser` actions."""
    return _default


def configure(*, executable: str | None = None, secrets_key: str | None = None,
              profiles_dir: Path | None = None) -> BrowserRunner:
    """Set the registered runner's Chromium, secrets key and profiles folder (server config)."""
    _default.executable = executable
    _default.secrets_key = secrets_key
    _default.profiles_dir = profiles_dir
    return _default
