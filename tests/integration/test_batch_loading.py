"""A batch loads its accounts together, current with the store, whoever wrote them last.

Two `PropLedger`s on one database stand for two API processes. The batch mixes accounts
this process last saved and another process has written since, accounts it last saved
that nobody touched, accounts it never held (one long enough to load from a snapshot),
a trade the other process already recorded, and ids that name no account.
"""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from ledger import app as app_module
from ledger.app import SNAPSHOT_EVERY, PropLedger
from ledger.migrate import migrate
from tests.support import program_body, purchase_body, trade_body, uid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return sqlite_url


def item(account_id: str, trade_id: str, profit: str = "1.00") -> dict[str, Any]:
    return {"account_id": account_id, **trade_body(trade_id, profit=profit)}


def opened_accounts(ledger: PropLedger, prefix: str, count: int) -> list[str]:
    """`count` accounts bought on a program of their own."""
    program = program_body(uid(prefix))
    ledger.define_program(program)
    return [
        str(ledger.purchase(purchase_body(program["program_id"])).account.id) for _ in range(count)
    ]


def full_replay(ledger: PropLedger, account_id: Any) -> Any:
    account = None
    for event in ledger.events.get(account_id):
        account = event.mutate(account)
    return account


class CountingSaves:
    """Counts the ledger's calls to save(): a batch that collided would save twice."""

    def __init__(self, ledger: PropLedger) -> None:
        self.calls = 0
        original = ledger.save

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        ledger.save = counted  # type: ignore[method-assign]


def test_a_batch_decides_on_accounts_as_the_store_has_them(url: str) -> None:
    migrate(url)
    mine = PropLedger(url)  # this API process
    other = PropLedger(url)  # another one on the same database
    try:
        program = program_body(uid("batch-"))
        mine.define_program(program)
        pid = program["program_id"]
        # Opened here: this process holds them as it saved them.
        stale, current = (
            str(mine.purchase(purchase_body(pid)).account.id),
            str(mine.purchase(purchase_body(pid)).account.id),
        )
        mine.record_trades_batch([item(stale, "S-1"), item(current, "C-1")])
        # Opened by the other process: never held here; one is long enough for a snapshot.
        never = str(other.purchase(purchase_body(pid)).account.id)
        long = str(other.purchase(purchase_body(pid)).account.id)
        for start in range(0, SNAPSHOT_EVERY + 10, 100):
            count = min(100, SNAPSHOT_EVERY + 10 - start)
            results, _ = other.record_trades_batch(
                [
                    item(long, f"L-{n}", "1.00" if n % 2 else "-1.00")
                    for n in range(start, start + count)
                ]
            )
            assert {r.result for r in results} == {"created"}
        assert other.snapshots is not None
        assert list(other.snapshots.get(other.account(long).id))
        # The other process writes to an account this one holds: its copy is now stale.
        other.record_trade(stale, trade_body("S-2", profit="-2.50"))
        other.record_trade(stale, trade_body("S-3", profit="4.00"))

        saves = CountingSaves(mine)
        upper = stale.upper()  # the same account spelt otherwise
        results, position = mine.record_trades_batch(
            [
                item(stale, "S-4"),
                item(current, "C-2"),
                item(never, "N-1"),
                item(long, "L-last"),
                {"account_id": upper, **trade_body("S-3", profit="4.00")},  # S-3 again
                item("not-a-uuid", "X-1"),
                item("00000000-0000-4000-8000-000000000000", "X-2"),
                item(upper, "S-5"),
            ]
        )
        assert [(r.account_id, r.trade_id, r.result) for r in results] == [
            (stale, "S-4", "created"),
            (current, "C-2", "created"),
            (never, "N-1", "created"),
            (long, "L-last", "created"),
            (upper, "S-3", "duplicate"),
            ("not-a-uuid", "X-1", "rejected"),
            ("00000000-0000-4000-8000-000000000000", "X-2", "rejected"),
            (upper, "S-5", "created"),
        ]
        codes = [(r.error or {}).get("code") for r in results[5:7]]
        assert codes == ["unknown_account", "unknown_account"]
        assert position is not None
        # Decided on current accounts: one save, no collision with the other's writes.
        assert saves.calls == 1

        fresh = PropLedger(url)
        try:
            for account_id, trades in (
                (stale, ["S-1", "S-2", "S-3", "S-4", "S-5"]),
                (current, ["C-1", "C-2"]),
                (never, ["N-1"]),
            ):
                stored = fresh.account(account_id)
                assert sorted(stored.trades) == sorted(trades)
                assert stored.version == 1 + len(trades)
                replayed = full_replay(fresh, stored.id)
                assert stored.state == replayed.state
            stored_long = fresh.account(long)
            assert stored_long.version == SNAPSHOT_EVERY + 12
            assert stored_long.state == full_replay(fresh, stored_long.id).state
            assert stored_long.trades == full_replay(fresh, stored_long.id).trades
            # Balance of the stale account: 1.00 - 2.50 + 4.00 + 1.00 + 1.00 on 100,000.
            assert str(fresh.account(stale).state.balance.amount) == "100004.50"
        finally:
            fresh.close()
    finally:
        mine.close()
        other.close()


