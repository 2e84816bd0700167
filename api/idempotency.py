"""`Idempotency-Key` on creating POSTs, stored durably with the reply.

The same key (per token subject) with the same method, path and body replays the first
reply; with another request it is 409 `idempotency_key_reused`; while the first request is
still being processed, 409 `idempotency_key_in_progress`. A claim still in progress after
15 s belongs to a request that died (a crashed process): the key is usable again. Keys
expire after a configurable period. Replies of 5xx are not kept, so a retry after a fault
runs the command again (and the command's own natural key makes it a duplicate, never a
second application).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from starlette.concurrency import run_in_threadpool

from api.errors import envelope
from projections.store import Database

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_KEY_LENGTH = 255
# A claim still "in progress" after this long belongs to a request that died (a crashed
# process, a dropped connection): the key becomes usable again.
# Requests are bounded well below this (lock timeouts of 10 s, bounded retries).
ABANDONED_AFTER = timedelta(seconds=15)
_EXEMPT_PREFIXES = ("/v1/webhooks/",)  # processors carry their own event ids


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class IdempotencyStore:
    def __init__(self, database: Database, ttl: timedelta) -> None:
        self.database = database
        self.ttl = ttl

    def claim(self, principal: str, key: str, request_hash: str) -> dict[str, Any] | None:
        """Claims the key for this request; returns the existing row if it is taken.

        A new key (nearly every request) is claimed with one statement; only a key that
        is already there is looked at further: expired or abandoned, it is claimed anew."""
        now = _now()
        insert = (
            "INSERT INTO idempotency_keys (principal, idempotency_key, request_hash, "
            "created_at) VALUES (?, ?, ?, ?) ON CONFLICT (principal, idempotency_key) "
            "DO NOTHING RETURNING principal"
        )
        claim = (principal, key, request_hash, _stamp(now))
        if self.database.execute_one(insert, claim):
            return None  # claimed: this request goes ahead
        for _attempt in range(10):
            with self.database.transaction() as cursor:
                cursor.execute(
                    "DELETE FROM idempotency_keys WHERE principal = ? AND idempotency_key = ? "
                    "AND (created_at < ? OR (status IS NULL AND created_at < ?))",
                    (principal, key, _stamp(now - self.ttl), _stamp(now - ABANDONED_AFTER)),
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

    def complete(self, principal: str, key: str, status: int, headers: str, body: bytes) -> None:
        self.database.execute_one(
            "UPDATE idempotency_keys SET status = ?, headers = ?, body = ? "
            "WHERE principal = ? AND idempotency_key = ?",
            (status, headers, body, principal, key),
        )

    def release(self, principal: str, key: str) -> None:
        with self.database.transaction() as cursor:
            cursor.execute(
                "DELETE FROM idempotency_keys WHERE principal = ? AND idempotency_key = ? "
                "AND status IS NULL",
                (principal, key),
            )


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
        key = key_bytes.decode("latin-1").strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            await envelope(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters",
            )(scope, receive, send)
            return
        principal = _principal(scope, headers.get(b"authorization", b""))
        if principal is None:
            await self.app(scope, receive, send)  # the handler answers 401
            return
        body = await _read_body(receive)
        request_hash = hashlib.sha256(
            b"\0".join([b"POST", path.encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        store: IdempotencyStore = scope["app"].state.idempotency
        existing = await run_in_threadpool(store.claim, principal, key, request_hash)
        if existing is not None:
            await self._answer_existing(existing, request_hash, scope, receive, send)
            return
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

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
            await send(message)

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
            await run_in_threadpool(store.release, principal, key)
            raise
        if captured["status"] >= 500:
            await run_in_threadpool(store.release, principal, key)
            return
        await run_in_threadpool(
            store.complete,
            principal,
            key,
            captured["status"],
            json.dumps(captured["headers"]),
            bytes(captured["body"]),
        )

    @staticmethod
    async def _answer_existing(
        row: dict[str, Any], request_hash: str, scope: Scope, receive: Receive, send: Send
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
                headers={"Retry-After": "1"},
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
    state = scope.get("state") or {}
    if "claims" in state:  # already verified by the request context
        claims = state["claims"]
        return None if not claims else str(claims["sub"])
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
    return str(claims["sub"])


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
