"""The log watcher that wakes the stream and the relay: LISTEN/NOTIFY on PostgreSQL (no
polling: its fallback read is set to a minute here), one poller on SQLite."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from api.logwatch import LogWatcher, log_watcher_for
from ledger.app import PropLedger
from ledger.migrate import migrate
from tests.support import BACKENDS, backend_url, program_body

# From a commit to the waiter running: a notification (PostgreSQL) or one poll (SQLite,
# every 50 ms), plus scheduling on a busy 2-core machine. Without the notification a
# PostgreSQL waiter would sleep for the 60 s fallback.
WAKE_SECONDS = 0.25


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


@pytest.fixture
def watcher(ledger: PropLedger, database_url: str) -> Iterator[LogWatcher]:
    started = log_watcher_for(ledger.recorder, database_url, fallback_interval=60.0).start()
    yield started
    started.stop()


class Writer(threading.Thread):
    """Records an event from another application instance (as another process would)."""

    def __init__(self, database_url: str, delay: float = 0.2) -> None:
        super().__init__()
        self.database_url = database_url
        self.delay = delay
        self.committed_at = 0.0

    def run(self) -> None:
        other = PropLedger(self.database_url)
        try:
            time.sleep(self.delay)
            other.define_program(program_body(), "admin")
            self.committed_at = time.monotonic()
        finally:
            other.close()


def write_later(database_url: str) -> Writer:
    writer = Writer(database_url)
    writer.start()
    return writer


def wait_listening(watcher: LogWatcher) -> None:
    deadline = time.monotonic() + 5
    while watcher.mode == "listen" and not watcher.listening:
        assert time.monotonic() < deadline, "the watcher never listened"
        time.sleep(0.01)


def test_the_watcher_listens_on_postgresql_and_polls_on_sqlite(
    watcher: LogWatcher, database_url: str
) -> None:
    expected = "listen" if database_url.startswith("postgresql") else "poll"
    assert watcher.mode == expected


def test_a_write_elsewhere_wakes_a_waiting_thread_at_once(
    watcher: LogWatcher, ledger: PropLedger, database_url: str
) -> None:
    wait_listening(watcher)
    position = ledger.position()
    assert watcher.latest == position
    writer = write_later(database_url)
    latest = watcher.wait_beyond(position, timeout=10)
    woken_at = time.monotonic()
    writer.join()
    assert latest > position
    assert woken_at - writer.committed_at < WAKE_SECONDS


def test_a_write_wakes_coroutines_and_callbacks(
    watcher: LogWatcher, ledger: PropLedger, database_url: str
) -> None:
    wait_listening(watcher)
    position = ledger.position()
    called = threading.Event()
    unsubscribe = watcher.subscribe(lambda latest: called.set())

    async def wait() -> int:
        return await watcher.wait_beyond_async(position, timeout=10)

    writer = write_later(database_url)
    latest = asyncio.run(wait())
    woken_at = time.monotonic()
    writer.join()
    unsubscribe()
    assert latest > position
    assert woken_at - writer.committed_at < WAKE_SECONDS
    assert called.wait(1)


def test_the_watcher_listens_again_after_losing_its_connection(postgres_url: str) -> None:
    migrate(postgres_url)
    ledger = PropLedger(postgres_url)
    watcher = log_watcher_for(ledger.recorder, postgres_url, fallback_interval=60.0).start()
    try:
        wait_listening(watcher)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'propledger-log-watcher' "
                "AND datname = current_database()"
            )
        deadline = time.monotonic() + 5
        while watcher.listening:  # it notices on its next wait (a quarter of a second)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        wait_listening(watcher)
        position = ledger.position()
        writer = write_later(postgres_url)
        assert watcher.wait_beyond(position, timeout=10) > position
        writer.join()
    finally:
        watcher.stop()
        ledger.close()
