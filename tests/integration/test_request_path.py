"""What the request path's shortcuts must still do (issue 7, third round).

- An Idempotency-Key is claimed with one statement, but a key past its lifetime, or held
  by a request that died, is still claimed anew; a live one is still refused.
- The projections' pool checks a connection before lending it after it sat idle, so a
  connection the server dropped meanwhile is replaced, not failed on.
- The API groups single trade posts by default; PROPLEDGER_WRITE_GROUPING=off does not.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

import projections.store
from api.app import create_app
from api.idempotency import IdempotencyStore
from ledger.config import Settings
from ledger.migrate import migrate
from projections.store import Database
from tests.support import SECRET, uid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    chosen = str(request.getfixturevalue("postgres_url")) if request.param == "postgres" else ""
    found = chosen or sqlite_url
    migrate(found)
    return found


def test_a_new_key_is_claimed_a_live_one_refused_an_expired_one_claimed_anew(url: str) -> None:
    database = Database(url)
    try:
        key = uid("key-")
        live = IdempotencyStore(database, ttl=timedelta(hours=24))
        assert live.claim("bridge", key, "hash-1") is None  # claimed
        live.complete("bridge", key, 201, "[]", b"{}")
        taken = live.claim("bridge", key, "hash-1")
        assert taken is not None
        assert taken["status"] == 201  # the stored reply
        # The same key once its lifetime has passed: claimed again, for the new request.
        expired = IdempotencyStore(database, ttl=timedelta(seconds=-1))
        assert expired.claim("bridge", key, "hash-2") is None
        row = database.query(
            "SELECT request_hash, status FROM idempotency_keys "
            "WHERE principal = ? AND idempotency_key = ?",
            ("bridge", key),
        )
        assert row == [{"request_hash": "hash-2", "status": None}]
        # Another subject's key of the same name is its own.
        assert live.claim("other", key, "hash-1") is None
    finally:
        database.close()


@pytest.mark.postgres
def test_an_idle_pooled_connection_the_server_dropped_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projections.store, "RECHECK_IDLE_SECONDS", 0.0)  # any idle is long
    database = Database(postgres_url, pool_size=1)
    try:
        [first] = database.query("SELECT pg_backend_pid() AS pid")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first["pid"],))
        time.sleep(0.05)
        [second] = database.query("SELECT pg_backend_pid() AS pid")  # no error: replaced
        assert second["pid"] != first["pid"]
    finally:
        database.close()


@pytest.mark.parametrize(("setting", "grouped"), [(None, True), (False, False)])
def test_the_api_groups_single_trade_posts_unless_told_not_to(
    sqlite_url: str, setting: bool | None, grouped: bool
) -> None:
    options: dict[str, Any] = {} if setting is None else {"propledger_write_grouping": setting}
    settings = Settings(propledger_database_url=sqlite_url, propledger_jwt_secret=SECRET, **options)
    with TestClient(create_app(settings)) as client:
        ledger: Any = client.app.state.ledger  # type: ignore[attr-defined]
        assert (ledger._grouper is not None) is grouped
