"""The remote worker's HTTP client for its server's worker API (`engine/worker.py`).

A busy worker makes about one call per step (its result, which claims the next step),
so the client's own CPU per call is part of what a remote step costs: aiohttp's session
spends ~0.3 ms of CPU per JSON call here, httpx's ~1.2 ms (its pool checks every
connection on each request, and each request looks up the running async library).
Bodies are JSON (orjson) both ways; an answer is read whole before it is returned.
A connection refused, reset or timed out raises `ServerUnreachable`; every answer, any
status, comes back as a `Reply`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

JSON_HEADERS = {"Content-Type": "application/json"}
KEEPALIVE = 3.0  # seconds an idle connection is kept


class ServerUnreachable(Exception):
    """No answer from the server: it could not be reached, or the call broke off."""


class ServerRefused(Exception):
    """The server answered with an error status where a success was needed."""


class Reply:
    """A status, the headers and the whole body of an answer."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise ServerRefused(f"{self.status_code}: {self.text[:200]}")


class WorkerClient:
    """Keep-alive connections to one server, with the worker token on every call."""

    def __init__(self, server: str, token: str, *, connect_timeout: float = 10.0,
                 read_timeout: float = 30.0) -> None:
        self.base = server.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout,
            sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the loop it was made on.
        if self._session is None:
            # An idle connection is closed here before a server would close it (uvicorn:
            # after 5 s), so that no call is sent on a connection being closed.
            connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  connector=connector)
        return self._session

    async def post(self, path: str, json: Any) -> Reply:
        return await self._call("POST", path, data=orjson.dumps(json), headers=JSON_HEADERS)

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return await self._call("GET", path, headers=dict(headers or {}))

    async def _call(self, method: str, path: str, **kwargs: Any) -> Reply:
        try:
            async with self._open().request(method, self.base + path, **kwargs) as answer:
                content = await answer.read()
                return Reply(answer.status, answer.headers, content)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServerUnreachable(f"{method} {path}: {_describe(exc)}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
