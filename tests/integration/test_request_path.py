"""What the request path's shortcuts must still do (issue 7, third round).

- An Idempotency-Key is claimed with one statement, but a key past its lifetime, or held
  by a request that died, is still claimed anew; a live one is still refused.
- The projections' pool checks a connection before lending it after it sat idle, so a
  connection the server dropped meanwhile is replaced, not failed on.
- The API groups single trade posts by default; PROPLEDGER_WRITE_GROUPING=off does not.
- Idempotency-Key claims and completions of concurrent requests are written together,
  each still answered on its own: the first claim of a key wins, a completion is written
  before a claim of the same round, a failed round fails each of its requests, one bad row
  fails only its own, a request that stopped waiting never leaves its key "in progress"
  nor its reply unwritten, and closing answers whatever is still queued.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

import projections.store
from api import idempotency
from api.app import create_app
from api.errors import StoreWaitTimeout
from api.idempotency import IdempotencyStore, _Job
from ledger.config import Settings
from ledger.migrate import migrate
from projections.store import Database
from tests.support import SECRET, auth, program_body, purchase_body, uid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    chosen = str(request.getfixturevalue("postgres_url")) if request.param == "postgres" else ""
    found = chosen or sqlite_url
    migrate(found)
    return found


@pytest.fixture
def store(url: str) -> Iterator[IdempotencyStore]:
    """An Idempotency-Key store (and its writer thread) on the test's database."""
    database = Database(url)
    made = IdempotencyStore(database, ttl=timedelta(hours=24))
    try:
        yield made
    finally:
        made.close()
        database.close()


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


