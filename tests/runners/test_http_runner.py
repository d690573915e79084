"""The http runner against a real HTTP server on a free local port."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
from http_echo import EchoServer, echo_server

from engine.compiler.templating import build_context, render_value
from engine.runners import get_runner
from engine.runners.base import RunResult, StepRun
from engine.runners.http import HttpRunner


class Sink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def line(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    with echo_server() as srv:
        yield srv


def step_run(tmp_path: Path, url: str, *, timeout: float | None = None,
             **action: Any) -> StepRun:
    spec = {"type": "http", "url": url, "method": "GET", "headers": {}, "query": {},
            "body": None, "form": None, "accept_status": [], **action}
    return StepRun(
        job_id="job-1", step="call", attempt=1, action_type="http", action=spec, input={},
        workdir=tmp_path, artifacts_dir=tmp_path / "artifacts", env={}, timeout=timeout,
    )


async def call(run: StepRun, runner: HttpRunner | None = None) -> tuple[RunResult, Sink]:
    sink = Sink()
    starts: list[int | None] = []
    result = await (runner or HttpRunner()).run(run, sink, starts.append)
    assert starts == [None]
    return result, sink


def test_http_is_registered() -> None:
    assert isinstance(get_runner("http"), HttpRunner)


async def test_get_with_query_is_encoded_and_json_parsed(
    server: EchoServer, tmp_path: Path
) -> None:
    result, sink = await call(step_run(
        tmp_path, f"{server.url}/echo/items?fixed=1",
        query={"q": "a b&c=d#e", "tag": ["x", "y"], "flag": True, "gone": None, "n": 3},
    ))
    assert result.status == "completed", result.error
    out = result.output
    assert out["status"] == 200
    assert out["headers"]["x-echo"] == "yes"
    assert out["body"]["method"] == "GET"
    assert out["body"]["query"] == [["fixed", "1"], ["q", "a b&c=d#e"], ["tag", "x"],
                                    ["tag", "y"], ["flag", "true"], ["n", "3"]]
    request_line = sink.lines[0][1]
    assert request_line.startswith(f"GET {server.url}/echo/items?fixed=1&q=a+b%26c%3Dd%23e")
    assert ("stdout", "< 200 OK") in sink.lines


async def test_json_body_is_sent_as_json(server: EchoServer, tmp_path: Path) -> None:
    result, _ = await call(step_run(
        tmp_path, f"{server.url}/echo", method="post",
        body={"name": "Ada", "tags": ["x"], "n": 1.5, "ok": None},
    ))
    assert result.status == "completed", result.error
    echo = result.output["body"]
    assert echo["method"] == "POST"
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["body"] == '{"name":"Ada","tags":["x"],"n":1.5,"ok":null}'


async def test_given_content_type_is_kept(server: EchoServer, tmp_path: Path) -> None:
    result, _ = await call(step_run(
        tmp_path, f"{server.url}/echo", method="PUT", body=[1, 2],
        headers={"content-type": "application/vnd.test+json"},
    ))
    echo = result.output["body"]
    assert echo["headers"]["content-type"] == "application/vnd.test+json"
    assert echo["body"] == "[1,2]"


async def test_form_body_is_url_encoded(server: EchoServer, tmp_path: Path) -> None:
    form = {"user": "ada lovelace", "note": "a&b=c", "n": 7, "many": ["1", "2"]}
    result, _ = await call(step_run(tmp_path, f"{server.url}/echo", method="POST", form=form))
    echo = result.output["body"]
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(echo["body"]) == [("user", "ada lovelace"), ("note", "a&b=c"),
                                       ("n", "7"), ("many", "1"), ("many", "2")]


async def test_text_body_is_sent_as_text(server: EchoServer, tmp_path: Path) -> None:
    result, _ = await call(step_run(tmp_path, f"{server.url}/echo", method="POST",
                                    body="hello\nworld"))
    echo = result.output["body"]
    assert echo["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert echo["body"] == "hello\nworld"


async def test_body_and_form_together_are_refused(server: EchoServer, tmp_path: Path) -> None:
    result, _ = await call(step_run(tmp_path, f"{server.url}/echo", method="POST",
                                    body={"a": 1}, form={"b": 2}))
    assert result.status == "failed"
    assert result.error == "http action takes 'body' or 'form', not both"


@pytest.mark.parametrize(("path", "expected"), [
    ("/text", "plain words"),
    ("/bad-json", "{not json"),
])
async def test_non_json_bodies_stay_text(
    server: EchoServer, tmp_path: Path, path: str, expected: str
) -> None:
    result, _ = await call(step_run(tmp_path, server.url + path))
    assert result.status == "completed"
    assert result.output["body"] == expected


async def test_error_status_fails_with_status_and_excerpt(
    server: EchoServer, tmp_path: Path
) -> None:
    result, sink = await call(step_run(tmp_path, f"{server.url}/status/503"))
    assert result.status == "failed"
    assert result.kind == "error"
    assert result.error is not None
    assert result.error.startswith(f"GET {server.url}/status/503 answered 503: status 503 says")
    assert result.error.endswith("…")
    assert len(result.error) < 300
    assert ("stdout", "< 503 Service Unavailable") in sink.lines


async def test_accept_status_makes_an_error_status_succeed(
    server: EchoServer, tmp_path: Path
) -> None:
    result, _ = await call(step_run(tmp_path, f"{server.url}/status/404", accept_status=[404]))
    assert result.status == "completed"
    assert result.output["status"] == 404
    # Codes below 400 succeed whatever accept_status lists.
    result, _ = await call(step_run(tmp_path, f"{server.url}/echo", accept_status=[404]))
    assert result.status == "completed"


async def test_redirects_are_not_followed(server: EchoServer, tmp_path: Path) -> None:
    result, _ = await call(step_run(tmp_path, f"{server.url}/redirect"))
    assert result.status == "completed"
    assert result.output["status"] == 302
    assert result.output["headers"]["location"] == "/echo/redirected"


async def test_output_schema_makes_the_body_the_output(
    server: EchoServer, tmp_path: Path
) -> None:
    result, _ = await call(step_run(tmp_path, f"{server.url}/echo", method="DELETE",
                                    output={"method": {"type": "string"}}))
    assert result.status == "completed"
    assert result.output["method"] == "DELETE"
    assert "status" not in result.output


async def test_body_over_the_limit_fails(server: EchoServer, tmp_path: Path) -> None:
    runner = HttpRunner(max_body=1000)
    result, _ = await call(step_run(tmp_path, f"{server.url}/big?bytes=1000"), runner)
    assert result.status == "completed"
    assert result.output["body"] == "x" * 1000
    result, _ = await call(step_run(tmp_path, f"{server.url}/big?bytes=50000"), runner)
    assert result.status == "failed"
    assert result.error == (
        f"GET {server.url}/big?bytes=50000 answered 200 with a body over 1000 bytes")


async def test_timeout_fails_with_kind_timeout(server: EchoServer, tmp_path: Path) -> None:
    started = time.monotonic()
    result, _ = await call(step_run(tmp_path, f"{server.url}/slow?secs=3", timeout=0.3))
    assert time.monotonic() - started < 2
    assert result.status == "failed"
    assert result.kind == "timeout"
    assert result.error == f"GET {server.url}/slow?secs=3 timed out after 0.3s"


async def test_default_timeout_applies(server: EchoServer, tmp_path: Path) -> None:
    result, _ = await call(step_run(tmp_path, f"{server.url}/slow?secs=3"),
                           HttpRunner(default_timeout=0.2))
    assert result.kind == "timeout"


async def test_connection_refused_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result, _ = await call(step_run(tmp_path, f"http://127.0.0.1:{port}/x"))
    assert result.status == "failed"
    assert result.kind == "error"
    assert result.error is not None
    assert result.error.startswith(f"GET http://127.0.0.1:{port}/x failed: ")
    assert "connect" in result.error.lower()


@pytest.mark.parametrize(("url", "error"), [
    ("file:///etc/passwd", "url scheme must be http or https, not 'file'"),
    ("ftp://127.0.0.1/x", "url scheme must be http or https, not 'ftp'"),
    ("javascript:alert(1)", "url scheme must be http or https, not 'javascript'"),
    ("/relative/path", "url scheme must be http or https, not 'none'"),
    ("http:///nohost", "url 'http:///nohost' names no host"),
    ("http://h/a\r\nX-Injected: 1", "url contains a line break or NUL; refused"),
    ("", "http action has no url"),
])
async def test_unsafe_urls_are_refused(tmp_path: Path, url: str, error: str) -> None:
    result, sink = await call(step_run(tmp_path, url))
    assert result.status == "failed"
    assert result.error == error
    assert sink.lines == [("stderr", f"request refused: {error}")]


@pytest.mark.parametrize("headers", [
    {"X-Name": "ok\r\nX-Injected: 1"},
    {"X-Name": "ok\nX-Injected: 1"},
    {"X-Name\r\nX-Injected": "1"},
    {"X-Name": "nul\x00byte"},
])
async def test_line_breaks_in_headers_are_refused(
    server: EchoServer, tmp_path: Path, headers: dict[str, str]
) -> None:
    result, _ = await call(step_run(tmp_path, f"{server.url}/flaky/crlf?fail=0",
                                    headers=headers))
    assert result.status == "failed"
    assert result.error is not None
    assert "contains CR, LF or NUL; refused" in result.error
    assert server.hits["crlf"] == 0  # nothing was sent


async def test_invalid_header_name_and_method_are_refused(tmp_path: Path) -> None:
    result, _ = await call(step_run(tmp_path, "http://127.0.0.1:1/", headers={"Bad Name": "v"}))
    assert result.error == "invalid header name 'Bad Name'"
    result, _ = await call(step_run(tmp_path, "http://127.0.0.1:1/", method="GET /x HTTP/1.1"))
    assert result.error == "invalid http method 'GET /X HTTP/1.1'"


async def test_secret_headers_are_sent_but_masked_in_the_log(
    server: EchoServer, tmp_path: Path
) -> None:
    headers = {"Authorization": "Bearer s3cret-token", "X-Api-Key": "k3y-value",
               "Cookie": "session=c00kie", "X-Request-Id": "req-42"}
    result, sink = await call(step_run(tmp_path, f"{server.url}/echo", headers=headers))
    sent = result.output["body"]["headers"]
    assert sent["authorization"] == "Bearer s3cret-token"
    assert sent["x-api-key"] == "k3y-value"
    assert sent["cookie"] == "session=c00kie"
    for secret in ("s3cret-token", "k3y-value", "c00kie"):
        assert secret not in sink.text
    assert "> Authorization: ••••••" in sink.text
    assert "> X-Request-Id: req-42" in sink.text


async def test_urlencode_filter_keeps_a_templated_path_segment_whole(
    server: EchoServer, tmp_path: Path
) -> None:
    # `urlencode` leaves "/" alone; the rest of the segment's specials are escaped.
    value = "a b?c=d&e#f%"
    context = build_context(input={"base": server.url, "name": value})
    url = render_value("<< input.base >>/echo/users/<< input.name | urlencode >>", context)
    result, _ = await call(step_run(tmp_path, url))
    assert result.status == "completed", result.error
    path = result.output["body"]["path"]
    assert path == "/echo/users/a%20b%3Fc%3Dd%26e%23f%25"
    assert unquote(path.rsplit("/", 1)[1]) == value
    assert result.output["body"]["query"] == []
