"""`propledger demo`: the firm it builds is consistent, on SQLite and on PostgreSQL.

One small firm per backend (30 traders over 25 days ending on a fixed past date) is built
once for the module; the tests read it back through the projections, the aggregates, the
HTTP API and the real `propledger audit verify`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import JSONTranscoder, Mapper
from fastapi.testclient import TestClient

from api.demo import APPROVER, FINANCE, DemoError, DemoOptions, DemoSummary, build_demo, parse_until
from api.views import account_state
from domain.account import TradingAccount
from domain.errors import NotFound
from ledger.app import PropLedger
from ledger.audit import export_log
from ledger.migrate import migrate
from projections.board import COLUMNS, all_rows
from projections.journal import trial_balance
from projections.payments import unallocated
from projections.store import Database
from tests.support import BACKENDS, auth, make_app, program_body, purchase_body, sqlite_file_url

UNTIL = parse_until("2025-03-14")  # a Friday: the firm's week ends with queues in flight
OPTIONS = DemoOptions(traders=30, days=25, seed=7, until=UNTIL)
START = UNTIL - timedelta(days=OPTIONS.days)
SECRET = "whsec_demo_test_" + "d" * 32


def _build(url: str, options: DemoOptions = OPTIONS) -> DemoSummary:
    return build_demo(url, options, webhook_secret=SECRET)


@pytest.fixture(scope="module")
def sqlite_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DemoSummary]:
    url = sqlite_file_url(tmp_path_factory.mktemp("demo") / "propledger.db")
    return url, _build(url)


@pytest.fixture(scope="module")
def postgres_demo(postgres_url: str) -> tuple[str, DemoSummary]:
    return postgres_url, _build(postgres_url)


@pytest.fixture(scope="module", params=BACKENDS)
def demo(request: pytest.FixtureRequest) -> tuple[str, DemoSummary]:
    built: tuple[str, DemoSummary] = request.getfixturevalue(f"{request.param}_demo")
    return built


@pytest.fixture(scope="module")
def database(demo: tuple[str, DemoSummary]) -> Iterator[Database]:
    store = Database(demo[0])
    yield store
    store.close()


@pytest.fixture(scope="module")
def ledger(demo: tuple[str, DemoSummary]) -> Iterator[PropLedger]:
    app = PropLedger(demo[0])
    yield app
    app.close()


def _export(url: str) -> str:
    out = io.StringIO()
    export_log(url, out)
    return out.getvalue()


# Money ---------------------------------------------------------------------------------------


def test_the_trial_balance_sums_to_zero_per_currency(
    demo: tuple[str, DemoSummary], database: Database
) -> None:
    balance = trial_balance(database)
    currencies = {row["currency"] for row in balance["totals"]}
    assert currencies == {"USD", "EUR"}
    for total in balance["totals"]:
        assert Decimal(total["debit"]) == Decimal(total["credit"]) > 0, total
    per_currency: dict[str, Decimal] = {}
    for row in balance["rows"]:
        per_currency[row["currency"]] = per_currency.get(row["currency"], Decimal(0)) + Decimal(
            row["balance"]
        )
    assert per_currency == {"USD": Decimal("0.00"), "EUR": Decimal("0.00")}
    assert demo[1].balanced
    accounts = {row["account"] for row in balance["rows"]}
    # Fees came in through the processor, some went back, chargebacks and payouts went out.
    for code in (
        "assets:processor",
        "revenue:challenge_fees",
        "revenue:refunds",
        "expenses:chargebacks",
        "expenses:profit_share",
        "liabilities:unallocated",
    ):
        assert code in accounts, code  # fmt: skip
    assert any(code.startswith("liabilities:trader_wallet:") for code in accounts)
    assert any(code.startswith("liabilities:trader_payable:") for code in accounts)


# Accounts --------------------------------------------------------------------------------


def _replayed(ledger: PropLedger, account_id: str) -> TradingAccount:
    """The account folded from its stored events alone: no cache, no snapshot."""
    account: Any = None
    for event in ledger.events.get(UUID(account_id)):
        account = event.mutate(account)
    assert isinstance(account, TradingAccount)
    return account


def test_every_account_equals_a_fresh_replay_of_its_events(
    demo: tuple[str, DemoSummary], database: Database, ledger: PropLedger
) -> None:
    rows = all_rows(database)
    assert len(rows) > OPTIONS.traders
    with TestClient(make_app(demo[0], projections="external")) as client:
        for row in rows:
            account = _replayed(ledger, row["account_id"])
            replayed = account_state(account)
            assert {c: row[c] for c in COLUMNS if c != "updated_at"} == {
                c: replayed[c] for c in COLUMNS if c != "updated_at"
            }, row["account_id"]
            assert row["updated_at"] == account.modified_on.isoformat()
            served = client.get(f"/v1/accounts/{row['account_id']}", headers=auth("auditor"))
            assert served.status_code == 200, served.text
            assert {key: served.json()[key] for key in replayed} == replayed


def test_every_stored_event_is_the_bytes_the_librarys_own_transcoder_writes(
    database: Database, ledger: PropLedger
) -> None:
    """The ledger composes stored JSON itself (ledger/encoding.py); the chain hashes those
    bytes, so they must be the library's, for every kind of event a firm records."""
    library = JSONTranscoder()
    ledger.register_transcodings(library)
    assert type(ledger.mapper.transcoder) is not JSONTranscoder  # the composed one wrote them
    kinds: Counter[str] = Counter()
    start = 1
    while notifications := ledger.recorder.select_notifications(start=start, limit=1000):
        for notification in notifications:
            state = notification.state
            assert library.encode(library.decode(state)) == state, notification.id
            assert ledger.mapper.transcoder.encode(library.decode(state)) == state
            kinds[notification.topic.rpartition(":")[2]] += 1
        start = notifications[-1].id + 1
    assert {
        "Trader.Registered",
        "Program.Defined",
        "TradingAccount.Opened",
        "TradingAccount.TradeClosed",
        "TradingAccount.EquityMarked",
        "TradingAccount.RuleBreached",
        "TradingAccount.PhasePassed",
        "Payout.Requested",
        "Payout.Approved",
        "Payout.Paid",
    } <= set(kinds), sorted(kinds)
    # A snapshot (the largest state there is) of the longest account, both ways.
    longest = max(all_rows(database), key=lambda row: int(row["version"]))
    account = ledger.account(longest["account_id"])
    snapshot = TradingAccount.Snapshot.take(account)
    composed = ledger.snapshots.mapper.to_stored_event(snapshot).state  # type: ignore[union-attr]
    assert composed == Mapper(transcoder=library).to_stored_event(snapshot).state


