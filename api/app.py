"""The FastAPI app: parse, authorise, call the ledger, shape the reply."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from api import errors
from api.audit import period_report, stream_links, verify
from api.auth import (
    PAYOUT_STAFF,
    Admin,
    AdminOrFinance,
    AnyRole,
    Approver,
    Auditor,
    Auditors,
    CurrentPrincipal,
    Finance,
    FinanceOrAuditor,
    PayoutReaders,
    PayoutViewers,
    Platform,
    Principal,
)
from api.console import install_console
from api.errors import (
    ERROR_RESPONSES,
    STORE_RETRY_AFTER_SECONDS,
    ApiError,
    StoreWaitTimeout,
    envelope,
)
from api.idempotency import IdempotencyMiddleware, IdempotencyStore
from api.middleware import RateLimits, RequestContext
from api.reads import ReportReads, reports_db
from api.schemas import (
    Allocation,
    EquityMark,
    PaidMark,
    PurchaseCreate,
    Rejection,
    TradeBatch,
    TradeCreate,
)
from api.stream import stream_routes
from api.views import account_state, event_view, payout_view, plain, program_view, trader_view
from api.webhooks import verify_stripe_event
from domain.account import TradingAccount
from domain.errors import NotFound
from domain.ids import trader_id_to_uuid
from domain.money import Money
from domain.payout import FourEyes, Payout, PayoutRefused
from domain.trade import parse_timestamp
from ledger import grouping
from ledger.app import PropLedger
from ledger.config import Settings
from ledger.migrate import migrate
from projections.board import trader_accounts
from projections.journal import entry_lines, trial_balance
from projections.payments import unallocated
from projections.payouts import (
    list_payouts,
    payout_report,
    payouts_cursor,
    profit_splits,
    profit_splits_csv,
    report_csv,
)
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database

logger = logging.getLogger("propledger.api")

MAX_BODY_BYTES = 1024 * 1024
READ_WAIT_SECONDS = 10.0
HEALTH_PROBE_SECONDS = 3.0  # /health's wait for a connection to the store
# As long as a blocking grouped post waits (ledger/grouping.py).
GROUPED_POST_TIMEOUT = grouping.WAIT_SECONDS
# Lists answer whole unless they are long: the default page is the largest one, so a
# client that does not page (DESIGN names no paging) sees everything but the extremes.
MAX_EVENTS_PAGE = 1000
MAX_ENTRIES_PAGE = 10_000
MAX_PAYOUTS_PAGE = 10_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _holds(value: Any, bad: Callable[[str], bool]) -> bool:
    """Whether any string (key or value) of a JSON document is `bad`."""
    if isinstance(value, str):
        return bad(value)
    if isinstance(value, dict):
        return any(bad(key) or _holds(item, bad) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds(item, bad) for item in value)
    return False


def _has_nul(text: str) -> bool:
    return "\x00" in text


_SURROGATE = re.compile("[\ud800-\udfff]")
# JSON can carry a lone surrogate only as an escape (UTF-8 cannot encode one): \uD800-\uDFFF.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


_NUL_REFUSED = "text must not contain the NUL character (\\u0000)"
_SURROGATE_REFUSED = (
    "text must be valid Unicode: a lone surrogate escape (\\ud800-\\udfff) cannot be stored"
)


def _unstorable_in_request(scope: Scope, body: bytes) -> str | None:
    """Why a query or a JSON body cannot be stored, or None. The NUL character: PostgreSQL
    text cannot hold it, so a recorded one would stop the projections for good (and SQLite
    would keep it: the two stores would differ). A lone surrogate (a valid JSON escape, not
    a character): no store can encode it, and the save failed with a 500 after deciding.
    Webhooks are exempt: their bytes are signed, and what they name is checked field by
    field (ledger/stripe_events.py)."""
    if b"%00" in scope.get("query_string", b""):
        return _NUL_REFUSED
    if scope["path"].startswith("/v1/webhooks/"):
        return None
    nul = b"\\u0000" in body
    surrogate = _SURROGATE_ESCAPE.search(body) is not None
    if not (nul or surrogate):
        return None  # the fast path: JSON can carry either only as an escape
    try:
        document = json.loads(body)
        if nul and _holds(document, _has_nul):
            return _NUL_REFUSED
        if surrogate and _holds(document, _has_lone_surrogate):
            return _SURROGATE_REFUSED
    except ValueError:
        return None  # not JSON: the handler says so
    except RecursionError:  # deeper than the parser, or than our walk, goes
        raise _TooDeep from None
    return None


_TOO_DEEP = "the request body is nested too deeply to be read as JSON"


class _TooDeep(Exception):
    """A JSON body nested deeper than Python's parser (and our checks) go."""


