"""Concurrent writers to one account: optimistic concurrency, retries and duplicates.

Threads call `PropLedger` directly (and, once, the HTTP app) on an SQLite file and on
PostgreSQL; "two workers" are two `PropLedger` instances on the same database, each with
its own connections and its own aggregate cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.account import TradingAccount
from ledger.app import AccountReply, PropLedger
from ledger.migrate import migrate
from tests.support import (
    BACKENDS,
    auth,
    backend_url,
    make_app,
    program_body,
    purchase_body,
    trade_body,
    uid,
)

T = TypeVar("T")
B0 = Decimal("100000.00")


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = backend_url(request, tmp_path_factory)
    migrate(url)
    return url


@pytest.fixture(scope="module")
def ledger(database_url: str) -> Iterator[PropLedger]:
    app = PropLedger(database_url)
    yield app
    app.close()


@pytest.fixture(scope="module")
def other_ledger(database_url: str) -> Iterator[PropLedger]:
    """A second worker on the same database."""
    app = PropLedger(database_url)
    yield app
    app.close()


@pytest.fixture(scope="module")
def program_id(ledger: PropLedger) -> str:
    body = program_body()
    ledger.define_program(body)
    return str(body["program_id"])


def open_account(ledger: PropLedger, program_id: str) -> str:
    return str(ledger.purchase(purchase_body(program_id)).account.id)


def race(count: int, work: Callable[[int], T]) -> list[T]:
    """Runs work(0..count-1) in `count` threads released together; re-raises any error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    if errors:
        raise errors[0]
    return results


def stream(ledger: PropLedger, account_id: str) -> list[Any]:
    return list(ledger.events.get(UUID(account_id)))


def assert_stream_is_consistent(ledger: PropLedger, account_id: str) -> TradingAccount:
    """Versions are 1..n without a gap, every trade id appears once, and the judgement
    recorded with each event (`board`) equals the state a fresh replay computes there:
    no command decided on a stale or torn copy of the account."""
    events = stream(ledger, account_id)
    assert [event.originator_version for event in events] == list(range(1, len(events) + 1))
    trade_ids = [e.trade["trade_id"] for e in events if isinstance(e, TradingAccount.TradeClosed)]
    assert len(trade_ids) == len(set(trade_ids)), "a trade was recorded twice"
    account: Any = None
    for event in events:
        account = event.mutate(account)
        assert account.board() == event.board, (event.originator_version, type(event).__name__)
    assert isinstance(account, TradingAccount)
    return account


def trade_events(ledger: PropLedger, account_id: str) -> list[Any]:
    return [e for e in stream(ledger, account_id) if isinstance(e, TradingAccount.TradeClosed)]


def test_twenty_concurrent_distinct_trades_to_one_account_all_land_exactly_once(
    ledger: PropLedger, program_id: str
) -> None:
    account_id = open_account(ledger, program_id)
    profits = [Decimal(index + 1) + Decimal("0.25") for index in range(20)]

    def trade(index: int) -> AccountReply:
        return ledger.record_trade(account_id, trade_body(f"T-{index}", profit=str(profits[index])))

    replies = race(20, trade)
    assert [reply.duplicate for reply in replies] == [False] * 20
    assert sorted(reply.account.version for reply in replies) == list(range(2, 22))

    account = assert_stream_is_consistent(ledger, account_id)
    assert account.version == 21
    assert account.state.balance.amount == B0 + sum(profits)
    assert ledger.account(account_id).state.balance.amount == B0 + sum(profits)
    assert len(trade_events(ledger, account_id)) == 20
    assert {e.trade["trade_id"] for e in trade_events(ledger, account_id)} == {
        f"T-{index}" for index in range(20)
    }


def test_ten_concurrent_copies_of_one_trade_land_once(ledger: PropLedger, program_id: str) -> None:
    account_id = open_account(ledger, program_id)
    body = trade_body("T-same", profit="123.45", commission="-1.20")

    replies = race(10, lambda _: ledger.record_trade(account_id, dict(body)))

    assert sorted(reply.duplicate for reply in replies) == [False] + [True] * 9
    for reply in replies:
        assert reply.account.version == 2
        assert reply.account.state.balance.amount == Decimal("100122.25")
    assert len(trade_events(ledger, account_id)) == 1
    account = assert_stream_is_consistent(ledger, account_id)
    assert account.version == 2
    assert account.state.balance.amount == Decimal("100122.25")


def test_two_workers_racing_on_the_same_trade_record_it_once(
    ledger: PropLedger, other_ledger: PropLedger, program_id: str
) -> None:
    account_id = open_account(ledger, program_id)
    # Both workers have the account cached before the race.
    assert other_ledger.account(account_id).version == 1
    assert ledger.account(account_id).version == 1
    body = trade_body("T-twice", profit="50.00")
    workers = [ledger, other_ledger]

    replies = race(10, lambda index: workers[index % 2].record_trade(account_id, dict(body)))

    assert sorted(reply.duplicate for reply in replies) == [False] + [True] * 9
    assert len(trade_events(ledger, account_id)) == 1
    for worker in workers:
        account = worker.account(account_id)
        assert account.version == 2
        assert account.state.balance.amount == Decimal("100050.00")
    assert_stream_is_consistent(other_ledger, account_id)


