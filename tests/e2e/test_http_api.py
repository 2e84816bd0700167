"""The HTTP API end to end: the real app (migrations, ledger, in-process projection worker)
on an SQLite file and on PostgreSQL, through FastAPI's TestClient."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from domain.ids import first_account_id, next_account_id
from tests.support import (
    BACKENDS,
    STATE_FIELDS,
    assert_error,
    auth,
    backend_url,
    make_app,
    program_body,
    purchase_body,
    trade_body,
    uid,
)

ADMIN = auth("admin")
FINANCE = auth("finance")
PLATFORM = auth("platform")
AUDITOR = auth("auditor")


@pytest.fixture(scope="module", params=BACKENDS)
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    url = backend_url(request, tmp_path_factory)
    with TestClient(make_app(url)) as started:
        yield started


@pytest.fixture(scope="module")
def program_id(client: TestClient) -> str:
    body = program_body()
    response = client.post("/v1/programs", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(body["program_id"])


def open_account(client: TestClient, program_id: str, **purchase: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/purchases", json=purchase_body(program_id, **purchase), headers=FINANCE
    )
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()["account"]
    return account


def post_trade(client: TestClient, account_id: str, body: Any, **kwargs: Any) -> Any:
    return client.post(f"/v1/accounts/{account_id}/trades", json=body, headers=PLATFORM, **kwargs)


def stored(client: TestClient, account_id: str) -> tuple[int, list[dict[str, Any]]]:
    """The account's version and its event stream, to prove a refusal stored nothing."""
    account = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR)
    assert account.status_code == 200, account.text
    events = client.get(f"/v1/accounts/{account_id}/events", headers=AUDITOR)
    assert events.status_code == 200, events.text
    return account.json()["version"], events.json()["events"]


# Programs ---------------------------------------------------------------------------


def test_an_admin_defines_a_program_and_the_same_body_again_changes_nothing(
    client: TestClient,
) -> None:
    body = program_body()
    created = client.post("/v1/programs", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    assert created.json()["program_id"] == body["program_id"]
    assert isinstance(created.json()["position"], int)

    again = client.post("/v1/programs", json=body, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.json()["version"] == 1
    # The same values written differently are the same definition, no new version.
    respelled = copy.deepcopy(body)
    respelled["phases"][0]["profit_target_pct"] = "10.0"
    respelled["initial_balance"] = "100000"
    same = client.post("/v1/programs", json=respelled, headers=ADMIN)
    assert same.status_code == 200, same.text
    assert same.json()["version"] == 1

    fetched = client.get(f"/v1/programs/{body['program_id']}", headers=PLATFORM)
    assert fetched.status_code == 200
    program = fetched.json()
    assert program["version"] == 1
    assert program["initial_balance"] == "100000.00"
    assert program["fee"] == {"amount": "540.00", "currency": "USD"}
    assert program["phases"][0]["profit_target_pct"] == "10"
    assert program["funded"]["profit_split_pct"] == "80"


def test_a_changed_program_body_records_version_2(client: TestClient) -> None:
    body = program_body()
    assert client.post("/v1/programs", json=body, headers=ADMIN).status_code == 201
    changed = {**body, "name": "Classic 100k (2026 rules)"}
    revised = client.post("/v1/programs", json=changed, headers=ADMIN)
    assert revised.status_code == 201, revised.text
    assert revised.json()["version"] == 2

    fetched = client.get(f"/v1/programs/{body['program_id']}", headers=AUDITOR).json()
    assert fetched["version"] == 2
    assert fetched["name"] == "Classic 100k (2026 rules)"
    # The rules an account opened on version 1 is judged by stay readable.
    first = client.get(
        f"/v1/programs/{body['program_id']}", params={"version": 1}, headers=AUDITOR
    ).json()
    assert (first["version"], first["name"]) == (1, body["name"])
    missing = client.get(
        f"/v1/programs/{body['program_id']}", params={"version": 3}, headers=AUDITOR
    )
    assert_error(missing, 404, "unknown_program_version")


def test_only_an_admin_may_define_a_program(client: TestClient) -> None:
    body = program_body()
    for roles in (["finance"], ["platform"], ["auditor"], ["approver"]):
        refused = client.post("/v1/programs", json=body, headers=auth(*roles))
        assert_error(refused, 403, "forbidden")
    assert_error(client.get(f"/v1/programs/{body['program_id']}", headers=ADMIN), 404)


def test_a_request_without_a_valid_token_is_401_in_the_error_envelope(
    client: TestClient,
) -> None:
    body = program_body()
    assert_error(client.post("/v1/programs", json=body), 401)
    assert_error(client.get("/v1/programs/classic-100k"), 401)
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert_error(client.post("/v1/programs", json=body, headers=bad), 401, "invalid_token")
    wrong_secret = {"Authorization": f"Bearer {_token_signed_with('w' * 40)}"}
    assert_error(client.post("/v1/programs", json=body, headers=wrong_secret), 401)
    basic = {"Authorization": "Basic YWRtaW46YWRtaW4="}
    assert_error(client.post("/v1/programs", json=body, headers=basic), 401)
    assert_error(client.get(f"/v1/programs/{body['program_id']}", headers=ADMIN), 404)


def _token_signed_with(secret: str) -> str:
    from api.auth import mint_token

    return mint_token(secret, sub="mallory", roles=["admin"])


def test_an_expired_token_is_401(client: TestClient) -> None:
    from api.auth import mint_token
    from tests.support import SECRET

    expired = mint_token(SECRET, sub="late", roles=["admin"], ttl=-120)
    response = client.get("/v1/programs/x", headers={"Authorization": f"Bearer {expired}"})
    assert_error(response, 401, "token_expired")


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("phases", "profit_target_pct", "0"),
        ("phases", "max_loss_pct", "0"),
        ("funded", "max_loss_pct", "0"),
        ("phases", "profit_target_pct", 10.5),
    ],
)
def test_an_impossible_program_is_422_and_not_created(
    client: TestClient, where: str, field: str, value: Any
) -> None:
    body = program_body()
    if where == "phases":
        body["phases"][0][field] = value
    else:
        body[where][field] = value
    error = assert_error(client.post("/v1/programs", json=body, headers=ADMIN), 422)
    assert error["code"] == "invalid_program"
    assert_error(client.get(f"/v1/programs/{body['program_id']}", headers=ADMIN), 404)


def test_an_unknown_program_field_is_422_and_not_created(client: TestClient) -> None:
    body = {**program_body(), "leverage": "1:100"}
    assert_error(client.post("/v1/programs", json=body, headers=ADMIN), 422)
    assert_error(client.get(f"/v1/programs/{body['program_id']}", headers=ADMIN), 404)


def test_an_unknown_program_is_404(client: TestClient) -> None:
    assert_error(client.get(f"/v1/programs/{uid('nope-')}", headers=ADMIN), 404)


