"""Secret redaction that holds: every encoding of a secret is masked (property test), a
secret written in pieces on one line is masked, and outputs, errors and log lines of a
real run (the CLI, and a server's API) never show a secret."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import orjson
from harness import ServerProcess
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.logs.redact import MASK, Redactor
from engine.runners.process import _LineSplitter

WS = Path(__file__).resolve().parents[1] / "fixtures" / "control_ws"
SECRET = "s3cr3t-t0ken-value"

secrets = st.text(st.characters(blacklist_categories=("Cs",)), min_size=3, max_size=40)
# Text around a secret that cannot be mistaken for (part of) an encoding of it.
filler = st.text(st.sampled_from(" \t:;,.!?()[]{}<>|~^"), max_size=20)


def encodings(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "plain": secret,
        "base64": base64.b64encode(raw).decode(),
        "base64-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64-url": base64.urlsafe_b64encode(raw).decode(),
        "url": quote(secret, safe=""),
        "url-lower": _lower_hex(quote(secret, safe="")),
        "url-plus": quote_plus(secret, safe=""),
        "json": json.dumps(secret)[1:-1],
        "json-unicode": orjson.dumps(secret).decode()[1:-1],
    }


def _lower_hex(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "%":
            out.append(text[i:i + 3].lower())
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(secret=secrets, before=filler, after=filler, form=st.sampled_from(sorted(encodings("x"))))
def test_every_encoding_of_a_secret_is_masked(secret: str, before: str, after: str,
                                              form: str) -> None:
    forms = encodings(secret)
    assume(not any(f in before or f in after for f in forms.values()))
    encoded = forms[form]
    redacted = Redactor([secret]).redact(f"{before}{encoded}{after}")
    assert encoded not in redacted
    assert MASK in redacted
    assert redacted.startswith(before) and redacted.endswith(after)


@settings(max_examples=200, deadline=None)
@given(secret=secrets, before=filler, after=filler, cuts=st.lists(st.integers(0, 200),
                                                                    max_size=6))
def test_a_secret_written_in_pieces_of_one_line_is_masked(
    secret: str, before: str, after: str, cuts: list[int]
) -> None:
    # The runner's line splitter joins the pieces of a line before the line is redacted.
    assume("\n" not in secret and "\r" not in secret)
    assume(not any(f in before or f in after for f in encodings(secret).values()))
    data = f"{before}{secret}{after}\n".encode()
    redactor = Redactor([secret])
    lines: list[str] = []
    splitter = _LineSplitter(lambda text: lines.append(redactor.redact(text)), 1024 * 1024)
    previous = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        splitter.feed(data[previous:cut])
        previous = cut
    splitter.feed(data[previous:])
    splitter.finish()
    assert lines == [f"{before}{MASK}{after}"]


def test_each_line_of_a_multi_line_secret_is_masked() -> None:
    key = ("-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\n"
           "-----END KEY-----")
    redactor = Redactor([key])
    assert redactor.redact("line: MIIEvQIBADANBgkqhkiG9w0BAQEF") == f"line: {MASK}"
    assert redactor.redact(key) == MASK
    assert "AASCBKcw" not in redactor.redact("x AASCBKcwggSjAgEAAoIBAQC7 y")


def test_a_real_run_shows_no_secret_in_logs_outputs_or_errors() -> None:
    # The step prints half the secret, sleeps, then the rest of the same line.
    streamed = subprocess.run(
        [sys.executable, "-m", "server.cli", "run", "leaky", "--workspace", str(WS)],
        capture_output=True, text=True, timeout=60)
    assert streamed.returncode == 1
    assert "leak | split: •••••• end" in streamed.stdout
    assert "leak | b64: ••••••" in streamed.stdout
    assert "fail | failing with ••••••" in streamed.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "server.cli", "run", "leaky", "--workspace", str(WS), "--json"],
        capture_output=True, text=True, timeout=60)
    job = json.loads(as_json.stdout)
    steps = {s["step_name"]: s for s in job["steps"]}
    assert steps["leak"]["output"] == {"token": MASK, "b64": MASK}
    assert "failing with ••••••" in steps["fail"]["error_message"]
    b64 = base64.b64encode(SECRET.encode()).decode()
    for text in (streamed.stdout, streamed.stderr, as_json.stdout, as_json.stderr):
        assert SECRET not in text and b64 not in text and SECRET[:9] + SECRET[9:] not in text


def test_through_a_server_no_secret_in_logs_outputs_or_errors(
        make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(workspaces={"main": WS})
    b64 = base64.b64encode(SECRET.encode()).decode()
    with httpx.Client(base_url=server.url, timeout=15.0) as client:
        job_id = client.post("/api/workspaces/main/tasks/leaky/execute",
                             json={}).json()["job_id"]
        deadline = time.monotonic() + 30
        while (job := client.get(f"/api/jobs/{job_id}").json())["status"] != "failed":
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        logs = client.get(f"/api/jobs/{job_id}/logs").json()["logs"]
        lines = [orjson.loads(line)["line"] for line in logs.splitlines() if line.strip()]
        assert f"split: {MASK} end" in lines  # the secret came in two writes
        assert f"b64: {MASK}" in lines
        steps = {s["step_name"]: s for s in job["steps"]}
        assert steps["leak"]["output"] == {"token": MASK, "b64": MASK}
        assert f"failing with {MASK}" in steps["fail"]["error_message"]
        events = client.get(f"/api/jobs/{job_id}/events").text
        for text in (logs, orjson.dumps(job).decode(), events):
            assert SECRET not in text and b64 not in text
