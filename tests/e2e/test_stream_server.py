"""`/v1/stream` on a real server: `propledger serve` (uvicorn) in its own process, an SSE
client (httpx) and a WebSocket client (websockets) over TCP, on an SQLite file.

What TestClient cannot show: uvicorn's WebSocket support is installed, a client that hangs
up ends its stream on the server, and the server still stops promptly on SIGTERM while a
stream is open (streams never end by themselves).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.support import SECRET, auth, program_body, purchase_body, token, trade_body

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROPLEDGER_")}
    env.update(
        {
            "PROPLEDGER_DATABASE_URL": f"sqlite:///{folder / 'propledger.db'}",
            "PROPLEDGER_JWT_SECRET": SECRET,
            "PROPLEDGER_STREAM_HEARTBEAT_SECONDS": "0.2",
            "PYTHONPATH": str(ROOT),
        }
    )
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = folder / "server.log"  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the server exited"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture(scope="module")
def account_id(server: tuple[str, Any]) -> str:
    base, _ = server
    program = program_body()
    assert httpx.post(f"{base}/v1/programs", json=program, headers=auth("admin")).status_code == 201
    bought = httpx.post(
        f"{base}/v1/purchases", json=purchase_body(program["program_id"]), headers=auth("finance")
    )
    assert bought.status_code == 201, bought.text
    return str(bought.json()["account_id"])


def post_trade(base: str, account_id: str) -> dict[str, Any]:
    reply = httpx.post(
        f"{base}/v1/accounts/{account_id}/trades", json=trade_body(), headers=auth("platform")
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def sse_events(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    found = []
    deadline = time.monotonic() + 10
    for line in lines:
        assert time.monotonic() < deadline
        if line.startswith("data: "):
            found.append(json.loads(line[6:]))
            if len(found) == count:
                return found
    raise AssertionError("the stream ended")


def test_sse_over_http_streams_resumes_and_keeps_alive(
    server: tuple[str, Any], account_id: str
) -> None:
    base, _ = server
    url = f"{base}/v1/stream?account_id={account_id}&after=0"
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", url, headers=auth("auditor")) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert sse_events(lines, 1)[0]["type"] == "Opened"
            trade = post_trade(base, account_id)
            event = sse_events(lines, 1)[0]
            assert event["position"] == trade["position"]
            keepalive = next(line for line in lines if line.startswith(":"))
            assert keepalive in (": keepalive", ": ready")
        missed = post_trade(base, account_id)
        headers = {**auth("auditor"), "Last-Event-ID": str(event["position"])}
        with client.stream("GET", url, headers=headers) as response:
            again = sse_events(response.iter_lines(), 1)[0]
            assert again["data"]["trade"]["trade_id"] == missed["trade_id"]


def test_websocket_over_tcp_with_a_token_in_the_query(
    server: tuple[str, Any], account_id: str
) -> None:
    base, _ = server
    url = base.replace("http", "ws") + f"/v1/stream?account_id={account_id}&after=0"
    with ws_connect(f"{url}&token={token(['auditor'])}", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["kind"] == "ready"
        assert json.loads(ws.recv(timeout=10))["type"] == "Opened"
        posted = post_trade(base, account_id)
        positions = []
        while not positions or positions[-1] < posted["position"]:
            message = json.loads(ws.recv(timeout=10))
            if message["kind"] == "event":
                positions.append(message["position"])
        assert positions[-1] == posted["position"]
        assert positions == sorted(set(positions))


def test_the_server_stops_promptly_on_sigterm_with_a_stream_open(
    server: tuple[str, Any], account_id: str
) -> None:
    base, process = server
    ws_url = base.replace("http", "ws") + f"/v1/stream?account_id={account_id}"
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", f"{base}/v1/stream?account_id={account_id}", headers=auth("auditor")
        ) as response,
        ws_connect(f"{ws_url}&token={token(['auditor'])}", open_timeout=10) as ws,
    ):
        ready = json.loads(ws.recv(timeout=10))
        assert ready["kind"] == "ready"
        lines = response.iter_lines()
        assert next(lines) == ": ready"
        assert next(lines) == "retry: 2000"
        position = next(lines)  # `id: N`, the position to resume after
        assert position.startswith("id: ")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # The stream ends with a cutoff that says where to resume (it was dropped after
        # uvicorn's 5 s `timeout_graceful_shutdown`, with no word); then the lifespan's
        # shutdown runs and the signal is re-raised.
        rest = [line for line in lines if line and not line.startswith(":")]
        # Keepalives (`id:` lines, every 0.2 s here) may come first; then the cutoff.
        ended = rest.index("event: cutoff")
        assert all(line.startswith("id: ") for line in rest[:ended]), rest
        cutoff = json.loads(next(line for line in rest[ended:] if line.startswith("data: "))[6:])
        assert (cutoff["code"], cutoff["resume_after"]) == ("shutting_down", int(position[4:]))
        # The WebSocket likewise, then closed with 1001 (going away).
        message = json.loads(ws.recv(timeout=10))
        while message["kind"] == "heartbeat":
            message = json.loads(ws.recv(timeout=10))
        assert (message["kind"], message["code"]) == ("cutoff", "shutting_down")
        assert message["resume_after"] == ready["position"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1001
        # README: the services stop on SIGTERM with status 0 (uvicorn re-raised the
        # signal after its graceful shutdown: 143 from a shell, found by an audit).
        assert process.wait(15) == 0
        assert time.monotonic() - started < 10
    log = process.log_path.read_text()
    assert "Application shutdown complete" in log
    assert "timeout graceful shutdown exceeded" not in log
    assert "GET /v1/stream" in log
    assert "WebSocket /v1/stream" in log
    assert "token=[redacted]" in log
    assert "token=ey" not in log  # a JWT starts with "ey"