# Purchases --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["finance", "admin"])
def test_a_purchase_opens_a_phase_1_account_with_every_state_field(
    client: TestClient, program_id: str, role: str
) -> None:
    body = purchase_body(program_id)
    response = client.post("/v1/purchases", json=body, headers=auth(role))
    assert response.status_code == 201, response.text
    reply = response.json()
    assert reply["duplicate"] is False
    assert isinstance(reply["position"], int)
    assert reply["position"] > 0
    account = reply["account"]
    assert set(STATE_FIELDS) <= set(account), set(STATE_FIELDS) - set(account)
    assert account["account_id"] == reply["account_id"]
    expected = {
        "trader_id": body["trader_id"],
        "program_id": program_id,
        "stage": "phase-1",
        "status": "active",
        "currency": "USD",
        "initial_balance": "100000.00",
        "balance": "100000.00",
        "equity": "100000.00",
        "high_water_mark": "100000.00",
        "day_start_balance": "100000.00",
        "daily_loss_floor": "95000.00",
        "max_loss_floor": "90000.00",
        "trading_days": 0,
        "profit": "0.00",
        "breach": None,
        "passed_at": None,
        "next_account_id": None,
        "version": 1,
    }
    assert {key: account[key] for key in expected} == expected

    fetched = client.get(f"/v1/accounts/{reply['account_id']}", headers=AUDITOR)
    assert fetched.status_code == 200
    assert {key: fetched.json()[key] for key in STATE_FIELDS} == {
        key: account[key] for key in STATE_FIELDS
    }


def test_the_same_purchase_again_is_a_duplicate_of_the_same_account(
    client: TestClient, program_id: str
) -> None:
    body = purchase_body(program_id)
    first = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert first.status_code == 201
    again = client.post("/v1/purchases", json=body, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["account_id"] == first.json()["account_id"]
    assert again.json()["account"]["version"] == 1
    # The same amount written without its minor unit is the same purchase.
    spelled = client.post("/v1/purchases", json={**body, "amount": "540"}, headers=FINANCE)
    assert spelled.status_code == 200, spelled.text
    assert spelled.json()["duplicate"] is True
    assert spelled.json()["amount"] == "540.00"  # money as booked, at the minor unit


def test_a_purchase_reply_gives_the_amount_at_the_currency_minor_unit(
    client: TestClient, program_id: str
) -> None:
    body = {**purchase_body(program_id), "amount": "540"}
    reply = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert reply.status_code == 201, reply.text
    assert (reply.json()["amount"], reply.json()["currency"]) == ("540.00", "USD")
    free = {**purchase_body(program_id), "amount": "0"}
    assert client.post("/v1/purchases", json=free, headers=FINANCE).json()["amount"] == "0.00"


def test_the_same_purchase_id_with_another_amount_is_409(
    client: TestClient, program_id: str
) -> None:
    body = purchase_body(program_id)
    first = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert first.status_code == 201
    other = {**body, "amount": "499.00"}
    error = assert_error(client.post("/v1/purchases", json=other, headers=FINANCE), 409)
    assert error["code"] == "purchase_conflict"
    version, events = stored(client, first.json()["account_id"])
    assert version == 1
    assert len(events) == 1


def test_the_same_idempotency_key_with_another_body_is_409(
    client: TestClient, program_id: str
) -> None:
    key = {"Idempotency-Key": uid("key-")}
    first = purchase_body(program_id)
    created = client.post("/v1/purchases", json=first, headers={**FINANCE, **key})
    assert created.status_code == 201
    other = purchase_body(program_id)
    response = client.post("/v1/purchases", json=other, headers={**FINANCE, **key})
    assert_error(response, 409, "idempotency_key_reused")
    account_id = first_account_id(other["purchase_id"])
    assert_error(client.get(f"/v1/accounts/{account_id}", headers=AUDITOR), 404)


def test_the_same_idempotency_key_and_body_replays_the_first_answer(
    client: TestClient, program_id: str
) -> None:
    key = {"Idempotency-Key": uid("key-")}
    body = purchase_body(program_id)
    created = client.post("/v1/purchases", json=body, headers={**FINANCE, **key})
    assert created.status_code == 201
    replayed = client.post("/v1/purchases", json=body, headers={**FINANCE, **key})
    assert replayed.status_code == 201
    assert replayed.json() == created.json()
    assert replayed.json()["duplicate"] is False
    # Without the key, the purchase's own id still makes it a duplicate.
    plain_retry = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert plain_retry.status_code == 200
    assert plain_retry.json()["duplicate"] is True


def test_an_idempotency_key_on_a_trade_replays_or_refuses_and_stores_once(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    key = {"Idempotency-Key": uid("key-")}
    trade = trade_body(profit="42.00")
    url = f"/v1/accounts/{account_id}/trades"
    created = client.post(url, json=trade, headers={**PLATFORM, **key})
    assert created.status_code == 201
    replayed = client.post(url, json=trade, headers={**PLATFORM, **key})
    assert (replayed.status_code, replayed.json()) == (201, created.json())
    before = stored(client, account_id)
    other = client.post(url, json=trade_body(profit="1.00"), headers={**PLATFORM, **key})
    assert_error(other, 409, "idempotency_key_reused")
    assert stored(client, account_id) == before
    assert before[0] == 2
    # Keys belong to the token's subject: another bridge may use the same key.
    bridge_2 = auth("platform", sub="bridge-2")
    theirs = client.post(url, json=trade_body(profit="1.00"), headers={**bridge_2, **key})
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["balance"] == "100043.00"


def test_a_replayed_key_answers_only_a_caller_the_route_would_answer(
    client: TestClient, program_id: str
) -> None:
    """Keys belong to the token's authority (sub, roles, trader_id), not its `sub` alone:
    a token with the same `sub` but a role the route refuses gets the route's 403, never
    the stored reply (which would show it an account it may not see)."""
    account_id = open_account(client, program_id)["account_id"]
    key = {"Idempotency-Key": uid("key-")}
    trade = trade_body(profit="42.00")
    url = f"/v1/accounts/{account_id}/trades"
    bridge = auth("platform", sub="shared-sub")
    assert client.post(url, json=trade, headers={**bridge, **key}).status_code == 201
    trader = auth("trader", sub="shared-sub", trader_id=uid("someone-"))
    assert_error(client.post(url, json=trade, headers={**trader, **key}), 403)
    # The bridge's own retry still replays, and the trade was recorded once.
    again = client.post(url, json=trade, headers={**bridge, **key})
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, "true")
    assert stored(client, account_id)[0] == 2


@pytest.mark.parametrize("roles", [[], "x", None], ids=["no-roles", "roles-string", "absent"])
def test_a_token_whose_sub_spells_another_tokens_scope_gets_no_replay(
    client: TestClient, program_id: str, roles: Any
) -> None:
    """Found by an authorization audit: a token with no roles list was scoped by its raw
    `sub`, so one whose `sub` was the text of another token's scope was handed that
    token's stored reply, where the route answers 401 or 403."""
    import jwt

    from tests.support import SECRET

    key = {"Idempotency-Key": uid("key-")}
    body = purchase_body(program_id)
    first = client.post("/v1/purchases", json=body, headers={**auth("finance", sub="fin-1"), **key})
    assert first.status_code == 201, first.text
    claims: dict[str, Any] = {"sub": '["fin-1",["finance"],null]', "exp": 4102444800}
    if roles is not None:
        claims["roles"] = roles
    forged = {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}

    response = client.post("/v1/purchases", json=body, headers={**forged, **key})

    assert response.status_code in (401, 403), response.text
    assert response.headers.get("idempotent-replayed") is None
    if roles is None:
        # A token every route refuses with 401 is refused so before its key is judged
        # (a roles string names roles, as a list does: "x" is a role no route admits).
        overlong = client.post(
            "/v1/purchases", json=body, headers={**forged, "Idempotency-Key": "k" * 10_000}
        )
        assert_error(overlong, 401)


def test_a_bad_idempotency_key_without_a_token_is_401_first(client: TestClient) -> None:
    response = client.post("/v1/purchases", json={}, headers={"Idempotency-Key": ""})
    assert_error(response, 401)
    response = client.post("/v1/purchases", json={}, headers={**FINANCE, "Idempotency-Key": ""})
    assert_error(response, 400, "invalid_idempotency_key")


def test_an_account_keeps_the_program_version_it_was_opened_on(client: TestClient) -> None:
    body = program_body()
    assert client.post("/v1/programs", json=body, headers=ADMIN).status_code == 201
    old = open_account(client, body["program_id"])
    revised = {**body, "initial_balance": "50000.00"}
    assert client.post("/v1/programs", json=revised, headers=ADMIN).json()["version"] == 2
    new = open_account(client, body["program_id"])
    assert (new["program_version"], new["initial_balance"]) == (2, "50000.00")
    assert new["max_loss_floor"] == "45000.00"
    again = client.get(f"/v1/accounts/{old['account_id']}", headers=AUDITOR).json()
    assert (again["program_version"], again["initial_balance"]) == (1, "100000.00")
    trade = post_trade(client, old["account_id"], trade_body(profit="-9000.00"))
    assert trade.json()["status"] == "breached"
    assert trade.json()["breach"]["floor"] == "95000.00"


def test_a_purchase_of_an_unknown_program_is_404_and_opens_nothing(client: TestClient) -> None:
    body = purchase_body(uid("missing-"))
    assert_error(client.post("/v1/purchases", json=body, headers=FINANCE), 404)
    account_id = first_account_id(body["purchase_id"])
    assert_error(client.get(f"/v1/accounts/{account_id}", headers=AUDITOR), 404)
    assert_error(client.get(f"/v1/traders/{body['trader_id']}/accounts", headers=AUDITOR), 404)


def test_a_wallet_purchase_with_an_amount_is_422_insufficient_funds(
    client: TestClient, program_id: str
) -> None:
    body = purchase_body(program_id, method="wallet", amount="540.00")
    error = assert_error(client.post("/v1/purchases", json=body, headers=FINANCE), 422)
    assert error["code"] == "insufficient_funds"
    account_id = first_account_id(body["purchase_id"])
    assert_error(client.get(f"/v1/accounts/{account_id}", headers=AUDITOR), 404)


def test_platform_and_auditor_may_not_purchase(client: TestClient, program_id: str) -> None:
    body = purchase_body(program_id)
    for headers in (PLATFORM, AUDITOR, auth("trader", trader_id=body["trader_id"])):
        assert_error(client.post("/v1/purchases", json=body, headers=headers), 403)
    assert_error(client.post("/v1/purchases", json=body), 401)
    account_id = first_account_id(body["purchase_id"])
    assert_error(client.get(f"/v1/accounts/{account_id}", headers=AUDITOR), 404)


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 540},
        {"amount": 540.0},
        {"amount": "540.001"},
        {"amount": "-540.00"},
        {"currency": "usd"},
        {"currency": "XXX"},
        {"method": "card"},
        {"coupon": "FREE"},
        # Ids are printable text, as trader ids are: a newline or a right-to-left override
        # shows in reports and CSVs as something else than what is stored.
        {"purchase_id": "pur-line\nbreak"},
        {"purchase_id": "pur-\u202eright-to-left"},
        {"purchase_id": "pur-\ttab"},
    ],
    ids=lambda change: json.dumps(change),
)
def test_a_bad_purchase_is_refused_and_opens_nothing(
    client: TestClient, program_id: str, change: dict[str, Any]
) -> None:
    body = {**purchase_body(program_id), **change}
    assert_error(client.post("/v1/purchases", json=body, headers=FINANCE), 422)
    account_id = first_account_id(body["purchase_id"])
    assert_error(client.get(f"/v1/accounts/{account_id}", headers=AUDITOR), 404)


