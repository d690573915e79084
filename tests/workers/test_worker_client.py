"""The remote worker's HTTP client against a real HTTP server: JSON both ways with the
worker token, statuses handed back, and every broken call as `ServerUnreachable`."""

from __future__ import annotations

import pytest
from harness import free_port
from http_echo import echo_server

from engine.workerclient import ServerRefused, ServerUnreachable, WorkerClient


async def test_json_goes_out_with_the_token_and_comes_back_decoded() -> None:
    with echo_server() as server:
        client = WorkerClient(server.url + "/", "tok-123")
        try:
            reply = await client.post("/echo/worker/claim", {"max": 4, "tags": ["a", "é"]})
            assert reply.status_code == 200
            assert reply.headers["x-echo"] == "yes"
            echo = reply.json()
            assert (echo["method"], echo["path"]) == ("POST", "/echo/worker/claim")
            assert echo["headers"]["authorization"] == "Bearer tok-123"
            assert echo["headers"]["content-type"] == "application/json"
            assert echo["body"] == '{"max":4,"tags":["a","é"]}'
            got = (await client.get("/echo/rev", headers={"If-None-Match": '"v1"'})).json()
            assert got["headers"]["if-none-match"] == '"v1"'
        finally:
            await client.aclose()


async def test_an_error_status_is_an_answer_and_raise_for_status_names_it() -> None:
    with echo_server() as server:
        client = WorkerClient(server.url, "t")
        try:
            reply = await client.post("/status/409", {})
            assert reply.status_code == 409
            assert reply.text.startswith("status 409 says no")
            with pytest.raises(ServerRefused, match="409: status 409 says no"):
                reply.raise_for_status()
            (await client.get("/echo/ok")).raise_for_status()
        finally:
            await client.aclose()


async def test_a_server_closing_every_connection_still_answers_every_call() -> None:
    # The echo server speaks HTTP/1.0: it closes the connection after each answer.
    with echo_server() as server:
        client = WorkerClient(server.url, "t")
        try:
            for n in range(30):
                assert (await client.post("/echo/n", {"n": n})).json()["body"] == f'{{"n":{n}}}'
        finally:
            await client.aclose()


async def test_nobody_listening_is_server_unreachable() -> None:
    client = WorkerClient(f"http://127.0.0.1:{free_port()}", "t")
    try:
        with pytest.raises(ServerUnreachable, match="POST /worker/claim: "):
            await client.post("/worker/claim", {})
    finally:
        await client.aclose()


async def test_an_answer_later_than_the_read_timeout_is_server_unreachable() -> None:
    with echo_server() as server:
        client = WorkerClient(server.url, "t", read_timeout=0.2)
        try:
            with pytest.raises(ServerUnreachable, match="GET /slow"):
                await client.get("/slow?secs=1.5")
        finally:
            await client.aclose()
