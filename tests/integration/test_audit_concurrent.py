"""`verify` on a live store: writers commit and the projection workers follow the log while
the chain and every projection are checked, and nothing that did not happen is reported
(DESIGN.md: an auditor runs it on a live service). SQLite file and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api.audit import verify
from domain.account import TradingAccount
from ledger import audit
from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database
from tests.support import BACKENDS, backend_url, program_body, purchase_body, trade_body


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = backend_url(request, tmp_path_factory)
    migrate(url)
    return url


class Load:
    """Purchases and trades committed in a loop by one thread (with a ledger of its own),
    and the live projections followed by a runner, as the service's workers do."""

    def __init__(self, url: str) -> None:
        self.ledger = PropLedger(url)
        self.database = Database(url)
        self.runner = ProjectionRunner(self.ledger, self.database, default_projections())
        body = program_body()
        self.program_id = body["program_id"]
        self.ledger.define_program(body, "admin-ann")
        self.accounts = [self._purchase() for _ in range(3)]
        self.writes = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="audit-load", daemon=True)

    def _purchase(self) -> str:
        reply = self.ledger.purchase(purchase_body(self.program_id), "admin-ann")
        return str(reply.account.id)

    def _write(self) -> None:
        try:
            minute = 0
            while not self._stop.is_set():
                if minute % 5 == 4:
                    self.accounts.append(self._purchase())  # new rows
                else:  # rows that later events update
                    account = self.accounts[minute % len(self.accounts)]
                    second = minute % 36000
                    closed = f"{10 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
                    self.ledger.record_trade(
                        account, trade_body(profit="1.00", closed=closed), "bridge"
                    )
                minute += 1
                self.writes += 1
                time.sleep(0.001)
        except BaseException as error:  # reported by the test
            self.errors.append(error)

    def __enter__(self) -> Load:
        self.runner.start(idle_interval=0.005)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.runner.stop()
        self.database.close()
        self.ledger.close()


@pytest.fixture
def ledger(database_url: str) -> Iterator[PropLedger]:
    app = PropLedger(database_url)
    yield app
    app.close()


@pytest.fixture
def live(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


def test_verify_while_writers_commit_and_projections_follow_finds_nothing(
    database_url: str,
    ledger: PropLedger,
    live: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small pages: the chain is read in many statements, writers commit between them.
    monkeypatch.setattr(audit, "PAGE", 7)
    slow_links = audit._Store.links

    def links_slowly(self: Any, connection: Any, after: int, until: int | None) -> Any:
        time.sleep(0.002)
        return slow_links(self, connection, after, until)

    monkeypatch.setattr(audit._Store, "links", links_slowly)
    # A slow replay: the live projections move on while each one is rebuilt.
    slow_rebuild = ProjectionRunner.rebuild

    def rebuild_slowly(self: ProjectionRunner, *args: Any, **kwargs: Any) -> int:
        time.sleep(0.02)
        return slow_rebuild(self, *args, **kwargs)

    monkeypatch.setattr(ProjectionRunner, "rebuild", rebuild_slowly)
    # Snapshots taken often, so that some are written while they are checked.
    monkeypatch.setattr(PropLedger, "snapshotting_intervals", {TradingAccount: 3})
    results = []
    with Load(database_url) as load:
        for _ in range(4):
            before = load.writes
            results.append(verify(ledger, database_url, live, default_projections()))
            assert load.writes > before or load.errors, "the writer must commit during verify"
    assert not load.errors, load.errors
    for result in results:
        assert result["chain"]["findings"] == [], result["chain"]
        assert result["snapshots"]["findings"] == [], result["snapshots"]
        for name, outcome in result["projections"].items():
            assert outcome["differences"] == [], (name, outcome)
        assert result["ok"]
    assert results[-1]["chain"]["events"] > results[0]["chain"]["events"]
    assert results[-1]["snapshots"]["checked"] > results[0]["snapshots"]["checked"]


def test_after_the_load_the_store_still_verifies_and_tampering_is_still_found(
    database_url: str, ledger: PropLedger, live: Database
) -> None:
    """The quiet store verifies clean; an edited projection row is still a difference."""
    ProjectionRunner(ledger, live, default_projections()).catch_up()
    assert verify(ledger, database_url, live, default_projections())["ok"]
    live.execute_one(
        "UPDATE account_board SET balance = '1.00' WHERE account_id = "
        "(SELECT MIN(account_id) FROM account_board)"
    )
    result = verify(ledger, database_url, live, default_projections())
    assert not result["ok"]
    assert result["chain"]["ok"]
    differences = result["projections"]["account_board"]["differences"]
    assert [difference["problem"] for difference in differences] == ["different"]


def test_a_projection_stuck_behind_the_log_is_a_finding(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A projection that cannot apply an event stops there for good, and its rows agree
    with a replay to where it stopped: verify must still say it is not the log."""
    ledger = PropLedger(database_url)
    database = Database(database_url)
    try:
        ProjectionRunner(ledger, database, default_projections()).catch_up()
        body = program_body()
        ledger.define_program(body, "admin-ann")
        ledger.purchase(purchase_body(body["program_id"]), "admin-ann")  # never projected
        # The live workers cannot get past it (as with an event their store refuses).
        monkeypatch.setattr(ProjectionRunner, "wait_for", lambda *_, **__: False)
        result = verify(ledger, database_url, database, default_projections())
        assert result["ok"] is False
        behind = {
            name: outcome["differences"][0]
            for name, outcome in result["projections"].items()
            if outcome["differences"]
        }
        assert "account_board" in behind
        assert all(found["problem"] == "behind" for found in behind.values())
        assert behind["account_board"]["log_position"] == ledger.position()
    finally:
        database.close()
        ledger.close()
