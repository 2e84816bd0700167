"""The staff console (`/console`) over HTTP, through the real app, on an SQLite file and on
PostgreSQL: sign-in and its cookie, roles per view and per action, CSRF refusals that
change nothing, the payout queue with four eyes, allocation, the CSV report, the risk
board's ranking and the day's breaches, the audit page and verify, escaping, and the
files the package must ship.

Each person is their own TestClient (their own cookie jar) over one started app.
"""

from __future__ import annotations

import csv
import html
import io
import re
import sqlite3
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import mint_token
from ledger.config import Settings
from tests import console_seed as seed
from tests import stripe_payloads as sp
from tests.support import BACKENDS, SECRET, auth, backend_url, token, uid

ROOT = Path(__file__).resolve().parents[2]
HOST = "http://testserver"
STAFF = ("admin", "finance", "approver", "auditor")


def make_app(url: str, **settings: Any) -> FastAPI:
    return create_app(
        Settings(
            propledger_database_url=url,
            propledger_jwt_secret=SECRET,
            stripe_webhook_secret=sp.WEBHOOK_SECRET,
            **settings,
        )
    )


@pytest.fixture(scope="module", params=BACKENDS)
def started(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    with TestClient(make_app(backend_url(request, tmp_path_factory))) as client:
        yield client


@pytest.fixture(scope="module")
def app(started: TestClient) -> FastAPI:
    made: FastAPI = started.app  # type: ignore[assignment]
    return made


@pytest.fixture(scope="module")
def api(started: TestClient) -> TestClient:
    """The bearer-token API (no cookies are ever set on this client)."""
    return started


@pytest.fixture(scope="module")
def program_id(api: TestClient) -> str:
    return seed.define_program(api)


class Person:
    """One browser: a cookie jar, signed in with a token of `roles`."""

    def __init__(self, app: FastAPI, roles: list[str] | None = None, sub: str = "") -> None:
        self.http = TestClient(app, base_url=HOST, follow_redirects=False)
        self.sub = sub or uid("user-")
        if roles is not None:
            reply = self.sign_in(token(roles, sub=self.sub))
            assert reply.status_code == 303, reply.text

    def sign_in(self, value: str, **fields: str) -> Any:
        return self.http.post("/console/login", data={"token": value, **fields})

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.http.get(path, **kwargs)

    def csrf(self) -> str:
        """The CSRF field of this person's pages (the sign-out form of their home view)."""
        home = self.get("/console/")
        assert home.status_code == 303
        page = self.get(home.headers["location"]).text
        found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
        assert found is not None
        return found.group(1)

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """A form as the console's own page sends it: with its CSRF field and Origin."""
        fields = {"csrf_token": self.csrf(), **(data or {})}
        headers = {"Origin": HOST, **kwargs.pop("headers", {})}
        return self.http.post(path, data=fields, headers=headers, **kwargs)

    def follow(self, reply: Any) -> Any:
        assert reply.status_code == 303, reply.text
        return self.get(reply.headers["location"])


def notice(page: Any) -> str:
    found = re.search(r'id="notice"[^>]*>([^<]*)<', page.text)
    assert found is not None, page.text[:2000]
    return html.unescape(found.group(1))


def section(page: Any, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', page.text, re.S)
    assert found is not None, f"no section {name}"
    return found.group(1)


def set_cookie(reply: Any) -> str:
    values = [v for k, v in reply.headers.multi_items() if k == "set-cookie"]
    (value,) = [v for v in values if v.startswith("propledger_console=")]
    return value


# Sign-in and the session cookie -----------------------------------------------------


def test_a_page_without_a_session_redirects_to_sign_in_and_back_after_it(app: FastAPI) -> None:
    person = Person(app)
    reply = person.get("/console/risk")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/login?next=/console/risk"

    signed = person.sign_in(token(["auditor"], sub="ann"), next="/console/risk")

    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/risk"
    assert person.get("/console/risk").status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/x",
        "//evil.example/x",
        "/v1/payouts",
        "/console/../v1/payouts",  # resolves outside the console
        "/console/./..//evil.example",
        "/console/risk/..",
    ],
)
def test_sign_in_only_ever_returns_inside_the_console(app: FastAPI, target: str) -> None:
    signed = Person(app).sign_in(token(["auditor"], sub="ann"), next=target)
    assert signed.headers["location"] == "/console/audit"


