"""`/v1/stream` end to end: the real app (SQLite file and PostgreSQL) through TestClient.

TestClient streams an SSE reply chunk by chunk and hands the app's next chunk over only
when the test reads (a zero-size buffer), so a test that stops reading is a slow client.
Heartbeats come every 0.2 s here, which bounds every read loop in time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.stream import Owners, StreamConfig, StreamHub
from tests.support import (
    BACKENDS,
    CLASSIC_PROGRAM,
    assert_error,
    auth,
    backend_url,
    make_app,
    program_body,
    purchase_body,
    token,
    trade_body,
    uid,
)

ADMIN = auth("admin")
FINANCE = auth("finance")
PLATFORM = auth("platform")
AUDITOR = auth("auditor")
CONFIG = StreamConfig(heartbeat_seconds=0.2, recheck_seconds=1.0)
READ_SECONDS = 10.0


@pytest.fixture(scope="module", params=BACKENDS)
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    app = make_app(backend_url(request, tmp_path_factory))
    app.state.streams = StreamHub(CONFIG)
    with TestClient(app) as started:
        yield started


@pytest.fixture
def hub(client: TestClient) -> Iterator[StreamHub]:
    """The app's stream hub; a test may change its config, which is put back afterwards."""
    streams: StreamHub = client.app.state.streams  # type: ignore[attr-defined]
    yield streams
    streams.config = CONFIG


@pytest.fixture(scope="module")
def program_id(client: TestClient) -> str:
    body = program_body()
    assert client.post("/v1/programs", json=body, headers=ADMIN).status_code == 201
    return str(body["program_id"])


def open_account(client: TestClient, program_id: str, trader_id: str | None = None) -> str:
    body = purchase_body(program_id, trader_id=trader_id)
    response = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert response.status_code == 201, response.text
    return str(response.json()["account_id"])


def post_trade(client: TestClient, account_id: str, **changes: Any) -> dict[str, Any]:
    body = trade_body(**changes)
    response = client.post(f"/v1/accounts/{account_id}/trades", json=body, headers=PLATFORM)
    assert response.status_code == 201, response.text
    reply: dict[str, Any] = response.json()
    return reply


class SSE:
    """Reads an SSE reply block by block (a block ends with a blank line)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def block(self) -> dict[str, Any] | None:
        block: dict[str, Any] = {"comments": []}
        for line in self.lines:
            if line == "":
                return block
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                block["comments"].append(value)
            else:
                block[name] = value
        return None  # the stream ended

    def events(self, count: int, timeout: float = READ_SECONDS) -> list[dict[str, Any]]:
        """The next `count` event messages (heartbeats skipped), as JSON with their id."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            assert time.monotonic() < deadline, f"got {len(found)} of {count} events: {found}"
            block = self.block()
            assert block is not None, f"the stream ended after {len(found)} events"
            if "data" in block:
                message = json.loads(block["data"])
                assert block.get("event") is None, block
                assert int(block["id"]) == message["position"]
                found.append(message)
        return found

    def nothing_more(self, seconds: float = 0.5) -> int:
        """Only heartbeats for `seconds`; returns the last heartbeat's id."""
        deadline = time.monotonic() + seconds
        last = -1
        while time.monotonic() < deadline:
            block = self.block()
            assert block is not None, "the stream ended"
            assert "data" not in block, f"unexpected message: {block}"
            if "keepalive" in block["comments"]:
                last = int(block["id"])
        return last


def stream(client: TestClient, query: str, headers: dict[str, str] | None = None) -> Any:
    return client.stream("GET", f"/v1/stream?{query}", headers=headers or AUDITOR)


def ws_url(query: str, roles: tuple[str, ...] = ("auditor",), **claims: Any) -> str:
    return f"/v1/stream?token={token(list(roles), **claims)}&{query}"


