"""The console's finance view: the payout queue (eligible, requested, approved, paid),
unallocated payments, and the payouts report for a period.

Every action calls the same PropLedger command as the API, so four eyes and every refusal
code apply unchanged. A success redirects (post/redirect/get) to the queue, which waits for
the projections to reach the log position the action left, so it shows the new state. A
refusal renders the queue again with the reason and the API's status code for it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.console_auth import FINANCE_VIEW, REPORT_ROLES, ConsoleReply, Session
from api.console_web import (
    Posted,
    done,
    ledger_of,
    page,
    poster,
    problem,
    viewer,
    wait_for_projections,
)
from api.reads import reports_db
from api.schemas import Allocation, PaidMark, Rejection
from domain.errors import Conflict, DomainError, NotFound
from domain.payout import FourEyes, PayoutRefused
from projections.console import payout_candidates, recent_paid
from projections.payments import unallocated
from projections.payouts import list_payouts, payout_report, report_csv

QUEUE_LIMIT = 100
CANDIDATES_CHECKED = 50
FINANCE = "/console/finance"
MAX_ID_LENGTH = 200

FinanceViewer = Annotated[Session, viewer(*FINANCE_VIEW)]
ReportReader = Annotated[Session, viewer(*REPORT_ROLES)]
FinancePost = Annotated[Posted, poster("finance")]
ApproverPost = Annotated[Posted, poster("approver")]


def finance_routes(router: APIRouter) -> None:
    @router.get("/finance")
    def finance(request: Request, session: FinanceViewer) -> Response:
        return _queue(request, session)

    @router.post("/accounts/{account_id}/payout-request")
    def request_payout(account_id: str, request: Request, posted: FinancePost) -> Response:
        _check_id(request, posted.session, account_id)
        try:
            payout, _ = ledger_of(request).request_payout(account_id, posted.session.sub)
        except PayoutRefused as refused:
            reasons = (refused.details or {}).get("reasons") or [refused.code]
            return _refused(request, posted.session, 422, f"{refused.message}", reasons)
        except DomainError as error:
            return _refused(request, posted.session, _status(error), error.message)
        return done(
            request,
            FINANCE,
            f"Payout {payout.id} requested for account {account_id}: "
            f"profit {payout.breakdown.profit.amount} {payout.breakdown.profit.currency}.",
        )

    @router.post("/payouts/{payout_id}/approve")
    def approve(payout_id: str, request: Request, posted: ApproverPost) -> Response:
        _check_id(request, posted.session, payout_id)
        try:
            payout, _ = ledger_of(request).approve_payout(
                payout_id, posted.session.sub, posted.session.principal.trader_id
            )
        except FourEyes as refused:
            return _refused(
                request,
                posted.session,
                403,
                f"Four eyes: {refused.message}{payout_requester(refused)}.",
            )
        except DomainError as error:
            return _refused(request, posted.session, _status(error), error.message)
        return done(request, FINANCE, f"Payout {payout.id} approved by {posted.session.sub}.")

    @router.post("/payouts/{payout_id}/reject")
    def reject(payout_id: str, request: Request, posted: ApproverPost) -> Response:
        _check_id(request, posted.session, payout_id)
        try:
            reason = Rejection(reason=posted.field("reason")).reason
        except ValidationError:
            return _refused(request, posted.session, 422, "A rejection needs a reason (1-500).")
        try:
            payout, _ = ledger_of(request).reject_payout(payout_id, posted.session.sub, reason)
        except DomainError as error:
            return _refused(request, posted.session, _status(error), error.message)
        return done(request, FINANCE, f"Payout {payout.id} rejected: {reason}")

    @router.post("/payouts/{payout_id}/paid")
    def mark_paid(payout_id: str, request: Request, posted: FinancePost) -> Response:
        _check_id(request, posted.session, payout_id)
        try:
            reference = PaidMark(reference=posted.field("reference")).reference
        except ValidationError:
            return _refused(
                request, posted.session, 422, "Marking paid needs the bank or rail reference."
            )
        try:
            payout, _ = ledger_of(request).mark_payout_paid(
                payout_id, posted.session.sub, reference
            )
        except DomainError as error:
            return _refused(request, posted.session, _status(error), error.message)
        return done(request, FINANCE, f"Payout {payout.id} marked paid ({reference}).")

    @router.post("/payments/{payment_id}/allocate")
    def allocate(payment_id: str, request: Request, posted: FinancePost) -> Response:
        _check_id(request, posted.session, payment_id)
        try:
            body = Allocation(
                trader_id=posted.field("trader_id"), program_id=posted.field("program_id")
            ).model_dump()
        except ValidationError:
            return _refused(
                request, posted.session, 422, "Allocating needs a trader id and a program id."
            )
        try:
            _, account, _ = ledger_of(request).allocate_payment(
                payment_id, body, posted.session.sub
            )
        except DomainError as error:
            return _refused(request, posted.session, _status(error), error.message)
        return done(
            request,
            FINANCE,
            f"Payment {payment_id} allocated to {body['trader_id']} ({body['program_id']}): "
            f"account {account.id} opened.",
        )

    @router.get("/reports/payouts.csv")
    def payouts_csv(
        request: Request,
        session: ReportReader,
        from_: Annotated[str, Query(alias="from", max_length=10)] = "",
        to: Annotated[str, Query(max_length=10)] = "",
    ) -> Response:
        try:
            start = _day(from_, "from")
            end = _day(to, "to")
        except ValueError as error:
            return problem(request, session, 422, "Bad period", str(error))
        if start is not None and end is not None and end < start:
            return problem(request, session, 422, "Bad period", "'to' is before 'from'.")
        wait_for_projections(request, session)
        report = payout_report(
            reports_db(request),
            None if start is None else datetime.combine(start, time(0), tzinfo=UTC),
            None if end is None else datetime.combine(end + timedelta(days=1), time(0), UTC),
        )
        name = f"payouts-{from_ or 'start'}-to-{to or 'now'}.csv"
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


def payout_requester(refused: FourEyes) -> str:
    """ " (requested by X)" when the refusal is about who requested the payout."""
    details = refused.details if isinstance(refused.details, dict) else {}
    requester = details.get("requested_by")
    return "" if requester is None else f" (requested by {requester})"


def _status(error: DomainError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    return 422


def _check_id(request: Request, session: Session, value: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH:
        raise ConsoleReply(problem(request, session, 404, "Not found", "No such item."))


def _day(value: str, field: str) -> date | None:
    """A date from the form's date input (the whole UTC day), or None for no bound."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{field}' must be a date (YYYY-MM-DD), got {value!r}.") from None
    if not 1970 <= day.year <= 2999:  # as GET /v1/reports/payouts
        raise ValueError(f"'{field}' must be in the years 1970 to 2999, got {value!r}.")
    return day


