"""Single trade posts grouped into one save: each caller still gets its own exact answer."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from domain.account import TradingAccount
from domain.errors import DomainError
from ledger.app import PropLedger
from ledger.migrate import migrate
from tests.support import program_body, purchase_body, trade_body, uid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return sqlite_url


# A window of 20 ms, and the default of the API: no window, what queued meanwhile.
GROUPINGS = [
    pytest.param({"group_window_ms": 20}, id="window"),
    pytest.param({"group_writes": True}, id="queued"),
]


def post_all(ledger: PropLedger, posts: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Posts every trade from its own thread, all released at once."""
    results: list[Any] = [None] * len(posts)
    barrier = threading.Barrier(len(posts))

    def post(index: int) -> None:
        account_id, body = posts[index]
        barrier.wait(timeout=30)
        try:
            results[index] = ledger.post_trade(account_id, body, "bridge")
        except DomainError as error:
            results[index] = error

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(posts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_concurrent_posts_grouped_into_saves_each_get_their_own_exact_answer(
    url: str, grouping: dict[str, Any]
) -> None:
    migrate(url)
    ledger = PropLedger(url, **grouping)
    try:
        program = program_body(uid("group-"))
        ledger.define_program(program)
        accounts = [
            str(ledger.purchase(purchase_body(program["program_id"])).account.id) for _ in range(3)
        ]
        twin = trade_body(uid("twin-"), profit="7.00")
        posts: list[tuple[str, dict[str, Any]]] = []
        for number in range(24):
            account_id = accounts[number % 3]
            profit = f"{number + 1}.00"
            posts.append((account_id, trade_body(f"G-{number}", profit=profit)))
        posts += [(accounts[0], dict(twin)) for _ in range(6)]  # one trade, six copies
        posts.append((accounts[1], trade_body("BAD", profit=12)))  # refused: a JSON number
        posts.append(("not-an-account", trade_body("LOST")))  # refused: unknown account

        results = post_all(ledger, posts)

        refusals = [r for r in results if isinstance(r, DomainError)]
        assert sorted(r.code for r in refusals) == ["invalid_decimal", "unknown_account"]
        replies = [r for r in results if not isinstance(r, DomainError)]
        assert Counter(r.duplicate for r in replies) == {False: 25, True: 5}
        # The log says the same: every distinct trade once, the twin once.
        for account_id in accounts:
            account = ledger.account(account_id)
            closed = [
                e
                for e in ledger.events.get(account.id)
                if isinstance(e, TradingAccount.TradeClosed)
            ]
            ids = [e.trade["trade_id"] for e in closed]
            assert len(ids) == len(set(ids))
            expected = Decimal("100000.00") + sum(
                (Decimal(body["profit"]) for a, body in posts[:24] if a == account_id),
                Decimal(0),
            )
            if account_id == accounts[0]:
                expected += Decimal("7.00")
            assert account.state.balance.amount == expected
        # Each fresh reply is the account exactly as its own trade left it.
        for (_, body), reply in zip(posts, results, strict=True):
            if isinstance(reply, DomainError) or reply.duplicate:
                continue
            recorded = ledger.repository.get(reply.account.id, version=reply.account.version)
            assert recorded.board() == reply.account.board()
            assert body["trade_id"] in recorded.trades
            assert reply.position is not None
        # A duplicate answers the account with the trade it repeats recorded once, as it was.
        originals = [r for r in replies if not r.duplicate and twin["trade_id"] in r.account.trades]
        first = min(originals, key=lambda r: r.account.trades[twin["trade_id"]][0])
        for reply in replies:
            if reply.duplicate:
                assert (
                    reply.account.trades[twin["trade_id"]] == first.account.trades[twin["trade_id"]]
                )
    finally:
        ledger.close()


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_a_collision_with_another_process_re_decides_the_group(
    url: str, grouping: dict[str, Any]
) -> None:
    migrate(url)
    grouped = PropLedger(url, **grouping)
    other = PropLedger(url)
    try:
        program = program_body(uid("collide-"))
        grouped.define_program(program)
        account_id = str(grouped.purchase(purchase_body(program["program_id"])).account.id)
        grouped.post_trade(account_id, trade_body("A-1", profit="1.00"))  # cached here
        other.record_trade(account_id, trade_body("B-1", profit="2.00"))  # the cache is stale
        other.record_trade(account_id, trade_body("A-2", profit="3.00"))
        results = post_all(
            grouped,
            [
                (account_id, trade_body("A-2", profit="3.00")),  # recorded by the other
                (account_id, trade_body("A-3", profit="4.00")),
            ],
        )
        assert [r.duplicate for r in results] == [True, False]
        final = grouped.account(account_id)
        assert final.state.balance.amount == Decimal("100010.00")
        assert sorted(final.trades) == ["A-1", "A-2", "A-3", "B-1"]
    finally:
        grouped.close()
        other.close()


@pytest.mark.parametrize("grouping", [*GROUPINGS, pytest.param({}, id="alone")])
def test_a_duplicate_answers_the_account_as_stored_not_this_processs_copy(
    url: str, grouping: dict[str, Any]
) -> None:
    """A duplicate saves nothing, so a stale in-process copy would never collide: its
    reply is read from the store, with what another process wrote since."""
    migrate(url)
    mine = PropLedger(url, **grouping)
    other = PropLedger(url)
    try:
        program = program_body(uid("dupstale-"))
        mine.define_program(program)
        account_id = str(mine.purchase(purchase_body(program["program_id"])).account.id)
        first = trade_body("A-1", profit="1.00")
        mine.post_trade(account_id, first)  # cached here at version 2
        other.record_trade(account_id, trade_body("B-1", profit="5.00"))  # version 3
        again = mine.post_trade(account_id, first)
        assert again.duplicate is True
        assert again.account.version == 3
        assert again.account.state.balance.amount == Decimal("100006.00")
        assert sorted(again.account.trades) == ["A-1", "B-1"]
    finally:
        mine.close()
        other.close()


def test_a_post_withdrawn_before_its_group_forms_is_never_decided(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(url)
    ledger = PropLedger(url, group_writes=True)
    try:
        program = program_body(uid("withdraw-"))
        ledger.define_program(program)
        account_id = str(ledger.purchase(purchase_body(program["program_id"])).account.id)
        grouper = ledger._grouper
        assert grouper is not None
        deciding, release = threading.Event(), threading.Event()
        decide = grouper._decide

        def held(group: list[Any]) -> None:
            deciding.set()
            assert release.wait(timeout=30)
            decide(group)

        monkeypatch.setattr(grouper, "_decide", held)
        first = ledger.post_trade_later(account_id, trade_body("W-1", profit="1.00"), "bridge")
        assert first is not None
        assert deciding.wait(timeout=30)  # the grouper is busy with the first post
        withdrawn = ledger.post_trade_later(account_id, trade_body("W-2", profit="2.00"), "b")
        kept = ledger.post_trade_later(account_id, trade_body("W-3", profit="3.00"), "bridge")
        assert withdrawn is not None
        assert kept is not None
        assert withdrawn.cancel()  # its caller gave up while it waited in the queue
        release.set()

        assert first.result(timeout=30).duplicate is False
        assert kept.result(timeout=30).account.state.balance.amount == Decimal("100004.00")
        assert withdrawn.cancelled()
        # Grouped futures can no longer be withdrawn: each gets its answer.
        assert not first.cancel()
        assert not kept.cancel()
        account = ledger.account(account_id)
        assert sorted(account.trades) == ["W-1", "W-3"]
        # The grouper goes on serving.
        assert ledger.post_trade(account_id, trade_body("W-4", profit="4.00")).duplicate is False
    finally:
        ledger.close()