def test_a_purchase_recorded_before_ids_had_to_be_printable_is_still_found_by_its_repeat(
    client: TestClient, program_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new purchase id must be printable text; one a store already holds (recorded
    before) must still answer its repeat as the duplicate it is, not 422."""
    import ledger.app

    lenient = ledger.app._external_id
    monkeypatch.setattr(
        ledger.app,
        "_external_id",
        lambda value, name, known=False: lenient(value, name, known=True),
    )
    body = {**purchase_body(program_id), "purchase_id": f"{uid('ord')}\u00a012"}  # a no-break space
    first = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert first.status_code == 201, first.text
    monkeypatch.undo()
    again = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert again.status_code == 200, again.text
    assert (again.json()["duplicate"], again.json()["account_id"]) == (
        True,
        first.json()["account_id"],
    )
    fresh = {**body, "purchase_id": f"{uid('ord')}\u00a013"}
    assert_error(client.post("/v1/purchases", json=fresh, headers=FINANCE), 422)


def test_a_purchase_for_a_trader_id_recorded_before_its_rules_answers_its_repeat(
    client: TestClient, program_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trader ids with '/' (or '.', '..') were accepted by older builds; a repeat of such
    a purchase is its duplicate, a new purchase for such a trader is refused."""
    import ledger.app

    lenient = ledger.app._external_id
    monkeypatch.setattr(
        ledger.app,
        "_external_id",
        lambda value, name, known=False: lenient(value, name, known=True),
    )
    body = purchase_body(program_id, trader_id=f"{uid('desk')}/7")
    first = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert first.status_code == 201, first.text
    monkeypatch.undo()
    again = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert (again.status_code, again.json()["duplicate"]) == (200, True), again.text
    fresh = {**body, "purchase_id": uid("pur-")}
    assert_error(client.post("/v1/purchases", json=fresh, headers=FINANCE), 422)


# Trades -----------------------------------------------------------------------------


def test_a_ticket_number_and_a_side_as_bridges_write_them_are_read_as_the_same_trade(
    client: TestClient, program_id: str
) -> None:
    """MT5 writes ticket numbers as integers and sides as "BUY"/"SELL": the same trade as
    the text "88001" with side "buy", single or batched (contract audit)."""
    account_id = open_account(client, program_id)["account_id"]
    as_bridge = {**trade_body("x", profit="10.00"), "trade_id": 88001, "side": "BUY"}
    created = post_trade(client, account_id, as_bridge)
    assert created.status_code == 201, created.text
    assert created.json()["trade_id"] == "88001"
    again = post_trade(client, account_id, {**as_bridge, "trade_id": "88001", "side": "buy"})
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    batch = client.post(
        "/v1/trades:batch",
        json={"trades": [{**as_bridge, "account_id": account_id, "side": "long"}]},
        headers=PLATFORM,
    )
    assert batch.status_code == 200, batch.text
    (result,) = batch.json()["results"]
    assert (result["trade_id"], result["result"]) == ("88001", "duplicate")
    refused = post_trade(client, account_id, {**as_bridge, "trade_id": 88002, "side": "up"})
    assert_error(refused, 422, "invalid_side")


def test_a_trade_is_created_and_its_duplicate_answers_the_current_state(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    first = trade_body("T-1", profit="3000.00", commission="-5.00", swap="0.00")
    created = post_trade(client, account_id, first)
    assert created.status_code == 201, created.text
    state = created.json()
    assert state["duplicate"] is False
    assert state["trade_id"] == "T-1"
    assert state["balance"] == "102995.00"
    assert state["equity"] == "102995.00"
    assert state["profit"] == "2995.00"
    assert state["high_water_mark"] == "102995.00"
    assert state["trading_days"] == 1
    assert state["version"] == 2

    later = post_trade(client, account_id, trade_body("T-2", profit="-1.10", swap="-0.15"))
    assert later.status_code == 201
    assert later.json()["balance"] == "102993.75"

    # Sent again after T-2: recorded once, and the reply is the account as it stands.
    duplicate = post_trade(client, account_id, first)
    assert duplicate.status_code == 200, duplicate.text
    replay = duplicate.json()
    assert replay["duplicate"] is True
    assert replay["trade_id"] == "T-1"
    assert replay["balance"] == "102993.75"
    assert replay["version"] == 3
    current = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR).json()
    assert {key: replay[key] for key in STATE_FIELDS} == {key: current[key] for key in STATE_FIELDS}
    assert replay["position"] >= later.json()["position"]

    # The same instant written with another offset is the same trade.
    shifted = {**first, "closed_at": "2026-03-02T11:00:00+01:00"}
    assert post_trade(client, account_id, shifted).json()["duplicate"] is True

    version, events = stored(client, account_id)
    assert version == 3
    assert [event["type"] for event in events].count("TradeClosed") == 2


def test_a_trade_id_reused_with_other_content_is_409_and_stores_nothing(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    assert post_trade(client, account_id, trade_body("T-1", profit="10.00")).status_code == 201
    before = stored(client, account_id)
    error = assert_error(post_trade(client, account_id, trade_body("T-1", profit="11.00")), 409)
    assert error["code"] == "trade_id_conflict"
    assert stored(client, account_id) == before


def test_four_trading_days_reaching_the_target_pass_and_open_phase_2(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = open_account(client, program_id, trader_id=trader_id)["account_id"]
    replies = []
    for day in ("2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"):
        response = post_trade(client, account_id, trade_body(day=day, profit="2750.00"))
        assert response.status_code == 201, response.text
        replies.append(response.json())
    assert [reply["status"] for reply in replies] == ["active", "active", "active", "passed"]
    passed = replies[-1]
    assert passed["balance"] == "111000.00"
    assert passed["trading_days"] == 4
    assert passed["passed_at"] is not None
    next_id = passed["next_account_id"]
    assert next_id is not None

    listing = client.get(f"/v1/traders/{trader_id}/accounts", headers=AUDITOR)
    assert listing.status_code == 200, listing.text
    accounts = {account["account_id"]: account for account in listing.json()["accounts"]}
    assert set(accounts) == {account_id, next_id}
    assert accounts[account_id]["status"] == "passed"
    assert accounts[account_id]["stage"] == "phase-1"
    assert accounts[account_id]["next_account_id"] == next_id
    assert accounts[next_id]["stage"] == "phase-2"
    assert accounts[next_id]["status"] == "active"
    assert listing.json()["position"] >= passed["position"]

    phase_2 = client.get(f"/v1/accounts/{next_id}", headers=AUDITOR)
    assert phase_2.status_code == 200
    state = phase_2.json()
    assert state["stage"] == "phase-2"
    assert state["status"] == "active"
    assert state["trader_id"] == trader_id
    assert state["balance"] == "100000.00"
    assert state["trading_days"] == 0
    assert state["version"] == 1
    listed = accounts[next_id]
    assert {key: listed[key] for key in STATE_FIELDS} == {key: state[key] for key in STATE_FIELDS}

    # A trade after the pass is recorded on phase 1 but changes no status.
    late = post_trade(client, account_id, trade_body(day="2026-03-06", profit="-9000.00"))
    assert late.status_code == 201
    assert late.json()["status"] == "passed"
    assert late.json()["breach"] is None


def _without(field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in body.items() if key != field}

    return change


def _with(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, **fields}

    return change


BAD_TRADES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], int]] = {
    "profit as a JSON number": (_with(profit=100.0), 422),
    "profit as a JSON integer": (_with(profit=100), 422),
    "commission as a JSON number": (_with(commission=-3.5), 422),
    "swap as a JSON number": (_with(swap=0), 422),
    "profit with too many decimals": (_with(profit="100.001"), 422),
    "profit not a number": (_with(profit="1e3"), 422),
    "profit missing": (_without("profit"), 422),
    "naive closed_at": (_with(closed_at="2026-03-02T10:00:00"), 422),
    "naive opened_at": (_with(opened_at="2026-03-02T09:00:00"), 422),
    "numeric closed_at": (_with(closed_at=1772445600), 422),
    "date-only closed_at": (_with(closed_at="2026-03-02"), 422),
    "zero volume": (_with(volume="0"), 422),
    "zero volume number": (_with(volume=0), 422),
    "negative volume": (_with(volume="-1.5"), 422),
    "unknown symbol format": (_with(symbol="EUR USD!"), 422),
    "empty symbol": (_with(symbol=""), 422),
    "unknown side": (_with(side="sideways"), 422),
    "closed_at before opened_at": (
        _with(opened_at="2026-03-02T12:00:00Z", closed_at="2026-03-02T11:59:59Z"),
        422,
    ),
    "unknown field": (_with(magic=42), 422),
    "bad trade_id": (_with(trade_id="has space"), 422),
}