class BodyLimit:
    """Refuses request bodies over 1 MiB with 413 before any handler sees them, and
    requests carrying text no store can hold (`_unstorable_in_request`) with 422."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            unstorable = _unstorable_in_request(scope, body)
        except _TooDeep:
            await envelope(400, "malformed_json", _TOO_DEEP)(scope, receive, send)
            return
        if unstorable is not None:
            await envelope(422, "invalid_input", unstorable)(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = envelope(
            413, "payload_too_large", f"request bodies are limited to {self.limit} bytes"
        )
        await response(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(settings.database_url)
        ledger = PropLedger(
            settings.database_url,
            group_writes=settings.propledger_write_grouping,
            group_window_ms=settings.propledger_write_group_window_ms,
        )
        database = Database(settings.database_url)
        runner = ProjectionRunner(ledger, database, default_projections())
        app.state.ledger = ledger
        app.state.database = database
        app.state.database_url = settings.database_url
        # Reports and listings read from the replica when PROPLEDGER_REPLICA_URL is set.
        replica = (
            Database(settings.propledger_replica_url) if settings.propledger_replica_url else None
        )
        app.state.reads = ReportReads(
            database,
            runner,
            replica,
            ProjectionRunner(ledger, replica, default_projections()) if replica else None,
        )
        app.state.runner = runner
        app.state.jwt_secret = settings.jwt_secret()
        app.state.stripe_webhook_secret = settings.stripe_webhook_secret
        app.state.idempotency = IdempotencyStore(
            database,
            timedelta(hours=settings.propledger_idempotency_ttl_hours),
            timedelta(seconds=settings.propledger_idempotency_abandoned_seconds),
        )
        # Live streams (api/stream.py) and the projection workers wake on the log watcher:
        # LISTEN/NOTIFY on PostgreSQL (polling stays only as a fallback), polling on SQLite.
        app.state.streams.start(ledger, settings.database_url)
        app.state.streams.end_streams_on_exit_signals()
        if settings.propledger_projections == "inprocess":
            app.state.streams.watcher.subscribe(lambda _latest: runner.wake())
            listening = app.state.streams.watcher.mode == "listen"
            runner.start(idle_interval=1.0 if listening else 0.05)
        try:
            yield
        finally:
            app.state.streams.stop()
            runner.stop()
            app.state.idempotency.close()
            if replica is not None:
                replica.close()
            database.close()
            ledger.close()

    app = FastAPI(
        title="propledger",
        version="0.1.0",
        summary="Event-sourced ledger and payout service for proprietary trading firms",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # A body sent without a Content-Type header is read as JSON (every /v1 body is);
        # one declared as something else is refused with a message saying so.
        strict_content_type=False,
        # `/v1/purchases/` is not a route: 404 in the error envelope, not a 307 redirect
        # with an empty body that a client posting JSON would follow without its body.
        redirect_slashes=False,
    )
    errors.install(app)
    # The last added runs first: request context (id, headers, log, rate limit), the body
    # limit, then Idempotency-Key replays.
    app.add_middleware(errors.AnswerUnexpected)
    app.add_middleware(IdempotencyMiddleware)
    # Again outside it: the Idempotency-Key store's own errors (a store down) are answered
    # too, not raised on to the server (which would close the keep-alive connection).
    app.add_middleware(errors.AnswerUnexpected)
    app.add_middleware(BodyLimit)
    app.add_middleware(
        RequestContext,
        limits=RateLimits(
            platform_per_second=settings.propledger_rate_limit_platform,
            platform_burst=settings.propledger_rate_limit_platform * 2.5,
            default_per_second=settings.propledger_rate_limit_default,
            default_burst=settings.propledger_rate_limit_default * 4,
        ),
    )
    _routes(app)
    _money_routes(app)
    _payout_routes(app)
    _audit_routes(app)
    stream_routes(app)  # /v1/stream: SSE and WebSocket (api/stream.py)
    install_console(app, secure_cookies=settings.is_production)  # /console (api/console.py)
    return app


def _ledger(request: Request) -> PropLedger:
    ledger: PropLedger = request.app.state.ledger
    return ledger


def _created(payload: dict[str, Any], *, created: bool) -> JSONResponse:
    return JSONResponse(plain(payload), status_code=201 if created else 200)


AS_OF_HELP = "RFC 3339 instant, or a date (as that UTC day closed)"


def _forbidden_to_trader(principal: Principal, trader_id: str, what: str) -> None:
    """A trader's token reaches only its own trader, accounts and payouts: another
    trader's is refused (403, the token's role does not allow it), as `/v1/stream` does.
    An unknown id is still 404 (looked up first)."""
    if principal.is_only_trader and principal.trader_id != trader_id:
        raise ApiError(403, "forbidden", f"a trader's token reaches only its own {what}")


def _own_account(principal: Principal, account: TradingAccount) -> None:
    _forbidden_to_trader(principal, account.trader_id, "accounts")


def _wait_for_projections(request: Request) -> int:
    """Reads from projections reflect every event recorded before the request arrived:
    waits until the projections of the database read from (the read replica when one is
    configured and reachable, else the primary) have reached the log's position now; the
    reads go to that database (`reports_db`)."""
    position = _ledger(request).position()
    reads: ReportReads = request.app.state.reads
    request.state.reports_db = reads.wait(position, timeout=READ_WAIT_SECONDS)
    if request.state.reports_db is None:
        raise ApiError(
            503,
            "projections_behind",
            "the read models have not caught up with the log yet; retry shortly",
            {"position": position},
            headers={"Retry-After": "1"},
        )
    return position


def _routes(app: FastAPI) -> None:
    @app.get("/health", tags=["health"])
    def health(request: Request) -> JSONResponse:
        try:
            # Projections first, waiting at most a few seconds for a connection: a store
            # that cannot be reached answers 503 then, not after the event store's own
            # retries (ten, each waiting for a connection).
            runner: ProjectionRunner = request.app.state.runner
            try:
                projections = runner.positions(timeout=HEALTH_PROBE_SECONDS)  # one query
            except Exception:
                # The pool may still be waiting out its reconnection backoff after an
                # outage: ask the database on a connection of its own before saying 503.
                projections = runner.positions(timeout=HEALTH_PROBE_SECONDS, fresh=True)
            position = _ledger(request).position()
        except Exception as error:
            logger.warning("health check failed: %s", error)
            return envelope(
                503,
                "store_unreachable",
                "the event store cannot be reached",
                headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
            )
        return JSONResponse(
            {"status": "ok", "store": "ok", "position": position, "projections": projections}
        )

    # HEAD too (the same checks, no body sent): load balancers and uptime checkers often
    # probe with it.
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.post("/v1/programs", tags=["programs"], status_code=201)
    def define_program(body: dict[str, Any], request: Request, principal: Admin) -> JSONResponse:
        program, changed, position = _ledger(request).define_program(body, principal.sub)
        reply = {**program_view(program), "position": position or _ledger(request).position()}
        return _created(reply, created=changed)

    @app.get("/v1/programs/{program_id}", tags=["programs"])
    def get_program(
        program_id: str,
        request: Request,
        _: AnyRole,
        version: Annotated[
            int | None,
            Query(ge=1, le=2**31, description="an earlier version (accounts pin theirs)"),
        ] = None,
    ) -> JSONResponse:
        program = _ledger(request).program(program_id, version)
        return JSONResponse(plain(program_view(program)))

    @app.post("/v1/purchases", tags=["purchases"], status_code=201)
    def purchase(body: PurchaseCreate, request: Request, principal: AdminOrFinance) -> JSONResponse:
        ledger = _ledger(request)
        reply = ledger.purchase(body.model_dump(), principal.sub)
        payload = {
            **body.model_dump(),
            # As booked: quantised to the currency's minor unit ("540" -> "540.00").
            "amount": str(Money.of(body.amount, body.currency).amount),
            "account_id": str(reply.account.id),
            "duplicate": reply.duplicate,
            "account": account_state(reply.account),
            "position": reply.position or ledger.position(),
        }
        return _created(payload, created=not reply.duplicate)

    @app.post("/v1/accounts/{account_id}/trades", tags=["trades"], status_code=201)
    async def record_trade(
        account_id: str, body: TradeCreate, request: Request, principal: Platform
    ) -> JSONResponse:
        # Grouped posts are awaited on the event loop: no worker thread sits blocked per
        # post, and the grouper's answer wakes the request directly.
        ledger = _ledger(request)
        trade = body.model_dump()
        later = ledger.post_trade_later(account_id, trade, principal.sub)
        if later is None:
            reply = await run_in_threadpool(ledger.post_trade, account_id, trade, principal.sub)
        else:
            try:
                reply = await asyncio.wait_for(asyncio.wrap_future(later), GROUPED_POST_TIMEOUT)
            except TimeoutError:
                # Not grouped yet: withdrawn, never decided. Grouped: it runs to its end,
                # and a retry with the same trade_id answers it as a duplicate.
                raise StoreWaitTimeout(
                    f"the trade was not decided within {GROUPED_POST_TIMEOUT:.0f} s"
                ) from None
        position = reply.position or await run_in_threadpool(ledger.position)
        payload = {
            **account_state(reply.account),  # JSON-ready already: no second plain()
            "trade_id": str(body.trade_id),
            "duplicate": reply.duplicate,
            "position": position,
        }
        return JSONResponse(payload, status_code=200 if reply.duplicate else 201)

    @app.post("/v1/trades:batch", tags=["trades"])
    def record_trades_batch(
        body: TradeBatch, request: Request, principal: Platform
    ) -> JSONResponse:
        ledger = _ledger(request)
        results, position = ledger.record_trades_batch(body.trades, principal.sub)
        return JSONResponse(
            plain(
                {
                    "results": [result.__dict__ for result in results],
                    "position": position or ledger.position(),
                }
            )
        )

    @app.post("/v1/accounts/{account_id}/equity", tags=["trades"], status_code=201)
    def record_equity(
        account_id: str, body: EquityMark, request: Request, principal: Platform
    ) -> JSONResponse:
        ledger = _ledger(request)
        reply = ledger.record_equity(account_id, body.model_dump(), principal.sub)
        payload = {
            **account_state(reply.account),
            "duplicate": reply.duplicate,
            "position": reply.position or ledger.position(),
        }
        return _created(payload, created=not reply.duplicate)

    @app.get("/v1/accounts/{account_id}", tags=["accounts"])
    def get_account(
        account_id: str,
        request: Request,
        principal: AnyRole,
        as_of: Annotated[
            str | None,
            Query(description=AS_OF_HELP, max_length=40),
        ] = None,
    ) -> JSONResponse:
        ledger = _ledger(request)
        current = ledger.account(account_id)
        _own_account(principal, current)
        if as_of is None:
            return JSONResponse(account_state(current))
        instant = parse_as_of(as_of)
        return JSONResponse(
            {**account_state(ledger.account_as_of(account_id, instant)), "as_of": with_plus(as_of)}
        )

    @app.get("/v1/traders/{trader_id}/accounts", tags=["accounts"])
    def get_trader_accounts(trader_id: str, request: Request, principal: AnyRole) -> JSONResponse:
        ledger = _ledger(request)
        if trader_id_to_uuid(trader_id) not in ledger.repository:
            raise NotFound(f"trader {trader_id} not found", code="unknown_trader")
        _forbidden_to_trader(principal, trader_id, "accounts")
        position = _wait_for_projections(request)
        accounts = trader_accounts(reports_db(request), trader_id)
        return JSONResponse({"trader_id": trader_id, "accounts": accounts, "position": position})

    @app.get("/v1/accounts/{account_id}/events", tags=["accounts"])
    def get_account_events(
        account_id: str,
        request: Request,
        _: Auditors,
        after_version: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = MAX_EVENTS_PAGE,
    ) -> JSONResponse:
        # Past any version a stream can reach, and inside SQLite's 64-bit integers.
        after_version = min(after_version, 2**62)
        events = _ledger(request).account_events(
            account_id, after_version=after_version, limit=limit
        )
        links = stream_links(
            request.app.state.database, account_id, after_version, after_version + limit
        )
        page = [event_view(event, links.get(event.originator_version)) for event in events]
        next_after = page[-1]["version"] if len(page) == limit else None
        return JSONResponse(
            {
                "account_id": str(UUID(account_id)),  # as every reply spells it (found above)
                "events": page,
                "next_after_version": next_after,
            }
        )


def _money_routes(app: FastAPI) -> None:
    @app.post("/v1/webhooks/stripe", tags=["payments"])
    async def stripe_webhook(request: Request) -> JSONResponse:
        """Verified with the `stripe` library over the raw body (tolerance 300 s), by the
        function `propledger demo` uses too (api/webhooks.py)."""
        secret = request.app.state.stripe_webhook_secret
        if not secret:
            raise ApiError(503, "webhook_not_configured", "STRIPE_WEBHOOK_SECRET is not set")
        payload = await request.body()
        event = verify_stripe_event(payload, request.headers.get("stripe-signature"), secret)
        ledger = _ledger(request)
        outcome, duplicate, position = await run_in_threadpool(ledger.apply_stripe_event, event)
        return JSONResponse(
            {
                "received": True,
                "event_id": event.get("id"),
                "outcome": outcome,
                "duplicate": duplicate,
                "position": position or ledger.position(),
            }
        )

    @app.get("/v1/ledger/trial-balance", tags=["ledger"])
    def get_trial_balance(
        request: Request,
        _: FinanceOrAuditor,
        as_of: Annotated[
            str | None,
            Query(description=AS_OF_HELP, max_length=40),
        ] = None,
    ) -> JSONResponse:
        instant = parse_as_of(as_of) if as_of is not None else None
        # Without `as_of` the balance is of everything recorded before the request came
        # in: that moment is its `as_of`. A given one is echoed as written.
        asked_at = datetime.now(UTC).isoformat()
        position = _wait_for_projections(request)
        balance = trial_balance(
            reports_db(request),
            instant,
            until_position=position if instant is None else None,
        )
        shown = with_plus(as_of) if as_of is not None else asked_at
        return JSONResponse({"as_of": shown, **balance, "position": position})

    @app.get("/v1/ledger/entries", tags=["ledger"])
    def get_entries(
        request: Request,
        _: FinanceOrAuditor,
        account: Annotated[str | None, Query(max_length=200)] = None,
        account_code: Annotated[
            str | None, Query(max_length=200, description="another name for `account`")
        ] = None,
        after: Annotated[str | None, Query(max_length=40, pattern=r"^\d+(\.\d+)?$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES_PAGE)] = MAX_ENTRIES_PAGE,
    ) -> JSONResponse:
        if account is not None and account_code is not None and account != account_code:
            raise ApiError(
                422, "invalid_input", "give the account code once: `account` or `account_code`"
            )
        code = account if account is not None else account_code
        position = _wait_for_projections(request)
        lines = entry_lines(reports_db(request), account=code, after=after, limit=limit)
        next_after = lines[-1]["cursor"] if len(lines) == limit else None
        return JSONResponse({"entries": lines, "next_after": next_after, "position": position})

    @app.get("/v1/payments/unallocated", tags=["payments"])
    def get_unallocated(request: Request, _: FinanceOrAuditor) -> JSONResponse:
        position = _wait_for_projections(request)
        payments = unallocated(reports_db(request))
        return JSONResponse({"payments": payments, "position": position})

    @app.post("/v1/payments/{payment_id}/allocate", tags=["payments"])
    def allocate(
        payment_id: str, body: Allocation, request: Request, principal: Finance
    ) -> JSONResponse:
        ledger = _ledger(request)
        payment, account, position = ledger.allocate_payment(
            payment_id, body.model_dump(), principal.sub
        )
        payload = {
            "payment_id": payment_id,
            "trader_id": payment.trader_id,
            "program_id": payment.program_id,
            "account_id": str(account.id),
            "account": account_state(account),
            "position": position or ledger.position(),
        }
        return _created(payload, created=True)

    @app.get("/v1/traders/{trader_id}", tags=["traders"])
    def get_trader(trader_id: str, request: Request, principal: AnyRole) -> JSONResponse:
        trader = _ledger(request).trader(trader_id)
        _forbidden_to_trader(principal, trader_id, "trader")
        return JSONResponse(trader_view(trader))

    @app.post("/v1/traders/{trader_id}/reinstate", tags=["traders"])
    def reinstate(trader_id: str, request: Request, principal: Admin, _: NoBody) -> JSONResponse:
        ledger = _ledger(request)
        trader, position = ledger.reinstate_trader(trader_id, principal.sub)
        return JSONResponse({**trader_view(trader), "position": position or ledger.position()})


def _payout_reply(request: Request, payout: Payout, position: int | None) -> dict[str, Any]:
    return {**payout_view(payout), "position": position or _ledger(request).position()}


# A '+' written unencoded in a query string arrives as a space (form encoding): a
# trailing " HH:MM" after a time of day is that offset.
_SPACED_OFFSET = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:\d{2})$"
)


def with_plus(value: str | None) -> str | None:
    """A query's instant with its offset's '+' back: "2026-03-02T14:05:00+01:00" sent
    without encoding the '+' arrives as "2026-03-02T14:05:00 01:00". Replies echo it so."""
    spaced = None if value is None else _SPACED_OFFSET.match(value)
    if spaced is None:
        return value
    return f"{spaced.group(1)}+{spaced.group(2)}"


def query_instant(value: str, field: str) -> datetime:
    """An RFC 3339 instant from a query string (see `with_plus`)."""
    return parse_timestamp(with_plus(value), field=field)


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FRACTION = re.compile(r"\.(\d+)")


def _query_date(value: str, field: str) -> date | None:
    """A plain calendar date (YYYY-MM-DD), or None for anything else (read as an instant)."""
    if not _DATE.match(value):
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422, "invalid_timestamp", f"{field} is not a date: {value!r}", {"field": field}
        ) from None
    if not 1970 <= day.year <= 2999:  # as for instants (domain.trade.parse_timestamp)
        raise ApiError(
            422,
            "invalid_timestamp",
            f"{field} is out of range (years 1970 to 2999): {value!r}",
            {"field": field},
        )
    return day


def parse_period(value: str | None, field: str, *, end: bool = False) -> datetime | None:
    """An RFC 3339 instant, or a date (a `to` date includes that whole UTC day)."""
    if value is None:
        return None
    day = _query_date(value, field)
    if day is not None:
        moment = datetime.combine(day, time(0), tzinfo=UTC)
        return moment + timedelta(days=1) if end else moment
    instant = query_instant(value, field)
    # Times are kept to the microsecond. Of a period [from, to), a time T is in it when
    # T >= from and T < to: with digits past the microsecond, both hold exactly when they
    # hold for the bound rounded up (cut, a payout at .080737 fell outside `to`
    # .0807375 and inside `from` .0807375). An `as_of` (at or before) is cut instead.
    fraction = _FRACTION.search(value)
    if fraction is not None and fraction.group(1)[6:].strip("0"):
        instant += timedelta(microseconds=1)
    return instant


def parse_range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    """`from` and `to` together; a `to` before the `from` is refused (422), not answered
    with an empty report that looks like a quiet period."""
    since, until = parse_period(start, "from"), parse_period(end, "to", end=True)
    if since is None or until is None:
        return since, until
    # A date `to` ends at its next midnight: `to` the day before a `from` date is that
    # midnight exactly, an empty period all the same.
    if until < since or (until == since and _query_date(end or "", "to") is not None):
        raise ApiError(
            422,
            "invalid_period",
            f"'to' ({end}) is before 'from' ({start})",
            {"from": start, "to": end},
        )
    return since, until


def parse_as_of(value: str) -> datetime:
    """`as_of`: an RFC 3339 instant, or a date meaning as that UTC day closed (everything
    recorded on it included: its last microsecond)."""
    day = _query_date(value, "as_of")
    if day is not None:
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC) - timedelta(
            microseconds=1
        )
    return query_instant(value, "as_of")


async def no_body_but_json(request: Request) -> None:
    """For POSTs that take no body: nothing, `{}` or `null`. Anything else is refused,
    not ignored: `{"approved": false}` on an approval approved, `{"amount": "10.00"}` on a
    payout request asked for the whole profit (black-box audit). Not JSON: 400
    `malformed_json`, like every other endpoint; any field: 422."""
    body = await request.body()
    if not body.strip():
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", _TOO_DEEP) from None
    # Whatever type it was declared as (`curl -d '{}'` sends a form type): nothing to read
    # in it is nothing, and fields are refused below either way.
    if parsed not in ({}, None):
        fields = sorted(parsed) if isinstance(parsed, dict) else None
        raise ApiError(
            422,
            "invalid_input",
            "this request takes no body (send none, or {})",
            {"fields": fields} if fields else None,
        )


NoBody = Annotated[None, Depends(no_body_but_json)]


# A report's reply in OpenAPI: JSON, or CSV with `format=csv`.
_JSON_OR_CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: JSON, or CSV with `format=csv`",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


def _payout_routes(app: FastAPI) -> None:
    @app.post("/v1/accounts/{account_id}/payouts", tags=["payouts"], status_code=201)
    def request_payout(
        account_id: str, request: Request, principal: CurrentPrincipal, _: NoBody
    ) -> JSONResponse:
        if not principal.has_any(("trader", "finance")):
            raise ApiError(403, "forbidden", "this needs one of the roles: trader, finance")
        ledger = _ledger(request)
        account = ledger.account(account_id)
        # Without finance, the token is a trader's: it asks for its own accounts only.
        if not principal.has_any(("finance",)) and principal.trader_id != account.trader_id:
            raise ApiError(403, "forbidden", "a trader asks only for its own accounts")
        try:
            payout, position = ledger.request_payout(account_id, principal.sub)
        except PayoutRefused as refused:
            raise ApiError(422, refused.code, refused.message, refused.details) from None
        return JSONResponse(_payout_reply(request, payout, position), status_code=201)

    @app.post("/v1/payouts/{payout_id}/approve", tags=["payouts"])
    def approve_payout(
        payout_id: str, request: Request, principal: Approver, _: NoBody
    ) -> JSONResponse:
        try:
            payout, position = _ledger(request).approve_payout(
                payout_id, principal.sub, principal.trader_id
            )
        except FourEyes as refused:
            raise ApiError(403, refused.code, refused.message, refused.details) from None
        return JSONResponse(_payout_reply(request, payout, position))

    @app.post("/v1/payouts/{payout_id}/reject", tags=["payouts"])
    def reject_payout(
        payout_id: str, body: Rejection, request: Request, principal: Approver
    ) -> JSONResponse:
        payout, position = _ledger(request).reject_payout(payout_id, principal.sub, body.reason)
        return JSONResponse(_payout_reply(request, payout, position))

    @app.post("/v1/payouts/{payout_id}/paid", tags=["payouts"])
    def mark_paid(
        payout_id: str, body: PaidMark, request: Request, principal: Finance
    ) -> JSONResponse:
        payout, position = _ledger(request).mark_payout_paid(
            payout_id, principal.sub, body.reference
        )
        return JSONResponse(_payout_reply(request, payout, position))

    @app.get("/v1/payouts/{payout_id}", tags=["payouts"])
    def get_payout(payout_id: str, request: Request, principal: PayoutViewers) -> JSONResponse:
        """Who lists payouts (finance, approvers, auditors) reads any; a trader its own.
        Bridges and admins do not see payouts and their bank references, as on
        `/v1/stream` (until 2026-12-07 any role could: black-box audit)."""
        payout = _ledger(request).payout(payout_id)
        if not principal.has_any(PAYOUT_STAFF) and principal.trader_id != payout.trader_id:
            raise ApiError(403, "forbidden", "a trader's token reads its own payouts only")
        return JSONResponse(payout_view(payout))

    @app.get("/v1/payouts", tags=["payouts"])
    def get_payouts(
        request: Request,
        _: PayoutReaders,
        status: Annotated[
            Literal["requested", "approved", "rejected", "paid"] | None, Query()
        ] = None,
        from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        to: Annotated[str | None, Query(max_length=40)] = None,
        after: Annotated[str | None, Query(max_length=120)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAYOUTS_PAGE)] = MAX_PAYOUTS_PAGE,
    ) -> JSONResponse:
        since, until = parse_range(from_, to)
        position = _wait_for_projections(request)
        rows = list_payouts(
            reports_db(request),
            status=status,
            requested_from=since,
            requested_to=until,
            after=after,
            limit=limit,
        )
        next_after = payouts_cursor(rows[-1]) if len(rows) == limit else None
        return JSONResponse({"payouts": rows, "next_after": next_after, "position": position})

    @app.get(
        "/v1/reports/payouts",
        tags=["reports"],
        response_model=None,
        responses=_JSON_OR_CSV,
    )
    def get_payout_report(
        request: Request,
        _: FinanceOrAuditor,
        from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        to: Annotated[str | None, Query(max_length=40)] = None,
        format: Annotated[Literal["json", "csv"], Query()] = "json",
        as_of: Annotated[str | None, Query(max_length=40)] = None,
    ) -> Response:
        since, until = parse_range(from_, to)
        position = _wait_for_projections(request)
        report = payout_report(
            reports_db(request),
            since,
            until,
            parse_as_of(as_of) if as_of is not None else None,
        )
        if format == "csv":
            return Response(
                report_csv(report),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="payouts.csv"'},
            )
        return JSONResponse(
            {"from": with_plus(from_), "to": with_plus(to), "as_of": with_plus(as_of)}
            | report
            | {"position": position}
        )

    @app.get(
        "/v1/reports/profit-splits",
        tags=["reports"],
        response_model=None,
        responses=_JSON_OR_CSV,
    )
    def get_profit_splits(
        request: Request,
        _: FinanceOrAuditor,
        from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        to: Annotated[str | None, Query(max_length=40)] = None,
        format: Annotated[Literal["json", "csv"], Query()] = "json",
        as_of: Annotated[str | None, Query(max_length=40)] = None,
    ) -> Response:
        since, until = parse_range(from_, to)
        position = _wait_for_projections(request)
        rows = profit_splits(
            reports_db(request),
            since,
            until,
            parse_as_of(as_of) if as_of is not None else None,
        )
        if format == "csv":
            return Response(
                profit_splits_csv(rows),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="profit-splits.csv"'},
            )
        return JSONResponse(
            {"from": with_plus(from_), "to": with_plus(to), "as_of": with_plus(as_of)}
            | {"rows": rows, "position": position}
        )


def _audit_routes(app: FastAPI) -> None:
    @app.post("/v1/audit/verify", tags=["audit"])
    def audit_verify(request: Request, _: Auditor, __: NoBody) -> JSONResponse:
        result = verify(
            _ledger(request),
            request.app.state.database_url,
            request.app.state.database,
            default_projections(),
        )
        return JSONResponse(plain(result))

    @app.get("/v1/reports/audit", tags=["reports"])
    def audit_report(
        request: Request,
        _: FinanceOrAuditor,
        from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        to: Annotated[str | None, Query(max_length=40)] = None,
    ) -> JSONResponse:
        start, end = parse_range(from_, to)
        report = period_report(reports_db(request), start, end)
        return JSONResponse({"from": with_plus(from_), "to": with_plus(to), **report})
