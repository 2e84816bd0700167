"""`Idempotency-Key` on creating POSTs, stored durably with the reply.

The same key (per token subject) with the same method, path and body replays the first
reply; with another request it is 409 `idempotency_key_reused`; while the first request is
still being processed, 409 `idempotency_key_in_progress`. A claim still in progress after
`PROPLEDGER_IDEMPOTENCY_ABANDONED_SECONDS` (180 s: longer than any request can run) belongs
to a request that died (a crashed process): the key is usable again. A claim is its
request's by its claim time, so a request outlived by its claim completes or releases
nothing of the request that took the key over. Keys expire after a configurable period.
Replies of 5xx are not kept, so a retry after a fault runs the command again (and the
command's own natural key makes it a duplicate, never a second application). A reply is
stored before it is sent: what a client heard is what its key replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import queue
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from starlette.concurrency import run_in_threadpool

from api.auth import principal_from_claims
from api.errors import ApiError, StoreWaitTimeout, envelope
from projections.store import Database

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_KEY_LENGTH = 255
# A claim still "in progress" after this long belongs to a request that died (a crashed
# process, a dropped connection): the key becomes usable again. Longer than any request
# can run: a grouped trade post waits up to 60 s for its save, and a command meeting an
# unreachable store waits out the store's connection retries (about 90 s) before its 503.
ABANDONED_AFTER = timedelta(seconds=180)
_EXEMPT_PREFIXES = ("/v1/webhooks/",)  # processors carry their own event ids


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Claims and completions waiting together are written together: one statement (or one
# transaction) for the lot. 200 rows keep a claim's INSERT under SQLite's oldest limit
# of 999 parameters.
MAX_GROUP = 200
# How long a request waits for its round: far beyond a round's few statements, short of
# a client's patience; then the request answers 503 (StoreWaitTimeout) rather than hang.
WAIT_SECONDS = 30.0


# A job's arguments: claim (principal, key, request_hash, claimed_at); complete (status,
# headers, body, principal, key, claimed_at); release (principal, key, claimed_at). A
# missing claimed_at is None: a claim made now, a completion or release of any claim.
_ARITY = {"claim": 4, "complete": 6, "release": 3}


@dataclass
class _Job:
    kind: str  # claim | complete | release
    args: tuple[Any, ...]
    future: Future[Any] = field(default_factory=Future)

    def __post_init__(self) -> None:
        self.args = self.args + (None,) * (_ARITY[self.kind] - len(self.args))


class IdempotencyStore:
    def __init__(
        self, database: Database, ttl: timedelta, abandoned_after: timedelta = ABANDONED_AFTER
    ) -> None:
        self.database = database
        self.ttl = ttl
        self.abandoned_after = abandoned_after
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    _INSERT = (
        "INSERT INTO idempotency_keys (principal, idempotency_key, request_hash, "
        "created_at) VALUES {rows} ON CONFLICT (principal, idempotency_key) "
        "DO NOTHING RETURNING principal, idempotency_key"
    )

    def claim(
        self, principal: str, key: str, request_hash: str, claimed_at: str | None = None
    ) -> dict[str, Any] | None:
        """Claims the key for this request; returns the existing row if it is taken.

        A new key (nearly every request) is claimed with one statement; only a key that
        is already there is looked at further: expired or abandoned, it is claimed anew.
        `claimed_at` (`claim_stamp()`, now by default) is the claim's own mark: pass it to
        `complete` and `release`."""
        now = _now()
        claim = (principal, key, request_hash, claimed_at or _stamp(now))
        if self.database.execute_one(self._INSERT.format(rows="(?, ?, ?, ?)"), claim):
            return None  # claimed: this request goes ahead
        return self._claim_taken(principal, key, request_hash, now, claim[3])

    def _claim_taken(
        self, principal: str, key: str, request_hash: str, now: datetime, claimed_at: str
    ) -> dict[str, Any] | None:
        """The key was there when we tried: claim it if it expired or was abandoned,
        else return its row."""
        insert = self._INSERT.format(rows="(?, ?, ?, ?)")
        claim = (principal, key, request_hash, claimed_at)
        for _attempt in range(10):
            with self.database.transaction() as cursor:
                cursor.execute(
                    "DELETE FROM idempotency_keys WHERE principal = ? AND idempotency_key = ? "
                    "AND (created_at < ? OR (status IS NULL AND created_at < ?))",
                    (principal, key, _stamp(now - self.ttl), _stamp(now - self.abandoned_after)),
                )
                if cursor.execute(insert, claim):
                    return None  # the old claim had expired or was abandoned
                rows = cursor.execute(
                    "SELECT request_hash, status, headers, body, created_at "
                    "FROM idempotency_keys WHERE principal = ? AND idempotency_key = ?",
                    (principal, key),
                )
            if rows:
                return rows[0]
            # Released by its request between our insert and our look: try again.
        raise RuntimeError(f"Idempotency-Key {key!r} changed hands ten times while claimed")

    # A completion or release touches the claim of its own request only (`claimed_at`): a
    # request that outlived its claim must not overwrite or delete the one that took the
    # key over. Without `claimed_at`, any claim of the key (tests and tools).
    _COMPLETE = (
        "UPDATE idempotency_keys SET status = ?, headers = ?, body = ? "
        "WHERE principal = ? AND idempotency_key = ? AND status IS NULL "
        "AND created_at = COALESCE(?, created_at)"
    )
    _RELEASE = (
        "DELETE FROM idempotency_keys WHERE principal = ? AND idempotency_key = ? "
        "AND status IS NULL AND created_at = COALESCE(?, created_at)"
    )

    def complete(
        self,
        principal: str,
        key: str,
        status: int,
        headers: str,
        body: bytes,
        claimed_at: str | None = None,
    ) -> None:
        self.database.execute_one(
            self._COMPLETE, (status, headers, body, principal, key, claimed_at)
        )

    def release(self, principal: str, key: str, claimed_at: str | None = None) -> None:
        with self.database.transaction() as cursor:
            cursor.execute(self._RELEASE, (principal, key, claimed_at))

    # Awaited by the middleware: written by one thread, many requests a statement ---------

    async def claim_soon(
        self, principal: str, key: str, request_hash: str, claimed_at: str | None = None
    ) -> dict[str, Any] | None:
        """`claim`, written together with the claims of concurrent requests. Waiting is
        bounded (StoreWaitTimeout past WAIT_SECONDS); the claim itself is never withdrawn
        once queued, and one that succeeds after its request stopped waiting is released
        again, so a retry is not told "in progress"."""
        stamp = claimed_at or claim_stamp()
        future = self._submit(_Job("claim", (principal, key, request_hash, stamp)))
        try:
            result: dict[str, Any] | None = await _wait(future)
        except StoreWaitTimeout:
            future.add_done_callback(
                lambda done: self._release_later(principal, key, stamp) if _claimed(done) else None
            )
            raise
        return result

    async def complete_soon(
        self,
        principal: str,
        key: str,
        status: int,
        headers: str,
        body: bytes,
        claimed_at: str | None = None,
    ) -> None:
        """`complete`, written together with the completions of concurrent requests. The
        reply waits for it; a completion is written even if waiting for it times out."""
        job = _Job("complete", (status, headers, body, principal, key, claimed_at))
        await _wait(self._submit(job))

    def close(self) -> None:
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._jobs.put(None)
            writer.join(timeout=10)
        # Anything queued after the writer stopped is answered, not left waiting.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the Idempotency-Key store is closed"))

    def _release_later(self, principal: str, key: str, claimed_at: str | None) -> None:
        self._submit(_Job("release", (principal, key, claimed_at)))

    def _submit(self, job: _Job) -> Future[Any]:
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write, name="propledger-idempotency", daemon=True
                )
                self._writer.start()
        self._jobs.put(job)
        return job.future

    def _write(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            jobs = [first]
            closing = False
            while len(jobs) < MAX_GROUP:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    break
                jobs.append(job)
            # Jobs are never cancelled (the waits are shielded), so each gets its answer.
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            try:
                # Completions first: a retry claiming a key completed in the same round
                # then finds the stored reply instead of "in progress".
                for kind, write in (
                    ("complete", self._complete_all),
                    ("release", self._release_all),
                    ("claim", self._claim_all),
                ):
                    write([job for job in jobs if job.kind == kind])
            except BaseException as error:  # never leave a request waiting on a dead round
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            if closing:
                return

    def _complete_all(self, jobs: list[_Job]) -> None:
        self._each_or_all(jobs, self._COMPLETE, key=lambda job: (job.args[3], job.args[4]))

    def _release_all(self, jobs: list[_Job]) -> None:
        self._each_or_all(jobs, self._RELEASE, key=lambda job: (job.args[0], job.args[1]))

    def _each_or_all(self, jobs: list[_Job], sql: str, key: Callable[[_Job], Any]) -> None:
        """One transaction for the lot, rows in key order (two processes writing the same
        keys take their row locks in the same order, so they cannot deadlock); if it
        fails, each on its own, so one bad row fails only its own request."""
        if not jobs:
            return
        jobs = sorted(jobs, key=key)
        try:
            with self.database.transaction() as cursor:
                cursor.executemany(sql, [job.args for job in jobs])
        except Exception:
            for job in jobs:
                try:
                    self.database.execute_one(sql, job.args)
                except Exception as error:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(None)
            return
        for job in jobs:
            job.future.set_result(None)

    def _claim_all(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        now = _now()
        first: dict[tuple[str, str], _Job] = {}
        for job in jobs:
            first.setdefault((job.args[0], job.args[1]), job)
        ordered = sorted(first)  # row locks taken in key order by every process
        try:
            values = [
                value
                for principal, key in ordered
                for value in (
                    principal,
                    key,
                    first[(principal, key)].args[2],
                    first[(principal, key)].args[3] or _stamp(now),
                )
            ]
            rows = ", ".join(["(?, ?, ?, ?)"] * len(ordered))
            inserted = {
                (row["principal"], row["idempotency_key"])
                for row in self.database.execute_one(self._INSERT.format(rows=rows), values)
            }
        except Exception:
            # One bad row (or a store that cannot be reached) fails the statement: each
            # claim on its own, so only the requests that must fail do.
            for job in jobs:
                try:
                    job.future.set_result(self.claim(*job.args))
                except Exception as error:
                    job.future.set_exception(error)
            return
        for job in jobs:
            principal, key, request_hash, claimed_at = job.args
            if first.get((principal, key)) is job and (principal, key) in inserted:
                job.future.set_result(None)  # claimed: the request goes ahead
                continue
            # Taken before (or by a request earlier in this very round): looked at alone.
            try:
                job.future.set_result(
                    self._claim_taken(principal, key, request_hash, now, claimed_at or _stamp(now))
                )
            except Exception as error:
                job.future.set_exception(error)


async def _wait(future: Future[Any]) -> Any:
    """The job's answer, waited for at most WAIT_SECONDS; the job itself is shielded, so
    it is never withdrawn by the wait ending."""
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), WAIT_SECONDS)
    except TimeoutError:
        raise StoreWaitTimeout(
            f"no answer from the Idempotency-Key store within {WAIT_SECONDS:.0f} s"
        ) from None


# A claim younger than this is taken for a request still running (most end in well under
# a second): retry in a second. An older one has most likely died with its process, but
# may still be a slow request (one waiting out an unreachable store runs ~90 s): retry
# when the claim is abandoned, and at least every RETRY_AT_MOST to hear its answer.
RUNNING_FOR = timedelta(seconds=10)
RETRY_AT_MOST = 30


def retry_after_seconds(
    created_at: str, abandoned_after: timedelta, now: datetime | None = None
) -> int:
    """What `Retry-After` says for a key still in progress: 1 while its request is
    likely running, else the seconds until its claim counts as abandoned and the key is
    free, at most RETRY_AT_MOST (a client obeying a constant 1 retried some 180 times
    after a crash)."""
    try:
        claimed = datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return 1
    age = (now or _now()) - claimed
    if age < RUNNING_FOR:
        return 1
    return max(1, min(RETRY_AT_MOST, math.ceil((abandoned_after - age).total_seconds())))


def claim_stamp() -> str:
    """A new claim's time, as stored: the claim's own mark."""
    return _stamp(_now())


def _claimed(done: Future[Any]) -> bool:
    return not done.cancelled() and done.exception() is None and done.result() is None


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers") or []}
        key_bytes = headers.get(b"idempotency-key")
        path: str = scope["path"]
        if key_bytes is None or path.startswith(_EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        principal = _principal(scope, headers.get(b"authorization", b""))
        if principal is None:
            await self.app(scope, receive, send)  # the handler answers 401
            return
        key = key_bytes.decode("latin-1").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            await envelope(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters",
            )(scope, receive, send)
            return
        body = await _read_body(receive)
        request_hash = hashlib.sha256(
            b"\0".join([b"POST", path.encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        store: IdempotencyStore = scope["app"].state.idempotency
        claimed_at = claim_stamp()
        existing = await store.claim_soon(principal, key, request_hash, claimed_at)
        if existing is not None:
            retry_after = retry_after_seconds(existing["created_at"], store.abandoned_after)
            await self._answer_existing(existing, request_hash, retry_after, scope, receive, send)
            return
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": b""}
        # The reply is held until it is stored: a client that saw an answer gets the same
        # one again for its key, even when the process dies right after answering (sent
        # first, a crash in between left the key to be abandoned and the request run
        # again: a payout created, then "payout_pending" for the same key).
        held: list[Message] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = [
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in message.get("headers", [])
                    if name.lower() not in (b"content-length", b"date", b"server")
                ]
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            held.append(message)

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, capture)
        except BaseException:
            await run_in_threadpool(store.release, principal, key, claimed_at)
            raise
        if captured["status"] >= 500:
            # Not kept (a retry runs the command again): answered first, as before, and
            # the key released after (the store may be what failed: its wait is long).
            for message in held:
                await send(message)
            await run_in_threadpool(store.release, principal, key, claimed_at)
            return
        try:
            await store.complete_soon(
                principal,
                key,
                captured["status"],
                json.dumps(captured["headers"]),
                bytes(captured["body"]),
                claimed_at,
            )
        except Exception:
            # The command is done: its answer goes out. A wait that timed out leaves the
            # completion queued, to be written; one whose write failed is lost, and the
            # key is abandoned in time: a retry then runs the command again, which its
            # own ids make a duplicate (its reply may then differ from this one).
            logger.warning("the reply to Idempotency-Key %r was not stored", key, exc_info=True)
        for message in held:
            await send(message)

    @staticmethod
    async def _answer_existing(
        row: dict[str, Any],
        request_hash: str,
        retry_after: int,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if row["request_hash"] != request_hash:
            response = envelope(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request",
            )
        elif row["status"] is None:
            response = envelope(
                409,
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still being processed; retry shortly",
                headers={"Retry-After": str(retry_after)},
            )
        else:
            stored_headers = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in json.loads(row["headers"] or "[]")
            ]
            body = bytes(row["body"] or b"")
            await send(
                {
                    "type": "http.response.start",
                    "status": int(row["status"]),
                    "headers": [
                        *stored_headers,
                        (b"content-length", str(len(body)).encode()),
                        (b"idempotent-replayed", b"true"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await response(scope, receive, send)


def _principal(scope: Scope, authorization: bytes) -> str | None:
    """Whose keys these are: the token's `sub` with its `roles` and `trader_id`. A key is
    scoped to the authority that made the request, so a replay can never answer a caller
    what the route would refuse it (another token with the same `sub` but other roles or
    another trader gets its own keys, and the route's own 401/403)."""
    state = scope.get("state") or {}
    if "claims" in state:  # already verified by the request context
        claims = state["claims"]
        return _scope_of(claims) if claims else None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = jwt.decode(
            token.strip(),
            scope["app"].state.jwt_secret,
            algorithms=["HS256"],
            options={"require": ["exp", "sub"]},
        )
    except jwt.InvalidTokenError:
        return None
    return _scope_of(claims)


def _scope_of(claims: dict[str, Any]) -> str | None:
    """The principal's authority as one text, or None for claims every route refuses with
    401 (then no key is looked at: no replay, and the route's 401). Always the same form,
    so no `sub` can be written to look like another token's scope."""
    try:
        principal = principal_from_claims(claims)
    except ApiError:
        return None
    return json.dumps(
        [principal.sub, sorted(principal.roles), principal.trader_id], separators=(",", ":")
    )


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
