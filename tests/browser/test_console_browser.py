"""The console in real headless Chromium against the real server (uvicorn, its own
process), on an SQLite file and on PostgreSQL: sign in with a minted token, the payout
queue with four eyes, mark paid, CSRF refusals, the audit chart (a screenshot is saved in
test-artifacts/) and the ledger check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import console_seed as seed
from tests.browser.conftest import ARTIFACTS, Server, serve
from tests.support import BACKENDS, token

pytestmark = pytest.mark.browser

ALICE = ["finance", "approver"]  # requests payouts (and may approve others' payouts)
BOB = ["approver"]
AUDITOR = ["auditor"]


# Every case runs on SQLite; the payout flow and the audit page run on PostgreSQL too.
ON_SQLITE = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
ON_BOTH = pytest.mark.parametrize("server", BACKENDS, indirect=True)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(f"console-{request.param}")
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{folder / 'propledger.db'}"
    yield from serve(url, folder)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def program_id(api: httpx.Client) -> str:
    return seed.define_program(api)


@pytest.fixture
def context(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh browser profile (no cookies) per test."""
    made = browser.new_context(base_url=server.base)
    made.set_default_timeout(10_000)
    try:
        yield made
    finally:
        made.close()


def sign_in(context: Any, roles: list[str], sub: str, goto: str = "/console/finance") -> Any:
    page = context.new_page()
    page.goto(goto)
    assert "/console/login" in page.url  # not signed in yet: sent to the sign-in form
    page.fill("#token", token(roles, sub=sub))
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(re.escape(goto) + "$"))
    return page


def requested_row(page: Any, payout_id: str) -> Any:
    return page.locator(f"#requested tr[data-payout='{payout_id}']")


@ON_SQLITE
def test_a_bad_token_is_refused_at_sign_in(context: Any) -> None:
    page = context.new_page()
    page.goto("/console/risk")
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")

    assert page.locator("#notice").inner_text().startswith("Sign-in refused")
    assert "/console/login" in page.url
    assert not [c for c in context.cookies() if c["name"] == "propledger_console"]


@ON_SQLITE
def test_finance_requests_a_payout_of_an_eligible_account_from_the_queue(
    context: Any, api: httpx.Client, program_id: str
) -> None:
    account = seed.funded_account(api, program_id, trades=8)
    page = sign_in(context, ALICE, "alice")
    row = page.locator(f"#eligible tr[data-account='{account['account_id']}']")

    row.locator("button.request").click()

    assert "requested for account" in page.locator("#notice").inner_text()
    assert page.locator(f"#eligible tr[data-account='{account['account_id']}']").count() == 0
    requested = page.locator("#requested tr", has_text=account["trader_id"])
    assert requested.count() == 1
    assert "alice" in requested.inner_text()


@ON_BOTH
def test_four_eyes_in_the_browser_the_requester_is_refused_a_second_approver_approves(
    browser: Any, server: Server, api: httpx.Client, program_id: str
) -> None:
    account = seed.funded_account(api, program_id, trades=8)
    payout_id = seed.request_payout(api, account["account_id"], sub="alice")["payout_id"]
    alice_context = browser.new_context(base_url=server.base)
    bob_context = browser.new_context(base_url=server.base)
    try:
        alice = sign_in(alice_context, ALICE, "alice")
        requested_row(alice, payout_id).locator("button.approve").click()

        # Refused, with the reason shown, and the payout is still waiting.
        assert "Four eyes" in alice.locator("#notice").inner_text()
        assert requested_row(alice, payout_id).count() == 1
        assert seed.payout(api, payout_id)["status"] == "requested"

        bob = sign_in(bob_context, BOB, "bob")
        requested_row(bob, payout_id).locator("button.approve").click()

        assert "approved by bob" in bob.locator("#notice").inner_text()
        assert requested_row(bob, payout_id).count() == 0
        assert bob.locator(f"#approved tr[data-payout='{payout_id}']").count() == 1
        assert seed.payout(api, payout_id)["approved_by"] == "bob"

        # Finance pays it with a reference; it moves to the paid list.
        alice.goto("/console/finance")
        approved = alice.locator(f"#approved tr[data-payout='{payout_id}']")
        approved.locator("input[name=reference]").fill("SEPA-2026-000042")
        approved.locator("button.paid").click()

        assert "marked paid" in alice.locator("#notice").inner_text()
        paid = alice.locator(f"#paid tr[data-payout='{payout_id}']")
        assert "SEPA-2026-000042" in paid.inner_text()
        assert seed.payout(api, payout_id)["status"] == "paid"
    finally:
        alice_context.close()
        bob_context.close()


@ON_SQLITE
def test_a_forged_post_is_refused_and_changes_nothing(
    context: Any, server: Server, api: httpx.Client, program_id: str
) -> None:
    account = seed.funded_account(api, program_id, trades=8)
    payout_id = seed.request_payout(api, account["account_id"], sub="carol")["payout_id"]
    page = sign_in(context, BOB, "bob")
    approve = f"{server.base}/console/payouts/{payout_id}/approve"
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")

    # The browser sends the session cookie, but the form has no CSRF field.
    without_field = page.request.post(approve, form={}, max_redirects=0)
    # The right field, from another site.
    cross_site = page.request.post(
        approve, form={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    # A wrong field.
    wrong = page.request.post(approve, form={"csrf_token": "0" * 64})

    for refused in (without_field, cross_site, wrong):
        assert refused.status == 403
        assert "Nothing was changed" in refused.text()
    assert seed.payout(api, payout_id)["status"] == "requested"
    page.reload()
    assert requested_row(page, payout_id).count() == 1


@ON_BOTH
def test_the_audit_page_draws_the_chart_and_verify_says_clean(
    context: Any, api: httpx.Client, program_id: str, request: pytest.FixtureRequest
) -> None:
    account = seed.funded_account(api, program_id, trades=40)
    page = sign_in(context, AUDITOR, "auditor-1", goto="/console/audit")
    page.fill("input[name=q]", account["account_id"][:13])
    page.click("#search button[type=submit]")
    page.locator(f"#search a[href='/console/accounts/{account['account_id']}']").click()

    svg = page.locator("svg.chart")
    svg.wait_for()
    counts = {
        series: len(
            page.locator(f"polyline[data-series='{series}']").get_attribute("points").split()
        )
        for series in ("balance", "equity", "daily_loss_floor", "max_loss_floor")
    }
    # Opened + 40 trades: one point each, every series.
    assert counts == dict.fromkeys(counts, 41)
    box = svg.bounding_box()
    assert box is not None
    assert box["width"] > 400
    assert box["height"] > 100
    assert page.locator("#events tr[data-version]").count() == 41
    hashes = page.locator("#events code.hash").all_inner_texts()
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in hashes)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"console-audit-chart-{request.node.callspec.id}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    page.click("#verify button.verify")
    assert page.locator("#verdict").inner_text() == "Clean"


@ON_SQLITE
def test_an_approver_is_refused_the_audit_view_and_sign_out_ends_the_session(
    context: Any,
) -> None:
    page = sign_in(context, BOB, "bob")
    response = page.goto("/console/audit")
    assert response is not None
    assert response.status == 403
    assert "auditor" in page.locator("#problem").inner_text()

    page.goto("/console/finance")
    page.click("header form.signout button")
    page.wait_for_url(re.compile(r"/console/login$"))
    page.goto("/console/finance")
    assert "/console/login" in page.url
