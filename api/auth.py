"""Bearer JWTs (HS256): claims `sub`, `roles`, `exp`, and `trader_id` for a trader's token."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError

ROLES = ("admin", "finance", "approver", "auditor", "platform", "trader")
ALGORITHM = "HS256"
# A token's `sub` is recorded (a payout's `requested_by` and `approved_by`, every event's
# actor): it must be text a store can hold and a report can print.
MAX_NAME_LENGTH = 200


def name_problem(value: object) -> str | None:
    """Why `value` cannot be a token's `sub` or `trader_id`, or None when it can: a
    non-empty printable string (no NUL, which PostgreSQL text refuses and which stopped
    the payout projection for good; no lone surrogate, which no store can encode) of at
    most MAX_NAME_LENGTH characters."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if not value.isprintable():
        return "must be printable text (no control characters or lone surrogates)"
    if len(value) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters"
    return None


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: frozenset[str]
    trader_id: str | None
    # The token's `exp` (seconds since the epoch): a stream opened with it ends then.
    expires_at: float | None = None

    def has_any(self, roles: tuple[str, ...]) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_only_trader(self) -> bool:
        """A trader's token sees only that trader's accounts (unless it has staff roles)."""
        return self.roles == {"trader"}


def mint_token(
    secret: str, *, sub: str, roles: list[str], trader_id: str | None = None, ttl: int = 3600
) -> str:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(unknown)}; roles are {', '.join(ROLES)}")
    if "trader" in roles and not trader_id:
        raise ValueError("a trader token needs --trader-id")
    for name, value in (("sub", sub), ("trader_id", trader_id)):
        problem = None if value is None else name_problem(value)
        if problem:
            raise ValueError(f"{name} {problem}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "roles": roles, "iat": now, "exp": now + ttl}
    if trader_id:
        claims["trader_id"] = trader_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "the bearer token has expired") from None
    except jwt.InvalidTokenError as error:
        raise ApiError(401, "invalid_token", f"the bearer token is invalid: {error}") from None
    return principal_from_claims(claims)


def claimed_roles(claims: dict[str, Any]) -> list[str] | None:
    """The token's `roles`: a list of strings, or one string of comma-separated roles (as
    `propledger token --roles` takes them); None when the claim is neither."""
    roles = claims.get("roles")
    if isinstance(roles, str):
        return [role.strip() for role in roles.split(",") if role.strip()]
    if isinstance(roles, list) and all(isinstance(role, str) for role in roles):
        return roles
    return None


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    roles = claimed_roles(claims)
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise ApiError(
            401, "invalid_token", "the token's roles claim must be a list of strings (or one)"
        )
    trader_id = claims.get("trader_id")
    if "trader" in roles and not isinstance(trader_id, str):
        raise ApiError(401, "invalid_token", "a trader token needs a trader_id claim")
    if "trader" not in roles and trader_id in (None, ""):
        trader_id = None  # a staff token's empty trader_id claim: no trader
    for name, value in (("sub", claims["sub"]), ("trader_id", trader_id)):
        problem = None if name == "trader_id" and value is None else name_problem(value)
        if problem:
            raise ApiError(401, "invalid_token", f"the token's {name} claim {problem}")
    return Principal(
        sub=claims["sub"],
        roles=frozenset(role for role in roles if role in ROLES),
        trader_id=trader_id if isinstance(trader_id, str) else None,
        expires_at=float(exp) if isinstance(exp := claims.get("exp"), int | float) else None,
    )


# Declares the bearer scheme in the OpenAPI document (an "Authorize" button in /docs for
# a token from `propledger token`); the header itself is read below, as before.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A JWT (HS256) from `propledger token --sub NAME --roles a,b`.",
)


async def current_principal(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
) -> Principal:
    """Async although it does no I/O: FastAPI runs a sync dependency in its thread
    pool, a thread hop per request for a few dictionary lookups."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "unauthenticated", "an 'Authorization: Bearer <JWT>' header is required"
        )
    # The request context already verified a valid token once; reuse its claims. An
    # invalid one is decoded again here to say why it is refused.
    verified = request.scope.get("state", {}).get("claims")
    if isinstance(verified, dict):
        return principal_from_claims(verified)
    return decode_token(request.app.state.jwt_secret, token.strip())


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(*roles: str) -> Any:
    """A dependency that admits tokens holding at least one of `roles`."""

    async def check(principal: CurrentPrincipal) -> Principal:  # async: no thread hop
        _require_roles(principal, roles)
        return principal

    check.roles = roles  # type: ignore[attr-defined]  # read by refuse_before_body
    return Depends(check)


async def refuse_before_body(request: Request) -> None:
    """Raises the 401 or 403 the route's auth dependencies would give, if any.

    FastAPI reads a JSON body before it solves a route's dependencies, so a body that is
    not JSON at all would be answered 400 before the token is looked at; a request with
    a parseable but invalid body gets the auth answer first. This keeps the same order
    for both: who you are, then what you sent."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    needed: list[tuple[str, ...]] = []
    authenticated = False
    pending = list(dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.call is current_principal:
            authenticated = True
        roles = getattr(dependency.call, "roles", None)
        if roles is not None:
            needed.append(roles)
        pending.extend(dependency.dependencies)
    if not authenticated:
        return
    principal = await current_principal(request)
    for roles in needed:
        _require_roles(principal, roles)


def _require_roles(principal: Principal, roles: tuple[str, ...]) -> None:
    if not principal.has_any(roles):
        raise ApiError(403, "forbidden", f"this needs one of the roles: {', '.join(roles)}")


AnyRole = Annotated[Principal, require(*ROLES)]
Admin = Annotated[Principal, require("admin")]
AdminOrFinance = Annotated[Principal, require("admin", "finance")]
Platform = Annotated[Principal, require("platform")]
Auditors = Annotated[Principal, require("auditor", "admin", "finance")]
Finance = Annotated[Principal, require("finance")]
Approver = Annotated[Principal, require("approver")]
Auditor = Annotated[Principal, require("auditor")]
PAYOUT_STAFF = ("finance", "approver", "auditor")
PayoutReaders = Annotated[Principal, require(*PAYOUT_STAFF)]
# One payout: the payout desk's roles, or a trader reading its own.
PayoutViewers = Annotated[Principal, require(*PAYOUT_STAFF, "trader")]
FinanceOrAuditor = Annotated[Principal, require("finance", "auditor")]
