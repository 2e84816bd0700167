"""What every console page shares: templates, who may see it, forms, waiting for the
projections, and replies (pages, redirects with a notice, refusals)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from api.console_auth import (
    AUDIT_VIEW,
    COOKIE_PATH,
    FINANCE_VIEW,
    FLASH_COOKIE,
    FLASH_SECONDS,
    RISK_VIEW,
    STAFF_ROLES,
    ConsoleReply,
    Session,
    csrf_ok,
    current_session,
    flash_value,
    read_flash,
    read_form,
    same_origin,
)
from api.reads import ReportReads
from ledger.app import PropLedger

READ_WAIT_SECONDS = 10.0

TEMPLATES = Environment(
    loader=PackageLoader("api", "templates/console"),
    # Every template is HTML: escape everything, whatever the file name says.
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_NAV = (
    ("/console/finance", "Finance", FINANCE_VIEW),
    ("/console/risk", "Risk", RISK_VIEW),
    ("/console/audit", "Audit", AUDIT_VIEW),
)


def ledger_of(request: Request) -> PropLedger:
    ledger: PropLedger = request.app.state.ledger
    return ledger


def secure_cookies(request: Request) -> bool:
    return bool(getattr(request.app.state, "console_secure_cookies", False))


def home_of(session: Session) -> str:
    """Where a session starts: the payout queue for finance people, the audit view for
    auditors, else the risk board (every staff role sees it)."""
    if session.can(*FINANCE_VIEW):
        return "/console/finance"
    if session.can("auditor"):
        return "/console/audit"
    return "/console/risk"


def page(
    request: Request,
    template: str,
    *,
    session: Session | None,
    status: int = 200,
    notice: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A rendered page; shows (and clears) the notice a redirect left behind."""
    secret = request.app.state.jwt_secret
    flashed = read_flash(secret, request.cookies.get(FLASH_COOKIE))
    nav = [
        {"href": href, "label": label, "active": request.url.path.startswith(href)}
        for href, label, roles in _NAV
        if session is not None and session.can(*roles)
    ]
    html = TEMPLATES.get_template(template).render(
        session=session, nav=nav, notice=notice or flashed, **context
    )
    response = HTMLResponse(html, status_code=status, headers=headers)
    if request.cookies.get(FLASH_COOKIE) is not None:
        response.delete_cookie(
            FLASH_COOKIE,
            path=COOKIE_PATH,
            secure=secure_cookies(request),
            httponly=True,
            samesite="strict",
        )
    return response


def problem(
    request: Request,
    session: Session | None,
    status: int,
    title: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A plain page saying what was refused and why."""
    return page(
        request,
        "error.html",
        session=session,
        status=status,
        headers=headers,
        title=title,
        message=message,
    )


def done(request: Request, location: str, text: str, kind: str = "ok") -> RedirectResponse:
    """Post/redirect/get: the next page shows `text` once."""
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(
        FLASH_COOKIE,
        flash_value(request.app.state.jwt_secret, kind, text),
        max_age=FLASH_SECONDS,
        path=COOKIE_PATH,
        secure=secure_cookies(request),
        httponly=True,
        samesite="strict",
    )
    return response


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path if request.method == "GET" else ""
    query = f"?next={target}" if target.startswith("/console/") else ""
    return RedirectResponse(f"/console/login{query}", status_code=303)


def _staff_session(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise ConsoleReply(to_login(request))
    if not session.can(*STAFF_ROLES):
        raise ConsoleReply(
            problem(
                request,
                None,
                403,
                "Not for this token",
                "The console is for staff roles: " + ", ".join(STAFF_ROLES) + ".",
            )
        )
    return session


def _role_refusal(request: Request, session: Session, roles: tuple[str, ...]) -> ConsoleReply:
    return ConsoleReply(
        problem(
            request,
            session,
            403,
            "Not allowed",
            "This needs one of the roles: " + ", ".join(roles) + ".",
        )
    )


def viewer(*roles: str) -> Any:
    """A dependency admitting a signed-in session holding one of `roles`."""

    def check(request: Request) -> Session:
        session = _staff_session(request)
        if not session.can(*roles):
            raise _role_refusal(request, session, roles)
        return session

    return Depends(check)


@dataclass(frozen=True)
class Posted:
    """A console form that passed the session, origin, CSRF and role checks."""

    session: Session
    fields: dict[str, str]

    def field(self, name: str) -> str:
        return self.fields.get(name, "").strip()


def poster(*roles: str) -> Any:
    """A dependency for console POSTs: session, same origin, CSRF field, then role.
    Anything refused here changes nothing."""

    async def check(request: Request) -> Posted:
        session = _staff_session(request)
        if not same_origin(request):
            raise ConsoleReply(
                problem(
                    request,
                    session,
                    403,
                    "Refused",
                    "This form was sent from another site. Nothing was changed.",
                )
            )
        try:
            fields = await read_form(request)
        except (ValueError, UnicodeDecodeError) as error:
            raise ConsoleReply(
                problem(request, session, 400, "Malformed form", str(error))
            ) from None
        if not csrf_ok(session, fields):
            raise ConsoleReply(
                problem(
                    request,
                    session,
                    403,
                    "Refused",
                    "The form's CSRF token is missing or wrong (the page may be older than "
                    "your sign-in). Reload the page and try again. Nothing was changed.",
                )
            )
        if not session.can(*roles):
            raise _role_refusal(request, session, roles)
        return Posted(session, fields)

    return Depends(check)


def wait_for_projections(request: Request, session: Session | None) -> int:
    """Projection-backed pages show every event recorded before the request arrived
    (DESIGN.md): the same bounded wait as the API's reports, else a 503 page."""
    position = ledger_of(request).position()
    reads: ReportReads = request.app.state.reads
    request.state.reports_db = reads.wait(position, timeout=READ_WAIT_SECONDS)
    if request.state.reports_db is None:
        raise ConsoleReply(
            problem(
                request,
                session,
                503,
                "Catching up",
                "The read models have not caught up with the ledger yet; reload in a moment.",
                headers={"Retry-After": "1"},
            )
        )
    return position


async def console_reply(_: Request, reply: Exception) -> Response:
    assert isinstance(reply, ConsoleReply)
    return reply.response


ExceptionHandler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]
