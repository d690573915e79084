"""Property: no input value escapes shell quoting.

Any text rendered into a shell body through `<< >>` reaches the command as exactly one
argument, byte for byte, under bash and under sh (dash); nothing it contains is executed.
A value with a NUL byte is refused, since no shell argument can hold one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.compiler.templating import build_context, render_shell
from engine.errors import RenderError

# Each fragment would create the file `pwned` if it were spliced into the script unquoted.
ATTACKS = [
    "$(touch pwned)", "`touch pwned`", "'; touch pwned; '", "\"; touch pwned; \"",
    "; touch pwned", "&& touch pwned", "| touch pwned", "\ntouch pwned\n", "$((1))",
    "${IFS}", "'", "\"", "\\", "$", "!", "*", "~", "%s", "-n", "--", "\x00", "\t", " ",
    "<< input.v >>", "<% if 1 %>", "ü", "日本", "🎻", "\r", "\x1b[0m", "#",
]

values = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(ATTACKS), st.text(max_size=5)), max_size=8).map(
        "".join
    ),
)

SCRIPT = "printf '%s' << input.v >> > out.txt; touch done\n"


def _run(shell: str, value: str, tmp: Path) -> None:
    context = build_context(input={"v": value})
    try:
        script = render_shell(SCRIPT, context)
    except RenderError as exc:
        assert "\x00" in value
        assert "NUL" in str(exc)
        return
    assert "\x00" not in value
    workdir = tmp / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    result = subprocess.run(
        [shell, "-c", script], cwd=workdir, capture_output=True, timeout=10,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 0, result.stderr
    # The value arrived as exactly one argument, and nothing else ran.
    assert (workdir / "out.txt").read_bytes() == value.encode()
    assert sorted(p.name for p in workdir.iterdir()) == ["done", "out.txt"]


SHELLS = [s for s in ("bash", "sh") if shutil.which(s)]


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
@example(value="$(touch pwned)")
@example(value="`touch pwned`")
@example(value="'; touch pwned; '")
@example(value="a\nb\n\n")
@example(value="nul\x00byte")
@example(value="")
def test_no_value_escapes_quoting(shell: str, value: str, tmp_path: Path) -> None:
    _run(shell, value, tmp_path)


def test_both_shells_are_present() -> None:
    assert SHELLS == ["bash", "sh"]
