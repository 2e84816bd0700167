"""Projection workers: one page read for every projection, positions apart, and two
workers that split the work instead of repeating it (SQLite file and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.board import AccountBoard
from projections.runner import ProjectionRunner
from projections.store import Database
from tests.integration.test_projection import (
    LOG_TABLE,
    EventLog,
    assert_board_equals_aggregates,
    expected_log,
    log_rows,
    populate,
)
from tests.support import BACKENDS, backend_url, program_body, uid


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


class CountingSource:
    """The ledger as a runner's event source, counting the pages read from its log."""

    def __init__(self, ledger: PropLedger) -> None:
        self.ledger = ledger
        self.pages = 0
        outer = self

        class Recorder:
            def select_notifications(self, *args: Any, **kwargs: Any) -> Any:
                outer.pages += 1
                return ledger.recorder.select_notifications(*args, **kwargs)

            def max_notification_id(self) -> int | None:
                return ledger.recorder.max_notification_id()

        self.recorder = Recorder()
        self.mapper = ledger.mapper


def test_one_page_read_serves_every_projection_each_from_its_own_position(
    ledger: PropLedger, database: Database, program_id: str
) -> None:
    first, second = EventLog(uid("a_")), EventLog(uid("b_"))
    populate(ledger, program_id)
    source = CountingSource(ledger)
    ProjectionRunner(source, database, [first], batch_size=5).catch_up()
    assert log_rows(database, first.name) == expected_log(ledger)
    populate(ledger, program_id)
    end = ledger.position()
    # `first` is at `ahead`, `second` at zero: pages start at the lowest position, and
    # each projection gets only the events past its own.
    runner = ProjectionRunner(source, database, [first, second, AccountBoard()], batch_size=5)
    source.pages = 0
    assert runner.catch_up() > 0
    assert runner.positions() == {first.name: end, second.name: end, "account_board": end}
    assert log_rows(database, first.name) == expected_log(ledger)  # each event once
    assert log_rows(database, second.name) == expected_log(ledger)
    assert_board_equals_aggregates(ledger, database)
    # One read per page for all three (plus the empty read that ends the catch-up), not
    # one per projection and page.
    assert source.pages == -(-end // 5) + 1


@pytest.mark.postgres
def test_a_busy_projection_is_left_to_the_worker_that_holds_it(postgres_url: str) -> None:
    """Row locks: PostgreSQL only (SQLite has one writer for the whole database)."""
    migrate(postgres_url)
    ledger = PropLedger(postgres_url)
    database = Database(postgres_url)
    with database.transaction() as cursor:
        cursor.execute(LOG_TABLE)
    program = program_body()
    ledger.define_program(program)
    program_id = str(program["program_id"])
    log = EventLog(uid("busy_"))
    runner = ProjectionRunner(ledger, Database(postgres_url), [log], batch_size=1000)
    try:
        runner.catch_up()
        populate(ledger, program_id)
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:  # another worker, in the middle of a page of this projection
            with database.transaction() as cursor:
                cursor.execute(
                    "SELECT position FROM projection_tracking WHERE projection = ? FOR UPDATE",
                    (log.name,),
                )
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(10)
            before = log_rows(database, log.name)
            started = time.monotonic()
            assert runner.run_once(skip_busy=True) == 0  # not waited for, not repeated
            assert time.monotonic() - started < 5
            assert log_rows(database, log.name) == before
        finally:
            release.set()
            holder.join(30)
        assert runner.catch_up() > 0
        assert log_rows(database, log.name) == expected_log(ledger)
    finally:
        runner.database.close()
        database.close()
        ledger.close()


def test_two_following_workers_split_the_log_and_apply_each_event_once(
    ledger: PropLedger, database_url: str, database: Database, program_id: str
) -> None:
    name = uid("split_")
    workers = []
    for _ in range(2):
        source = PropLedger(database_url)
        runner = ProjectionRunner(
            source, Database(database_url), [AccountBoard(), EventLog(name)], batch_size=4
        )
        workers.append((source, runner))
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def write() -> None:
        try:
            for _ in range(2):
                populate(ledger, program_id)
        except BaseException as error:  # reported below
            errors.append(error)

    def follow(runner: ProjectionRunner) -> None:
        try:
            while writing.is_set():
                if runner.run_once(skip_busy=True) == 0:
                    time.sleep(0.005)
        except BaseException as error:  # reported below
            errors.append(error)

    writers = [threading.Thread(target=write) for _ in range(2)]
    followers = [threading.Thread(target=follow, args=(runner,)) for _, runner in workers]
    try:
        for thread in writers + followers:
            thread.start()
        for thread in writers:
            thread.join(timeout=120)
        deadline = time.monotonic() + 60
        while workers[0][1].lowest_position() < ledger.position():
            assert time.monotonic() < deadline, "the workers did not catch up"
            time.sleep(0.01)
        writing.clear()
        for thread in followers:
            thread.join(timeout=30)
        assert not errors, errors
        assert log_rows(database, name) == expected_log(ledger)  # each event exactly once
        assert_board_equals_aggregates(ledger, database)
    finally:
        writing.clear()
        for source, runner in workers:
            runner.database.close()
            source.close()


def test_a_failing_projection_does_not_hold_the_others_back(
    ledger: PropLedger, database: Database, program_id: str
) -> None:
    populate(ledger, program_id)
    failing, healthy = EventLog(uid("fails_"), fail_after=0), EventLog(uid("ok_"))
    runner = ProjectionRunner(ledger, database, [failing, healthy], batch_size=1000)
    with pytest.raises(RuntimeError, match="failed mid-page"):
        runner.run_once()
    assert log_rows(database, failing.name) == []
    assert runner.position(failing.name) == 0
    assert log_rows(database, healthy.name) == expected_log(ledger)[:1000]
