"""The python runner: a step's inline `script` or workspace `file` run by a Python interpreter.

The input never becomes code: the step's input arrives as one JSON object on stdin and in
`PARTITUR_INPUT`. An inline script is written to a temporary `<step>.py` and run as a file,
so tracebacks carry line numbers; a `file` is resolved inside the workspace revision folder
and refused when it points outside it. The interpreter is `python3` from `PATH` unless the
action names another (split like a shell word list: `python3 -X dev`, `/opt/venv/bin/python`).

Output: the JSON in the file named by `PARTITUR_OUTPUT` when the script wrote one, else the
JSON after the last `OUTPUT:` line of stdout; the last `STATE:` line sets the task's state,
as for shell steps.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from engine.runners.base import COMPLETED, FAILED, LogSink, RunResult, StepRun
from engine.runners.process import MAX_LINE, run_process
from engine.runners.shell import (
    OUTPUT_PREFIX,
    STATE_PREFIX,
    _describe_exit,
    _parse_json,
)

DEFAULT_INTERPRETER = "python3"
# Linux refuses to exec with one environment string beyond 128 KiB (MAX_ARG_STRLEN).
MAX_ENV_INPUT = 100 * 1024
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def resolve_file(workdir: Path, file: str) -> Path:
    """`file` inside `workdir`; `ValueError` when it escapes it or is not a file."""
    root = workdir.resolve()
    path = (root / file).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"python file {file!r} is outside the workspace folder")
    if not path.is_file():
        raise ValueError(f"python file {file!r} not found in the workspace folder")
    return path


def input_json(value: Mapping[str, Any]) -> bytes:
    """The step input as the JSON the script reads."""
    return orjson.dumps(dict(value), default=str)


class PythonRunner:
    """Runs python steps as processes in their own process group."""

    def __init__(self, *, grace: float = 2.0, max_line: int = MAX_LINE) -> None:
        self.grace = grace
        self.max_line = max_line

    async def run(
        self, run: StepRun, log: LogSink, on_start: Callable[[int | None], None]
    ) -> RunResult:
        script, file = run.action.get("script"), run.action.get("file")
        if script and file:
            return _failed(on_start, "python action takes 'script' or 'file', not both")
        if not (isinstance(script, str) and script.strip()) and not isinstance(file, str):
            return _failed(on_start, "python action has no script or file")
        interpreter = run.action.get("interpreter")
        argv = shlex.split(interpreter) if isinstance(interpreter, str) and interpreter.strip() \
            else [DEFAULT_INTERPRETER]
        if shutil.which(argv[0]) is None:
            return _failed(on_start, f"interpreter not found: {argv[0]}")
        with tempfile.TemporaryDirectory(prefix="partitur-py-") as tmp:
            if isinstance(file, str):
                try:
                    program = resolve_file(run.workdir, file)
                except ValueError as exc:
                    return _failed(on_start, str(exc))
            else:
                program = Path(tmp) / f"{_UNSAFE_NAME.sub('_', run.step) or 'script'}.py"
                program.write_text(str(script), encoding="utf-8")
            output_file = Path(tmp) / "output.json"
            output_file.touch()
            return await self._run(run, argv, program, output_file, log, on_start)

    async def _run(
        self,
        run: StepRun,
        argv: list[str],
        program: Path,
        output_file: Path,
        log: LogSink,
        on_start: Callable[[int | None], None],
    ) -> RunResult:
        data = input_json(run.input)
        env = {**os.environ, **run.env, "PARTITUR_OUTPUT": str(output_file)}
        env.setdefault("ARTIFACTS_DIR", str(run.artifacts_dir))
        env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the live log as printed
        env.setdefault("PYTHONIOENCODING", "utf-8")
        if len(data) <= MAX_ENV_INPUT:
            env["PARTITUR_INPUT"] = data.decode()
        else:
            log.line("stderr", f"input is {len(data)} bytes: PARTITUR_INPUT not set, read stdin")
        markers: dict[str, str] = {}

        def on_stdout(text: str) -> None:
            if text.startswith(OUTPUT_PREFIX):
                markers["output"] = text[len(OUTPUT_PREFIX) :]
            elif text.startswith(STATE_PREFIX):
                markers["state"] = text[len(STATE_PREFIX) :]

        try:
            result = await run_process(
                [*argv, str(program)],
                cwd=run.workdir,
                env=env,
                log=log,
                on_start=on_start,
                make_dir=run.artifacts_dir,
                timeout=run.timeout,
                on_stdout=on_stdout,
                grace=self.grace,
                max_line=self.max_line,
                stdin=data,
            )
        except OSError as exc:
            return _failed(on_start, f"cannot start {argv[0]}: {exc.strerror or exc}")

        if result.timed_out:
            return RunResult(FAILED, error=f"timed out after {run.timeout:g}s", kind="timeout")
        assert result.returncode is not None
        state, state_error = _parse_json(markers.get("state"), STATE_PREFIX)
        if result.returncode != 0:
            reason, exit_code = _describe_exit(result.returncode)
            error = "\n".join([reason, *result.stderr_tail])
            return RunResult(FAILED, error=error, exit_code=exit_code, state=state)
        output, output_error = _read_output(output_file, markers.get("output"))
        if output_error or state_error:
            return RunResult(FAILED, error=output_error or state_error, exit_code=0, state=state)
        return RunResult(COMPLETED, output=output, exit_code=0, state=state)


def _read_output(output_file: Path, marker: str | None) -> tuple[Any, str | None]:
    try:
        written = output_file.read_bytes()
    except OSError:
        written = b""  # the script removed it: fall back to stdout
    if not written.strip():
        return _parse_json(marker, OUTPUT_PREFIX)
    try:
        return orjson.loads(written), None
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON in $PARTITUR_OUTPUT: {exc}"


def _failed(on_start: Callable[[int | None], None], error: str) -> RunResult:
    on_start(None)
    return RunResult(FAILED, error=error)
