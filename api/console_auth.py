"""Sessions and CSRF of the staff console (`/console`).

A session is the bearer token itself, kept in an HttpOnly, SameSite=Strict cookie scoped
to `/console` that expires with the token (Secure in production). It is verified on every
request exactly as the API verifies a bearer token (`api.auth.decode_token`), so expiry
and roles mean the same in both places and the server keeps no session state.

Every console POST carries a CSRF field: HMAC-SHA256 of the session cookie under a key
derived from the JWT secret, compared in constant time. A page from another site cannot
read the cookie, so it cannot compute the field. On top of that, the request's `Origin`
(or, without one, `Referer`) must name this host when the browser sends it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from fastapi import Request
from fastapi.responses import Response

from api.auth import ROLES, Principal, decode_token
from api.errors import ApiError

COOKIE = "propledger_console"
FLASH_COOKIE = "propledger_console_flash"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
MAX_FORM_FIELDS = 20
MAX_TOKEN_LENGTH = 4096
FLASH_SECONDS = 60

STAFF_ROLES = ("admin", "finance", "approver", "auditor")
# The payout desk, as the API's payout reads (GET /v1/payouts: finance, approver, auditor):
# an admin does not see payouts and bank references (until 2026-12-07 the console showed
# them to admins, which the API refuses). Auditors read the payouts CSV (REPORT_ROLES).
FINANCE_VIEW = ("finance", "approver")
MAX_COOKIE_SECONDS = 400 * 86_400
RISK_VIEW = STAFF_ROLES
AUDIT_VIEW = ("auditor", "admin", "finance")
REPORT_ROLES = ("finance", "auditor")  # as GET /v1/reports/payouts
assert set(STAFF_ROLES) <= set(ROLES)

_CSRF_LABEL = b"propledger console csrf v1\x00"
_FLASH_LABEL = b"propledger console flash v1\x00"


class ConsoleReply(Exception):
    """Ends a console request with a ready reply (a redirect to sign in, a 403 page)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Session:
    principal: Principal
    token: str
    expires_at: int
    csrf: str

    @property
    def sub(self) -> str:
        return self.principal.sub

    def can(self, *roles: str) -> bool:
        return self.principal.has_any(roles)


def _key(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def csrf_token(secret: str, session_token: str) -> str:
    return hmac.new(_key(secret, _CSRF_LABEL), session_token.encode(), hashlib.sha256).hexdigest()


def open_session(secret: str, token: str) -> Session:
    """The session a token gives, verified as the API verifies bearer tokens; raises
    ApiError (401) for a bad, expired or malformed token."""
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise ApiError(401, "invalid_token", "paste the token printed by `propledger token`")
    principal = decode_token(secret, token)
    # The signature and expiry were verified just above; this only reads `exp` back.
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return Session(principal, token, int(claims["exp"]), csrf_token(secret, token))


def session_cookie_headers(
    response: Response, session: Session, *, secure: bool, now: float | None = None
) -> None:
    max_age = max(0, session.expires_at - int(now if now is not None else time.time()))
    # Browsers keep a cookie 400 days at most; a token minted for ages would overflow the
    # Expires date (a 500 at sign-in): the cookie lives as long as a browser allows.
    max_age = min(max_age, MAX_COOKIE_SECONDS)
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=max_age,
        expires=max_age,
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, secure=secure, httponly=True, samesite="strict"
    )


def current_session(request: Request) -> Session | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return open_session(request.app.state.jwt_secret, token)
    except ApiError:
        return None


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin. Browsers send
    `Origin` on every POST (the console's Referrer-Policy is same-origin, so it is never
    the opaque "null"); without it, `Referer`; without either, nothing to check."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc == host
    return True


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body as single-valued fields; raises ValueError when malformed."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if not raw and not content_type:
        return {}  # an empty form: no field at all (so no CSRF field either)
    if content_type != "application/x-www-form-urlencoded":
        raise ValueError("the console accepts urlencoded forms only")
    body = raw.decode("utf-8")
    pairs = parse_qsl(
        body, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
    )
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise ValueError(f"the field {name!r} was sent twice")
        fields[name] = value
    return fields


def csrf_ok(session: Session, fields: dict[str, str]) -> bool:
    given = fields.get(CSRF_FIELD, "")
    return hmac.compare_digest(given.encode(), session.csrf.encode())


# A notice is a cookie, and browsers drop cookies over 4,096 bytes: a notice quoting a
# long reason is cut to what fits (UTF-8, at most 4 bytes a character, and base64's third:
# ~2.2 KB at most).
FLASH_MAX_CHARACTERS = 400


def flash_value(secret: str, kind: str, text: str) -> str:
    if len(text) > FLASH_MAX_CHARACTERS:
        text = text[: FLASH_MAX_CHARACTERS - 1] + "\u2026"
    notice = json.dumps({"kind": kind, "text": text}, ensure_ascii=False)
    payload = base64.urlsafe_b64encode(notice.encode()).decode()
    tag = hmac.new(_key(secret, _FLASH_LABEL), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{tag}"


def read_flash(secret: str, value: str | None) -> dict[str, str] | None:
    if not value or "." not in value:
        return None
    payload, _, tag = value.rpartition(".")
    expected = hmac.new(_key(secret, _FLASH_LABEL), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(tag.encode(), expected.encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    kind, text = data.get("kind"), data.get("text")
    if kind not in ("ok", "error") or not isinstance(text, str):
        return None
    return {"kind": kind, "text": text}