def test_a_batch_retried_after_a_true_race_records_each_trade_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other process commits between this batch's load and its save: the save
    collides, the retry reloads, and every trade is recorded once."""
    migrate(url)
    mine = PropLedger(url)
    other = PropLedger(url)
    try:
        program = program_body(uid("race-"))
        mine.define_program(program)
        pid = program["program_id"]
        accounts = [str(mine.purchase(purchase_body(pid)).account.id) for _ in range(3)]
        original = mine._load_for_batch
        raced = []

        def load_then_race(first_spelling: dict[str, str]) -> Any:
            loaded = original(first_spelling)
            if not raced:
                raced.append(True)
                other.record_trade(accounts[1], trade_body("RACE-1"))
            return loaded

        mine._load_for_batch = load_then_race  # type: ignore[method-assign]
        saves = CountingSaves(mine)
        snapshot_reads = []
        read_snapshots = app_module._latest_snapshots

        def counted_snapshot_reads(recorder: Any, ids: list[Any]) -> Any:
            snapshot_reads.append(len(ids))
            return read_snapshots(recorder, ids)

        monkeypatch.setattr(app_module, "_latest_snapshots", counted_snapshot_reads)
        results, _ = mine.record_trades_batch(
            [item(a, f"B-{n}") for n, a in enumerate(accounts)]
            + [item(accounts[1], "RACE-1", "100.00")]
        )
        assert [r.result for r in results] == ["created", "created", "created", "duplicate"]
        assert saves.calls == 2  # the collision, then the retry
        # The retry fast-forwarded the copies this process holds: no account was read
        # again from its snapshot.
        assert snapshot_reads == []
        fresh = PropLedger(url)
        try:
            assert sorted(fresh.account(accounts[1]).trades) == ["B-1", "RACE-1"]
            assert [fresh.account(a).version for a in accounts] == [2, 3, 2]
        finally:
            fresh.close()
    finally:
        mine.close()
        other.close()


def test_a_batch_that_keeps_losing_to_single_writers_is_applied_in_halves_in_order(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single posts to a batch's accounts can commit between every try of a batch (each
    try decides all its trades again): the batch did not get through in 12 tries and
    answered 500. Now it is applied in halves, in order, down to what gets through; every
    trade is recorded once and the reply is in the order given."""
    migrate(url)
    ledger = PropLedger(url)
    try:
        accounts = opened_accounts(ledger, "halves-", 4)
        items = [item(accounts[n % 4], f"H-{n}", f"{n}.00") for n in range(12)]
        real_save = ledger.save
        saves: list[int] = []

        def losing_save(*aggregates: Any, **kwargs: Any) -> Any:
            # A save of more than two accounts always finds one taken by a single post.
            if len(aggregates) > 2:
                raise app_module.IntegrityError("originator_version taken (simulated)")
            saves.append(len(aggregates))
            return real_save(*aggregates, **kwargs)

        monkeypatch.setattr(ledger, "save", losing_save)
        results, position = ledger.record_trades_batch(items, "bridge")
        assert [(r.account_id, r.trade_id, r.result) for r in results] == [
            (entry["account_id"], entry["trade_id"], "created") for entry in items
        ]
        assert position == ledger.position()
        assert saves
        assert max(saves) <= 2
        for index, account_id in enumerate(accounts):
            recorded = [
                event.trade["trade_id"]
                for event in ledger.events.get(ledger.account(account_id).id)
                if hasattr(event, "trade")
            ]
            assert recorded == [f"H-{n}" for n in range(index, 12, 4)]
    finally:
        ledger.close()