def test_two_workers_writing_distinct_trades_lose_none(
    ledger: PropLedger, other_ledger: PropLedger, program_id: str
) -> None:
    account_id = open_account(ledger, program_id)
    workers = [ledger, other_ledger]

    def trade(index: int) -> AccountReply:
        body = trade_body(f"W-{index}", profit="10.01")
        return workers[index % 2].record_trade(account_id, body)

    replies = race(16, trade)

    assert not any(reply.duplicate for reply in replies)
    for worker in workers:
        # Each worker's cache is fast-forwarded with the other worker's writes.
        account = worker.account(account_id)
        assert account.version == 17
        assert account.state.balance.amount == B0 + 16 * Decimal("10.01")
    assert len(trade_events(ledger, account_id)) == 16
    assert_stream_is_consistent(ledger, account_id)
    # Both go on writing from their caches: no stale version left behind.
    ledger.record_trade(account_id, trade_body("W-after-1", profit="1.00"))
    other_ledger.record_trade(account_id, trade_body("W-after-2", profit="1.00"))
    assert other_ledger.account(account_id).version == 19


def test_concurrent_purchases_of_one_purchase_id_open_one_account(
    ledger: PropLedger, other_ledger: PropLedger, program_id: str
) -> None:
    body = purchase_body(program_id)
    workers = [ledger, other_ledger]

    replies = race(8, lambda index: workers[index % 2].purchase(dict(body)))

    assert sorted(reply.duplicate for reply in replies) == [False] + [True] * 7
    assert len({reply.account.id for reply in replies}) == 1
    assert len(stream(ledger, str(replies[0].account.id))) == 1


def test_concurrent_first_purchases_of_one_new_trader_all_open_accounts(
    ledger: PropLedger, other_ledger: PropLedger, program_id: str
) -> None:
    trader_id = uid("newcomer-")
    workers = [ledger, other_ledger]
    bodies = [purchase_body(program_id, trader_id=trader_id) for _ in range(8)]

    replies = race(8, lambda index: workers[index % 2].purchase(bodies[index]))

    assert not any(reply.duplicate for reply in replies)
    assert len({reply.account.id for reply in replies}) == 8
    for reply in replies:
        assert ledger.account(str(reply.account.id)).trader_id == trader_id


def test_concurrent_trades_through_the_http_api_land_exactly_once(database_url: str) -> None:
    with TestClient(make_app(database_url)) as client:
        program = program_body()
        assert client.post("/v1/programs", json=program, headers=auth("admin")).status_code == 201
        purchase = client.post(
            "/v1/purchases", json=purchase_body(program["program_id"]), headers=auth("finance")
        )
        account_id = purchase.json()["account_id"]
        platform = auth("platform")

        def trade(index: int) -> Any:
            body = trade_body(f"H-{index % 10}", profit=f"{index % 10}.50")
            return client.post(f"/v1/accounts/{account_id}/trades", json=body, headers=platform)

        replies = race(20, trade)

        statuses = sorted(reply.status_code for reply in replies)
        assert statuses == [200] * 10 + [201] * 10, [reply.text for reply in replies]
        state = client.get(f"/v1/accounts/{account_id}", headers=auth("auditor")).json()
        assert state["version"] == 11
        assert state["balance"] == str(B0 + sum(Decimal(n) + Decimal("0.5") for n in range(10)))
        ledger: PropLedger = client.app.state.ledger  # type: ignore[attr-defined]
        assert len(trade_events(ledger, account_id)) == 10
        assert_stream_is_consistent(ledger, account_id)


def test_concurrent_requests_with_one_idempotency_key_apply_one_trade(database_url: str) -> None:
    with TestClient(make_app(database_url)) as client:
        program = program_body()
        assert client.post("/v1/programs", json=program, headers=auth("admin")).status_code == 201
        purchase = client.post(
            "/v1/purchases", json=purchase_body(program["program_id"]), headers=auth("finance")
        )
        account_id = purchase.json()["account_id"]
        headers = {**auth("platform"), "Idempotency-Key": uid("key-")}

        def trade(index: int) -> Any:
            # Half of them the same trade, half a different trade under the same key.
            body = trade_body("K-1", profit="7.00") if index % 2 else trade_body(f"K-{index}")
            return client.post(f"/v1/accounts/{account_id}/trades", json=body, headers=headers)

        replies = race(10, trade)

        created = [reply for reply in replies if reply.status_code == 201]
        refused = [reply for reply in replies if reply.status_code == 409]
        assert len(created) + len(refused) == 10, [reply.text for reply in replies]
        assert created, "one request must have gone through"
        assert len({reply.text for reply in created}) == 1, "replays repeat the first answer"
        for reply in refused:
            assert reply.json()["error"]["code"] in {
                "idempotency_key_reused",
                "idempotency_key_in_progress",
            }
        ledger: PropLedger = client.app.state.ledger  # type: ignore[attr-defined]
        assert len(trade_events(ledger, account_id)) == 1
        assert_stream_is_consistent(ledger, account_id)


def test_the_hash_chain_is_intact_after_every_race(database_url: str, ledger: PropLedger) -> None:
    """Runs last in the module: every event written concurrently above got exactly one link,
    in log order, each following the one before."""
    from ledger.audit import verify_chain

    report = verify_chain(database_url)
    assert report.findings == []
    assert report.ok
    assert report.events == len(list(ledger.recorder.select_notifications(start=1, limit=100000)))
    assert (report.head_position or 0) == ledger.position()
