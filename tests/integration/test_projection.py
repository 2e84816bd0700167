"""The account board projection: equal to the aggregates, rebuildable from zero, and
exactly-once under failures and concurrent runners (SQLite file and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from api.views import account_state
from domain.account import TradingAccount
from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.board import COLUMNS, AccountBoard, all_rows
from projections.runner import ProjectionRunner
from projections.store import COPY_FROM_ROWS, Cursor, Database, update_rows
from tests.support import BACKENDS, backend_url, program_body, purchase_body, trade_body, uid

LOG_TABLE = (
    "CREATE TABLE IF NOT EXISTS test_projection_log ("
    "projection TEXT NOT NULL, position BIGINT NOT NULL, "
    "originator_id TEXT NOT NULL, version INTEGER NOT NULL)"
)


class EventLog:
    """A test projection that writes one row per event it is given, so that an event
    applied twice (or lost) shows up as a row too many (or too few)."""

    tables: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("test_projection_log", ("projection", "position")),
    )

    def __init__(self, name: str, *, fail_after: int | None = None) -> None:
        self.name = name
        self.fail_after = fail_after

    def handles(self, topic: str) -> bool:
        return True

    def reset(self, cursor: Cursor) -> None:
        cursor.execute("DELETE FROM test_projection_log WHERE projection = ?", (self.name,))

    def apply(self, cursor: Cursor, events: list[Any]) -> None:
        for written, item in enumerate(events):
            if self.fail_after is not None and written >= self.fail_after:
                raise RuntimeError("the projection failed mid-page")
            position, event = item if isinstance(item, tuple) else (-1, item)
            cursor.execute(
                "INSERT INTO test_projection_log (projection, position, originator_id, version) "
                "VALUES (?, ?, ?, ?)",
                (self.name, position, str(event.originator_id), event.originator_version),
            )


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
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    with db.transaction() as cursor:
        cursor.execute(LOG_TABLE)
    yield db
    db.close()


@pytest.fixture(scope="module")
def program_id(ledger: PropLedger) -> str:
    body = program_body()
    ledger.define_program(body)
    return str(body["program_id"])


def populate(ledger: PropLedger, program_id: str) -> list[str]:
    """Purchases, trades, a pass (opening phase 2), a breach, equity marks, a batch, a late
    trade and duplicates; returns the ids of the accounts involved."""
    passer = str(ledger.purchase(purchase_body(program_id)).account.id)
    breacher = str(ledger.purchase(purchase_body(program_id)).account.id)
    marked = str(ledger.purchase(purchase_body(program_id)).account.id)
    for day in ("2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"):
        ledger.record_trade(passer, trade_body(day=day, profit="2750.00", commission="-0.01"))
    passed = ledger.account(passer)
    assert passed.status == "passed"
    phase_2 = str(passed.next_account_id)
    ledger.record_trade(phase_2, trade_body(day="2026-03-09", profit="-12.34"))
    first = trade_body("dup", profit="100.00")
    ledger.record_trade(breacher, first)
    ledger.record_trade(breacher, first)
    ledger.record_trade(breacher, trade_body(profit="-5200.00", closed="12:00:00"))
    assert ledger.account(breacher).status == "breached"
    ledger.record_trade(breacher, trade_body(profit="10.00", closed="13:00:00"))
    ledger.record_equity(marked, {"equity": "99000.00", "at": "2026-03-02T10:00:00Z"})
    ledger.record_trade(marked, trade_body(day="2026-03-03", profit="250.00"))
    ledger.record_trade(marked, trade_body(day="2026-03-01", profit="-20.00"))  # late
    ledger.record_equity(marked, {"equity": "100500.00", "at": "2026-03-03T15:00:00Z"})
    results, _ = ledger.record_trades_batch(
        [
            {"account_id": account, **trade_body(day="2026-03-10", profit="1.11")}
            for account in (phase_2, marked, breacher)
        ]
    )
    assert [result.result for result in results] == ["created"] * 3
    return [passer, phase_2, breacher, marked]


def expected_row(ledger: PropLedger, account_id: str) -> dict[str, Any]:
    state = account_state(ledger.account(account_id))
    return {column: state[column] for column in COLUMNS if column != "updated_at"}


def assert_board_equals_aggregates(ledger: PropLedger, database: Database) -> None:
    rows = all_rows(database)
    assert rows
    for row in rows:
        assert {k: v for k, v in row.items() if k != "updated_at"} == expected_row(
            ledger, row["account_id"]
        )
    account_ids = {
        str(notification.originator_id)
        for notification in notifications(ledger)
        if notification.topic.startswith(f"{TradingAccount.__module__}:TradingAccount.Opened")
    }
    assert {row["account_id"] for row in rows} == account_ids


def notifications(ledger: PropLedger) -> list[Any]:
    found: list[Any] = []
    start = 1
    while page := ledger.recorder.select_notifications(start=start, limit=500):
        found.extend(page)
        start = page[-1].id + 1
    return found


def log_rows(database: Database, name: str) -> list[tuple[int, str, int]]:
    rows = database.query(
        "SELECT position, originator_id, version FROM test_projection_log WHERE projection = ? "
        "ORDER BY position",
        (name,),
    )
    return [(int(row["position"]), row["originator_id"], int(row["version"])) for row in rows]


def expected_log(ledger: PropLedger) -> list[tuple[int, str, int]]:
    return [(n.id, str(n.originator_id), int(n.originator_version)) for n in notifications(ledger)]


def test_the_board_equals_the_aggregate_states(
    ledger: PropLedger, database: Database, program_id: str
) -> None:
    accounts = populate(ledger, program_id)
    runner = ProjectionRunner(ledger, database, [AccountBoard()])
    assert runner.catch_up() > 0
    assert runner.position("account_board") == ledger.position()
    assert_board_equals_aggregates(ledger, database)
    rows = {row["account_id"]: row for row in all_rows(database)}
    passer, phase_2, breacher, marked = accounts
    assert rows[passer]["status"] == "passed"
    assert rows[passer]["next_account_id"] == phase_2
    assert rows[phase_2]["stage"] == "phase-2"
    assert rows[breacher]["status"] == "breached"
    assert rows[breacher]["breach"]["rule"] == "max_daily_loss"
    assert rows[marked]["balance"] == "100231.11"
    assert runner.catch_up() == 0


def test_rebuilding_from_zero_gives_identical_rows(
    ledger: PropLedger, database: Database, program_id: str
) -> None:
    populate(ledger, program_id)
    # Pages of one event: the board is given every event, none left out by `needs`.
    runner = ProjectionRunner(ledger, database, [AccountBoard()], batch_size=1)
    runner.catch_up()
    before = all_rows(database)
    with database.transaction() as cursor:  # a row damaged behind the runner's back
        cursor.execute("UPDATE account_board SET balance = '1.00', status = 'closed'")
    assert all_rows(database) != before

    processed = runner.rebuild(AccountBoard())

    assert processed == len(notifications(ledger))
    assert all_rows(database) == before
    assert runner.position("account_board") == ledger.position()
    assert_board_equals_aggregates(ledger, database)


def test_readers_see_the_board_as_it_was_until_a_rebuild_commits(
    ledger: PropLedger, database: Database, database_url: str, program_id: str
) -> None:
    """A rebuild empties and refills the board in one transaction: a reader on another
    connection sees the rows and position as they were, complete, never emptied (a
    rebuild that committed its reset first let a report answer 200 with no rows, and
    verify call a healthy projection behind: black-box audit)."""
    populate(ledger, program_id)
    runner = ProjectionRunner(ledger, database, [AccountBoard()])
    runner.catch_up()
    before = (all_rows(database), runner.position("account_board"))
    reader = Database(database_url)
    seen: list[tuple[Any, int]] = []

    class Watched(AccountBoard):
        def apply(self, cursor: Cursor, events: list[Any]) -> None:
            super().apply(cursor, events)
            seen.append(
                (all_rows(reader), ProjectionRunner(ledger, reader, []).position(self.name))
            )

    try:
        processed = runner.rebuild(Watched(), page_size=2)
    finally:
        reader.close()
    assert processed == len(notifications(ledger))
    assert len(seen) > 1
    assert all(observed == before for observed in seen)
    assert (all_rows(database), runner.position("account_board")) == before


def test_a_page_updating_many_accounts_at_once_leaves_each_row_as_its_aggregate(
    ledger: PropLedger, database: Database, program_id: str
) -> None:
    """Pages that update more rows than `COPY_FROM_ROWS` take another path on PostgreSQL
    (COPY into a temporary table, one UPDATE ... FROM): the rows must be the same, twice in
    a row on the same connection."""
    accounts = [
        str(ledger.purchase(purchase_body(program_id)).account.id)
        for _ in range(COPY_FROM_ROWS + 20)
    ]
    runner = ProjectionRunner(ledger, database, [AccountBoard()])
    runner.catch_up()  # every account's row exists: the next pages are updates
    for round_number, profit in enumerate(("12.34", "-5.67")):
        ledger.record_trades_batch(
            [
                {"account_id": account, **trade_body(f"many-{round_number}", profit=profit)}
                for account in accounts
            ]
        )
        assert runner.catch_up() == len(accounts)
        rows = {row["account_id"]: row for row in all_rows(database)}
        for account in accounts:
            assert {k: v for k, v in rows[account].items() if k != "updated_at"} == (
                expected_row(ledger, account)
            )
    assert {rows[account]["balance"] for account in accounts} == {"100006.67"}
    assert_board_equals_aggregates(ledger, database)


def test_the_board_needs_each_accounts_opening_and_newest_event_of_a_page(
    ledger: PropLedger, database: Database, program_id: str
) -> None:
    populate(ledger, program_id)
    page = notifications(ledger)
    board = AccountBoard()
    handled = [n for n in page if board.handles(n.topic)]

    chosen = board.needs(handled)

    newest = {n.originator_id: n.id for n in handled}
    opened = {n.id for n in handled if n.topic.endswith("TradingAccount.Opened")}
    assert [n.id for n in chosen] == sorted(set(newest.values()) | opened)
    assert len(chosen) < len(handled)  # the page had older events to leave out
    # Rebuilt in pages of three events or in one page, the board equals the aggregates.
    runner = ProjectionRunner(ledger, database, [AccountBoard()])
    assert runner.rebuild(AccountBoard(), page_size=3) == len(page)
    in_threes = all_rows(database)
    assert runner.rebuild(AccountBoard()) == len(page)
    assert all_rows(database) == in_threes
    assert_board_equals_aggregates(ledger, database)


def test_the_board_reads_stored_account_events_as_their_domain_events_say(
    ledger: PropLedger, program_id: str
) -> None:
    populate(ledger, program_id)
    board = AccountBoard()
    read_lean: Counter[str] = Counter()
    for notification in notifications(ledger):
        if not board.handles(notification.topic):
            continue
        lean = board.decode(notification)
        event = ledger.mapper.to_domain_event(notification)
        if lean is None:
            assert isinstance(event, TradingAccount.Opened)  # the static columns: long way
            continue
        assert lean.originator_id == event.originator_id
        assert lean.dynamic == board._dynamic(event)
        read_lean[type(event).__name__] += 1
    assert {"TradeClosed", "RuleBreached", "PhasePassed", "EquityMarked"} <= set(read_lean)


def test_an_event_stored_at_an_older_class_version_is_left_to_the_mapper(
    ledger: PropLedger, program_id: str
) -> None:
    populate(ledger, program_id)
    board = AccountBoard()
    trade = next(n for n in notifications(ledger) if n.topic.endswith(".TradeClosed"))
    state = json.loads(trade.state)
    state["class_version"] = 1  # as stored before `actor` (upcast on reading)
    del state["actor"]
    older = dataclasses.replace(trade, state=json.dumps(state).encode())
    assert board.decode(older) is None
    assert board.decode(dataclasses.replace(trade, state=b"x\x9c compressed")) is None
    assert board.decode(trade) is not None


def test_a_page_that_fails_midway_changes_nothing_and_the_next_run_applies_it_once(
    ledger: PropLedger,
    database: Database,
    program_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = uid("log_")
    board = AccountBoard()
    runner = ProjectionRunner(ledger, database, [board, EventLog(name)])
    populate(ledger, program_id)
    runner.catch_up()
    assert log_rows(database, name) == expected_log(ledger)
    populate(ledger, program_id)  # a new page of events, not yet projected

    rows_before = all_rows(database)
    board_position = runner.position("account_board")
    log_before = log_rows(database, name)
    log_position = runner.position(name)
    assert board_position < ledger.position()

    original_apply = AccountBoard.apply

    def apply_then_fail(self: AccountBoard, cursor: Cursor, events: list[Any]) -> None:
        original_apply(self, cursor, events)  # writes the rows...
        raise RuntimeError("the board failed after writing its rows")  # ...then fails

    monkeypatch.setattr(AccountBoard, "apply", apply_then_fail)
    with pytest.raises(RuntimeError, match="after writing"):
        ProjectionRunner(ledger, database, [board]).run_once()
    assert runner.position("account_board") == board_position
    assert all_rows(database) == rows_before
    monkeypatch.undo()

    failing_log = EventLog(name, fail_after=3)
    with pytest.raises(RuntimeError, match="mid-page"):
        ProjectionRunner(ledger, database, [failing_log]).run_once()
    assert runner.position(name) == log_position
    assert log_rows(database, name) == log_before

    runner.catch_up()
    assert runner.position("account_board") == ledger.position()
    assert runner.position(name) == ledger.position()
    assert_board_equals_aggregates(ledger, database)
    assert log_rows(database, name) == expected_log(ledger)  # each event exactly once
    assert runner.catch_up() == 0
    assert log_rows(database, name) == expected_log(ledger)


def test_two_runners_processing_concurrently_end_equal_to_a_rebuild(
    ledger: PropLedger, database_url: str, database: Database, program_id: str
) -> None:
    name = uid("log_")
    populate(ledger, program_id)
    workers = []
    for _ in range(2):
        source = PropLedger(database_url)
        workers.append(
            (
                source,
                ProjectionRunner(
                    source,
                    Database(database_url),
                    [AccountBoard(), EventLog(name)],
                    batch_size=3,
                ),
            )
        )
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(2):
                populate(ledger, program_id)
        except BaseException as error:  # reported below
            errors.append(error)

    # Several writers at once: a runner must never skip an event whose position was
    # taken before a later one became visible.
    writers = [threading.Thread(target=write) for _ in range(3)]

    def follow(runner: ProjectionRunner) -> None:
        try:
            while any(writer.is_alive() for writer in writers):
                runner.run_once()
            runner.catch_up()
        except BaseException as error:  # reported below
            errors.append(error)

    followers = [threading.Thread(target=follow, args=(runner,)) for _, runner in workers]
    try:
        for thread in writers + followers:
            thread.start()
        for thread in writers + followers:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in writers + followers)
        assert not errors, errors
        for _, runner in workers:  # whatever a lost race left, a last pass finishes it
            runner.catch_up()
    finally:
        for source, runner in workers:
            runner.database.close()
            source.close()

    final = ledger.position()
    check = ProjectionRunner(ledger, database, [AccountBoard()])
    assert check.position("account_board") == final
    assert check.position(name) == final
    assert log_rows(database, name) == expected_log(ledger)  # no event twice, none lost
    concurrent_rows = all_rows(database)
    assert_board_equals_aggregates(ledger, database)

    check.rebuild(AccountBoard())
    assert all_rows(database) == concurrent_rows

    from ledger.audit import verify_chain

    chain = verify_chain(database_url)
    assert chain.findings == []
    assert chain.events == len(notifications(ledger))


def test_two_copied_updates_in_one_transaction_each_apply_only_their_own_rows(
    ledger: PropLedger, database: Database, program_id: str
) -> None:
    accounts = [
        str(ledger.purchase(purchase_body(program_id)).account.id) for _ in range(COPY_FROM_ROWS)
    ]
    ProjectionRunner(ledger, database, [AccountBoard()]).catch_up()
    with database.transaction() as cursor:
        update_rows(
            cursor, "account_board", "account_id", ["status"], [["closed", a] for a in accounts]
        )
        update_rows(
            cursor, "account_board", "account_id", ["status"], [["passed", a] for a in accounts]
        )
    rows = {row["account_id"]: row["status"] for row in all_rows(database)}
    assert {rows[account] for account in accounts} == {"passed"}
    ProjectionRunner(ledger, database, [AccountBoard()]).rebuild(AccountBoard())  # as it was
    assert_board_equals_aggregates(ledger, database)