def test_the_session_cookie_is_httponly_strict_scoped_to_the_console_and_expires_with_the_token(
    app: FastAPI,
) -> None:
    value = mint_token(SECRET, sub="fin", roles=["finance"], ttl=1800)
    cookie = set_cookie(Person(app).sign_in(value))
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}

    assert cookie.startswith(f"propledger_console={value};")
    # A token minted for ages is kept as long as a browser keeps a cookie (400 days); its
    # Expires date overflowed into a 500 at sign-in (console audit).
    ages = mint_token(SECRET, sub="fin", roles=["finance"], ttl=10**17)
    long_lived = set_cookie(Person(app).sign_in(ages))
    assert f"Max-Age={400 * 86_400}" in long_lived
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert attributes["path"] == "Path=/console"
    assert "secure" not in attributes  # development serves plain HTTP
    max_age = int(attributes["max-age"].split("=")[1])
    assert 1790 <= max_age <= 1800


def test_in_production_the_session_cookie_is_secure(tmp_path: Path) -> None:
    strong = "pr0d-" + "".join(chr(65 + (i * 7) % 26) for i in range(40))
    settings = Settings(
        propledger_database_url=f"sqlite:///{tmp_path / 'p.db'}",
        propledger_jwt_secret=strong,
        propledger_env="production",
    )
    with TestClient(create_app(settings), base_url=HOST, follow_redirects=False) as client:
        reply = client.post(
            "/console/login", data={"token": mint_token(strong, sub="f", roles=["finance"])}
        )
    assert reply.status_code == 303
    assert "; secure" in set_cookie(reply).lower()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not-a-token", "invalid"),
        (mint_token("another-secret-" + "z" * 40, sub="x", roles=["finance"]), "invalid"),
        (mint_token(SECRET, sub="x", roles=["finance"], ttl=-60), "expired"),
        ("", "paste the token"),
    ],
)
def test_a_bad_or_expired_token_is_refused_and_sets_no_cookie(
    app: FastAPI, value: str, reason: str
) -> None:
    reply = Person(app).sign_in(value)

    assert reply.status_code == 401
    assert reason in notice(reply)
    assert "propledger_console=" not in reply.headers.get("set-cookie", "")


@pytest.mark.parametrize("roles", [["trader"], ["platform"]])
def test_trader_and_platform_tokens_are_not_admitted(app: FastAPI, roles: list[str]) -> None:
    value = token(roles, sub="t", trader_id="trader-1" if "trader" in roles else None)
    reply = Person(app).sign_in(value)

    assert reply.status_code == 403
    assert "staff" in notice(reply)
    assert "propledger_console=" not in reply.headers.get("set-cookie", "")


def test_an_expired_session_cookie_sends_back_to_sign_in(app: FastAPI) -> None:
    expired = mint_token(SECRET, sub="x", roles=["finance"], ttl=-5)
    reply = Person(app).get("/console/finance", headers={"Cookie": f"propledger_console={expired}"})
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/console/login")


def test_sign_out_clears_the_cookie(app: FastAPI) -> None:
    person = Person(app, ["finance"])
    reply = person.post("/console/logout")

    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/login"
    assert 'propledger_console=""' in set_cookie(reply)
    assert person.get("/console/finance").status_code == 303


# Roles ------------------------------------------------------------------------------

VIEWS = {
    "/console/finance": {"finance", "approver"},  # the payout desk, as the API's payout reads
    "/console/risk": set(STAFF),
    "/console/audit": {"auditor", "admin", "finance"},
    "/console/reports/payouts.csv": {"finance", "auditor"},
}


@pytest.mark.parametrize("path", sorted(VIEWS))
@pytest.mark.parametrize("role", STAFF)
def test_each_view_admits_exactly_its_roles(app: FastAPI, path: str, role: str) -> None:
    reply = Person(app, [role]).get(path)
    if role in VIEWS[path]:
        assert reply.status_code == 200, reply.text
    else:
        assert reply.status_code == 403
        assert "This needs one of the roles" in reply.text


