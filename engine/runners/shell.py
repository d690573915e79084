"""The shell runner: a step's `script` (or `cmd`) run by bash, sh or a named interpreter.

The script runs as `<interpreter> -c <script>` in the job's workspace revision folder, with
the step's env merged over the server's. Bash is the default (sh where bash is missing,
or with `interpreter: sh`); any other `interpreter` is the program to run, split like a
shell word list (`python3`, `bash -eu`). Output is Strøm's convention: the JSON after the
last stdout line starting with `OUTPUT:`; the last `STATE:` line likewise sets the state.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
from collections.abc import Callable
from typing import Any

import orjson

from engine.runners.base import COMPLETED, FAILED, LogSink, RunResult, StepRun
from engine.runners.process import MAX_LINE, run_process

OUTPUT_PREFIX = "OUTPUT:"
STATE_PREFIX = "STATE:"


def interpreter_argv(interpreter: str | None) -> list[str]:
    """The program and leading arguments for `interpreter`, before `-c <script>`."""
    if interpreter is None or interpreter.strip() in ("", "bash"):
        return ["bash"] if shutil.which("bash") else ["sh"]
    return list(_split(interpreter))


@functools.lru_cache(maxsize=64)
def _split(interpreter: str) -> tuple[str, ...]:
    return tuple(shlex.split(interpreter))


def _describe_exit(returncode: int) -> tuple[str, int]:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}", 128 - returncode
    return f"exit code {returncode}", returncode


_FOUND: dict[tuple[str, str], str] = {}


def _which(program: str, path: str) -> str | None:
    # Scanning PATH costs ~0.2 ms per step. Only hits are cached (keyed by PATH): an
    # interpreter installed later is found, one removed later fails at exec instead.
    key = (program, path)
    found = _FOUND.get(key)
    if found is None:
        found = shutil.which(program, path=path)
        if found is not None and len(_FOUND) < 256:
            _FOUND[key] = found
    return found


class ShellRunner:
    """Runs shell steps as processes in their own process group."""

    def __init__(self, *, grace: float = 2.0, max_line: int = MAX_LINE) -> None:
        self.grace = grace
        self.max_line = max_line

    async def run(
        self, run: StepRun, log: LogSink, on_start: Callable[[int | None], None]
    ) -> RunResult:
        script = run.action.get("script") or run.action.get("cmd")
        if not isinstance(script, str) or not script.strip():
            return RunResult(FAILED, error="shell action has no script or cmd")
        interpreter = run.action.get("interpreter")
        argv = interpreter_argv(interpreter if isinstance(interpreter, str) else None)
        if _which(argv[0], os.environ.get("PATH", "")) is None:
            return RunResult(FAILED, error=f"interpreter not found: {argv[0]}")

        # Laid over this process's environment by `run_process`, off the event loop.
        env = dict(run.env)
        if "ARTIFACTS_DIR" not in env and "ARTIFACTS_DIR" not in os.environ:
            env["ARTIFACTS_DIR"] = str(run.artifacts_dir)
        markers: dict[str, str] = {}

        def on_stdout(text: str) -> None:
            if text.startswith(OUTPUT_PREFIX):
                markers["output"] = text[len(OUTPUT_PREFIX) :]
            elif text.startswith(STATE_PREFIX):
                markers["state"] = text[len(STATE_PREFIX) :]

        try:
            result = await run_process(
                [*argv, "-c", script],
                cwd=run.workdir,
                env=env,
                inherit_env=True,
                log=log,
                on_start=on_start,
                make_dir=run.artifacts_dir,
                timeout=run.timeout,
                on_stdout=on_stdout,
                grace=self.grace,
                max_line=self.max_line,
            )
        except OSError as exc:
            on_start(None)
            return RunResult(FAILED, error=f"cannot start {argv[0]}: {exc.strerror or exc}")

        if result.timed_out:
            return RunResult(FAILED, error=f"timed out after {run.timeout:g}s", kind="timeout")
        assert result.returncode is not None
        state, state_error = _parse_json(markers.get("state"), STATE_PREFIX)
        if result.returncode != 0:
            reason, exit_code = _describe_exit(result.returncode)
            error = "\n".join([reason, *result.stderr_tail])
            return RunResult(FAILED, error=error, exit_code=exit_code, state=state)
        output, output_error = _parse_json(markers.get("output"), OUTPUT_PREFIX)
        if output_error or state_error:
            return RunResult(
                FAILED, error=output_error or state_error, exit_code=0, state=state
            )
        return RunResult(COMPLETED, output=output, exit_code=0, state=state)


def _parse_json(text: str | None, prefix: str) -> tuple[Any, str | None]:
    if text is None:
        return None, None
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON after {prefix} {exc}"
