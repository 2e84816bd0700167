"""The error envelope: {"error": {"code", "message", "details"}} for every 4xx and 5xx."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
import psycopg_pool
from eventsourcing import persistence
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import Conflict, DomainError, NotFound

logger = logging.getLogger("propledger.api")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    """Every 4xx and 5xx reply."""

    error: ErrorBody


_ERROR_STATUSES = {
    400: "Malformed request (bad JSON, bad Idempotency-Key)",
    401: "Missing, expired or invalid bearer token",
    403: "The token's roles do not allow this (a trader: another trader's resource)",
    404: "Not found",
    409: "Conflicts with what is recorded",
    413: "Request body over 1 MiB",
    422: "The request is well-formed but invalid",
    429: "Rate limited; see Retry-After",
    503: "Not ready (projections behind, webhook not set, store unreachable); see Retry-After",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in _ERROR_STATUSES.items()
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def envelope(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        headers=headers,
    )


def _status_of(error: DomainError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    return 422


_FASTAPI_BODY_ERROR = "There was an error parsing the body"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return envelope(error.status, error.code, error.message, error.details, error.headers)

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, error: DomainError) -> JSONResponse:
        return envelope(_status_of(error), error.code, error.message, error.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(part) for part in item.get("loc", ()) if part != "body"),
                "message": item.get("msg", ""),
                "type": item.get("type", ""),
            }
            for item in error.errors()
        ]
        if any(problem["type"] == "json_invalid" for problem in problems):
            from api.auth import refuse_before_body  # api.auth imports this module

            try:
                await refuse_before_body(request)
            except ApiError as refusal:
                return await api_error(request, refusal)
            return envelope(400, "malformed_json", "the request body is not valid JSON", problems)
        declared = request.headers.get("content-type", "")
        if isinstance(error.body, bytes) and declared and "json" not in declared.lower():
            # FastAPI reads JSON only from a JSON content type; anything else reached the
            # model as raw bytes ("Input should be a valid dictionary").
            return envelope(
                422,
                "invalid_input",
                f"the body must be JSON (Content-Type: application/json), not {declared}",
                problems,
            )
        summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems[:5])
        if len(problems) > 5:
            summary += f"; and {len(problems) - 5} more (see details)"
        return envelope(422, "invalid_input", summary or "invalid request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == _FASTAPI_BODY_ERROR:
            # FastAPI's answer to a body json could not read at all (nested past Python's
            # recursion limit): the same 400 as any other body that is not JSON.
            from api.auth import refuse_before_body  # api.auth imports this module

            try:
                await refuse_before_body(request)
            except ApiError as refusal:
                return await api_error(request, refusal)
            return envelope(400, "malformed_json", "the request body is not valid JSON")
        code = _HTTP_CODES.get(error.status_code, "http_error")
        headers = dict(error.headers) if error.headers else None
        return envelope(error.status_code, code, str(error.detail), None, headers)

    for carrier in STORE_ERRORS:
        app.add_exception_handler(carrier, _store_error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        if store_unreachable(error):  # raised outside the routes (a middleware)
            return await _store_unavailable(request, error)
        logger.exception("unhandled error", exc_info=error)
        return envelope(500, "internal_error", "an unexpected error occurred")


class StoreWaitTimeout(Exception):
    """A request stopped waiting for the store: its grouped trade post or its
    Idempotency-Key round was not answered in time."""


# SQLite's transient refusals (another writer holds the lock; the file cannot be opened
# right now). Its other OperationalErrors (no such table, a syntax error) are bugs: 500.
_SQLITE_TRANSIENT = ("database is locked", "database is busy", "unable to open database")
# PostgreSQL errors that mean "not now" rather than "never": the connection failed or was
# ended by the server, the server is shutting down or starting, a lock or statement timed
# out, a deadlock or serialization failure rolled the transaction back.
_POSTGRES_TRANSIENT: tuple[type[Exception], ...] = (
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    psycopg.errors.ConnectionException,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CrashShutdown,
    psycopg.errors.CannotConnectNow,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.IdleInTransactionSessionTimeout,
)
# What can carry such an error (the event store wraps the driver's in its own classes).
STORE_ERRORS: tuple[type[Exception], ...] = (
    StoreWaitTimeout,
    psycopg.Error,  # the pool's timeouts are psycopg OperationalErrors too
    persistence.PersistenceError,
    sqlite3.Error,
)
STORE_RETRY_AFTER_SECONDS = 5


def store_unreachable(error: BaseException | None) -> bool:
    """True when `error` says the store cannot be reached right now (a retry may work):
    no connection to be had or one lost mid-command, the server going down, a lock or a
    wait timed out. Errors that will not go away on a retry (a bug, bad SQL, a full disk)
    are not."""
    if error is None:
        return False
    if isinstance(error, (StoreWaitTimeout, *_POSTGRES_TRANSIENT)):
        return True
    if isinstance(error, sqlite3.OperationalError):
        return any(text in str(error) for text in _SQLITE_TRANSIENT)
    if type(error) is psycopg.OperationalError and getattr(error, "sqlstate", None) is None:
        return True  # a connection that could not be made (refused, timed out, reset)
    if isinstance(error, persistence.PersistenceError):
        return store_unreachable(error.__cause__)  # the driver's error it wraps
    return False


async def _store_error(request: Request, error: Exception) -> JSONResponse:
    if store_unreachable(error):
        return await _store_unavailable(request, error)
    logger.exception("unhandled error", exc_info=error)
    return envelope(500, "internal_error", "an unexpected error occurred")


async def _store_unavailable(_: Request, error: Exception) -> JSONResponse:
    logger.error("the store cannot be reached: %r", error, exc_info=error)
    return envelope(
        503,
        "store_unreachable",
        "the ledger's store cannot be reached right now; retry shortly (a retried trade, "
        "payout or webhook is never applied twice)",
        headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
    )


class AnswerUnexpected:
    """Answers an error no handler took (500, or 503 for an unreachable store) right here,
    inside the other middlewares. Starlette's outermost error middleware answers it too,
    but then raises it on to the server, and uvicorn closes a keep-alive connection an
    exception escaped from: the client's next request on that connection was reset.
    Added first, so it runs innermost: the Idempotency-Key middleware sees a 5xx reply
    (and keeps nothing), the request context adds its headers and logs it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            if started:  # too late for a reply of our own: the server closes it
                raise
            response = await _store_error(Request(scope, receive), error)
            await response(scope, receive, send)
