"""The staff console under `/console`: server-rendered pages (Jinja2, autoescaped), plain
HTML forms with post/redirect/get, no script.

Views and who sees them (the same roles as the API):
- finance (`api/console_finance.py`): finance, approver, admin; approve and reject need
  approver, request, mark paid and allocate need finance;
- risk: every staff role; accounts ranked by headroom to their nearest floor, the day's
  breaches, recent passes;
- audit: auditor, admin, finance; an account's state, chart and events with hashes; the
  ledger check (verify) needs auditor.
Sign-in and CSRF are in `api/console_auth.py`. Trader and platform tokens are not
admitted: the console is the firm's back office, and traders use the API for their own
accounts.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.audit import stream_links, verify
from api.console_auth import (
    AUDIT_VIEW,
    RISK_VIEW,
    STAFF_ROLES,
    ConsoleReply,
    Session,
    clear_session_cookie,
    current_session,
    open_session,
    read_form,
    same_origin,
    session_cookie_headers,
)
from api.console_chart import chart, points_from_events
from api.console_finance import finance_routes
from api.console_web import (
    Posted,
    console_reply,
    home_of,
    ledger_of,
    page,
    poster,
    problem,
    secure_cookies,
    viewer,
    wait_for_projections,
)
from api.errors import ApiError
from api.reads import reports_db
from api.views import account_state, event_view, plain
from domain.errors import NotFound
from projections.console import breaches_between, find_accounts, recent_passes, risk_board
from projections.registry import default_projections

STATIC_DIR = Path(__file__).resolve().parent / "static" / "console"
RISK_PAGE_SIZE = 50
MAX_RISK_PAGE = 1000
EVENTS_PAGE = 100
MAX_CHART_EVENTS = 20_000
MAX_QUERY_LENGTH = 128

RiskViewer = Annotated[Session, viewer(*RISK_VIEW)]
AuditViewer = Annotated[Session, viewer(*AUDIT_VIEW)]
AnyStaffPost = Annotated[Posted, poster(*STAFF_ROLES)]
AuditorPost = Annotated[Posted, poster("auditor")]


def install_console(app: FastAPI, *, secure_cookies: bool) -> None:
    """Adds the console's pages and static files to the API's app."""
    app.state.console_secure_cookies = secure_cookies
    app.add_exception_handler(ConsoleReply, console_reply)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    router = APIRouter(prefix="/console", include_in_schema=False)
    _session_routes(router)
    finance_routes(router)
    _risk_routes(router)
    _audit_routes(router)
    app.include_router(router)


def _safe_next(target: str) -> str | None:
    """Only a path inside the console: never another host, scheme or a `//` path."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or target.startswith("//"):
        return None
    # No '.' or '..' segments and no empty ones: '/console/../v1/x' resolves outside.
    segments = parts.path.split("/")[2:]
    if any(segment in ("", ".", "..") for segment in segments[:-1]) or segments[-1:] in (
        ["."],
        [".."],
    ):
        return None
    return target if target.startswith("/console/") else None


def _session_routes(router: APIRouter) -> None:
    @router.get("")
    @router.get("/")
    def home(request: Request) -> Response:
        session = current_session(request)
        if session is None or not session.can(*STAFF_ROLES):
            return RedirectResponse("/console/login", status_code=303)
        return RedirectResponse(home_of(session), status_code=303)

    @router.get("/login")
    def login_form(request: Request, next: Annotated[str, Query(max_length=300)] = "") -> Response:
        return page(
            request,
            "login.html",
            session=None,
            title="Sign in",
            next=_safe_next(next) or "",
            signed_in=current_session(request),
        )

    @router.post("/login")
    async def login(request: Request) -> Response:
        def refuse(status: int, message: str) -> Response:
            return page(
                request,
                "login.html",
                session=None,
                status=status,
                notice={"kind": "error", "text": message},
                title="Sign in",
                next="",
                signed_in=None,
            )

        if not same_origin(request):
            return refuse(403, "This sign-in was sent from another site.")
        try:
            fields = await read_form(request)
        except (ValueError, UnicodeDecodeError) as error:
            return refuse(400, str(error))
        try:
            session = open_session(request.app.state.jwt_secret, fields.get("token", ""))
        except ApiError as error:
            return refuse(401, f"Sign-in refused: {error.message}.")
        if not session.can(*STAFF_ROLES):
            return refuse(
                403,
                "This console is for staff tokens (roles "
                + ", ".join(STAFF_ROLES)
                + "); trader and platform tokens use the API.",
            )
        target = _safe_next(fields.get("next", "")) or home_of(session)
        response = RedirectResponse(target, status_code=303)
        session_cookie_headers(response, session, secure=secure_cookies(request))
        return response

    @router.post("/logout")
    def logout(request: Request, _: AnyStaffPost) -> Response:
        response = RedirectResponse("/console/login", status_code=303)
        clear_session_cookie(response, secure=secure_cookies(request))
        return response


