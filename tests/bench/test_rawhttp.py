"""The benchmarks' lean HTTP client against a real uvicorn server: answers, and kept
connections the server closed while they were idle are replaced, not reported as
failures."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.rawhttp import Client

KEEP_ALIVE = 1  # seconds: uvicorn closes a connection idle this long (its default is 5)


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    await asyncio.sleep(0.02)  # long enough for the concurrent requests to overlap
    return JSONResponse({"method": request.method, "path": request.url.path,
                         "query": request.url.query, "length": len(body)})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_kept_connections_closed_by_the_server_are_replaced() -> None:
    app = Starlette(routes=[Route("/echo", _echo, methods=["GET", "POST"])])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           timeout_keep_alive=KEEP_ALIVE, log_level="error",
                                           lifespan="off"))
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.01)
        async with Client(f"http://127.0.0.1:{port}", connections=4) as http:
            first = await asyncio.gather(*(http.get("/echo", {"n": i}) for i in range(4)))
            assert [r.json()["query"] for r in first] == [f"n={i}" for i in range(4)]
            assert len(http._idle) == 4  # four kept connections
            await asyncio.sleep(KEEP_ALIVE * 2.5)  # the server closes all four
            again = await http.post("/echo", {"a": 1})
            again.raise_for_status()
            assert again.json() == {"method": "POST", "path": "/echo", "query": "",
                                    "length": len(b'{"a":1}')}
            more = await asyncio.gather(*(http.get("/echo") for _ in range(4)))
            assert [r.status_code for r in more] == [200] * 4
    finally:
        server.should_exit = True
        await serving
