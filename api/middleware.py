"""Request context: a request id, security headers, a structured log line, rate limits.

The log line names the request id, method, path, status, duration and the token's subject;
never a token, a body or a query string (which may carry secrets). Rate limits are token
buckets per token subject (per client address without a token), kept in each process's
memory: behind a load balancer each API process enforces its share.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

import jwt

from api.auth import claimed_roles
from api.console_auth import COOKIE as CONSOLE_COOKIE
from api.errors import envelope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("propledger.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_NO_REFERRER = (b"referrer-policy", b"no-referrer")
# The OpenAPI pages load Swagger UI's script and styles; every other reply is data only.
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_DOC_PATHS = ("/docs", "/redoc", "/openapi.json")
# The console (/console): its own stylesheet, inline SVG (part of the document, so no
# source is needed), forms that post only to itself, no script at all. Its referrer policy
# is same-origin so that browsers send a real `Origin` on its POSTs (with no-referrer they
# send "null"), which the console's CSRF check compares with the host.
_CONSOLE_PATH = "/console"
_CONSOLE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"same-origin"),
]
MAX_BUCKETS = 100_000


@dataclass(frozen=True)
class RateLimits:
    """Requests per second and burst, per token subject. Bridges post at full speed."""

    platform_per_second: float = 2000.0
    platform_burst: float = 5000.0
    default_per_second: float = 50.0
    default_burst: float = 200.0


class TokenBuckets:
    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, *, platform: bool) -> float:
        """Takes one token; returns 0 when allowed, else seconds until one is available."""
        rate = self.limits.platform_per_second if platform else self.limits.default_per_second
        # At least one request's worth: a burst below 1 (a limit under 0.25/s times its
        # burst factor) would never let a request through.
        burst = max(1.0, self.limits.platform_burst if platform else self.limits.default_burst)
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - stamp) * rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / rate
            if len(self._buckets) >= MAX_BUCKETS and key not in self._buckets:
                self._buckets.clear()  # bounded memory; a reset only forgives
            self._buckets[key] = (tokens - 1, now)
            return 0.0


class RequestContext:
    def __init__(self, app: ASGIApp, limits: RateLimits | None = None) -> None:
        self.app = app
        self.buckets = TokenBuckets(limits or RateLimits())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        claims = _claims(scope, headers.get(b"authorization", b""))
        scope.setdefault("state", {})["claims"] = claims
        path: str = scope["path"]
        console = path == _CONSOLE_PATH or path.startswith(_CONSOLE_PATH + "/")
        if console and claims is None:
            # Console pages carry their token in a cookie: for the log line and the rate
            # limit only (api/console_auth.py decides who may do what).
            claims = _cookie_claims(scope, headers.get(b"cookie", b""))
        sub = claims.get("sub") if claims else None
        status_holder = {"status": 500}
        extra = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
        if console:
            extra.extend(_CONSOLE_HEADERS)
        else:
            extra.append(_NO_REFERRER)
            if not path.startswith(_DOC_PATHS):
                extra.append(_API_CSP)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            wait = 0.0
            limited = path.startswith("/v1/") and not path.startswith("/v1/webhooks/")
            if limited or console:
                client = scope.get("client") or ("unknown", 0)
                key = f"sub:{sub}" if sub else f"addr:{client[0]}"
                platform = claims is not None and "platform" in (claimed_roles(claims) or [])
                wait = self.buckets.take(key, platform=platform)
            if wait > 0:
                retry = str(max(1, int(wait + 0.999)))
                response = envelope(
                    429,
                    "rate_limited",
                    "too many requests for this token; retry after the given seconds",
                    {"retry_after_seconds": retry},
                    headers={"Retry-After": retry},
                )
                await response(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            if access_log.isEnabledFor(logging.INFO):  # the line is built only when kept
                access_log.info(
                    json.dumps(
                        {
                            "request_id": request_id,
                            "method": scope.get("method"),
                            "path": path,
                            "status": status_holder["status"],
                            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                            "sub": sub,
                        }
                    )
                )


def _cookie_claims(scope: Scope, cookie_header: bytes) -> dict[str, Any] | None:
    cookies = SimpleCookie()
    try:
        cookies.load(cookie_header.decode("latin-1"))
    except CookieError:
        return None
    morsel = cookies.get(CONSOLE_COOKIE)
    return _verified(scope, morsel.value) if morsel is not None else None


def _claims(scope: Scope, authorization: bytes) -> dict[str, Any] | None:
    """The verified token claims, or None (the handlers answer 401 themselves)."""
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return _verified(scope, token)


class VerifiedTokens:
    """Tokens already verified, with their claims, so a client's every request does not
    pay the signature check and JSON decoding again (a sixth of a trade post's CPU).

    Only successful verifications are kept, per secret. Of a verified token's time
    claims only `exp` can change its verdict later (`nbf` and `iat` once passed stay
    passed), so a kept token is used only while its `exp` is in the future. Bounded:
    past MAX_TOKENS entries the oldest half is dropped."""

    MAX_TOKENS = 10_000

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # seconds since the epoch, as `exp` counts them
        self._tokens: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()

    def verify(self, secret: str, token: str) -> dict[str, Any] | None:
        key = (secret, token)
        found = self._tokens.get(key)
        if found is not None:
            claims, expires = found
            if self.clock() < expires:
                return dict(claims)
            with self._lock:
                self._tokens.pop(key, None)
            return None
        try:
            claims = jwt.decode(
                token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
            )
        except jwt.InvalidTokenError:
            return None
        with self._lock:
            if len(self._tokens) >= self.MAX_TOKENS:
                for old in list(self._tokens)[: self.MAX_TOKENS // 2]:
                    del self._tokens[old]
            # As PyJWT reads it: int(exp), expired once now >= it.
            self._tokens[key] = (claims, float(int(claims["exp"])))
        return dict(claims)


_VERIFIED = VerifiedTokens()


def _verified(scope: Scope, token: str) -> dict[str, Any] | None:
    secret = getattr(scope["app"].state, "jwt_secret", None)
    if not secret:
        return None
    return _VERIFIED.verify(secret, token.strip())