def test_each_action_needs_its_role_and_a_refusal_changes_nothing(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    account = seed.funded_account(api, program_id, trades=4)
    payout_id = seed.request_payout(api, account["account_id"], sub="someone")["payout_id"]

    refused = {
        ("finance", f"/console/payouts/{payout_id}/approve"): {},
        ("finance", f"/console/payouts/{payout_id}/reject"): {"reason": "no"},
        ("approver", f"/console/payouts/{payout_id}/paid"): {"reference": "R-1"},
        ("approver", f"/console/accounts/{account['account_id']}/payout-request"): {},
        ("auditor", "/console/payments/pi_x/allocate"): {"trader_id": "t", "program_id": "p"},
        ("finance", "/console/audit/verify"): {},
        ("admin", f"/console/payouts/{payout_id}/approve"): {},
    }
    for (role, path), data in refused.items():
        reply = Person(app, [role]).post(path, data)
        assert reply.status_code == 403, (role, path)
    assert seed.payout(api, payout_id)["status"] == "requested"


# CSRF -------------------------------------------------------------------------------


@pytest.fixture
def requested(api: TestClient, program_id: str) -> str:
    account = seed.funded_account(api, program_id, trades=4)
    return str(seed.request_payout(api, account["account_id"], sub="requester")["payout_id"])


def test_a_post_without_the_csrf_field_is_refused_and_changes_nothing(
    app: FastAPI, api: TestClient, requested: str
) -> None:
    bob = Person(app, ["approver"], sub="bob")
    reply = bob.http.post(f"/console/payouts/{requested}/approve", data={})

    assert reply.status_code == 403
    assert "CSRF" in reply.text
    assert seed.payout(api, requested)["status"] == "requested"


def test_a_csrf_field_of_another_session_is_refused(
    app: FastAPI, api: TestClient, requested: str
) -> None:
    alice = Person(app, ["approver"], sub="alice")
    bob = Person(app, ["approver"], sub="bob")
    reply = bob.http.post(
        f"/console/payouts/{requested}/approve",
        data={"csrf_token": alice.csrf()},
        headers={"Origin": HOST},
    )

    assert reply.status_code == 403
    assert seed.payout(api, requested)["status"] == "requested"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Referer": "https://evil.example/page"},
    ],
)
def test_a_post_from_another_origin_is_refused_even_with_the_right_field(
    app: FastAPI, api: TestClient, requested: str, headers: dict[str, str]
) -> None:
    bob = Person(app, ["approver"], sub="bob")
    reply = bob.http.post(
        f"/console/payouts/{requested}/approve",
        data={"csrf_token": bob.csrf()},
        headers=headers,
    )

    assert reply.status_code == 403
    assert "another site" in reply.text
    assert seed.payout(api, requested)["status"] == "requested"


