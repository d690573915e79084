from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from engine.runners.process import group_alive, terminate_process_group


async def test_terminate_a_lost_steps_group(tmp_path: Path) -> None:
    # A step group started elsewhere: a shell ignoring SIGTERM with a child of its own.
    with subprocess.Popen(  # noqa: ASYNC220 - stands for a group started by another process
        ["bash", "-c", "trap '' TERM; sleep 100 & echo up; wait"],
        start_new_session=True, stdout=subprocess.PIPE, text=True,
    ) as leader:
        assert leader.stdout is not None
        assert leader.stdout.readline() == "up\n"
        pgid = os.getpgid(leader.pid)
        assert pgid == leader.pid and group_alive(pgid)

        started = time.monotonic()
        await terminate_process_group(pgid, grace=0.3)
        assert leader.wait(timeout=5) == -9  # SIGTERM was ignored, SIGKILL was not
        assert time.monotonic() - started < 5

    # Killing it again is harmless.
    await terminate_process_group(pgid, grace=0.1)
