"""Which store errors answer 503 `store_unreachable` (retry) and which stay 500 (a bug).

A store that cannot be reached right now (a connection refused or lost, the server going
down, a lock or statement timeout, a deadlock, SQLite's lock not granted, a request that
stopped waiting) is 503 with Retry-After; errors a retry would meet again (a missing
table, bad SQL, a full disk, bad data) are 500, whether raised by the driver or wrapped by
the event store.
"""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg_pool
import pytest
from eventsourcing import persistence

from api.errors import StoreWaitTimeout, store_unreachable


def _wrapped(cause: Exception) -> persistence.PersistenceError:
    """As the event store raises it: its own class, the driver's error as the cause."""
    try:
        raise persistence.OperationalError(str(cause)) from cause
    except persistence.OperationalError as error:
        return error


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection refused"),
        psycopg.InterfaceError("the connection is closed"),
        psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        sqlite3.OperationalError("database is locked"),
        StoreWaitTimeout("no answer within 30 s"),
        _wrapped(psycopg.OperationalError("connection refused")),
        _wrapped(sqlite3.OperationalError("database is locked")),
    ],
    ids=repr,
)
def test_a_store_out_of_reach_is_unreachable(error: Exception) -> None:
    assert store_unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UndefinedTable('relation "journal_lines" does not exist'),
        psycopg.errors.DiskFull("could not extend file"),
        psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"),
        psycopg.errors.InvalidPassword("password authentication failed"),
        psycopg.DataError("invalid byte sequence"),
        sqlite3.OperationalError("no such table: journal_lines"),
        sqlite3.OperationalError('near "SELEC": syntax error'),
        sqlite3.IntegrityError("UNIQUE constraint failed"),
        _wrapped(psycopg.errors.UndefinedTable("missing")),
        persistence.OperationalError("no cause given"),
        TimeoutError("some other wait"),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_an_error_a_retry_would_meet_again_is_not(error: Exception) -> None:
    assert not store_unreachable(error)