def ws_events(ws: Any, count: int) -> list[dict[str, Any]]:
    found = []
    deadline = time.monotonic() + READ_SECONDS
    while len(found) < count:
        assert time.monotonic() < deadline, found
        message = json.loads(ws.receive_text())
        if message["kind"] == "event":
            found.append(message)
        else:
            assert message["kind"] == "heartbeat", message
    return found


def ws_refusal(client: TestClient, url: str) -> tuple[dict[str, Any], int]:
    """The error message a refused WebSocket gets, and its close code."""
    with client.websocket_connect(url) as ws:
        refusal: dict[str, Any] = json.loads(ws.receive_text())
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    return refusal, closed.value.code


def ws_until_heartbeat(ws: Any) -> dict[str, Any]:
    """The next message must be a heartbeat: nothing else is pending."""
    message: dict[str, Any] = json.loads(ws.receive_text())
    assert message["kind"] == "heartbeat", message
    return message


# Server-Sent Events ------------------------------------------------------------------------


def test_sse_streams_an_accounts_new_trades_in_order(client: TestClient, program_id: str) -> None:
    account_id = open_account(client, program_id)
    with stream(client, f"account_id={account_id}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = SSE(response)
        ready = sse.block()
        assert ready is not None
        assert "ready" in ready["comments"]
        start = int(ready["id"])
        replies = [post_trade(client, account_id, profit=f"{10 + n}.00") for n in range(3)]
        events = sse.events(3)
        assert all(start < event["position"] for event in events)
        assert [event["position"] for event in events] == [reply["position"] for reply in replies]
        assert [event["type"] for event in events] == ["TradeClosed"] * 3
        assert [event["data"]["trade"]["profit"] for event in events] == [
            "10.00",
            "11.00",
            "12.00",
        ]
        first = events[0]
        assert first["kind"] == "event"
        assert first["aggregate"] == "TradingAccount"
        assert first["account_id"] == account_id
        assert first["version"] == 2
        assert first["actor"] == "tester"
        assert first["data"]["board"]["balance"] == "100010.00"
        sse.nothing_more(0.3)


def test_sse_reconnects_from_last_event_id_and_gets_exactly_the_missed_events(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)
    post_trade(client, account_id)
    with stream(client, f"account_id={account_id}&after=0") as response:
        seen = SSE(response).events(2)  # the opening and the first trade
    assert [event["type"] for event in seen] == ["Opened", "TradeClosed"]
    last_id = seen[-1]["position"]

    missed = [post_trade(client, account_id)["trade_id"] for _ in range(3)]
    resumed = {**AUDITOR, "Last-Event-ID": str(last_id)}
    # The header wins over the URL's `after` (an EventSource reconnects with both).
    with stream(client, f"account_id={account_id}&after=0", resumed) as response:
        sse = SSE(response)
        again = sse.events(3)
        assert [event["data"]["trade"]["trade_id"] for event in again] == missed
        assert again[0]["position"] > last_id
        heartbeat_id = sse.nothing_more(0.3)
        assert heartbeat_id >= again[-1]["position"]
        live = post_trade(client, account_id)
        assert sse.events(1)[0]["data"]["trade"]["trade_id"] == live["trade_id"]


def test_sse_sends_keepalive_comments_carrying_the_resume_position(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)
    with stream(client, f"account_id={account_id}&after=0") as response:
        sse = SSE(response)
        opened = sse.events(1)[0]
        block = sse.block()
        assert block is not None
        assert block["comments"] == ["keepalive"]
        assert "data" not in block
        assert int(block["id"]) >= opened["position"]


def test_sse_types_filter_streams_only_the_named_events(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)
    query = f"account_id={account_id}&types=RuleBreached,TradingAccount.PhasePassed"
    with stream(client, query) as response:
        sse = SSE(response)
        post_trade(client, account_id, profit="100.00")
        post_trade(client, account_id, profit="-6000.00")  # through the 5% daily floor
        breach = sse.events(1)[0]
        assert breach["type"] == "RuleBreached"
        assert breach["data"]["rule"] == "max_daily_loss"
        sse.nothing_more(0.3)


def test_a_slow_sse_client_is_cut_off_and_resumes_without_a_gap(
    client: TestClient, program_id: str, hub: StreamHub
) -> None:
    hub.config = replace(CONFIG, queue_size=2, stall_seconds=0.3, close_grace_seconds=10)
    account_id = open_account(client, program_id)
    trades = [trade_body(profit="1.00") for _ in range(12)]
    with stream(client, f"account_id={account_id}") as response:
        sse = SSE(response)
        assert sse.block() is not None  # ready
        for item in trades:
            item["account_id"] = account_id
        batch = client.post("/v1/trades:batch", json={"trades": trades}, headers=PLATFORM)
        assert batch.status_code == 200, batch.text
        time.sleep(1.0)  # not reading: the server's queue (2) fills and stays full
        received: list[dict[str, Any]] = []
        while (block := sse.block()) is not None:
            if block.get("event") == "cutoff":
                cutoff = json.loads(block["data"])
                break
            if "data" in block:
                received.append(json.loads(block["data"]))
        else:
            pytest.fail("the stream ended without a cutoff message")
        assert sse.block() is None, "the stream goes on after the cutoff"
    assert cutoff["kind"] == "cutoff"
    assert cutoff["code"] == "slow_consumer"
    assert len(received) < len(trades)
    assert cutoff["resume_after"] == received[-1]["position"]
    assert int(block["id"]) == cutoff["resume_after"]

    hub.config = CONFIG
    query = f"account_id={account_id}&after={cutoff['resume_after']}"
    with stream(client, query) as response:
        sse = SSE(response)
        rest = sse.events(len(trades) - len(received))
        sse.nothing_more(0.3)
    got = [event["data"]["trade"]["trade_id"] for event in received + rest]
    assert got == [item["trade_id"] for item in trades]


def test_a_stream_ends_when_its_token_expires_and_resumes_with_a_new_one(
    client: TestClient, program_id: str
) -> None:
    """A REST request with the token is refused from its `exp` on; so is the stream then
    (it went on for ever: stream audit): a cutoff `token_expired` with the position to
    resume after, over SSE, and on a WebSocket that message and close code 4401."""
    import jwt

    from tests.support import SECRET

    def expiring(seconds: float) -> str:
        claims = {"sub": "short", "roles": ["auditor"], "exp": int(time.time() + seconds)}
        return str(jwt.encode(claims, SECRET, algorithm="HS256"))

    account_id = open_account(client, program_id)
    headers = {"Authorization": f"Bearer {expiring(2)}"}
    with stream(client, f"account_id={account_id}&after=0", headers) as response:
        sse = SSE(response)
        assert sse.events(1)[0]["type"] == "Opened"
        deadline = time.monotonic() + READ_SECONDS  # heartbeats come every 0.2 s
        while (block := sse.block()) is not None and block.get("event") != "cutoff":
            assert time.monotonic() < deadline, "the stream outlived its token"
        assert block is not None, "the stream ended without a cutoff message"
        cutoff = json.loads(block["data"])
        assert (cutoff["code"], cutoff["resume_after"]) == ("token_expired", int(block["id"]))
        assert sse.block() is None

    url = f"/v1/stream?token={expiring(2)}&account_id={account_id}&after=0"
    with client.websocket_connect(url) as ws:
        message = json.loads(ws.receive_text())
        deadline = time.monotonic() + READ_SECONDS
        while message["kind"] != "cutoff":
            assert time.monotonic() < deadline, "the stream outlived its token"
            message = json.loads(ws.receive_text())
        assert message["code"] == "token_expired"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 4401


def test_a_trader_without_filters_streams_only_their_own_accounts(
    client: TestClient, program_id: str
) -> None:
    alice, bob = uid("trader-"), uid("trader-")
    alices = open_account(client, program_id, alice)
    bobs = open_account(client, program_id, bob)
    headers = auth("trader", trader_id=alice)
    with stream(client, "", headers) as response:
        sse = SSE(response)
        post_trade(client, bobs)
        mine = post_trade(client, alices)
        post_trade(client, bobs)
        events = sse.events(1)
        assert events[0]["data"]["trade"]["trade_id"] == mine["trade_id"]
        assert events[0]["trader_id"] == alice
        sse.nothing_more(0.4)

    with client.websocket_connect(ws_url("after=0", ("trader",), trader_id=alice)) as ws:
        ready = json.loads(ws.receive_text())
        assert ready["filters"]["trader_id"] == alice
        history = ws_events(ws, 2)  # Opened and the trade: nothing of bob's
        assert {event["account_id"] for event in history} == {alices}
        ws_until_heartbeat(ws)


def test_a_filter_naming_another_traders_account_or_trader_is_refused(
    client: TestClient, program_id: str
) -> None:
    alice, bob = uid("trader-"), uid("trader-")
    open_account(client, program_id, alice)
    bobs = open_account(client, program_id, bob)
    headers = auth("trader", trader_id=alice)
    unknown = "00000000-0000-4000-8000-000000000000"
    # Someone else's account, an account that does not exist (the same answer: a trader
    # cannot tell them apart) and someone else's trader id.
    for query in (f"account_id={bobs}", f"account_id={unknown}", f"trader_id={bob}"):
        assert_error(client.get(f"/v1/stream?{query}", headers=headers), 403, "forbidden")

    refusal, code = ws_refusal(client, ws_url(f"account_id={bobs}", ("trader",), trader_id=alice))
    assert refusal["kind"] == "error"
    assert refusal["error"]["code"] == "forbidden"
    assert code == 4403


def test_stream_requests_are_authenticated_and_validated(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)
    assert_error(client.get(f"/v1/stream?account_id={account_id}"), 401, "unauthenticated")
    assert_error(client.get("/v1/stream?token=not-a-jwt"), 401, "invalid_token")
    types = client.get("/v1/stream?types=TradeClosed,Nope", headers=AUDITOR)
    assert_error(types, 422, "invalid_types")
    assert_error(client.get("/v1/stream?after=-1", headers=AUDITOR), 422, "invalid_position")
    # Digits int() refuses ("²" passed str.isdigit(): a 500), and a position past the
    # log's end (resuming there would skip every event up to it, silently).
    for odd in ("\u00b2", "\u2460", "99999999"):
        refused = client.get("/v1/stream", params={"after": odd}, headers=AUDITOR)
        assert_error(refused, 422, "invalid_position")
    # A 20-digit position is an integer too: past the end, not "not an integer".
    long = client.get("/v1/stream", params={"after": "1" * 20}, headers=AUDITOR)
    assert "past the log's end" in assert_error(long, 422, "invalid_position")["message"]
    refusal, code = ws_refusal(client, ws_url("after=%C2%B2"))
    assert (refusal["error"]["code"], code) == ("invalid_position", 4422)
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_error(client.get(f"/v1/stream?account_id={unknown}", headers=AUDITOR), 404)
    assert_error(client.get(f"/v1/stream?trader_id={uid()}", headers=AUDITOR), 404)
    refusal, code = ws_refusal(client, "/v1/stream")
    assert refusal["error"]["code"] == "unauthenticated"
    assert code == 4401


def test_a_server_holds_at_most_max_clients_streams(
    client: TestClient, program_id: str, hub: StreamHub
) -> None:
    hub.config = replace(CONFIG, max_clients=hub.open_streams + 1)
    account_id = open_account(client, program_id)
    with stream(client, f"account_id={account_id}") as response:
        assert SSE(response).block() is not None
        refused = client.get(f"/v1/stream?account_id={account_id}", headers=AUDITOR)
        assert_error(refused, 503, "too_many_streams")
        assert refused.headers["retry-after"] == "5"


# WebSocket ---------------------------------------------------------------------------------


def test_websocket_streams_trades_and_resumes_after_a_position(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)
    with client.websocket_connect(ws_url(f"account_id={account_id}&after=0")) as ws:
        ready = json.loads(ws.receive_text())
        assert ready == {
            "kind": "ready",
            "position": 0,
            "filters": {"trader_id": None, "account_id": account_id, "types": []},
        }
        assert ws_events(ws, 1)[0]["type"] == "Opened"
        posted = [post_trade(client, account_id)["trade_id"] for _ in range(2)]
        events = ws_events(ws, 2)
        assert [event["data"]["trade"]["trade_id"] for event in events] == posted
        last = events[-1]["position"]

    missed = [post_trade(client, account_id)["trade_id"] for _ in range(2)]
    with client.websocket_connect(ws_url(f"account_id={account_id}&after={last}")) as ws:
        assert json.loads(ws.receive_text())["position"] == last
        again = ws_events(ws, 2)
        assert [event["data"]["trade"]["trade_id"] for event in again] == missed
        heartbeat = ws_until_heartbeat(ws)
        assert heartbeat["position"] >= again[-1]["position"]


def test_a_slow_websocket_client_is_closed_with_4408(
    client: TestClient, program_id: str, hub: StreamHub
) -> None:
    """Driven at the ASGI level: the client's `send` stalls on the first event for a
    second, as a congested socket would, while the trades keep coming."""
    import anyio

    hub.config = replace(CONFIG, queue_size=2, stall_seconds=0.3, close_grace_seconds=10)
    account_id = open_account(client, program_id)
    for _ in range(8):
        post_trade(client, account_id)
    sent: list[dict[str, Any]] = []
    query = f"token={token(['auditor'])}&account_id={account_id}&after=0"
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": "/v1/stream",
        "raw_path": b"/v1/stream",
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
    }

    async def drive() -> None:
        connected = False
        never = anyio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await never.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            events = [m for m in sent if '"kind":"event"' in m.get("text", "")]
            if len(events) == 1 and message is events[0]:
                await anyio.sleep(1.0)  # a congested client

        with anyio.fail_after(10):
            await client.app(scope, receive, send)  # type: ignore[misc]

    client.portal.call(drive)  # type: ignore[union-attr]
    kinds = [json.loads(m["text"])["kind"] for m in sent if m["type"] == "websocket.send"]
    assert kinds[0] == "ready"
    assert kinds[-1] == "cutoff"
    assert 1 <= kinds.count("event") <= 3
    cutoff = json.loads(sent[-2]["text"])
    assert cutoff["code"] == "slow_consumer"
    assert sent[-1] == {"type": "websocket.close", "code": 4408, "reason": "slow_consumer"}


