"""`engine.runners.spawn`: a program started with `posix_spawn` gets what `Popen` gives it.

Each check runs the same probe once through `spawn_program` and once through
`subprocess.Popen(start_new_session=True)`, and compares what the child saw: working
directory, environment, session and process group, open descriptors, blocked and
ignored signals. Then the errors: a missing program, a missing working directory, a
file that is not executable.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from harness import require

from engine.runners import spawn
from engine.runners.process import run_process


@pytest.fixture(autouse=True)
def _posix_spawn_here() -> None:
    require("posix_spawn", spawn.available(), "needs Linux with glibc 2.34 or later")


# The shell looks at itself with builtins only (a child reading /proc/$$ would race the
# shell's own forks), and ends by becoming `ls` of its own descriptors (the same process:
# the same descriptors, plus the one `ls` reads them through).
PROBE = (
    'echo "cwd=$(pwd)"; echo "foo=$FOO"; '
    'echo "sid=$(ps -o sid= -p $$ | tr -d " ") pgid=$(ps -o pgid= -p $$ | tr -d " ") pid=$$"; '
    'while read -r key value; do case $key in SigBlk:|SigIgn:) '
    'printf "%s\\t%s\\n" "$key" "$value";; esac; done < /proc/$$/status; '
    'yes | head -1 >/dev/null; echo pipe-ok; read x; echo "stdin=[$x]"; '
    'printf "fds="; exec ls -m /proc/self/fd'
)
ENV = {"FOO": "bar baz", "PATH": os.environ.get("PATH", os.defpath)}


def _through_spawn(cwd: Path, stdin: int | None = None) -> tuple[str, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn.spawn_program(["sh", "-c", PROBE], cwd=cwd, env=ENV, stdin=stdin,
                                  stdout=w, stderr=w)
    finally:
        os.close(w)
    assert pid is not None
    with os.fdopen(r, "rb") as out:
        text = out.read().decode()
    os.waitpid(pid, 0)
    return text.replace(f"={pid}", "=PID").replace(f" {pid}", " PID"), pid


def _through_popen(cwd: Path) -> str:
    proc = subprocess.run(["sh", "-c", PROBE], cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
                          capture_output=True, start_new_session=True, check=False)
    # The probe cannot know its own pid in advance: normalise it as above.
    text = proc.stdout.decode()
    pid = text.split("pid=")[1].split()[0]
    return text.replace(f"={pid}", "=PID").replace(f" {pid}", " PID")


def _standard_signals_only(text: str) -> str:
    """glibc's `posix_spawn` leaves its own two signals (32, 33: threads' cancel and
    set-id) ignored in the child; the program's C library sets them up again itself."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("SigBlk:", "SigIgn:")):
            name, mask = line.split(":\t")
            line = f"{name}:\t{int(mask, 16) & 0x7FFFFFFF:016x}"
        lines.append(line)
    return "\n".join(lines)


def test_the_child_sees_what_popen_gives_it(tmp_path: Path) -> None:
    spawned, _ = _through_spawn(tmp_path)
    spawned = _standard_signals_only(spawned)
    assert spawned == _standard_signals_only(_through_popen(tmp_path))
    assert f"cwd={tmp_path}" in spawned
    assert "foo=bar baz" in spawned
    assert "sid=PID pgid=PID pid=PID" in spawned  # its own session and group
    assert "fds=0, 1, 2, 3" in spawned  # nothing of this process leaks in (3: `ls`'s own)
    assert "SigBlk:\t0000000000000000" in spawned
    # SIGPIPE back to its default; what else this process ignores stays ignored, as with
    # Popen (a server started under `nohup` passes its ignored SIGHUP on).
    ignored = int(spawned.split("SigIgn:\t")[1].split("\n")[0], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert "pipe-ok" in spawned and "stdin=[]" in spawned  # stdin is /dev/null
    assert "SigIgn:\t" in _through_popen(tmp_path)


def test_an_inherited_descriptor_does_not_leak(tmp_path: Path) -> None:
    leaky = os.open(tmp_path / "leak", os.O_CREAT | os.O_WRONLY)  # not O_CLOEXEC
    os.set_inheritable(leaky, True)
    try:
        spawned, _ = _through_spawn(tmp_path)
    finally:
        os.close(leaky)
    assert "fds=0, 1, 2, 3\n" in spawned


def test_stdin_from_a_pipe(tmp_path: Path) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    os.write(w, b"hello\n")
    os.close(w)
    try:
        spawned, _ = _through_spawn(tmp_path, stdin=r)
    finally:
        os.close(r)
    assert "stdin=[hello]" in spawned


def test_errors_name_what_is_missing(tmp_path: Path) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        with pytest.raises(FileNotFoundError) as missing:
            spawn.spawn_program(["no-such-program-here"], cwd=tmp_path, env=ENV, stdin=None,
                                stdout=w, stderr=w)
        assert missing.value.filename == "no-such-program-here"
        with pytest.raises(FileNotFoundError) as gone:
            spawn.spawn_program(["true"], cwd=tmp_path / "gone", env=ENV, stdin=None,
                                stdout=w, stderr=w)
        assert gone.value.filename == str(tmp_path / "gone")
        plain = tmp_path / "plain.txt"
        plain.write_text("not a program")
        with pytest.raises(PermissionError):
            spawn.spawn_program([str(plain)], cwd=tmp_path, env=ENV, stdin=None,
                                stdout=w, stderr=w)
    finally:
        os.close(r)
        os.close(w)


def test_low_descriptors_are_left_to_popen(tmp_path: Path) -> None:
    assert spawn.spawn_program(["true"], cwd=tmp_path, env=ENV, stdin=None, stdout=1,
                               stderr=2) is None


async def test_run_process_reports_exit_codes_and_signals(tmp_path: Path) -> None:
    class Lines:
        def __init__(self) -> None:
            self.lines: list[tuple[str, str]] = []

        def line(self, stream: str, text: str) -> None:
            self.lines.append((stream, text))

    sink = Lines()
    result = await run_process(["sh", "-c", "echo hi; exit 3"], cwd=tmp_path, env=ENV,
                               log=sink, on_start=lambda pid: None)
    assert result.returncode == 3 and sink.lines == [("stdout", "hi")]
    killed = await run_process(["sh", "-c", "kill -9 $$"], cwd=tmp_path, env=ENV, log=sink,
                               on_start=lambda pid: None)
    assert killed.returncode == -9
    with pytest.raises(FileNotFoundError):
        await run_process(["no-such-program-here"], cwd=tmp_path, env=ENV, log=sink,
                          on_start=lambda pid: None)