def test_the_firm_has_accounts_and_payouts_at_every_stage(
    demo: tuple[str, DemoSummary], database: Database, ledger: PropLedger
) -> None:
    rows = all_rows(database)
    stages = {(row["stage"], row["status"]) for row in rows}
    assert ("phase-1", "breached") in stages
    assert ("phase-1", "passed") in stages
    assert ("funded", "active") in stages
    assert any(row["status"] == "suspended" for row in rows)  # a dispute is open or lost
    payouts = database.query("SELECT status, requested_by, approved_by FROM payout_board")
    assert {p["status"] for p in payouts} == {"requested", "approved", "rejected", "paid"}
    for payout in payouts:
        assert payout["requested_by"] != APPROVER  # four eyes: arthur only approves
        if payout["approved_by"] is not None:
            assert payout["approved_by"] == APPROVER
    assert {p["requested_by"] for p in payouts} & {FINANCE}
    assert {p["requested_by"] for p in payouts} - {FINANCE}  # traders asked too
    assert _eligible_not_requested(ledger, rows), "no funded account waits to be paid"
    assert unallocated(database), "no payment waits for finance to match it"
    summary = demo[1]
    assert summary.tally.refunds >= 2
    assert sum(summary.tally.disputes.values()) >= 1
    assert summary.payouts == {p: sum(1 for x in payouts if x["status"] == p) for p in
                               ("approved", "paid", "rejected", "requested")}  # fmt: skip


def _eligible_not_requested(ledger: PropLedger, rows: list[dict[str, Any]]) -> list[str]:
    eligible = []
    for row in rows:
        if row["stage"] != "funded" or row["status"] != "active":
            continue
        account = ledger.account(row["account_id"])
        trader = ledger.trader(account.trader_id)
        check = account.payout_eligibility(now=UNTIL, trader_suspended=trader.is_suspended)
        if not check.reasons():
            eligible.append(row["account_id"])
    return eligible


# Time ----------------------------------------------------------------------------------------


def test_recorded_times_are_the_simulated_business_time(
    demo: tuple[str, DemoSummary], database: Database, ledger: PropLedger
) -> None:
    notifications = ledger.recorder.select_notifications(start=1, limit=100_000)
    assert len(notifications) == demo[1].events
    links = {
        int(row["position"]): row["recorded_at"]
        for row in database.query("SELECT position, recorded_at FROM event_chain")
    }
    previous = START
    for notification in notifications:
        event = ledger.mapper.to_domain_event(notification)
        assert START <= event.timestamp <= UNTIL
        assert event.timestamp >= previous, "the simulated clock went back"
        previous = event.timestamp
        recorded = datetime.strptime(links[notification.id], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert recorded.replace(tzinfo=UTC) == event.timestamp
    # Payouts were asked for, approved and paid on the simulated business days.
    for row in database.query("SELECT requested_at, approved_at, paid_at FROM payout_board"):
        for value in row.values():
            if value is not None:
                instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
                assert START <= instant <= UNTIL
                assert instant.weekday() < 5


def test_as_of_reads_follow_the_simulated_clock(database: Database, ledger: PropLedger) -> None:
    assert trial_balance(database, as_of=START - timedelta(seconds=1))["rows"] == []
    assert trial_balance(database, as_of=UNTIL) == trial_balance(database)
    middle = START + timedelta(days=OPTIONS.days / 2)
    halfway = trial_balance(database, as_of=middle)["totals"]
    assert halfway
    assert halfway != trial_balance(database)["totals"]
    funded = next(row for row in all_rows(database) if row["stage"] == "funded")
    opened = datetime.fromisoformat(funded["opened_at"])
    assert START < opened < UNTIL
    with pytest.raises(NotFound):
        ledger.account_as_of(funded["account_id"], opened - timedelta(microseconds=1))
    assert ledger.account_as_of(funded["account_id"], opened).version == 1


# Audit ---------------------------------------------------------------------------------------


def test_audit_verify_through_the_cli_is_clean(
    demo: tuple[str, DemoSummary], tmp_path: Path
) -> None:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("PROPLEDGER_")}  # fmt: skip
    environment["PROPLEDGER_DATABASE_URL"] = demo[0]
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", "verify"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"OK: {demo[1].events} events" in done.stderr