@pytest.fixture(scope="module")
def quiet_account(client: TestClient, program_id: str) -> str:
    """An account that only ever receives refused input."""
    account_id = open_account(client, program_id)["account_id"]
    assert post_trade(client, account_id, trade_body("seed", profit="1.00")).status_code == 201
    return str(account_id)


@pytest.mark.parametrize("case", sorted(BAD_TRADES))
def test_a_bad_trade_is_refused_and_nothing_is_stored(
    client: TestClient, quiet_account: str, case: str
) -> None:
    change, status = BAD_TRADES[case]
    before = stored(client, quiet_account)
    assert_error(post_trade(client, quiet_account, change(trade_body())), status)
    assert stored(client, quiet_account) == before


def test_malformed_json_is_400_and_nothing_is_stored(
    client: TestClient, quiet_account: str
) -> None:
    before = stored(client, quiet_account)
    response = client.post(
        f"/v1/accounts/{quiet_account}/trades",
        content=b'{"trade_id": "T-x", "profit": ',
        headers={**PLATFORM, "Content-Type": "application/json"},
    )
    assert_error(response, 400)
    body = program_body()
    broken = json.dumps(body)[:-3].encode()
    response = client.post(
        "/v1/programs", content=broken, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert_error(response, 400)
    assert_error(client.get(f"/v1/programs/{body['program_id']}", headers=ADMIN), 404)
    assert stored(client, quiet_account) == before


def test_a_json_body_without_a_content_type_is_read_and_another_type_is_refused(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    path = f"/v1/accounts/{account_id}/trades"
    raw = json.dumps(trade_body("T-plain", profit="1.00")).encode()
    created = client.post(path, content=raw, headers=PLATFORM)  # no Content-Type at all
    assert created.status_code == 201, created.text
    for declared in ("text/plain", "application/x-www-form-urlencoded"):
        other = json.dumps(trade_body(f"T-{declared}", profit="1.00")).encode()
        refused = client.post(path, content=other, headers={**PLATFORM, "Content-Type": declared})
        error = assert_error(refused, 422, "invalid_input")
        assert "Content-Type: application/json" in error["message"]
    _, events = stored(client, account_id)
    assert [event["type"] for event in events].count("TradeClosed") == 1


def test_who_is_asking_is_answered_before_whether_the_body_is_json(
    client: TestClient, quiet_account: str
) -> None:
    """No token, a bad token or the wrong role is refused as it would be with a valid
    body, even when the body is not JSON at all; the webhook (no token) still says 400."""
    broken = b'{"trade_id": "T-x", "profit": '
    path = f"/v1/accounts/{quiet_account}/trades"
    json_type = {"Content-Type": "application/json"}
    before = stored(client, quiet_account)
    for headers, status, code in (
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "invalid_token"),
        (FINANCE, 403, "forbidden"),
    ):
        for body in (broken, b'{"trade_id": 7}'):
            response = client.post(path, content=body, headers={**headers, **json_type})
            assert_error(response, status, code)
    assert_error(client.post("/v1/purchases", content=b"{bad", headers=json_type), 401)
    # The right token: now the body is looked at.
    assert_error(client.post(path, content=broken, headers={**PLATFORM, **json_type}), 400)
    assert stored(client, quiet_account) == before


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_1_mib_is_413_and_nothing_is_stored(
    client: TestClient, quiet_account: str, framing: str
) -> None:
    before = stored(client, quiet_account)
    body = trade_body(symbol="EURUSD", padding="x" * (1024 * 1024 + 10))
    raw = json.dumps(body).encode()
    content: Any = raw
    if framing == "chunked":

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(raw), 64 * 1024):
                yield raw[start : start + 64 * 1024]

        content = chunks()
    response = client.post(
        f"/v1/accounts/{quiet_account}/trades",
        content=content,
        headers={**PLATFORM, "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")
    assert stored(client, quiet_account) == before


def test_a_body_of_exactly_1_mib_is_not_refused_for_its_size(
    client: TestClient, quiet_account: str
) -> None:
    body = trade_body(trade_id="T-big")
    raw = json.dumps(body).encode()
    padded = raw[:-1] + b" " * (1024 * 1024 - len(raw)) + b"}"
    assert len(padded) == 1024 * 1024
    response = client.post(
        f"/v1/accounts/{quiet_account}/trades",
        content=padded,
        headers={**PLATFORM, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "account_id",
    [
        "00000000-0000-4000-8000-000000000000",
        "not-a-uuid",
        "0",
        "42b6f672-4e67-5a28-a23a-65f3da49e62",
    ],
)
def test_an_unknown_or_malformed_account_is_404(client: TestClient, account_id: str) -> None:
    position = client.get("/health").json()["position"]
    assert_error(post_trade(client, account_id, trade_body()), 404)
    assert_error(
        client.post(
            f"/v1/accounts/{account_id}/equity",
            json={"equity": "1.00", "at": "2026-03-02T10:00:00Z"},
            headers=PLATFORM,
        ),
        404,
    )
    assert_error(client.get(f"/v1/accounts/{account_id}", headers=AUDITOR), 404)
    assert_error(client.get(f"/v1/accounts/{account_id}/events", headers=AUDITOR), 404)
    assert client.get("/health").json()["position"] == position


def test_a_program_id_is_not_an_account(client: TestClient, program_id: str) -> None:
    from domain.ids import program_id_to_uuid

    other_aggregate = str(program_id_to_uuid(program_id))
    assert_error(client.get(f"/v1/accounts/{other_aggregate}", headers=AUDITOR), 404)
    assert_error(post_trade(client, other_aggregate, trade_body()), 404)


def test_only_the_platform_posts_trades(client: TestClient, quiet_account: str) -> None:
    before = stored(client, quiet_account)
    for headers in (ADMIN, FINANCE, AUDITOR):
        response = client.post(
            f"/v1/accounts/{quiet_account}/trades", json=trade_body(), headers=headers
        )
        assert_error(response, 403)
    assert stored(client, quiet_account) == before


# Who sees what ----------------------------------------------------------------------


def test_a_trader_sees_its_own_accounts_and_nobody_elses(
    client: TestClient, program_id: str
) -> None:
    alice, bob = uid("alice-"), uid("bob-")
    alices = open_account(client, program_id, trader_id=alice)["account_id"]
    bobs = open_account(client, program_id, trader_id=bob)["account_id"]
    as_alice = auth("trader", sub=alice, trader_id=alice)

    own = client.get(f"/v1/accounts/{alices}", headers=as_alice)
    assert own.status_code == 200
    assert own.json()["trader_id"] == alice
    # Another trader's account is refused by the token's role (403); an unknown one is 404.
    assert_error(client.get(f"/v1/accounts/{bobs}", headers=as_alice), 403, "forbidden")
    past = client.get(f"/v1/accounts/{bobs}", params={"as_of": "2999-01-01"}, headers=as_alice)
    assert_error(past, 403, "forbidden")
    assert_error(client.get(f"/v1/accounts/{uuid4()}", headers=as_alice), 404, "unknown_account")

    listing = client.get(f"/v1/traders/{alice}/accounts", headers=as_alice)
    assert listing.status_code == 200, listing.text
    assert [account["account_id"] for account in listing.json()["accounts"]] == [alices]
    assert_error(client.get(f"/v1/traders/{bob}/accounts", headers=as_alice), 403, "forbidden")
    assert_error(client.get(f"/v1/traders/{bob}", headers=as_alice), 403, "forbidden")
    assert client.get(f"/v1/traders/{alice}", headers=as_alice).status_code == 200
    assert_error(client.get(f"/v1/traders/{uid('ghost-')}/accounts", headers=as_alice), 404)

    # A trader may not read the audit stream, nor post trades.
    assert_error(client.get(f"/v1/accounts/{alices}/events", headers=as_alice), 403)
    assert_error(post_trade_as(client, alices, as_alice), 403)


def post_trade_as(client: TestClient, account_id: str, headers: dict[str, str]) -> Any:
    return client.post(f"/v1/accounts/{account_id}/trades", json=trade_body(), headers=headers)


def test_a_trader_token_without_trader_id_is_401(client: TestClient, program_id: str) -> None:
    import jwt

    from tests.support import SECRET

    forged = jwt.encode(
        {"sub": "x", "roles": ["trader"], "exp": 4102444800}, SECRET, algorithm="HS256"
    )
    account_id = open_account(client, program_id)["account_id"]
    response = client.get(
        f"/v1/accounts/{account_id}", headers={"Authorization": f"Bearer {forged}"}
    )
    assert_error(response, 401)


# Equity marks and as_of ---------------------------------------------------------------


def test_an_equity_mark_is_reflected_in_the_equity(client: TestClient, program_id: str) -> None:
    account_id = open_account(client, program_id)["account_id"]
    assert post_trade(client, account_id, trade_body(profit="150.00")).status_code == 201
    mark = {"equity": "99850.00", "at": "2026-03-02T11:05:00Z"}
    response = client.post(f"/v1/accounts/{account_id}/equity", json=mark, headers=PLATFORM)
    assert response.status_code == 201, response.text
    state = response.json()
    assert state["equity"] == "99850.00"
    assert state["balance"] == "100150.00"
    assert state["status"] == "active"
    assert client.get(f"/v1/accounts/{account_id}", headers=AUDITOR).json()["equity"] == (
        "99850.00"
    )
    # The same mark again is a duplicate and stores nothing.
    before = stored(client, account_id)
    again = client.post(f"/v1/accounts/{account_id}/equity", json=mark, headers=PLATFORM)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert stored(client, account_id) == before
    # Equity as a JSON number is refused.
    number = {"equity": 99850.0, "at": "2026-03-02T11:06:00Z"}
    response = client.post(f"/v1/accounts/{account_id}/equity", json=number, headers=PLATFORM)
    assert_error(response, 422)
    naive = {"equity": "99850.00", "at": "2026-03-02T11:06:00"}
    response = client.post(f"/v1/accounts/{account_id}/equity", json=naive, headers=PLATFORM)
    assert_error(response, 422)
    assert stored(client, account_id) == before


def test_an_equity_mark_below_the_max_loss_floor_breaches_max_loss(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    # Two losing days bring the day start balance low enough that the daily floor falls
    # below the static max loss floor (90000.00): only max_loss can be crossed on day 3.
    for day in ("2026-03-02", "2026-03-03"):
        reply = post_trade(client, account_id, trade_body(day=day, profit="-4900.00"))
        assert reply.status_code == 201
        assert reply.json()["status"] == "active"
    on_floor = {"equity": "90000.00", "at": "2026-03-04T10:00:00Z"}
    state = client.post(f"/v1/accounts/{account_id}/equity", json=on_floor, headers=PLATFORM)
    assert state.status_code == 201
    assert state.json()["status"] == "active", "exactly on the floor is not a breach"
    assert state.json()["daily_loss_floor"] == "85200.00"

    mark = {"equity": "89999.99", "at": "2026-03-04T10:05:00Z"}
    response = client.post(f"/v1/accounts/{account_id}/equity", json=mark, headers=PLATFORM)
    assert response.status_code == 201, response.text
    state = response.json()
    assert state["status"] == "breached"
    breach = state["breach"]
    assert breach["rule"] == "max_loss"
    assert breach["value"] == "89999.99"
    assert breach["floor"] == "90000.00"
    assert datetime.fromisoformat(breach["at"]) == datetime(2026, 3, 4, 10, 5, tzinfo=UTC)

    # Later trades are recorded but change no status.
    later = post_trade(client, account_id, trade_body(day="2026-03-04", profit="20000.00"))
    assert later.status_code == 201
    assert later.json()["status"] == "breached"
    assert later.json()["balance"] == "110200.00"


def test_an_equity_mark_through_both_floors_names_the_higher_floor(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    mark = {"equity": "80000.00", "at": "2026-03-02T10:00:00Z"}
    response = client.post(f"/v1/accounts/{account_id}/equity", json=mark, headers=PLATFORM)
    assert response.status_code == 201
    assert response.json()["breach"]["rule"] == "max_daily_loss"
    assert response.json()["breach"]["floor"] == "95000.00"


def test_as_of_shows_the_account_as_the_ledger_knew_it_then(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    assert post_trade(client, account_id, trade_body(profit="100.00")).status_code == 201
    between = datetime.now(UTC)
    breached = post_trade(client, account_id, trade_body(profit="-6000.00", closed="11:00:00"))
    assert breached.status_code == 201
    assert breached.json()["status"] == "breached"
    assert breached.json()["breach"]["rule"] == "max_daily_loss"

    then = client.get(
        f"/v1/accounts/{account_id}", params={"as_of": between.isoformat()}, headers=AUDITOR
    )
    assert then.status_code == 200, then.text
    assert then.json()["status"] == "active"
    assert then.json()["balance"] == "100100.00"
    assert then.json()["breach"] is None
    assert then.json()["version"] == 2

    zulu = between.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    same = client.get(f"/v1/accounts/{account_id}", params={"as_of": zulu}, headers=AUDITOR)
    assert same.json()["version"] == 2

    now = client.get(
        f"/v1/accounts/{account_id}",
        params={"as_of": datetime.now(UTC).isoformat()},
        headers=AUDITOR,
    )
    assert now.status_code == 200
    assert now.json()["status"] == "breached"
    assert now.json()["balance"] == "94100.00"

    before_open = client.get(
        f"/v1/accounts/{account_id}",
        params={"as_of": "2000-01-01T00:00:00Z"},
        headers=AUDITOR,
    )
    assert_error(before_open, 404)
    naive = client.get(
        f"/v1/accounts/{account_id}", params={"as_of": "2026-03-02T10:00:00"}, headers=AUDITOR
    )
    assert_error(naive, 422)


# The audit stream ---------------------------------------------------------------------


def test_the_event_stream_is_for_auditors_admins_and_finance(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    assert post_trade(client, account_id, trade_body(profit="12.34")).status_code == 201
    for headers in (AUDITOR, ADMIN, FINANCE):
        response = client.get(f"/v1/accounts/{account_id}/events", headers=headers)
        assert response.status_code == 200, response.text
        events = response.json()["events"]
        assert [event["version"] for event in events] == [1, 2]
        assert [event["type"] for event in events] == ["Opened", "TradeClosed"]
        for event in events:
            recorded = datetime.fromisoformat(event["recorded_at"])
            assert recorded.tzinfo is not None
            assert re.fullmatch(r"[0-9a-f]{64}", event["hash"]), event
        assert events[0]["hash"] != events[1]["hash"]
        assert events[1]["data"]["trade"]["profit"] == "12.34"
    assert_error(client.get(f"/v1/accounts/{account_id}/events", headers=PLATFORM), 403)
    assert_error(client.get(f"/v1/accounts/{account_id}/events"), 401)

    page = client.get(
        f"/v1/accounts/{account_id}/events",
        params={"after_version": 1, "limit": 1},
        headers=AUDITOR,
    ).json()
    assert [event["version"] for event in page["events"]] == [2]


# Batches ------------------------------------------------------------------------------


def test_a_batch_reports_each_trade_in_order(client: TestClient, program_id: str) -> None:
    accounts = [open_account(client, program_id)["account_id"] for _ in range(3)]
    already = trade_body("B-0", profit="5.00")
    assert post_trade(client, accounts[0], already).status_code == 201

    items: list[dict[str, Any]] = []
    expected: list[tuple[str, str, str]] = []
    for index, account_id in enumerate(accounts):
        for n in range(1, 4):
            trade_id = f"B-{n}"
            items.append({"account_id": account_id, **trade_body(trade_id, profit=f"{n}.0{index}")})
            expected.append((account_id, trade_id, "created"))
    items.insert(2, {"account_id": accounts[0], **already})
    expected.insert(2, (accounts[0], "B-0", "duplicate"))
    items.insert(5, {"account_id": accounts[1], **trade_body("B-bad"), "profit": 7.5})
    expected.insert(5, (accounts[1], "B-bad", "rejected"))
    items.append({"account_id": accounts[2], **trade_body("B-1", profit="1.02")})
    expected.append((accounts[2], "B-1", "duplicate"))
    ghost = str(uuid4())
    items.append({"account_id": ghost, **trade_body("B-9")})
    expected.append((ghost, "B-9", "rejected"))

    response = client.post("/v1/trades:batch", json={"trades": items}, headers=PLATFORM)
    assert response.status_code == 200, response.text
    reply = response.json()
    results = reply["results"]
    assert [(r["account_id"], r["trade_id"], r["result"]) for r in results] == expected
    for result in results:
        if result["result"] == "rejected":
            assert set(result["error"]) == {"code", "message", "details"}
        else:
            assert result["error"] is None
    assert results[5]["error"]["code"] == "invalid_decimal"
    assert results[-1]["error"]["code"] == "unknown_account"
    assert isinstance(reply["position"], int)

    balances = [
        client.get(f"/v1/accounts/{account_id}", headers=AUDITOR).json() for account_id in accounts
    ]
    assert [state["balance"] for state in balances] == ["100011.00", "100006.03", "100006.06"]
    assert [state["version"] for state in balances] == [5, 4, 4]

    # The same batch again is all duplicates (and the same rejections); nothing is stored.
    again = client.post("/v1/trades:batch", json={"trades": items}, headers=PLATFORM).json()
    assert [r["result"] for r in again["results"]] == [
        "rejected" if result == "rejected" else "duplicate" for _, _, result in expected
    ]
    after = [client.get(f"/v1/accounts/{a}", headers=AUDITOR).json()["version"] for a in accounts]
    assert after == [5, 4, 4]


def test_a_batch_trades_on_the_accounts_its_own_passes_open(client: TestClient) -> None:
    """Applied per account in order, like single posts sent in the same order: a trade on
    the next phase's account before the pass that opens it is refused (no such account
    yet), one after it is recorded; and so on to the funded account."""
    program = program_body(
        phases=[
            {"name": name, "profit_target_pct": "1", "max_daily_loss_pct": "5",
             "max_loss_pct": "10", "min_trading_days": 0}
            for name in ("challenge", "verification")
        ]
    )  # fmt: skip
    assert client.post("/v1/programs", json=program, headers=ADMIN).status_code == 201
    phase1 = open_account(client, program["program_id"])["account_id"]
    phase2 = str(next_account_id(UUID(phase1)))
    funded = str(next_account_id(UUID(phase2)))
    items = [
        {"account_id": phase2, **trade_body("N-0", profit="5.00")},
        {"account_id": phase1, **trade_body("P-1", profit="1000.00")},  # passes phase 1
        {"account_id": phase2, **trade_body("N-1", profit="1000.00")},  # passes phase 2
        {"account_id": funded, **trade_body("F-1", profit="7.00")},
    ]
    response = client.post("/v1/trades:batch", json={"trades": items}, headers=PLATFORM)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["result"] for r in results] == ["rejected", "created", "created", "created"]
    assert results[0]["error"]["code"] == "unknown_account"
    states = [client.get(f"/v1/accounts/{a}", headers=AUDITOR).json() for a in (phase2, funded)]
    assert (states[0]["status"], states[0]["balance"]) == ("passed", "101000.00")
    assert (states[1]["stage"], states[1]["balance"]) == ("funded", "100007.00")


def test_a_batch_naming_one_account_in_two_spellings_applies_both_trades(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    items = [
        {"account_id": account_id, **trade_body("S-1", profit="1.00")},
        {"account_id": account_id.upper(), **trade_body("S-2", profit="2.00")},
    ]
    tolerant = TestClient(client.app, raise_server_exceptions=False)
    response = tolerant.post("/v1/trades:batch", json={"trades": items}, headers=PLATFORM)
    assert response.status_code == 200, response.text
    assert [r["result"] for r in response.json()["results"]] == ["created", "created"]
    state = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR).json()
    assert state["balance"] == "100003.00"
    assert state["version"] == 3


def test_a_batch_rejects_a_bad_item_alone_even_at_the_calendars_edge(
    client: TestClient, program_id: str
) -> None:
    """One item whose time its offset pushes off the calendar, one without an account_id,
    one naming its account with a number: each is rejected with a field error, and the good
    trade beside them is recorded (not a 500 for the whole upload)."""
    account_id = open_account(client, program_id)["account_id"]
    edge = trade_body("E-edge", opened_at="0001-01-01T00:00:00+01:00")
    items = [
        {"account_id": account_id, **trade_body("E-good", profit="4.00")},
        {"account_id": account_id, **edge},
        trade_body("E-nameless"),
        {"account_id": 7, **trade_body("E-number")},
    ]
    response = client.post("/v1/trades:batch", json={"trades": items}, headers=PLATFORM)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["result"] for r in results] == ["created", "rejected", "rejected", "rejected"]
    assert results[1]["error"]["code"] == "invalid_timestamp"
    for result in results[2:]:
        assert result["error"]["code"] == "invalid_input"
        assert result["error"]["details"] == {"field": "account_id"}
    state = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR).json()
    assert (state["balance"], state["version"]) == ("100004.00", 2)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/accounts/{account_id}", {"as_of": "9999-12-31T23:59:59-05:00"}),
        ("/v1/accounts/{account_id}", {"as_of": "0001-01-01T00:00:00+01:00"}),
        ("/v1/accounts/{account_id}", {"as_of": "9999-12-31"}),
        ("/v1/ledger/trial-balance", {"as_of": "9999-12-31"}),
        ("/v1/payouts", {"from": "0001-01-01T00:00:00+01:00"}),
        ("/v1/reports/payouts", {"to": "9999-12-31"}),
    ],
)
def test_an_instant_off_the_calendar_in_a_query_is_422_not_500(
    client: TestClient, program_id: str, path: str, params: dict[str, str]
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    reader = auth("auditor", "finance", sub="edge-reader")
    tolerant = TestClient(client.app, raise_server_exceptions=False)
    response = tolerant.get(path.format(account_id=account_id), params=params, headers=reader)
    assert_error(response, 422, "invalid_timestamp")


def test_a_batch_over_1000_trades_is_422_and_stores_nothing(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    items = [{"account_id": account_id, **trade_body(f"X-{n}")} for n in range(1001)]
    position = client.get("/health").json()["position"]
    response = client.post("/v1/trades:batch", json={"trades": items}, headers=PLATFORM)
    assert_error(response, 422)
    assert stored(client, account_id)[0] == 1
    assert client.get("/health").json()["position"] == position


def test_a_batch_needs_the_platform_role(client: TestClient, program_id: str) -> None:
    account_id = open_account(client, program_id)["account_id"]
    items = [{"account_id": account_id, **trade_body()}]
    assert_error(client.post("/v1/trades:batch", json={"trades": items}, headers=FINANCE), 403)
    assert stored(client, account_id)[0] == 1


# Health -------------------------------------------------------------------------------


def test_health_answers_head_and_the_openapi_document_declares_the_bearer_scheme(
    client: TestClient,
) -> None:
    head = client.head("/health")
    assert head.status_code == 200
    assert head.content == b""
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert spec["paths"]["/v1/programs"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/health"]["get"]
    assert "security" not in spec["paths"]["/v1/webhooks/stripe"]["post"]


def test_health_reports_the_log_position(client: TestClient, program_id: str) -> None:
    reply = open_account(client, program_id)
    response = client.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert isinstance(health["position"], int)
    assert health["position"] >= 1
    assert reply["version"] == 1
    assert "account_board" in health["projections"]
    for position in health["projections"].values():
        assert isinstance(position, int)
        assert 0 <= position <= health["position"]


def test_audit_verify_finds_nothing_wrong_after_everything_above(client: TestClient) -> None:
    """Runs last in the module: the hash chain over every event the tests above wrote is
    intact, and every projection equals a fresh replay."""
    assert_error(client.post("/v1/audit/verify", headers=PLATFORM), 403)
    response = client.post("/v1/audit/verify", headers=AUDITOR)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["chain"]["findings"] == []
    assert report["chain"]["ok"] is True
    head = report["chain"]["head"]["position"] or 0
    assert head == client.get("/health").json()["position"]
    for name, result in report["projections"].items():
        assert not result["differences"], (name, result["differences"])
    assert report["ok"] is True


# Text the stores cannot hold ----------------------------------------------------------


def test_a_nul_character_in_a_body_or_a_query_is_refused_and_records_nothing(
    client: TestClient, program_id: str
) -> None:
    """PostgreSQL text cannot hold NUL: a recorded one would stop the projections for good
    (every report 503) while SQLite kept it. It is refused at the door, on both stores."""
    position = client.get("/health").json()["position"]
    bodies = [
        ("/v1/purchases", purchase_body(program_id, trader_id="evil\u0000"), FINANCE),
        ("/v1/purchases", purchase_body(program_id, purchase_id="p\u0000"), FINANCE),
        ("/v1/programs", program_body(name="Classic\u0000"), ADMIN),
    ]
    for path, body, headers in bodies:
        assert_error(client.post(path, json=body, headers=headers), 422, "invalid_input")
    entries = client.get("/v1/ledger/entries", params={"account": "a\u0000b"}, headers=FINANCE)
    assert_error(entries, 422, "invalid_input")
    assert client.get("/health").json()["position"] == position
    # The escape written as text (a backslash, then u0000) is no NUL and goes through.
    fine = client.post("/v1/programs", json=program_body(name="Classic \\u0000"), headers=ADMIN)
    assert fine.status_code == 201, fine.text


def test_a_traders_account_list_holds_every_account(client: TestClient, program_id: str) -> None:
    """Found by an audit: the list stopped at the first 200 accounts, saying nothing (a
    trader who keeps buying, and passing, gets there). Every account, oldest first."""
    trader_id = uid("trader-")
    opened = [
        open_account(client, program_id, trader_id=trader_id)["account_id"] for _ in range(203)
    ]
    listing = client.get(f"/v1/traders/{trader_id}/accounts", headers=AUDITOR)
    assert listing.status_code == 200, listing.text
    assert [account["account_id"] for account in listing.json()["accounts"]] == opened


def test_a_lone_surrogate_escape_in_a_body_is_refused_and_records_nothing(
    client: TestClient, program_id: str
) -> None:
    """Found by an audit: "\\ud800" is valid JSON but no character; no store can encode
    it. A program named so was a 500 at its save, and a batch item with such a trade_id
    was rejected, its good neighbours committed, and the reply a 500 (it could not be
    encoded). Refused at the door, 422, before anything is decided; a proper pair (an
    emoji) goes through."""
    account_id = open_account(client, program_id)["account_id"]
    position = client.get("/health").json()["position"]
    program = json.dumps(program_body(name="NAME")).replace("NAME", "Classic \\ud800")
    good = {**trade_body("GOOD-1"), "account_id": account_id}
    bad = {**trade_body("BAD"), "account_id": account_id}
    batch = json.dumps({"trades": [good, bad]}).replace('"BAD"', '"T\\uDC00"')
    sent = [("/v1/programs", program, ADMIN), ("/v1/trades:batch", batch, PLATFORM)]
    for path, text, headers in sent:
        response = client.post(
            path, content=text.encode(), headers={**headers, "Content-Type": "application/json"}
        )
        assert_error(response, 422, "invalid_input")
        assert "surrogate" in response.json()["error"]["message"]
    assert client.get("/health").json()["position"] == position
    paired = json.dumps(program_body(name="NAME")).replace("NAME", "Classic \\ud83d\\ude00")
    fine = client.post(
        "/v1/programs",
        content=paired.encode(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert fine.status_code == 201, fine.text
    assert fine.json()["name"] == "Classic \U0001f600"


@pytest.mark.parametrize("depth", [900, 100_000])
def test_a_body_nested_too_deeply_is_400_and_records_nothing(
    client: TestClient, program_id: str, depth: int
) -> None:
    """Too deep for our NUL check (900) or for Python's JSON parser itself (100,000):
    400 `malformed_json`, never a 500 or a dropped connection."""
    account_id = open_account(client, program_id)["account_id"]
    position = client.get("/health").json()["position"]
    deep = ("[" * depth + "]" * depth).encode()
    with_nul = b'{"a": ' + deep + b', "b": "\\u0000"}'  # the NUL after the depth
    sent = [
        ("/v1/purchases", with_nul),
        (f"/v1/accounts/{account_id}/payouts", with_nul),
    ]
    if depth > 10_000:  # past the parser: the body is no JSON for any endpoint
        sent += [("/v1/purchases", deep), (f"/v1/accounts/{account_id}/payouts", deep)]
    for path, body in sent:
        headers = {**FINANCE, "Content-Type": "application/json"}
        response = client.post(path, content=body, headers=headers)
        assert_error(response, 400, "malformed_json")
    assert client.get("/health").json()["position"] == position


def test_an_after_version_past_any_stream_is_an_empty_page_on_both_stores(
    client: TestClient, program_id: str
) -> None:
    account_id = open_account(client, program_id)["account_id"]
    response = client.get(
        f"/v1/accounts/{account_id}/events",
        params={"after_version": str(10**19)},  # beyond SQLite's 64-bit integers
        headers=AUDITOR,
    )
    assert response.status_code == 200, response.text
    assert response.json()["events"] == []


def test_an_unexpected_error_is_answered_without_closing_the_connection(
    client: TestClient, program_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn closes a keep-alive connection when an exception escapes the app, and the
    client's next request on it is reset: the 500 is answered inside the app instead."""
    account_id = open_account(client, program_id)["account_id"]
    ledger = client.app.state.ledger  # type: ignore[attr-defined]

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ledger, "account_events", broken)
    escaped: list[BaseException] = []
    app = client.app

    async def server(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except BaseException as error:  # what uvicorn would see
            escaped.append(error)
            raise

    tolerant = TestClient(server, raise_server_exceptions=False)
    response = tolerant.get(f"/v1/accounts/{account_id}/events", headers=AUDITOR)
    assert_error(response, 500, "internal_error")
    assert escaped == []
    assert "x-request-id" in {name.lower() for name in response.headers}


def test_a_token_without_a_known_role_reads_nothing(client: TestClient, program_id: str) -> None:
    """DESIGN's "any" is any of its roles: a token whose roles are none of them is less
    than a trader's, not more (it was let read every trader's accounts)."""
    account = open_account(client, program_id)
    no_role = auth(sub="nobody")
    for path in (
        f"/v1/accounts/{account['account_id']}",
        f"/v1/traders/{account['trader_id']}/accounts",
        f"/v1/traders/{account['trader_id']}",
        f"/v1/programs/{program_id}",
    ):
        assert_error(client.get(path, headers=no_role), 403)
    assert client.get(f"/v1/accounts/{account['account_id']}", headers=AUDITOR).status_code == 200


def test_a_trailing_slash_is_a_404_in_the_envelope_not_a_redirect(client: TestClient) -> None:
    response = client.post("/v1/purchases/", json={}, headers=FINANCE, follow_redirects=False)
    assert_error(response, 404)