def test_a_cross_site_sign_in_and_a_non_form_post_are_refused(
    app: FastAPI, api: TestClient, requested: str
) -> None:
    person = Person(app)
    cross = person.http.post(
        "/console/login",
        data={"token": token(["approver"], sub="bob")},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert "propledger_console=" not in cross.headers.get("set-cookie", "")

    bob = Person(app, ["approver"], sub="bob")
    as_json = bob.http.post(
        f"/console/payouts/{requested}/approve",
        json={"csrf_token": bob.csrf()},
        headers={"Origin": HOST},
    )
    assert as_json.status_code == 400
    assert seed.payout(api, requested)["status"] == "requested"


# Finance ----------------------------------------------------------------------------


def test_the_payout_queue_from_eligible_to_paid_with_four_eyes(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    account = seed.funded_account(api, program_id, trades=8)
    account_id = account["account_id"]
    alice = Person(app, ["finance", "approver"], sub="alice")
    bob = Person(app, ["approver"], sub="bob")
    assert f'data-account="{account_id}"' in section(alice.get("/console/finance"), "eligible")

    page = alice.follow(alice.post(f"/console/accounts/{account_id}/payout-request"))
    profit = seed.expected_profit(8)
    assert f"profit {profit:.2f} USD" in notice(page)
    assert f'data-account="{account_id}"' not in section(page, "eligible")
    payout_id = re.search(
        rf'data-payout="([0-9a-f-]{{36}})">(?:(?!</tr>).)*{account_id}',
        section(page, "requested"),
        re.S,
    )
    assert payout_id is not None
    payout = seed.payout(api, payout_id.group(1))
    assert (payout["account_id"], payout["requested_by"]) == (account_id, "alice")

    own = alice.post(f"/console/payouts/{payout['payout_id']}/approve")
    assert own.status_code == 403
    assert notice(own).startswith("Four eyes: whoever requested a payout may not approve it")
    assert payout["payout_id"] in section(own, "requested")
    assert seed.payout(api, payout["payout_id"])["status"] == "requested"

    page = bob.follow(bob.post(f"/console/payouts/{payout['payout_id']}/approve"))
    assert notice(page) == f"Payout {payout['payout_id']} approved by bob."
    assert payout["payout_id"] not in section(page, "requested")
    assert payout["payout_id"] in section(page, "approved")

    page = alice.follow(
        alice.post(f"/console/payouts/{payout['payout_id']}/paid", {"reference": "WIRE-77"})
    )
    assert payout["payout_id"] not in section(page, "approved")
    assert "WIRE-77" in section(page, "paid")
    paid = seed.payout(api, payout["payout_id"])
    assert (paid["status"], paid["approved_by"], paid["paid_reference"]) == (
        "paid",
        "bob",
        "WIRE-77",
    )


def test_a_refused_payout_request_names_every_failed_condition(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    phase_id = seed.open_account(api, program_id)  # not funded, no profit
    reply = Person(app, ["finance"]).post(f"/console/accounts/{phase_id}/payout-request")

    assert reply.status_code == 422
    reasons = re.findall(r"<li><code>([a-z_]+)</code></li>", section(reply, "eligible"))
    assert reasons == []  # the reasons are above the sections
    listed = re.findall(r"<li><code>([a-z_]+)</code></li>", reply.text)
    assert {"not_funded", "no_profit"} <= set(listed)


def test_a_rejection_needs_a_reason_and_then_frees_the_account_to_ask_again(
    app: FastAPI, api: TestClient, program_id: str, requested: str
) -> None:
    bob = Person(app, ["approver"], sub="bob")
    empty = bob.post(f"/console/payouts/{requested}/reject", {"reason": "  "})
    assert empty.status_code == 422
    assert seed.payout(api, requested)["status"] == "requested"

    page = bob.follow(bob.post(f"/console/payouts/{requested}/reject", {"reason": "KYC missing"}))

    assert notice(page) == f"Payout {requested} rejected: KYC missing"
    rejected = seed.payout(api, requested)
    assert (rejected["status"], rejected["rejection_reason"]) == ("rejected", "KYC missing")
    again = bob.post(f"/console/payouts/{requested}/reject", {"reason": "twice"})
    assert again.status_code == 409


def test_an_unallocated_payment_is_allocated_from_the_queue(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    payment = sp.StripePayment(54000, "usd", {})
    body = sp.body_of(payment.checkout_completed())
    delivered = api.post(
        "/v1/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sp.signature(body), "Content-Type": "application/json"},
    )
    assert delivered.json()["outcome"] == "unallocated"
    finance = Person(app, ["finance"])
    assert payment.intent in section(finance.get("/console/finance"), "unallocated")
    trader_id = uid("trader-")

    page = finance.follow(
        finance.post(
            f"/console/payments/{payment.intent}/allocate",
            {"trader_id": trader_id, "program_id": program_id},
        )
    )

    assert f"allocated to {trader_id}" in notice(page)
    assert payment.intent not in section(page, "unallocated")
    accounts = api.get(f"/v1/traders/{trader_id}/accounts", headers=auth("finance")).json()
    assert [a["stage"] for a in accounts["accounts"]] == ["phase-1"]
    again = finance.post(
        f"/console/payments/{payment.intent}/allocate",
        {"trader_id": trader_id, "program_id": program_id},
    )
    assert again.status_code == 409


def test_the_csv_download_is_the_api_report_for_the_period(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    account = seed.funded_account(api, program_id, trades=4)
    payout_id = seed.request_payout(api, account["account_id"], sub="alice")["payout_id"]
    approved = api.post(f"/v1/payouts/{payout_id}/approve", headers=auth("approver", sub="bob"))
    assert approved.status_code == 200, approved.text
    today = datetime.now(UTC).date()
    period = {"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()}

    console = Person(app, ["auditor"]).get("/console/reports/payouts.csv", params=period)
    reference = api.get(
        "/v1/reports/payouts", params={**period, "format": "csv"}, headers=auth("finance")
    )

    assert console.status_code == 200
    assert console.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in console.headers["content-disposition"]
    assert console.content == reference.content
    rows = list(csv.reader(io.StringIO(console.text)))
    assert payout_id in [row[0] for row in rows]
    assert rows[-1][0] == "total"

    before = {"from": "2020-01-01", "to": "2020-01-31"}
    empty = Person(app, ["finance"]).get("/console/reports/payouts.csv", params=before)
    assert list(csv.reader(io.StringIO(empty.text)))[1:] == []
    bad = Person(app, ["finance"]).get("/console/reports/payouts.csv", params={"from": "March"})
    assert bad.status_code == 422
    # Dates the API refuses are refused here too (a `to` of 9999-12-31 overflowed: 500).
    for far in ({"to": "9999-12-31"}, {"from": "0001-01-01"}):
        reply = Person(app, ["finance"]).get("/console/reports/payouts.csv", params=far)
        assert reply.status_code == 422, far


# Risk -------------------------------------------------------------------------------


def test_the_risk_board_ranks_by_headroom_to_the_nearest_floor(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    # Floors: daily = day start balance - 5,000.00; max = 90,000.00 (static).
    near_daily = seed.open_account(api, program_id)
    seed.trade(api, near_daily, "-3000.00", "2026-04-01T10:00:00Z")  # 2,000.00 to 95,000.00
    near_max = seed.open_account(api, program_id)
    seed.trade(api, near_max, "-4000.00", "2026-04-01T10:00:00Z")
    seed.trade(api, near_max, "-4000.00", "2026-04-02T10:00:00Z")
    seed.trade(api, near_max, "1.00", "2026-04-03T10:00:00Z")  # 2,001.00 to 90,000.00
    far = seed.open_account(api, program_id)
    seed.trade(api, far, "-1000.00", "2026-04-01T10:00:00Z")  # 4,000.00 to 95,000.00

    page = Person(app, ["approver"]).get("/console/risk")
    board = section(page, "headroom")
    rows = {
        account_id: re.search(rf'data-account="{account_id}">(.*?)</tr>', board, re.S)
        for account_id in (near_daily, near_max, far)
    }

    assert all(rows.values()), "every account is on the first page"
    order = sorted(rows, key=lambda account_id: board.index(account_id))
    assert order == [near_daily, near_max, far]
    # Columns: rank, account, trader, program, stage, balance, equity, daily floor, max
    # floor, headroom, % of initial, nearest floor.
    shown = {key: cells(match.group(1))[5:] for key, match in rows.items() if match}
    assert shown[near_daily] == [
        "97000.00 USD", "97000.00", "95000.00", "90000.00", "2000.00 USD", "2.00%",
        "max_daily_loss",
    ]  # fmt: skip
    assert shown[near_max] == [
        "92001.00 USD", "92001.00", "87000.00", "90000.00", "2001.00 USD", "2.00%", "max_loss",
    ]  # fmt: skip
    assert shown[far][4:] == ["4000.00 USD", "4.00%", "max_daily_loss"]


def cells(row: str) -> list[str]:
    """The text of each cell of a table row's HTML."""
    texts = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split()) for text in texts]


def test_the_days_breaches_name_rule_value_and_floor_and_passes_are_listed(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    breached = seed.open_account(api, program_id)
    seed.trade(api, breached, "-6000.00", seed.now_text())  # 94,000.00 < 95,000.00
    passed = seed.funded_account(api, program_id, trades=1)
    person = Person(app, ["auditor"])

    today = person.get("/console/risk")
    breaches = section(today, "breaches")
    row = re.search(rf'data-account="{breached}">(.*?)</tr>', breaches, re.S)
    assert row is not None
    assert "max_daily_loss" in row.group(1)
    assert "94000.00" in row.group(1)
    assert "95000.00" in row.group(1)
    assert breached not in section(today, "headroom")
    passes = section(today, "passes")
    assert passed["phase_id"] in passes
    assert passed["account_id"] in passes  # the account the pass opened

    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert breached not in section(person.get(f"/console/risk?day={yesterday}"), "breaches")
    assert person.get("/console/risk?day=someday").status_code == 422


# Audit ------------------------------------------------------------------------------


def test_the_account_page_shows_the_chart_and_the_events_with_their_hashes(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    account = seed.funded_account(api, program_id, trades=12)
    account_id = account["account_id"]
    page = Person(app, ["finance"]).get(f"/console/accounts/{account_id}")
    events = api.get(f"/v1/accounts/{account_id}/events", headers=auth("auditor")).json()

    assert page.status_code == 200
    polylines = dict(re.findall(r'data-series="([a-z_]+)" points="([^"]+)"', page.text))
    assert sorted(polylines) == ["balance", "daily_loss_floor", "equity", "max_loss_floor"]
    assert {len(points.split()) for points in polylines.values()} == {13}
    hashes = re.findall(r'<code class="hash">([0-9a-f]{64})</code>', page.text)
    assert hashes == [event["hash"] for event in events["events"]]
    assert 'class="verify"' not in page.text  # verify is the auditor's


def test_odd_query_values_are_read_as_defaults_or_refused_never_a_500(
    app: FastAPI, api: TestClient, program_id: str
) -> None:
    """A console audit found 500s: "²" passes str.isdigit() but not int(); a day at the
    ends of the calendar has no next or previous day."""
    person = Person(app, ["auditor", "finance"])
    account = seed.funded_account(api, program_id, trades=1)
    assert person.get("/console/risk", params={"page": "\u00b2"}).status_code == 200
    reply = person.get(
        f"/console/accounts/{account['account_id']}", params={"after_version": "\u00b9"}
    )
    assert reply.status_code == 200
    for day in ("9999-12-31", "0001-01-01"):
        refused = person.get("/console/risk", params={"day": day})
        assert refused.status_code == 422
        assert "Bad day" in refused.text


def test_an_unknown_account_is_a_404_page(app: FastAPI) -> None:
    person = Person(app, ["auditor"])
    for account_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        reply = person.get(f"/console/accounts/{account_id}")
        assert reply.status_code == 404
        assert "No account" in reply.text


def test_an_auditor_verifies_the_ledger_clean(app: FastAPI) -> None:
    reply = Person(app, ["auditor"]).post("/console/audit/verify")

    assert reply.status_code == 200
    assert re.search(r'id="verdict">Clean</p>', reply.text)


def test_verify_names_what_was_altered_behind_the_services_back(tmp_path: Path) -> None:
    path = tmp_path / "own.db"
    with TestClient(make_app(f"sqlite:///{path}"), base_url=HOST) as own:
        account_id = seed.open_account(own, seed.define_program(own))
        # A projection-backed read waits until the board holds the account.
        assert own.get("/v1/payments/unallocated", headers=auth("finance")).status_code == 200
        with sqlite3.connect(path) as connection:
            changed = connection.execute(
                "UPDATE account_board SET balance = '1.00' WHERE account_id = ?", (account_id,)
            )
            assert changed.rowcount == 1
        reply = Person(own.app, ["auditor"]).post("/console/audit/verify")  # type: ignore[arg-type]

    assert reply.status_code == 200
    assert re.search(r'id="verdict">Findings: [1-9]', reply.text)
    assert "projection account_board" in reply.text
    assert account_id in reply.text


# Escaping, headers, files -----------------------------------------------------------


def test_everything_shown_is_escaped(app: FastAPI, api: TestClient, program_id: str) -> None:
    # No '/' in it: trader ids may not hold one (no URL could reach the trader).
    hostile = f"<img src=x onerror=alert(1)>&{uid()}"
    seed.open_account(api, program_id, trader_id=hostile)
    person = Person(app, ["auditor"])

    page = person.get("/console/audit", params={"q": hostile})

    assert "<img src=x onerror=alert(1)>" not in page.text
    assert html.escape(hostile, quote=True) in page.text
    assert f'value="{html.escape(hostile, quote=True)}"' in page.text


def test_console_pages_carry_their_own_csp_and_the_stylesheet_is_served(app: FastAPI) -> None:
    person = Person(app, ["auditor"])
    page = person.get("/console/audit")
    style = person.get("/console/static/console.css")
    api_reply = person.get("/health")

    csp = page.headers["content-security-policy"]
    assert "style-src 'self'" in csp
    assert "form-action 'self'" in csp
    assert "script-src" not in csp  # default-src 'none': no script runs at all
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["x-frame-options"] == "DENY"
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    assert "svg.chart" in style.text
    assert api_reply.headers["referrer-policy"] == "no-referrer"
    assert api_reply.headers["content-security-policy"].startswith("default-src 'none'")


def test_the_package_ships_every_template_and_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    shipped = [
        path.relative_to(ROOT / "api").as_posix()
        for folder in ("templates/console", "static/console")
        for path in (ROOT / "api" / folder).iterdir()
        if path.is_file()
    ]
    assert {"templates/console/base.html", "static/console/console.css"} <= set(shipped)
    for name in shipped:
        assert any(fnmatch(name, pattern) for pattern in patterns), name
    assert "jinja2" in " ".join(config["project"]["dependencies"])


def test_a_notice_quoting_a_long_reason_still_fits_in_a_cookie() -> None:
    """A 500-character Hebrew reason made a 4,200-byte notice cookie, which browsers drop
    (console audit): the notice is cut to fit, and reads back."""
    from api.console_auth import flash_value, read_flash

    value = flash_value(SECRET, "ok", "rejected: " + "\u05e9\U0001f600" * 500)
    assert len(value) < 4000
    notice = read_flash(SECRET, value)
    assert notice is not None
    assert notice["text"].startswith("rejected: \u05e9")
    assert notice["text"].endswith("\u2026")