def test_a_single_trade_that_never_gets_through_is_rejected_busy_after_saved_halves(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Halves before it are saved: one trade whose account is taken on every try is
    answered `rejected` (busy: send it again), the rest as applied, not the whole batch
    as a 500 that hides what was saved."""
    migrate(url)
    ledger = PropLedger(url)
    try:
        accounts = opened_accounts(ledger, "busy-", 2)
        items = [item(accounts[n % 2], f"B-{n}") for n in range(4)]
        real_save = ledger.save
        monkeypatch.setattr(app_module, "MAX_ATTEMPTS", 2)

        def losing_save(*aggregates: Any, **kwargs: Any) -> Any:
            if len(aggregates) > 1 or aggregates[0].id == ledger.account(accounts[1]).id:
                raise app_module.IntegrityError("taken (simulated)")
            return real_save(*aggregates, **kwargs)

        monkeypatch.setattr(ledger, "save", losing_save)
        results, _ = ledger.record_trades_batch(items, "bridge")
        assert [(r.trade_id, r.result) for r in results] == [
            ("B-0", "created"), ("B-1", "rejected"), ("B-2", "created"), ("B-3", "rejected"),
        ]  # fmt: skip
        assert results[1].error is not None
        assert results[1].error["code"] == "busy"
    finally:
        ledger.close()


def test_a_store_failure_after_a_saved_half_answers_what_was_saved_not_a_5xx(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a fault audit: a batch applied in halves whose later half lost the store
    answered 503, though its first half was committed; the client could not know. Now
    the saved trades are answered `created` and the rest `rejected` (not_applied), and
    sending the whole batch again records each trade once."""
    migrate(url)
    ledger = PropLedger(url)
    try:
        accounts = opened_accounts(ledger, "fault-", 2)
        items = [item(accounts[n % 2], f"F-{n}") for n in range(4)]
        real_save = ledger.save
        saved: list[int] = []

        def failing_save(*aggregates: Any, **kwargs: Any) -> Any:
            if len(aggregates) > 1:
                raise app_module.IntegrityError("taken (simulated)")
            if saved:
                raise OperationalError("connection lost (simulated)")
            saved.append(1)
            return real_save(*aggregates, **kwargs)

        monkeypatch.setattr(ledger, "save", failing_save)
        results, position = ledger.record_trades_batch(items, "bridge")
        assert [(r.trade_id, r.result) for r in results] == [
            ("F-0", "created"), ("F-1", "rejected"), ("F-2", "rejected"), ("F-3", "rejected"),
        ]  # fmt: skip
        assert results[1].error is not None
        assert results[1].error["code"] == "not_applied"
        assert position == ledger.position()

        monkeypatch.setattr(ledger, "save", real_save)
        again, _ = ledger.record_trades_batch(items, "bridge")
        assert [r.result for r in again] == ["duplicate", "created", "created", "created"]
        for account_id in accounts:
            trades = [
                event.trade["trade_id"]
                for event in ledger.events.get(ledger.account(account_id).id)
                if hasattr(event, "trade")
            ]
            assert len(trades) == len(set(trades)) == 2
    finally:
        ledger.close()


def test_a_store_failure_before_anything_is_saved_still_fails_the_whole_batch(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(url)
    ledger = PropLedger(url)
    try:
        account_id, other = opened_accounts(ledger, "fault-", 2)
        before = ledger.position()

        def failing_save(*aggregates: Any, **kwargs: Any) -> Any:
            if len(aggregates) > 1:
                raise app_module.IntegrityError("taken (simulated)")
            raise OperationalError("connection lost (simulated)")

        monkeypatch.setattr(ledger, "save", failing_save)
        with pytest.raises(OperationalError):
            ledger.record_trades_batch([item(account_id, "G-0"), item(other, "G-1")], "bridge")
        assert ledger.position() == before
    finally:
        ledger.close()