# Payouts ---------------------------------------------------------------------------------


def paying_program(client: TestClient) -> str:
    """A one-phase program passed by a 1 % gain that pays out at once."""
    phase = {
        "name": "challenge",
        "profit_target_pct": "1",
        "max_daily_loss_pct": "5",
        "max_loss_pct": "10",
        "max_loss_mode": "static",
        "min_trading_days": 0,
        "consistency_max_day_pct": None,
    }
    funded = {**CLASSIC_PROGRAM["funded"], "first_payout_after_days": 0, "payout_interval_days": 0}
    program = program_body(phases=[phase], funded=funded)
    assert client.post("/v1/programs", json=program, headers=ADMIN).status_code == 201
    return str(program["program_id"])


def test_payout_events_stream_to_their_trader(client: TestClient, hub: StreamHub) -> None:
    """A one-phase program that pays out at once: the trader's stream shows the payout's
    own events, which name their account and trader only in the first one."""
    program_id = paying_program(client)
    alice = uid("trader-")
    passed = post_trade(client, open_account(client, program_id, alice), profit="1000.00")
    funded_id = passed["next_account_id"]
    post_trade(client, funded_id, profit="1000.00")

    mine = auth("trader", sub="alice", trader_id=alice)
    with stream(client, "types=Payout.Requested,Payout.Approved,PayoutWithdrawn", mine) as response:
        sse = SSE(response)
        requested = client.post(f"/v1/accounts/{funded_id}/payouts", headers=mine)
        assert requested.status_code == 201, requested.text
        payout_id = requested.json()["payout_id"]
        approved = client.post(f"/v1/payouts/{payout_id}/approve", headers=auth("approver"))
        assert approved.status_code == 200, approved.text
        events = sse.events(3)
    assert [(event["aggregate"], event["type"]) for event in events] == [
        ("Payout", "Requested"),
        ("Payout", "Approved"),
        ("TradingAccount", "PayoutWithdrawn"),
    ]
    assert {event["account_id"] for event in events} == {funded_id}
    assert {event["trader_id"] for event in events} == {alice}
    assert events[0]["payout_id"] == events[1]["payout_id"] == payout_id

    # A payout's id is not an account's (its stream is the payout's): 404, as REST.
    refused = client.get(f"/v1/stream?account_id={payout_id}", headers=AUDITOR)
    assert_error(refused, 404, "unknown_account")

    # A server that has not seen the payout's first event finds its owner in the store.
    hub.owners = Owners(hub.ledger)
    query = f"trader_id={alice}&types=Payout.Approved&after={events[0]['position']}"
    with stream(client, query) as response:
        again = SSE(response).events(1)[0]
    assert again["position"] == events[1]["position"]
    assert again["trader_id"] == alice


