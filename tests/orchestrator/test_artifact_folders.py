"""Steps' artifacts folders: each step finds its own `$ARTIFACTS_DIR` existing and empty,
also when it is a reused folder of an ended step; a step that wrote nothing keeps no
folder; links and folders with files are never reused."""

from __future__ import annotations

import os
from pathlib import Path

from composition_support import runtime, workspace

from engine.artifacts import SpareFolders, list_artifacts, make_step_dir
from engine.core.state import JobStatus

# Every step checks that its folder exists and is empty; odd steps leave a file there.
STEP = """
      s{n}:
        type: shell
        interpreter: sh
        depends_on: [{dep}]
        script: |
          test -d "$ARTIFACTS_DIR" || exit 3
          test -z "$(ls -A "$ARTIFACTS_DIR")" || exit 4
          if [ $(({n} % 2)) -eq 1 ]; then echo {n} > "$ARTIFACTS_DIR/out{n}.txt"; fi
"""
YAML = "tasks:\n  chain:\n    flow:" + "".join(
    STEP.format(n=n, dep=f"s{n - 1}" if n else "") for n in range(8))


async def test_every_step_gets_an_empty_folder_and_keeps_only_what_it_wrote(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws, concurrency=2) as rt:
        for _ in range(2):  # the second job runs on folders the first one left
            job = await rt.orchestrator.create_job("ws", "chain", {})
            state = await rt.orchestrator.wait(job, 60)
            assert state.status is JobStatus.COMPLETED, state.error
            root = tmp_path / "artifacts"
            found = {(a.step, a.name) for a in list_artifacts(root, job)}
            assert found == {(f"s{n}", f"out{n}.txt") for n in range(1, 8, 2)}
            for n in range(8):
                folder = root / job / f"s{n}"
                assert folder.is_dir() == (n % 2 == 1), n
                if n % 2:
                    assert (folder / f"out{n}.txt").read_text() == f"{n}\n"


def test_spare_folders_reuse_only_real_empty_folders(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    (root / "job").mkdir(parents=True)
    spares = SpareFolders(root, keep=4)
    try:
        full = root / "job" / "full"
        full.mkdir()
        (full / "a.txt").write_text("a")
        assert not spares.give_if_empty(full) and (full / "a.txt").exists()
        target = tmp_path / "elsewhere"
        target.mkdir()
        link = root / "job" / "link"
        link.symlink_to(target)
        assert not spares.give_if_empty(link) and link.is_symlink()
        empty = root / "job" / "empty"
        empty.mkdir()
        assert spares.give_if_empty(empty) and not empty.exists()
        # A destination holding files is never replaced: the spare stays for later.
        assert not spares.take(full) and (full / "a.txt").exists()
        make_step_dir(root / "job" / "next")
        assert (root / "job" / "next").is_dir()
        assert os.listdir(spares.dir) == []  # the spare became `next`
        make_step_dir(root / "other-job" / "first")  # no spare: created, parents too
        assert (root / "other-job" / "first").is_dir()
    finally:
        spares.close()
    assert not spares.dir.exists()