def _refused(
    request: Request,
    session: Session,
    status: int,
    message: str,
    reasons: list[str] | None = None,
) -> Response:
    return _queue(
        request, session, status=status, notice={"kind": "error", "text": message}, reasons=reasons
    )


def _queue(
    request: Request,
    session: Session,
    *,
    status: int = 200,
    notice: dict[str, str] | None = None,
    reasons: list[str] | None = None,
) -> Response:
    position = wait_for_projections(request, session)
    database = reports_db(request)
    context: dict[str, Any] = {
        "title": "Finance",
        "position": position,
        "eligible": _eligible(request),
        "requested": _payouts(request, "requested"),
        "approved": _payouts(request, "approved"),
        "paid": recent_paid(database, limit=20),
        "unallocated": unallocated(database, limit=QUEUE_LIMIT),
        "reasons": reasons or [],
        "can_request": session.can("finance"),
        "can_approve": session.can("approver"),
        "can_pay": session.can("finance"),
        "can_allocate": session.can("finance"),
        "can_report": session.can("finance", "auditor"),
        "today": datetime.now(UTC).date().isoformat(),
    }
    return page(request, "finance.html", session=session, status=status, notice=notice, **context)


def _payouts(request: Request, status: str) -> list[dict[str, Any]]:
    return list_payouts(
        reports_db(request),
        status=status,
        requested_from=None,
        requested_to=None,
        after=None,
        limit=QUEUE_LIMIT,
    )


def _eligible(request: Request) -> list[dict[str, Any]]:
    """Funded active accounts with a profit whose payout eligibility check passes now
    (timing, minimum, consistency, no pending payout, trader not suspended): the same
    check `request_payout` makes, on the aggregate."""
    ledger = ledger_of(request)
    now = ledger.clock()
    eligible = []
    for row in payout_candidates(reports_db(request), limit=CANDIDATES_CHECKED):
        try:
            account = ledger.account(row["account_id"])
            trader = ledger.trader(account.trader_id)
        except NotFound:
            continue
        check = account.payout_eligibility(
            now=now,
            trader_suspended=trader.is_suspended,
            opened_activity_at=ledger.opened_activity_at(account),
        )
        if not check.reasons():
            eligible.append(row)
    return eligible