def test_what_a_stream_carries_follows_the_rest_apis_roles(client: TestClient) -> None:
    """Found by an authorization audit: any role streamed every payout event and every
    event's journal lines, which the REST API shows only to finance, approvers and
    auditors (payouts) and to admin, finance and auditors (events, entries). Now a
    platform token streams account events without journal lines and no payouts (and is
    refused a payout filter); a trader its own payouts, without journal lines; an auditor
    everything."""
    program_id = paying_program(client)
    alice = uid("trader-")
    first = open_account(client, program_id, alice)
    funded_id = post_trade(client, first, profit="1000.00")["next_account_id"]
    post_trade(client, funded_id, profit="1000.00")
    mine = auth("trader", sub="alice", trader_id=alice)
    requested = client.post(f"/v1/accounts/{funded_id}/payouts", headers=mine)
    assert requested.status_code == 201, requested.text
    approved = client.post(
        f"/v1/payouts/{requested.json()['payout_id']}/approve", headers=auth("approver")
    )
    assert approved.status_code == 200, approved.text
    # Account: Opened, TradeClosed, PhasePassed; Opened, TradeClosed, PayoutRequested,
    # PayoutWithdrawn. Payout: Requested, Approved.
    everything = 9

    def history(roles: tuple[str, ...], count: int, **claims: Any) -> list[dict[str, Any]]:
        url = ws_url(f"after=0&trader_id={alice}", roles, **claims)
        if roles == ("trader",):
            url = ws_url("after=0", roles, **claims)
        with client.websocket_connect(url) as ws:
            json.loads(ws.receive_text())  # ready
            events = ws_events(ws, count)
            ws_until_heartbeat(ws)
        return events

    audited = history(("auditor",), everything)
    assert {event["aggregate"] for event in audited} == {"TradingAccount", "Payout"}
    assert any(event["data"].get("journal") for event in audited)

    platform = history(("platform",), everything - 2)
    assert {event["aggregate"] for event in platform} == {"TradingAccount"}
    assert all("journal" not in event["data"] for event in platform)

    own = history(("trader",), everything, trader_id=alice)
    assert {event["aggregate"] for event in own} == {"TradingAccount", "Payout"}
    assert all("journal" not in event["data"] for event in own)

    refused, code = ws_refusal(client, ws_url("types=Payout.Approved", ("platform",)))
    assert refused["error"]["code"] == "forbidden", refused
    assert code == 4403
    with stream(client, "types=Approved", auth("platform")) as response:
        assert response.status_code == 403