# Determinism ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_same_seed_builds_the_same_log_on_both_backends(
    sqlite_demo: tuple[str, DemoSummary], postgres_demo: tuple[str, DemoSummary]
) -> None:
    """Every event, id, amount, instant and chain hash alike: byte-identical exports."""
    sqlite_export, postgres_export = _export(sqlite_demo[0]), _export(postgres_demo[0])
    assert sqlite_export.count("\n") == sqlite_demo[1].events + 1
    assert sqlite_export == postgres_export


def test_another_seed_builds_another_firm(
    sqlite_demo: tuple[str, DemoSummary], tmp_path: Path
) -> None:
    url = sqlite_file_url(tmp_path / "other.db")
    other = _build(url, DemoOptions(traders=30, days=25, seed=8, until=UNTIL))
    assert other.balanced
    assert other.tally.trades != sqlite_demo[1].tally.trades
    assert _export(url) != _export(sqlite_demo[0])


# Refusals ------------------------------------------------------------------------------------


def test_a_store_with_events_is_refused_and_left_unchanged(
    demo: tuple[str, DemoSummary], ledger: PropLedger
) -> None:
    before = _export(demo[0])
    with pytest.raises(DemoError, match="already holds"):
        _build(demo[0], DemoOptions(traders=3, days=2, seed=1, until=UNTIL))
    assert _export(demo[0]) == before


def test_a_store_with_one_event_of_its_own_is_refused(tmp_path: Path) -> None:
    url = sqlite_file_url(tmp_path / "live.db")
    migrate(url)
    live = PropLedger(url)
    try:
        live.define_program(program_body())
        position = live.position()
    finally:
        live.close()
    with pytest.raises(DemoError, match="already holds 1 events"):
        _build(url)
    after = PropLedger(url)
    try:
        assert after.position() == position
    finally:
        after.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (DemoOptions(traders=-5), "--traders must be from 1"),
        (DemoOptions(traders=0), "--traders must be from 1"),
        (DemoOptions(days=0), "--days must be from 1"),
        (DemoOptions(until=datetime.now(UTC) + timedelta(days=1)), "is in the future"),
    ],
    ids=["negative-traders", "no-traders", "no-days", "future"],
)
def test_bad_options_are_refused_before_the_store_is_touched(
    tmp_path: Path, options: DemoOptions, message: str
) -> None:
    path = tmp_path / "untouched.db"
    with pytest.raises(DemoError, match=message):
        build_demo(sqlite_file_url(path), options, webhook_secret=SECRET)
    assert not path.exists()


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "2025-03-01T10:00:00"])
def test_until_must_be_a_date_or_an_instant_with_an_offset(text: str) -> None:
    with pytest.raises(DemoError, match="--until"):
        parse_until(text)


def test_until_as_a_date_means_the_end_of_that_utc_day() -> None:
    assert parse_until("2025-03-14") == datetime(2025, 3, 15, tzinfo=UTC)
    assert parse_until("2025-03-14T18:30:00+01:00") == datetime(2025, 3, 14, 17, 30, tzinfo=UTC)


# The stamping ledger on its own ----------------------------------------------------------------


def test_a_stamping_ledger_records_its_clock_in_events_and_chain_links(tmp_path: Path) -> None:
    url = sqlite_file_url(tmp_path / "stamped.db")
    migrate(url)
    instant = datetime(2025, 2, 3, 10, 15, 30, 123456, tzinfo=UTC)
    stamped = PropLedger(url, clock=lambda: instant, stamp_events=True)
    try:
        program = program_body()
        stamped.define_program(program)
        reply = stamped.purchase(purchase_body(program["program_id"]))
        assert reply.account.created_on == instant
        events = list(stamped.events.get(reply.account.id))
        assert [event.timestamp for event in events] == [instant]
    finally:
        stamped.close()
    database = Database(url)
    try:
        recorded = {
            row["recorded_at"] for row in database.query("SELECT recorded_at FROM event_chain")
        }
    finally:
        database.close()
    assert recorded == {"2025-02-03T10:15:30.123456Z"}
    # A ledger that does not stamp records the wall clock, as before.
    plain = PropLedger(url)
    try:
        before = datetime.now(UTC)
        later = plain.purchase(purchase_body(program["program_id"]))
        assert later.account.created_on >= before
    finally:
        plain.close()
