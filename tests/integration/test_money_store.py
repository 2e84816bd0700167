"""The journal's store refuses an unbalanced entry by itself (migrations/*/0003_journal.sql),
whoever writes to it: rows inserted straight into the tables with sqlite3 / psycopg.

PostgreSQL checks at COMMIT (deferred constraint triggers), so the INSERTs succeed and the
commit fails; SQLite checks when the entry's header is inserted after its lines. Either
way nothing of the entry remains.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from ledger.config import database_url_to_env
from ledger.migrate import migrate
from projections.journal import trial_balance
from projections.store import Database
from tests.support import BACKENDS, backend_url

LINES = (
    "INSERT INTO journal_lines (entry_id, line_no, account, currency, debit_minor, credit_minor) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
HEADER = (
    "INSERT INTO journal_entries (entry_id, position, booked_at, event_type, stream_id, "
    "stream_version) VALUES (?, ?, ?, ?, ?, ?)"
)


class Store:
    """Raw access to the journal tables of one migrated database, one transaction at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        env = database_url_to_env(url)
        self.dialect = "sqlite" if env["PERSISTENCE_MODULE"].endswith("sqlite") else "postgres"
        self.sqlite_path = env.get("SQLITE_DBNAME", "")
        self.inserted = False  # every INSERT of the last write was accepted

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "postgres" else statement

    def write(self, lines: list[tuple[Any, ...]], headers: list[tuple[Any, ...]]) -> None:
        """Inserts lines then headers in one transaction and commits it."""
        self.inserted = False
        if self.dialect == "sqlite":
            connection = sqlite3.connect(self.sqlite_path, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    for line in lines:
                        connection.execute(LINES, line)
                    for header in headers:
                        connection.execute(HEADER, header)
                    self.inserted = True
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            finally:
                connection.close()
            return
        with psycopg.connect(self.url) as connection, connection.transaction():
            for line in lines:
                connection.execute(self._sql(LINES), line)
            for header in headers:
                connection.execute(self._sql(HEADER), header)
            self.inserted = True

    def rows(self, entry_id: str) -> tuple[int, int]:
        """(lines, headers) stored for `entry_id`."""
        line_sql = "SELECT COUNT(*) FROM journal_lines WHERE entry_id = ?"
        header_sql = "SELECT COUNT(*) FROM journal_entries WHERE entry_id = ?"
        if self.dialect == "sqlite":
            connection = sqlite3.connect(self.sqlite_path)
            try:
                found = [
                    connection.execute(q, (entry_id,)).fetchone()[0] for q in (line_sql, header_sql)
                ]
            finally:
                connection.close()
        else:
            with psycopg.connect(self.url) as connection:
                found = [
                    connection.execute(self._sql(q), (entry_id,)).fetchone()[0]  # type: ignore[index]
                    for q in (line_sql, header_sql)
                ]
        return found[0], found[1]

    @property
    def refusal(self) -> type[Exception]:
        return sqlite3.IntegrityError if self.dialect == "sqlite" else psycopg.errors.CheckViolation


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    url = backend_url(request, tmp_path_factory)
    migrate(url)
    return Store(url)


@pytest.fixture(scope="module")
def pg_store(postgres_url: str) -> Store:
    migrate(postgres_url)
    return Store(postgres_url)


def entry(
    amounts: list[tuple[str, str, int, int]],
) -> tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """An entry with lines (account, currency, debit_minor, credit_minor) and its header."""
    entry_id = f"{uuid4()}:1"
    lines = [(entry_id, number, *amount) for number, amount in enumerate(amounts, start=1)]
    headers = [(entry_id, 1, "2026-03-02T10:00:00.000000Z", "Test.Booked", str(uuid4()), 1)]
    return entry_id, lines, headers


def test_a_balanced_entry_written_straight_to_the_store_is_kept(store: Store) -> None:
    entry_id, lines, headers = entry(
        [
            ("assets:processor", "USD", 54000, 0),
            ("revenue:challenge_fees", "USD", 0, 54000),
            ("assets:processor", "JPY", 5000, 0),
            ("liabilities:trader_wallet:t-1", "JPY", 0, 5000),
        ],
    )
    store.write(lines, headers)
    assert store.rows(entry_id) == (4, 1)


@pytest.mark.parametrize(
    "amounts",
    [
        pytest.param(
            [("assets:processor", "USD", 54000, 0), ("revenue:challenge_fees", "USD", 0, 53999)],
            id="one-cent-short",
        ),
        pytest.param(
            [("assets:processor", "USD", 10000, 0), ("revenue:challenge_fees", "EUR", 0, 10000)],
            id="balanced-only-across-currencies",
        ),
        pytest.param(
            [
                ("assets:processor", "USD", 10000, 0),
                ("revenue:challenge_fees", "USD", 0, 10000),
                ("assets:processor", "KWD", 12345, 0),
                ("revenue:challenge_fees", "KWD", 0, 12344),
            ],
            id="one-currency-of-two-unbalanced",
        ),
        pytest.param([("assets:processor", "USD", 100, 0)], id="a-single-debit"),
    ],
)
def test_the_store_refuses_an_unbalanced_entry_and_keeps_nothing_of_it(
    store: Store, amounts: list[tuple[str, str, int, int]]
) -> None:
    entry_id, lines, headers = entry(amounts)

    with pytest.raises(store.refusal, match="does not balance"):
        store.write(lines, headers)

    if store.dialect == "postgres":
        # Deferred: every INSERT was accepted, the COMMIT refused the transaction.
        assert store.inserted
    assert store.rows(entry_id) == (0, 0)


def test_the_store_refuses_an_entry_header_without_lines(store: Store) -> None:
    entry_id, _, headers = entry([])
    with pytest.raises(store.refusal):
        store.write([], headers)
    assert store.rows(entry_id) == (0, 0)


# PostgreSQL checks every written line at commit too; SQLite checks an entry when its header
# is written (lines without a header are never read: every report joins the header).


def test_postgres_refuses_unbalanced_lines_at_commit_even_without_a_header(
    pg_store: Store,
) -> None:
    store = pg_store
    entry_id, lines, _ = entry(
        [("assets:processor", "USD", 500, 0), ("revenue:challenge_fees", "USD", 0, 400)]
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        store.write(lines, [])
    assert store.rows(entry_id) == (0, 0)


def test_postgres_refuses_a_later_line_that_unbalances_a_stored_entry(pg_store: Store) -> None:
    store = pg_store
    entry_id, lines, headers = entry(
        [("assets:processor", "USD", 500, 0), ("revenue:challenge_fees", "USD", 0, 500)]
    )
    store.write(lines, headers)
    with pytest.raises(psycopg.errors.CheckViolation):
        store.write([(entry_id, 3, "assets:bank", "USD", 1, 0)], [])
    assert store.rows(entry_id) == (2, 1)


def test_the_store_refuses_a_negative_amount(store: Store) -> None:
    entry_id, lines, headers = entry(
        [("assets:processor", "USD", -100, 0), ("assets:bank", "USD", 0, -100)]
    )
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.CheckViolation)):
        store.write(lines, headers)
    assert store.rows(entry_id) == (0, 0)


def test_the_trial_balance_sums_an_accounts_lines_past_64_bits_exactly(store: Store) -> None:
    # Each line fits a 64-bit column; three of them do not fit SQLite's 64-bit SUM, which
    # failed with "integer overflow" (PostgreSQL sums bigint as numeric).
    line = 4 * 10**18 + 123_456_789_017
    for _ in range(3):
        _, lines, headers = entry(
            [("assets:processor", "CLF", line, 0), ("revenue:challenge_fees", "CLF", 0, line)]
        )
        store.write(lines, headers)
    database = Database(store.url)
    try:
        balance = trial_balance(database)
    finally:
        database.close()
    rows = {(r["account"], r["currency"]): r for r in balance["rows"]}
    expected = "1200000037037036.7051"  # 3 x 4000000123456789017 minor units, 4 places
    assert rows["assets:processor", "CLF"] == {
        "account": "assets:processor",
        "currency": "CLF",
        "debit": expected,
        "credit": "0.0000",
        "balance": expected,
    }
    assert rows["revenue:challenge_fees", "CLF"]["balance"] == f"-{expected}"
    assert {"currency": "CLF", "debit": expected, "credit": expected} in balance["totals"]