def test_a_request_outlived_by_its_claim_completes_nothing_of_the_one_that_took_over(
    url: str,
) -> None:
    """A claim older than the abandonment time is taken over by a retry. The first
    request, still running after all, then finishes: its completion and its release touch
    its own claim only, so the retry's reply is the one kept (not overwritten, not lost)."""
    database = Database(url)
    try:
        key = uid("slow-")
        # Abandoned at once: the retry below takes over a claim that is still running.
        store = IdempotencyStore(database, ttl=timedelta(hours=24), abandoned_after=timedelta(0))
        now = datetime.now(UTC)
        first, retry = (
            (now - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for ago in (60, 30)
        )
        assert store.claim("bridge", key, "h", claimed_at=first) is None
        assert store.claim("bridge", key, "h", claimed_at=retry) is None  # taken over
        store.release("bridge", key, claimed_at=first)  # the first request failing late
        store.complete("bridge", key, 409, "[]", b"first", claimed_at=first)

        def row() -> list[dict[str, Any]]:
            return database.query(
                "SELECT status, body FROM idempotency_keys "
                "WHERE principal = ? AND idempotency_key = ?",
                ("bridge", key),
            )

        assert [(r["status"], r["body"]) for r in row()] == [(None, None)]  # retry's claim
        store.complete("bridge", key, 200, "[]", b"retry", claimed_at=retry)
        assert [(r["status"], bytes(r["body"])) for r in row()] == [(200, b"retry")]
        kept = IdempotencyStore(database, ttl=timedelta(hours=24))
        replayed = kept.claim("bridge", key, "h")
        assert replayed is not None
        assert bytes(replayed["body"]) == b"retry"
    finally:
        database.close()


def _held_writer(store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Holds the store's writer on its first round until the returned event is set, so
    what is submitted meanwhile is written together in the next round."""
    busy, release = threading.Event(), threading.Event()
    claim_all = store._claim_all
    held = [True]

    def claim_all_held(jobs: list[Any]) -> None:
        if held[0]:
            held[0] = False
            busy.set()
            assert release.wait(timeout=30)
        claim_all(jobs)

    monkeypatch.setattr(store, "_claim_all", claim_all_held)
    store._submit(_Job("claim", ("bridge", uid("hold-"), "h")))
    assert busy.wait(timeout=30)
    return release


def test_claims_and_completions_of_concurrent_requests_are_written_together(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = store.database
    done = uid("done-")
    assert store.claim("bridge", done, "hash-done") is None
    release = _held_writer(store, monkeypatch)
    fresh = [uid("fresh-") for _ in range(5)]
    twice = uid("twice-")
    futures = [store._submit(_Job("claim", ("bridge", key, "h"))) for key in fresh]
    first = store._submit(_Job("claim", ("bridge", twice, "h-1")))
    second = store._submit(_Job("claim", ("bridge", twice, "h-2")))
    # A completion and a retry's claim of the same key in one round: the retry finds
    # the stored reply, not "in progress".
    completed = store._submit(_Job("complete", (201, "[]", b"{}", "bridge", done)))
    retry = store._submit(_Job("claim", ("bridge", done, "hash-done")))
    release.set()

    assert [future.result(timeout=30) for future in futures] == [None] * 5
    assert first.result(timeout=30) is None  # the first of a key claims it
    refused = second.result(timeout=30)
    assert refused is not None
    assert (refused["request_hash"], refused["status"]) == ("h-1", None)  # in progress
    assert completed.result(timeout=30) is None
    replayed = retry.result(timeout=30)
    assert replayed is not None
    assert replayed["status"] == 201
    rows = database.query(
        "SELECT idempotency_key FROM idempotency_keys WHERE principal = ?", ("bridge",)
    )
    assert {row["idempotency_key"] for row in rows} >= {*fresh, twice, done}


def test_a_failed_round_fails_each_of_its_requests_and_the_writer_goes_on(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = store.database
    release = _held_writer(store, monkeypatch)
    execute_one = database.execute_one
    keys = [uid("lost-") for _ in range(3)]
    down = [True]
    calls: list[int] = []

    def failing_while_down(sql: str, params: Any = ()) -> list[dict[str, Any]]:
        if down[0] and set(keys) & set(params):  # the store is gone for these
            calls.append(len(params))
            raise RuntimeError("the database went away")
        return execute_one(sql, params)

    monkeypatch.setattr(database, "execute_one", failing_while_down)
    lost = [store._submit(_Job("claim", ("bridge", key, "h"))) for key in keys]
    release.set()
    for future in lost:
        with pytest.raises(RuntimeError, match="went away"):
            future.result(timeout=30)
    # The round's statement, then each claim alone (one bad row must not fail others).
    assert calls == [12, 4, 4, 4]
    down[0] = False
    # Nothing was claimed, and the next round is written.
    assert store._submit(_Job("claim", ("bridge", keys[0], "h"))).result(timeout=30) is None
    rows = database.query(
        "SELECT idempotency_key FROM idempotency_keys WHERE principal = ?", ("bridge",)
    )
    assert {row["idempotency_key"] for row in rows} & set(keys) == {keys[0]}


def test_a_request_that_gave_up_is_left_out_and_a_broken_round_never_hangs_the_rest(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = store.database
    release = _held_writer(store, monkeypatch)
    gave_up, kept = uid("gave-up-"), uid("kept-")
    abandoned = store._submit(_Job("claim", ("bridge", gave_up, "h")))
    waiting = store._submit(_Job("claim", ("bridge", kept, "h")))
    assert abandoned.cancel()  # its request stopped waiting before the round
    release.set()
    assert waiting.result(timeout=30) is None
    assert not waiting.cancel()  # taken into a round: it gets its answer
    keys = {
        row["idempotency_key"]
        for row in database.query(
            "SELECT idempotency_key FROM idempotency_keys WHERE principal = ?", ("bridge",)
        )
    }
    assert kept in keys
    assert gave_up not in keys

    # A round that breaks outside its statements fails its requests, not the writer.
    def broken(jobs: list[Any]) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(store, "_complete_all", broken)
    failed = store._submit(_Job("claim", ("bridge", uid("broken-"), "h")))
    with pytest.raises(KeyError):
        failed.result(timeout=30)
    monkeypatch.undo()
    assert store._submit(_Job("claim", ("bridge", uid("after-"), "h"))).result(30) is None


def _row(database: Database, key: str) -> list[dict[str, Any]]:
    return database.query(
        "SELECT status FROM idempotency_keys WHERE principal = ? AND idempotency_key = ?",
        ("bridge", key),
    )


def test_a_claim_whose_wait_ended_is_released_and_a_completion_is_written_anyway(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = store.database
    done = uid("done-")
    assert store.claim("bridge", done, "h") is None
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.2)
    release = _held_writer(store, monkeypatch)
    late = uid("late-")

    async def wait_for_both() -> tuple[BaseException | None, BaseException | None]:
        outcomes = await asyncio.gather(
            store.claim_soon("bridge", late, "h"),
            store.complete_soon("bridge", done, 201, "[]", b"{}"),
            return_exceptions=True,
        )
        return tuple(o if isinstance(o, BaseException) else None for o in outcomes)  # type: ignore[return-value]

    claim_error, complete_error = asyncio.run(wait_for_both())
    assert isinstance(claim_error, StoreWaitTimeout)  # the requests stopped waiting
    assert isinstance(complete_error, StoreWaitTimeout)
    release.set()
    # The completion is written all the same; the late claim is written, then released,
    # so a retry is not told "in progress".
    deadline = time.monotonic() + 30
    while (_row(database, done) != [{"status": 201}] or _row(database, late)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert _row(database, done) == [{"status": 201}]
    assert _row(database, late) == []
    assert store.claim("bridge", late, "h") is None


def test_one_bad_row_fails_only_its_own_request(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = store.database
    release = _held_writer(store, monkeypatch)
    # Text the store refuses: NUL in PostgreSQL, a lone surrogate in SQLite.
    bad_principal = "bad\x00" if database.dialect == "postgres" else "bad\ud800"
    good = [uid("good-") for _ in range(4)]
    futures = [store._submit(_Job("claim", ("bridge", key, "h"))) for key in good]
    bad = store._submit(_Job("claim", (bad_principal, uid("bad-"), "h")))
    release.set()
    assert [future.result(timeout=30) for future in futures] == [None] * 4
    with pytest.raises((psycopg.DataError, UnicodeEncodeError)):  # the driver's refusal
        bad.result(timeout=30)
    assert all(_row(database, key) == [{"status": None}] for key in good)


def test_closing_answers_what_was_queued_after_the_writer_stopped(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = _held_writer(store, monkeypatch)
    store._jobs.put(None)  # the writer stops after the held round...
    stranded = store._submit(_Job("claim", ("bridge", uid("after-"), "h")))  # ...before this
    release.set()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        stranded.result(timeout=10)


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


def key_statuses(url: str, key: str) -> list[Any]:
    """The stored status of each row of an Idempotency-Key (None while claimed)."""
    database = Database(url)
    try:
        rows = database.query(
            "SELECT status FROM idempotency_keys WHERE idempotency_key = ?", [key]
        )
    finally:
        database.close()
    return [row["status"] for row in rows]


def spied_app(url: str, key: str) -> tuple[Any, Any, list[tuple[int, list[Any]]]]:
    """The app, and it wrapped so that as the reply to a request holding `key` starts,
    its status and the key's stored statuses at that moment are noted."""
    app = create_app(Settings(propledger_database_url=url, propledger_jwt_secret=SECRET))
    seen: list[tuple[int, list[Any]]] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        async def spied(message: Any) -> None:
            keyed = (b"idempotency-key", key.encode()) in scope.get("headers", [])
            if message["type"] == "http.response.start" and keyed:
                seen.append((message["status"], await asyncio.to_thread(key_statuses, url, key)))
            await send(message)

        await app(scope, receive, spied)

    return spy, app, seen


@pytest.mark.parametrize("path", ["/v1/programs", "/v1/purchases"])
def test_a_keyed_reply_is_stored_before_the_client_hears_it(url: str, path: str) -> None:
    # A process killed between answering and storing the answer left the key to be
    # abandoned and the request run again, answering otherwise ("duplicate", or a payout
    # created then "payout_pending"): whatever a client heard must be what its key replays.
    key = uid("key-")
    spy, _, seen = spied_app(url, key)
    with TestClient(spy) as client:
        program = program_body()
        assert client.post("/v1/programs", json=program, headers=auth("admin")).status_code == 201
        sent = program_body() if path == "/v1/programs" else purchase_body(program["program_id"])
        headers = {**auth("admin", "finance"), "Idempotency-Key": key}
        first = client.post(path, json=sent, headers=headers)
        assert first.status_code == 201, first.text
        assert seen == [(201, [201])]  # stored before it was sent
        again = client.post(path, json=sent, headers=headers)
        assert (again.status_code, again.headers.get("idempotent-replayed")) == (201, "true")
        assert again.json() == first.json()


def test_a_keyed_5xx_is_answered_before_its_key_is_released(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 5xx is never kept (a retry runs the command again): it must not wait for the
    # release, which may itself wait out a store that is failing.
    key = uid("key-")
    spy, app, seen = spied_app(url, key)
    with TestClient(spy, raise_server_exceptions=False) as client:
        program = program_body()
        assert client.post("/v1/programs", json=program, headers=auth("admin")).status_code == 201
        ledger: Any = app.state.ledger

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(ledger, "purchase", broken)
        headers = {**auth("finance"), "Idempotency-Key": key}
        failed = client.post(
            "/v1/purchases", json=purchase_body(program["program_id"]), headers=headers
        )
        assert failed.status_code == 500
        assert seen == [(500, [None])]  # still claimed when it was answered
        assert key_statuses(url, key) == []  # then released: a retry runs the command again
