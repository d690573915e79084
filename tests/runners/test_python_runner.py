"""The python runner: real interpreters in real subprocesses."""

from __future__ import annotations

import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.runners import get_runner
from engine.runners.base import RunResult, StepRun
from engine.runners.python import PythonRunner

READ_INPUT = """\
import json, os, sys
data = json.load(sys.stdin)
assert data == json.loads(os.environ["PARTITUR_INPUT"]), "stdin and env differ"
"""


class Sink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def line(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))

    def texts(self, stream: str) -> list[str]:
        return [text for s, text in self.lines if s == stream]


def step_run(tmp_path: Path, *, input: dict[str, Any] | None = None,
             timeout: float | None = None, env: dict[str, str] | None = None,
             **action: Any) -> StepRun:
    workdir = tmp_path / "rev"
    workdir.mkdir(exist_ok=True)
    spec = {"type": "python", "interpreter": sys.executable, **action}
    return StepRun(
        job_id="job-1", step="build", attempt=1, action_type="python", action=spec,
        input=input or {}, workdir=workdir, artifacts_dir=tmp_path / "artifacts",
        env=env or {}, timeout=timeout,
    )


async def run(run_: StepRun) -> tuple[RunResult, Sink]:
    sink = Sink()
    pids: list[int | None] = []
    result = await PythonRunner().run(run_, sink, pids.append)
    assert len(pids) == 1
    return result, sink


def gone(path: str) -> bool:
    return not Path(path).exists()


def test_python_is_registered() -> None:
    assert isinstance(get_runner("python"), PythonRunner)


async def test_input_arrives_on_stdin_and_env_and_output_follows_the_marker(
    tmp_path: Path,
) -> None:
    script = READ_INPUT + textwrap.dedent("""\
        print("hello", data["name"])
        print("OUTPUT: " + json.dumps({"first": True}))
        print("OUTPUT: " + json.dumps({"greeting": "hi " + data["name"], "n": data["n"]}))
    """)
    hostile = "Ada'); import os; os._exit(3) #"
    result, sink = await run(step_run(tmp_path, script=script,
                                      input={"name": hostile, "n": [1, 2]}))
    assert result.status == "completed", result.error
    assert result.output == {"greeting": "hi " + hostile, "n": [1, 2]}
    assert sink.texts("stdout")[0] == f"hello {hostile}"


async def test_output_file_wins_over_the_marker(tmp_path: Path) -> None:
    script = textwrap.dedent("""\
        import json, os
        print('OUTPUT: {"from": "stdout"}')
        with open(os.environ["PARTITUR_OUTPUT"], "w") as f:
            json.dump({"from": "file"}, f)
    """)
    result, _ = await run(step_run(tmp_path, script=script))
    assert result.output == {"from": "file"}


async def test_empty_output_file_falls_back_to_the_marker(tmp_path: Path) -> None:
    script = "import os\nassert os.path.exists(os.environ['PARTITUR_OUTPUT'])\nprint('OUTPUT: 7')"
    result, _ = await run(step_run(tmp_path, script=script))
    assert result.status == "completed", result.error
    assert result.output == 7


async def test_no_output_is_none(tmp_path: Path) -> None:
    result, _ = await run(step_run(tmp_path, script="print('nothing')"))
    assert result.status == "completed"
    assert result.output is None


async def test_invalid_json_in_the_output_file_fails(tmp_path: Path) -> None:
    script = "import os\nopen(os.environ['PARTITUR_OUTPUT'], 'w').write('{nope')"
    result, _ = await run(step_run(tmp_path, script=script))
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("invalid JSON in $PARTITUR_OUTPUT")


async def test_state_marker_sets_state(tmp_path: Path) -> None:
    result, _ = await run(step_run(tmp_path, script='print(\'STATE: {"cursor": 5}\')'))
    assert result.state == {"cursor": 5}


async def test_traceback_ends_the_error_with_line_numbers(tmp_path: Path) -> None:
    script = "x = 1\n\nraise ValueError('boom at three')\n"
    result, sink = await run(step_run(tmp_path, script=script))
    assert result.status == "failed"
    assert result.exit_code == 1
    assert result.error is not None
    lines = result.error.splitlines()
    assert lines[0] == "exit code 1"
    assert lines[-1] == "ValueError: boom at three"
    assert any('build.py", line 3' in line for line in lines)
    assert "ValueError: boom at three" in sink.texts("stderr")


