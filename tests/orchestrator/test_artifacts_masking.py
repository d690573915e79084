"""Artifacts (limits, safe names, content types) and secret masking in projections."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from composition_support import runtime, workspace

from engine.artifacts import ArtifactLimits, enforce_limits, find_artifact, list_artifacts
from engine.core.state import JobStatus
from engine.errors import NotFound
from engine.logs.redact import MASK

YAML = """
secrets:
  token: "<< env.COMPOSITION_TOKEN | default('s3cr3t-token-value') >>"
connection_types:
  db:
    host: {type: string, required: true}
    password: {type: string, secret: true}
connections:
  main:
    type: db
    host: localhost
    password: "pw-of-the-db-42"
tasks:
  writes:
    flow:
      files:
        type: shell
        script: |
          mkdir -p "$ARTIFACTS_DIR/sub"
          echo hello > "$ARTIFACTS_DIR/report.txt"
          echo '<script>' > "$ARTIFACTS_DIR/sub/page.html"
          head -c 3000 /dev/zero > "$ARTIFACTS_DIR/big.bin"
          ln -s /etc/passwd "$ARTIFACTS_DIR/link"
  leaks:
    input:
      password: {type: string, secret: true, default: "hunter2-input"}
      db: {type: db, default: main}
    flow:
      echo:
        type: shell
        input:
          token: "<< secret.token >>"
          password: "<< input.password >>"
          db: "<< input.db >>"
        script: |
          echo token=$PARTITUR_INPUT_TOKEN pw=$PARTITUR_INPUT_PASSWORD
          echo db=<< input.db.password >>
          echo "OUTPUT: {\\"seen\\": \\"$PARTITUR_INPUT_PASSWORD\\"}"
"""


async def test_artifact_limits_are_enforced_after_the_step(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITUR_ARTIFACTS_PER_FILE", "2000")
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job = await rt.orchestrator.create_job("ws", "writes", {})
        state = await rt.orchestrator.wait(job, 10)
        assert state.status is JobStatus.FAILED
        error = state.steps["files"].error or ""
        assert "big.bin is 3000 bytes" in error and "link is not a regular file" in error
        root = tmp_path / "artifacts"
        listed = {a.name: a for a in list_artifacts(root, job)}
        assert set(listed) == {"report.txt", "sub/page.html"}
        assert listed["report.txt"].inline and listed["report.txt"].size == 6
        html = listed["sub/page.html"]
        assert html.content_type == "text/html" and not html.inline
        assert html.headers()["Content-Disposition"].startswith("attachment;")
        assert html.to_dict()["url"] == f"/api/jobs/{job}/artifacts/sub/page.html?step=files"
        assert find_artifact(root, job, "sub/page.html").path.read_text() == "<script>\n"
        for bad in ("../files/report.txt", "/etc/passwd", "sub/../report.txt", "a\\b", "",
                    "link", "big.bin"):
            with pytest.raises(NotFound):
                find_artifact(root, job, bad)
        with pytest.raises(NotFound):
            find_artifact(root, job, "report.txt", step="..")


def test_the_per_job_limit_counts_every_step(tmp_path: Path) -> None:
    limits = ArtifactLimits(per_file=1000, per_job=1000)
    for step in ("a", "b"):
        folder = tmp_path / "job" / step
        folder.mkdir(parents=True)
        (folder / "f").write_bytes(os.urandom(600))
        if step == "a":
            assert enforce_limits(tmp_path, "job", "a", limits) == []
    problems = enforce_limits(tmp_path, "job", "b", limits)
    assert problems and "1000 byte limit" in problems[0]
    assert [a.step for a in list_artifacts(tmp_path, "job")] == ["a"]


async def test_secrets_are_masked_in_projections_and_logs(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws) as rt:
        job = await rt.orchestrator.create_job("ws", "leaks", {})
        state = await rt.orchestrator.wait(job, 10)
        assert state.status is JobStatus.COMPLETED, state.error
        row = await rt.store.get_job(job)
        assert row is not None
        assert row.input["password"] == MASK
        assert row.input["db"]["password"] == MASK and row.input["db"]["host"] == "localhost"
        (step,) = await rt.store.get_steps(job)
        assert step.input["token"] == MASK and step.input["password"] == MASK
        assert step.input["db"]["password"] == MASK
        assert step.output == {"seen": MASK}
        text = "\n".join(line.line for line in await rt.logs.read(job))
        assert f"token={MASK} pw={MASK}" in text and f"db={MASK}" in text
        for secret in ("s3cr3t-token-value", "hunter2-input", "pw-of-the-db-42"):
            assert secret not in repr(row) + repr(step) + text
