"""`propledger export` and `propledger replay` across backends (DESIGN.md, "Audit").

A history with every kind of money movement (purchases, Stripe payments, a refund, a
chargeback, trades with a breach and a pass, a payout approved and paid) is built through
the HTTP app on an SQLite file and on PostgreSQL, exported with the command line and
replayed into an empty store of the OTHER backend. The replayed store must reproduce every
hash, the chain head, every account, the trial balance and every projection row, and its
own export must be byte-identical. A replay into a store that is not empty, or of an export
whose lines were tampered with, must fail plainly and change nothing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger import audit
from ledger.app import PropLedger
from ledger.audit import export_log, replay_log, verify_chain
from ledger.config import Settings, database_url_to_env
from ledger.migrate import migrate
from projections.compare import compare
from projections.journal import trial_balance
from projections.registry import default_projections
from projections.store import Database
from tests import stripe_payloads as sp
from tests.support import (
    BACKENDS,
    SECRET,
    auth,
    program_body,
    purchase_body,
    sqlite_file_url,
    trade_body,
    uid,
)

ADMIN = auth("admin", sub="admin-ann")
FINANCE = auth("finance", sub="finance-fay")
PLATFORM = auth("platform", sub="bridge-ctrader")
APPROVER = auth("approver", sub="approver-bob")
AUDITOR = auth("auditor", sub="auditor-ada")

PostgresDatabaseFactory = Callable[[str], AbstractContextManager[str]]


def make_app(url: str) -> Any:
    return create_app(
        Settings(
            propledger_database_url=url,
            propledger_jwt_secret=SECRET,
            stripe_webhook_secret=sp.WEBHOOK_SECRET,
        )
    )


# Raw reads of a store -----------------------------------------------------------------


def raw(url: str, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    env = database_url_to_env(url)
    if env["PERSISTENCE_MODULE"].endswith("sqlite"):
        connection: Any = sqlite3.connect(env["SQLITE_DBNAME"])
    else:
        connection = psycopg.connect(url)
        text = text.replace("?", "%s")
    try:
        cursor = connection.execute(text, params)
        rows = list(cursor.fetchall()) if cursor.description else []
        connection.commit()
        return rows
    finally:
        connection.close()


def events_table(url: str) -> str:
    return "stored_events" if url.startswith("sqlite") else "propledger_events"


def event_count(url: str) -> int:
    return int(raw(url, f"SELECT COUNT(*) FROM {events_table(url)}")[0][0])


def chain_rows(url: str) -> list[tuple[int, str, int, str, str | None]]:
    rows = raw(url, "SELECT position, stream_id, version, hash, recorded_at FROM event_chain")
    return sorted((int(p), str(s), int(v), str(h), r) for p, s, v, h, r in rows)


def chain_head(url: str) -> tuple[int, str] | None:
    rows = raw(url, "SELECT position, hash FROM event_chain_head WHERE id = 1")
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def account_ids(url: str) -> list[str]:
    rows = raw(
        url,
        f"SELECT originator_id FROM {events_table(url)} WHERE topic = ?",
        ("domain.account:TradingAccount.Opened",),
    )
    return sorted(str(UUID(str(row[0]))) for row in rows)


# The history ----------------------------------------------------------------------------


def payout_program() -> dict[str, Any]:
    """One phase with a 1 % target and no minimum of days; payouts at once, no minimum."""
    body = program_body()
    body["day_timezone"] = "UTC"
    body["phases"] = [{**body["phases"][0], "profit_target_pct": "1", "min_trading_days": 0}]
    body["funded"] = {
        **body["funded"],
        "first_payout_after_days": 0,
        "payout_interval_days": 0,
        "min_payout": "0",
    }
    return body


def deliver(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    body = sp.body_of(payload)
    response = client.post(
        "/v1/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sp.signature(body), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def build_history(url: str) -> None:
    with TestClient(make_app(url)) as client:

        def post(path: str, body: Any, headers: dict[str, str], status: int = 201) -> Any:
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == status, response.text
            return response.json()

        classic, payouts = program_body(), payout_program()
        post("/v1/programs", classic, ADMIN)
        post("/v1/programs", payouts, ADMIN)

        breached = post("/v1/purchases", purchase_body(classic["program_id"]), FINANCE)
        state = post(
            f"/v1/accounts/{breached['account_id']}/trades",
            trade_body(profit="-6000.00"),
            PLATFORM,
        )
        assert state["status"] == "breached"

        trader_id = uid("trader-")
        phase = post(
            "/v1/purchases", purchase_body(payouts["program_id"], trader_id=trader_id), FINANCE
        )
        state = post(
            f"/v1/accounts/{phase['account_id']}/trades", trade_body(profit="1000.00"), PLATFORM
        )
        assert state["status"] == "passed"
        funded = state["next_account_id"]
        post(f"/v1/accounts/{funded}/trades", trade_body(profit="2500.00"), PLATFORM)
        mark = {"equity": "102600.00", "at": "2026-03-02T11:00:00Z"}
        post(f"/v1/accounts/{funded}/equity", mark, PLATFORM)
        trader = auth("trader", sub="trader-tim", trader_id=trader_id)
        payout = post(f"/v1/accounts/{funded}/payouts", None, trader)
        post(f"/v1/payouts/{payout['payout_id']}/approve", None, APPROVER, 200)
        post(f"/v1/payouts/{payout['payout_id']}/paid", {"reference": "wire-1"}, FINANCE, 200)

        # Stripe: a challenge bought and partly refunded, a deposit spent from the wallet,
        # a charge disputed and withdrawn, and a payment nobody can match.
        bought = sp.StripePayment(
            54000, "usd", {"trader_id": uid("trader-"), "program_id": classic["program_id"]}
        )
        assert deliver(client, bought.checkout_completed())["outcome"] == "challenge"
        assert deliver(client, bought.refunded(10000))["outcome"] == "refund"
        depositor = uid("trader-")
        deposit = sp.StripePayment(
            80000, "usd", {"trader_id": depositor, "purpose": "wallet_deposit"}
        )
        assert deliver(client, deposit.intent_succeeded())["outcome"] == "deposit"
        post(
            "/v1/purchases",
            purchase_body(classic["program_id"], trader_id=depositor, method="wallet"),
            FINANCE,
        )
        disputed = sp.StripePayment(
            54000, "usd", {"trader_id": uid("trader-"), "program_id": classic["program_id"]}
        )
        deliver(client, disputed.checkout_completed())
        deliver(client, disputed.dispute_event("charge.dispute.created", "dp_exp1"))
        deliver(client, disputed.dispute_event("charge.dispute.funds_withdrawn", "dp_exp1"))
        deliver(client, sp.StripePayment(12345, "usd").checkout_completed())

        caught_up = client.get("/v1/ledger/trial-balance", headers=AUDITOR)
        assert caught_up.status_code == 200, caught_up.text


# What must survive an export and replay ---------------------------------------------------


@dataclass(frozen=True)
class Picture:
    events: int
    chain: list[tuple[int, str, int, str, str | None]]
    head: tuple[int, str] | None
    accounts: dict[str, dict[str, Any]]
    trial_balance: dict[str, Any]


def picture(url: str) -> Picture:
    """Everything an auditor compares, read with the service running on `url`."""
    with TestClient(make_app(url)) as client:
        accounts = {}
        for account_id in account_ids(url):
            response = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR)
            assert response.status_code == 200, response.text
            accounts[account_id] = response.json()
        over_http = client.get("/v1/ledger/trial-balance", headers=AUDITOR)
        assert over_http.status_code == 200, over_http.text
    database = Database(url)
    try:
        balance = trial_balance(database)
    finally:
        database.close()
    assert over_http.json()["rows"] == balance["rows"]
    return Picture(event_count(url), chain_rows(url), chain_head(url), accounts, balance)


# Fixtures and the command line ----------------------------------------------------------


@dataclass(frozen=True)
class Source:
    url: str
    export: Path
    picture: Picture


def run_cli(
    url: str, *args: str, cwd: Path, stdin: str | None = None, traceback_ok: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROPLEDGER_")}
    env.update({"PROPLEDGER_DATABASE_URL": url, "PROPLEDGER_JWT_SECRET": SECRET})
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if not traceback_ok:
        assert "Traceback" not in done.stderr, done.stderr
    return done


def export(url: str, path: Path) -> Path:
    done = run_cli(url, "export", "--output", str(path), cwd=path.parent)
    assert done.returncode == 0, done.stderr
    assert f"exported {event_count(url)} events" in done.stderr
    return path


def make_source(url: str, directory: Path) -> Source:
    build_history(url)
    return Source(url, export(url, directory / "export.jsonl"), picture(url))


@pytest.fixture(scope="module")
def sqlite_source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    directory = tmp_path_factory.mktemp("sqlite-source")
    return make_source(sqlite_file_url(directory / "propledger.db"), directory)


@pytest.fixture(scope="module")
def postgres_source(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Source:
    return make_source(postgres_url, tmp_path_factory.mktemp("postgres-source"))


@pytest.fixture
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """`empty_store(backend)`: the URL of a new, empty store of that backend."""
    opened: list[AbstractContextManager[str]] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return sqlite_file_url(tmp_path / f"target-{len(opened)}-{uid()}.db")
        factory: PostgresDatabaseFactory = request.getfixturevalue("postgres_database_factory")
        context = factory("audit_replay_target")
        opened.append(context)
        return context.__enter__()

    yield make
    for context in reversed(opened):
        context.__exit__(None, None, None)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# Tests ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("source_backend", "target_backend"),
    [("sqlite", "postgres"), ("postgres", "sqlite")],
    ids=["sqlite-to-postgres", "postgres-to-sqlite"],
)
def test_an_export_replayed_into_the_other_backend_reproduces_the_ledger_exactly(
    request: pytest.FixtureRequest,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    source_backend: str,
    target_backend: str,
) -> None:
    source: Source = request.getfixturevalue(f"{source_backend}_source")
    target = empty_store(target_backend)

    done = run_cli(target, "replay", "--input", str(source.export), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"replayed {source.picture.events} events" in done.stderr

    replayed = picture(target)
    assert replayed.events == source.picture.events
    assert replayed.chain == source.picture.chain  # every position, link and time
    assert replayed.head == source.picture.head
    assert replayed.accounts == source.picture.accounts
    assert len(replayed.accounts) >= 6
    assert replayed.trial_balance == source.picture.trial_balance
    assert replayed.trial_balance["rows"]

    # Every projection row, not only what the endpoints show.
    live, rebuilt = Database(source.url), Database(target)
    try:
        for projection in default_projections():
            for table, _ in projection.tables:
                assert rebuilt.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] > 0, table
            assert compare(projection, live, rebuilt) == [], projection.name
    finally:
        live.close()
        rebuilt.close()

    report = verify_chain(target)
    assert report.ok, report.findings
    assert (report.head_position, report.head_hash) == source.picture.head

    again = export(target, tmp_path / "again.jsonl")
    assert again.read_bytes() == source.export.read_bytes()

    header = lines_of(again)[0]
    assert header["events"] == source.picture.events
    assert header["head"] == {
        "position": source.picture.head[0] if source.picture.head else None,
        "hash": source.picture.head[1] if source.picture.head else None,
    }


@pytest.mark.postgres
@pytest.mark.parametrize("target_backend", ["sqlite", "postgres"])
def test_the_replayed_store_goes_on_chaining_new_events(
    request: pytest.FixtureRequest,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    target_backend: str,
) -> None:
    other = "postgres" if target_backend == "sqlite" else "sqlite"
    source: Source = request.getfixturevalue(f"{other}_source")
    target = empty_store(target_backend)
    streamed = run_cli(source.url, "export", "--output", "-", cwd=tmp_path)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == source.export.read_text(encoding="utf-8")
    replayed = run_cli(target, "replay", "--input", "-", cwd=tmp_path, stdin=streamed.stdout)
    assert replayed.returncode == 0, replayed.stderr

    with TestClient(make_app(target)) as client:
        body = program_body()
        response = client.post("/v1/programs", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        position = response.json()["position"]
        purchase = client.post(
            "/v1/purchases", json=purchase_body(body["program_id"]), headers=FINANCE
        )
        assert purchase.status_code == 201, purchase.text
    assert source.picture.head is not None
    assert position == source.picture.head[0] + 1
    report = verify_chain(target)
    assert report.ok, report.findings
    assert report.events == source.picture.events + 4


@pytest.mark.parametrize("target_backend", BACKENDS)
def test_a_replay_into_a_store_that_is_not_empty_fails_plainly_and_changes_nothing(
    sqlite_source: Source,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    target_backend: str,
) -> None:
    target = empty_store(target_backend)
    with TestClient(make_app(target)) as client:
        response = client.post("/v1/programs", json=program_body(), headers=ADMIN)
        assert response.status_code == 201, response.text
    before = (event_count(target), chain_rows(target), chain_head(target))
    assert before[0] == 1

    done = run_cli(target, "replay", "--input", str(sqlite_source.export), cwd=tmp_path)
    assert done.returncode == 1
    assert (
        done.stderr.strip().splitlines()[-1]
        == "propledger replay: the target store is not empty: it holds events"
    )
    assert (event_count(target), chain_rows(target), chain_head(target)) == before
    assert verify_chain(target).ok


@pytest.mark.parametrize("target_backend", BACKENDS)
def test_a_store_whose_events_were_deleted_but_whose_read_models_remain_is_not_empty(
    sqlite_source: Source,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    target_backend: str,
) -> None:
    """Found by an audit: only events and the chain head were looked at, so a store with
    its events deleted but its board, journal and projection progress left was replayed
    into, and answered for two firms at once."""
    target = empty_store(target_backend)
    with TestClient(make_app(target)) as client:
        response = client.post("/v1/programs", json=program_body(), headers=ADMIN)
        assert response.status_code == 201, response.text
        bought = client.post(
            "/v1/purchases", json=purchase_body(response.json()["program_id"]), headers=FINANCE
        )
        assert bought.status_code == 201, bought.text
        # A projection read waits until the read models hold the purchase.
        projected = client.get("/v1/ledger/trial-balance", headers=FINANCE)
        assert projected.status_code == 200, projected.text
    for table in (events_table(target), "event_chain", "event_chain_head"):
        raw(target, f"DELETE FROM {table}")
    board = raw(target, "SELECT COUNT(*) FROM account_board")[0][0]
    assert board == 1
    replay = ("replay", "--input", str(sqlite_source.export))

    done = run_cli(target, *replay, cwd=tmp_path)

    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert (
        message == "propledger replay: the target store is not empty: it holds projection progress"
    )
    # Without the progress either, the rows themselves (every projection's tables) say so.
    raw(target, "DELETE FROM projection_tracking")
    done = run_cli(target, *replay, cwd=tmp_path)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("propledger replay: the target store is not empty: it holds ")
    assert message.endswith(" rows")
    assert event_count(target) == 0
    assert raw(target, "SELECT COUNT(*) FROM account_board")[0][0] == board


def _rewritten(source: Path, path: Path, change: Callable[[int, dict[str, Any]], None]) -> None:
    """The export with `change(index, record)` applied to every record (the header is
    index 0)."""
    lines = source.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    for index, record in enumerate(records):
        change(index, record)
    path.write_text(
        "\n".join(json.dumps(record, separators=(",", ":")) for record in records) + "\n",
        encoding="utf-8",
    )


def _blank_links_and_edit_an_amount(index: int, record: dict[str, Any]) -> None:
    if index == 0:
        record["head"] = None
        return
    record["hash"] = None
    state = base64.b64decode(record["state"])
    if b'"decimal_str","_data_":"' in state:
        edited = state.replace(b'"decimal_str","_data_":"', b'"decimal_str","_data_":"9', 1)
        record["state"] = base64.b64encode(edited).decode("ascii")


def _miscount(index: int, record: dict[str, Any]) -> None:
    if index == 0:
        record["events"] = record["events"] + 1


def _move_recorded_at(index: int, record: dict[str, Any]) -> None:
    if index == 3:
        record["recorded_at"] = "2030-01-01T00:00:00.000000Z"


def _blank_recorded_at(index: int, record: dict[str, Any]) -> None:
    if index == 3:
        record["recorded_at"] = None


def _respell_recorded_at(index: int, record: dict[str, Any]) -> None:
    """The same instant with another offset: sorts as text into another period."""
    if index == 3:
        instant = datetime.fromisoformat(record["recorded_at"])
        record["recorded_at"] = instant.astimezone(timezone(timedelta(hours=5))).isoformat()


@pytest.mark.parametrize("target_backend", BACKENDS)
@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_blank_links_and_edit_an_amount, "carries no link hash"),
        (_miscount, "counts"),
        (_move_recorded_at, "recorded at 2030-01-01"),
        (_blank_recorded_at, "has no recorded time, though a link before it has one"),
        (_respell_recorded_at, "not written as the ledger writes it"),
    ],
    ids=["links-blanked", "count", "recorded-at", "recorded-at-blank", "recorded-at-spelling"],
)
def test_an_export_edited_where_the_links_do_not_reach_is_refused(
    sqlite_source: Source,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    target_backend: str,
    change: Callable[[int, dict[str, Any]], None],
    says: str,
) -> None:
    """Found by an audit: lines without a link hash were not checked at all (amounts
    edited and the hashes blanked replayed, and verified clean), the header's count was
    not compared, and a link's recorded_at moved years away was loaded into a store that
    then failed verify for good. Each is refused, and the store stays empty."""
    target = empty_store(target_backend)
    path = tmp_path / "edited.jsonl"
    _rewritten(sqlite_source.export, path, change)

    done = run_cli(target, "replay", "--input", str(path), cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("propledger replay: ")
    assert says in message
    assert event_count(target) == 0
    assert chain_head(target) is None


@pytest.mark.parametrize("target_backend", BACKENDS)
def test_a_tampered_export_line_aborts_the_replay_and_leaves_the_store_empty(
    sqlite_source: Source,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    target_backend: str,
) -> None:
    target = empty_store(target_backend)
    lines = sqlite_source.export.read_text(encoding="utf-8").splitlines()
    middle = len(lines) // 2
    record = json.loads(lines[middle])
    line_number = middle + 1

    # 1. A link that does not match its event.
    wrong_hash = dict(record, hash=("0" if record["hash"][0] != "0" else "1") + record["hash"][1:])
    # 2. An event whose content changed under its link.
    state = base64.b64decode(record["state"])
    assert b'"_data_":"' in state
    edited = state.replace(b'"_data_":"', b'"_data_":"9', 1)
    wrong_state = dict(record, state=base64.b64encode(edited).decode("ascii"))

    for tampered in (wrong_hash, wrong_state):
        changed = [
            *lines[:middle],
            json.dumps(tampered, separators=(",", ":")),
            *lines[middle + 1 :],
        ]
        path = tmp_path / "tampered.jsonl"
        path.write_text("\n".join(changed) + "\n", encoding="utf-8")
        done = run_cli(target, "replay", "--input", str(path), cwd=tmp_path)
        assert done.returncode == 1
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith("propledger replay: ")
        assert f"line {line_number}" in message
        assert f"position {record['position']}" in message
        assert event_count(target) == 0
        assert chain_rows(target) == []
        assert chain_head(target) is None

    # The store was left truly empty: the untouched export still replays into it.
    done = run_cli(target, "replay", "--input", str(sqlite_source.export), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert chain_head(target) == sqlite_source.picture.head
    assert verify_chain(target).ok


def _replace_line(source: Path, path: Path, number: int, text: str) -> None:
    lines = source.read_text(encoding="utf-8").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("target_backend", BACKENDS)
@pytest.mark.parametrize(
    "garbled",
    ['{"position": 3}', "[1, 2]"],
    ids=["missing-fields", "not-an-object"],
)
def test_a_malformed_export_line_fails_with_a_plain_error_and_leaves_the_store_empty(
    sqlite_source: Source,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    target_backend: str,
    garbled: str,
) -> None:
    target = empty_store(target_backend)
    path = tmp_path / "garbled.jsonl"
    _replace_line(sqlite_source.export, path, 4, garbled)
    done = run_cli(target, "replay", "--input", str(path), cwd=tmp_path, traceback_ok=True)
    assert done.returncode == 1
    assert event_count(target) == 0
    assert chain_head(target) is None
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("propledger replay: ")


@pytest.mark.parametrize("target_backend", BACKENDS)
def test_an_export_line_that_is_not_json_is_named_by_its_line_number(
    sqlite_source: Source,
    empty_store: Callable[[str], str],
    tmp_path: Path,
    target_backend: str,
) -> None:
    target = empty_store(target_backend)
    path = tmp_path / "garbled.jsonl"
    _replace_line(sqlite_source.export, path, 5, '{"position": 4, "stream_id": ')
    done = run_cli(target, "replay", "--input", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert event_count(target) == 0
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("propledger replay: ")
    assert "line 5" in message


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_export_taken_while_trades_arrive_is_one_consistent_state_of_the_log(
    empty_store: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """Read in many small pages with writers committing in between, an export still holds
    one moment of the log: its header, its lines and its head agree, and it replays."""
    url = empty_store(backend)
    migrate(url)
    ledger = PropLedger(url)
    body = program_body()
    ledger.define_program(body, "admin-ann")
    account_id = str(ledger.purchase(purchase_body(body["program_id"]), "admin-ann").account.id)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            minute = 0
            while not stop.is_set() and minute < 600:
                trade = trade_body(
                    profit="1.00", closed=f"{10 + minute // 60:02d}:{minute % 60:02d}:00"
                )
                ledger.record_trade(account_id, trade, "bridge")
                minute += 1
        except BaseException as error:  # reported below
            errors.append(error)

    slow_events = audit._Store.events

    def events_slowly(self: Any, connection: Any, after: int) -> list[tuple[Any, ...]]:
        time.sleep(0.01)  # let writers commit between pages
        return slow_events(self, connection, after)

    monkeypatch.setattr(audit, "PAGE", 3)
    monkeypatch.setattr(audit._Store, "events", events_slowly)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        exports = []
        for _ in range(3):
            out = io.StringIO()
            count = export_log(url, out)
            exports.append((count, out.getvalue()))
    finally:
        stop.set()
        writer.join(timeout=60)
        ledger.close()
    assert not errors, errors
    assert exports[-1][0] > exports[0][0], "the writer must have committed during the exports"

    for number, (count, text) in enumerate(exports):
        header, *records = (json.loads(line) for line in text.splitlines())
        assert header["events"] == count == len(records)
        assert header["head"] == {"position": records[-1]["position"], "hash": records[-1]["hash"]}
        target = sqlite_file_url(tmp_path / f"replayed-{number}.db")
        migrate(target)
        assert replay_log(target, io.StringIO(text)) == count
        assert verify_chain(target).ok