def _risk_routes(router: APIRouter) -> None:
    @router.get("/risk")
    def risk(
        request: Request,
        session: RiskViewer,
        page_number: Annotated[str, Query(alias="page", max_length=6)] = "1",
        day: Annotated[str, Query(max_length=10)] = "",
    ) -> Response:
        # ASCII digits only: str.isdigit() admits "²", which int() refuses.
        digits = page_number.isascii() and page_number.isdigit()
        number = min(MAX_RISK_PAGE, max(1, int(page_number))) if digits else 1
        try:
            chosen = date.fromisoformat(day) if day else datetime.now(UTC).date()
        except ValueError:
            return problem(request, session, 422, "Bad day", f"{day!r} is not a date.")
        if not 1970 <= chosen.year <= 2999:  # as the API's dates (its next day must exist)
            return problem(request, session, 422, "Bad day", f"{day!r} is not in 1970-2999.")
        position = wait_for_projections(request, session)
        database = reports_db(request)
        rows, total = risk_board(
            database, limit=RISK_PAGE_SIZE, offset=(number - 1) * RISK_PAGE_SIZE
        )
        start = datetime.combine(chosen, time(0), tzinfo=UTC)
        return page(
            request,
            "risk.html",
            session=session,
            title="Risk",
            position=position,
            accounts=rows,
            total=total,
            page_number=number,
            page_size=RISK_PAGE_SIZE,
            pages=max(1, -(-total // RISK_PAGE_SIZE)),
            first_rank=(number - 1) * RISK_PAGE_SIZE + 1,
            day=chosen.isoformat(),
            previous_day=(chosen - timedelta(days=1)).isoformat(),
            next_day=(chosen + timedelta(days=1)).isoformat(),
            breaches=breaches_between(database, start, start + timedelta(days=1)),
            passes=recent_passes(database, limit=20),
        )


def _audit_routes(router: APIRouter) -> None:
    @router.get("/audit")
    def audit(
        request: Request,
        session: AuditViewer,
        q: Annotated[str, Query(max_length=MAX_QUERY_LENGTH)] = "",
    ) -> Response:
        position = wait_for_projections(request, session)
        return page(
            request,
            "audit.html",
            session=session,
            title="Audit",
            position=position,
            query=q,
            accounts=find_accounts(reports_db(request), q, limit=50),
            can_verify=session.can("auditor"),
            can_report=session.can("finance", "auditor"),
            today=datetime.now(UTC).date().isoformat(),
        )

    @router.get("/accounts/{account_id}")
    def account(
        account_id: str,
        request: Request,
        session: AuditViewer,
        after_version: Annotated[str, Query(max_length=9)] = "0",
    ) -> Response:
        digits = after_version.isascii() and after_version.isdigit()
        after = int(after_version) if digits else 0
        ledger = ledger_of(request)
        try:
            current = ledger.account(account_id)
        except NotFound:
            return problem(request, session, 404, "Not found", f"No account {account_id}.")
        # The table pages through the events as the API does; the chart reads the latest
        # MAX_CHART_EVENTS of them once (thinned for drawing).
        shown = ledger.account_events(account_id, after_version=after, limit=EVENTS_PAGE)
        chart_from = max(0, current.version - MAX_CHART_EVENTS)
        history = list(ledger.events.get(current.id, gt=chart_from))
        links = stream_links(
            request.app.state.database, str(current.id), after, after + EVENTS_PAGE
        )
        events = []
        for event in shown:
            view = event_view(event, links.get(event.originator_version))
            view["data_json"] = json.dumps(plain(view["data"]), indent=1, sort_keys=True)
            events.append(view)
        last = events[-1]["version"] if events else after
        return page(
            request,
            "account.html",
            session=session,
            title=f"Account {current.id}",
            account=account_state(current),
            chart=chart(points_from_events(history), current.currency),
            chart_from_version=chart_from + 1,
            events=events,
            after_version=after,
            next_after=last if len(events) == EVENTS_PAGE and last < current.version else None,
            can_verify=session.can("auditor"),
        )

    @router.post("/audit/verify")
    def verify_ledger(request: Request, posted: AuditorPost) -> Response:
        result = verify(
            ledger_of(request),
            request.app.state.database_url,
            request.app.state.database,
            default_projections(),
        )
        return page(
            request,
            "verify.html",
            session=posted.session,
            title="Ledger verification",
            result=_verify_summary(result),
        )


def _verify_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The verify result as the page shows it: clean, or every finding by name."""
    chain = result.get("chain") or {}
    findings = [
        {"where": "hash chain", "what": json.dumps(plain(item), sort_keys=True)}
        for item in chain.get("findings") or []
    ]
    for name, outcome in sorted((result.get("projections") or {}).items()):
        for difference in (outcome or {}).get("differences") or []:
            findings.append(
                {"where": f"projection {name}", "what": json.dumps(plain(difference))[:500]}
            )
    return {
        "ok": bool(result.get("ok")),
        "events": chain.get("events"),
        "head": chain.get("head") or {},
        "projections": sorted((result.get("projections") or {}).keys()),
        "findings": findings,
    }