async def test_file_runs_from_the_workspace_folder(tmp_path: Path) -> None:
    scripts = tmp_path / "rev" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (scripts / "job.py").write_text(READ_INPUT + textwrap.dedent("""\
        from helper import double
        print("OUTPUT: " + json.dumps({"cwd": os.getcwd(), "value": double(data["x"])}))
    """))
    result, _ = await run(step_run(tmp_path, file="scripts/job.py", input={"x": 21}))
    assert result.status == "completed", result.error
    assert result.output == {"cwd": str((tmp_path / "rev").resolve()), "value": 42}


@pytest.mark.parametrize(("file", "error"), [
    ("../outside.py", "python file '../outside.py' is outside the workspace folder"),
    ("link.py", "python file 'link.py' is outside the workspace folder"),
    ("ABSOLUTE", "is outside the workspace folder"),
    ("missing.py", "python file 'missing.py' not found in the workspace folder"),
    ("scripts", "python file 'scripts' not found in the workspace folder"),
])
async def test_files_outside_the_workspace_are_refused(
    tmp_path: Path, file: str, error: str
) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("print('OUTPUT: 1')")
    run_ = step_run(tmp_path, file=str(outside) if file == "ABSOLUTE" else file)
    (run_.workdir / "link.py").symlink_to(outside)
    (run_.workdir / "scripts").mkdir()
    result, _ = await run(run_)
    assert result.status == "failed"
    assert result.error is not None
    assert error in result.error


async def test_script_and_file_together_are_refused(tmp_path: Path) -> None:
    result, _ = await run(step_run(tmp_path, script="pass", file="x.py"))
    assert result.error == "python action takes 'script' or 'file', not both"
    result, _ = await run(step_run(tmp_path, script="  "))
    assert result.error == "python action has no script or file"


async def test_interpreter_is_configurable(tmp_path: Path) -> None:
    script = "import sys\nprint('OUTPUT: ' + str(sys.flags.optimize))"
    result, _ = await run(step_run(tmp_path, script=script, interpreter=f"{sys.executable} -O"))
    assert result.output == 1
    result, _ = await run(step_run(tmp_path, script="pass", interpreter="no-such-python3"))
    assert result.status == "failed"
    assert result.error == "interpreter not found: no-such-python3"


async def test_default_interpreter_is_python3_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "python3"
    wrapper.write_text(f"#!/bin/sh\nexport VIA_PATH=yes\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    script = "import json, os\nprint('OUTPUT: ' + json.dumps(os.environ.get('VIA_PATH')))"
    run_ = replace(step_run(tmp_path), action={"type": "python", "script": script})
    result, _ = await run(run_)
    assert result.status == "completed", result.error
    assert result.output == "yes"


async def test_timeout_kills_the_script(tmp_path: Path) -> None:
    result, _ = await run(step_run(tmp_path, script="import time\ntime.sleep(30)", timeout=0.5))
    assert result.status == "failed"
    assert result.kind == "timeout"
    assert result.error == "timed out after 0.5s"


async def test_large_input_goes_through_stdin_only(tmp_path: Path) -> None:
    big = {"blob": "x" * 300_000}
    script = textwrap.dedent("""\
        import json, os, sys
        data = json.load(sys.stdin)
        print("OUTPUT: " + json.dumps([len(data["blob"]), "PARTITUR_INPUT" in os.environ]))
    """)
    result, sink = await run(step_run(tmp_path, script=script, input=big))
    assert result.status == "completed", result.error
    assert result.output == [300_000, False]
    assert any("PARTITUR_INPUT not set" in text for text in sink.texts("stderr"))


async def test_a_script_that_ignores_stdin_still_finishes(tmp_path: Path) -> None:
    result, _ = await run(step_run(tmp_path, script="print('OUTPUT: 1')",
                                   input={"blob": "y" * 2_000_000}))
    assert result.status == "completed", result.error
    assert result.output == 1


async def test_step_env_and_artifacts_dir_are_passed(tmp_path: Path) -> None:
    script = textwrap.dedent("""\
        import json, os, pathlib
        pathlib.Path(os.environ["ARTIFACTS_DIR"], "report.txt").write_text("done")
        print("OUTPUT: " + json.dumps(
            [os.environ["PARTITUR_JOB_ID"], __file__, os.environ["PARTITUR_OUTPUT"]]))
    """)
    run_ = step_run(tmp_path, script=script, env={"PARTITUR_JOB_ID": "job-1"})
    result, _ = await run(run_)
    job_id, script_file, output_file = result.output
    assert job_id == "job-1"
    assert (run_.artifacts_dir / "report.txt").read_text() == "done"
    # The temporary script and output file are gone.
    assert script_file.endswith("build.py")
    assert gone(script_file)
    assert gone(output_file)
