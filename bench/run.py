"""propledger's benchmark suite (issue 7): one command, its own data, medians and ratios.

    python -m bench.run [--quick] [--backend sqlite|postgres|both] [--out FILE]
                        [--postgres-admin-url URL]

Per backend it creates a fresh database, serves the real app with uvicorn in a spawned
process, and measures:

1. `POST /v1/trades:batch` ingestion (trades/s), Idempotency-Key on every request;
2. single `POST /v1/accounts/{id}/trades` from 32 concurrent clients (trades/s);
3. raw inserts of as many rows of the size of a stored TradeClosed event, in batches of
   1,000 (psycopg executemany / sqlite3 executemany), and ingestion / raw ratios;
4. projection lag (reply to account board) under both loads, median and p99;
5. loading an account with 10,000 trades, cold (fresh PropLedger) and warm;
6. replay: `export_log` to /dev/null and an account board rebuild from zero (events/s);
7. the payout report over 100,000 payout rows;
8. the server process's peak RSS (VmHWM) after the HTTP runs.

Figures are medians over repetitions; the targets are the issue's (set for PostgreSQL on
a 2-core machine) and are printed as information only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from api.auth import mint_token
from bench.db import connect, fresh_database, is_sqlite, server_version
from bench.lag import LagProbe
from bench.server import Server
from bench.workload import SECRET, Trades, program_body, purchase_body
from domain import journal
from domain.aggregates import Trader
from domain.ids import first_account_id
from domain.money import Money
from ledger.app import PropLedger
from ledger.audit import export_log
from ledger.migrate import migrate
from projections.journal import instant_text
from projections.payouts import COLUMNS as PAYOUT_COLUMNS
from projections.payouts import payout_report
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL_ENV = "PROPLEDGER_BENCH_POSTGRES_URL"
RAW_BATCH = 1000


@dataclass(frozen=True)
class Sizes:
    accounts: int  # accounts the ingestion spreads its trades over
    batch_size: int  # trades per `POST /v1/trades:batch`
    batch_requests: int  # requests per repetition
    batch_reps: int
    clients: int  # concurrent single-post clients
    single_per_client: int  # posts per client per repetition
    single_reps: int
    raw_reps: int
    heavy_trades: int  # trades on the account that is loaded
    read_reps: int
    warm_reads: int
    replay_reps: int
    payout_rows: int
    payout_reps: int
    scale_accounts: int  # accounts of the memory figure (issue 7: RSS at 100,000 accounts)


FULL = Sizes(
    accounts=1000,
    batch_size=1000,
    batch_requests=10,
    batch_reps=5,
    clients=32,
    single_per_client=50,
    single_reps=3,
    raw_reps=5,
    heavy_trades=10_000,
    read_reps=5,
    warm_reads=20,
    replay_reps=3,
    payout_rows=100_000,
    payout_reps=3,
    scale_accounts=100_000,
)
QUICK = Sizes(
    accounts=40,
    batch_size=40,
    batch_requests=2,
    batch_reps=3,
    clients=32,
    single_per_client=2,
    single_reps=3,
    raw_reps=3,
    heavy_trades=200,
    read_reps=3,
    warm_reads=5,
    replay_reps=3,
    payout_rows=200,
    payout_reps=3,
    scale_accounts=300,
)

# name -> (unit, comparison, threshold, what the issue asks). None: information only.
TARGETS: dict[str, tuple[str, str | None, float | None]] = {
    "batch_trades_per_s": ("trades/s", ">=", 10_000),
    "batch_events_per_s": ("events/s", None, None),
    "batch_request_ms": ("ms", None, None),
    "batch_server_cpu_cores": ("cores", None, None),
    "single_trades_per_s": ("trades/s", ">=", 2_000),
    "single_request_p50_ms": ("ms", None, None),
    "single_request_p99_ms": ("ms", None, None),
    "single_server_cpu_cores": ("cores", None, None),
    "raw_rows_per_s": ("rows/s", None, None),
    "batch_vs_raw_ratio": ("ratio", ">=", 0.5),
    "single_vs_raw_ratio": ("ratio", None, None),
    "lag_batch_p50_ms": ("ms", None, None),
    "lag_batch_p99_ms": ("ms", "<", 500),
    "lag_single_p50_ms": ("ms", None, None),
    "lag_single_p99_ms": ("ms", "<", 500),
    "account_load_cold_ms": ("ms", "<", 20),
    "account_load_warm_ms": ("ms", "<", 20),
    "export_events_per_s": ("events/s", ">=", 50_000),
    "rebuild_events_per_s": ("events/s", ">=", 50_000),
    "payout_report_ms": ("ms", "<", 2_000),
    "server_peak_rss_mb": ("MB", "<", 500),
    "scale_batch_trades_per_s": ("trades/s", None, None),
    "scale_server_peak_rss_mb": ("MB", "<", 500),
}
FIGURES = tuple(TARGETS)


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


class Figures:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    def add(self, name: str, value: float, samples: list[float] | None = None, **info: Any) -> None:
        unit, comparison, threshold = TARGETS[name]
        passed: bool | None = None
        if comparison == ">=":
            passed = value >= threshold  # type: ignore[operator]
        elif comparison == "<":
            passed = value < threshold  # type: ignore[operator]
        self.values[name] = {
            "value": round(value, 4),
            "unit": unit,
            "target": None if comparison is None else f"{comparison} {threshold:g}",
            "pass": passed,
            "samples": [round(sample, 4) for sample in samples or []],
            **info,
        }

    def median(self, name: str, samples: list[float], **info: Any) -> float:
        value = statistics.median(samples)
        self.add(name, value, samples, **info)
        return value


# Setup ---------------------------------------------------------------------------------


def open_accounts(url: str, count: int, run: str) -> list[str]:
    ledger = PropLedger(url)
    try:
        ledger.define_program(program_body(), "bench")
        return [
            str(ledger.purchase(purchase_body(i, run), "bench").account.id) for i in range(count)
        ]
    finally:
        ledger.close()


def auth_headers() -> dict[str, str]:
    token = mint_token(SECRET, sub="bench-bridge", roles=["platform"], ttl=6 * 3600)
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def _check_created(results: list[dict[str, Any]]) -> None:
    bad = [result for result in results if result["result"] != "created"]
    if bad:
        raise RuntimeError(f"{len(bad)} trades not created, e.g. {bad[0]}")


def _position(client: httpx.Client) -> int:
    reply = client.get("/health")
    reply.raise_for_status()
    return int(reply.json()["position"])


# 1. Batched ingestion --------------------------------------------------------------------


def bench_batches(
    server: Server, accounts: list[str], trades: Trades, sizes: Sizes, probe: LagProbe
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"trades": [], "events": [], "request_ms": [], "cores": []}
    with httpx.Client(base_url=server.base_url, headers=auth_headers(), timeout=300) as client:
        # Warm-up (not timed): the server's aggregate cache and connections.
        warm = client.post(
            "/v1/trades:batch", content=trades.batch_body(accounts, sizes.batch_size)
        )
        warm.raise_for_status()
        _check_created(warm.json()["results"])
        probe.reply(int(warm.json()["position"]))
        probe.wait_caught_up()
        for rep in range(sizes.batch_reps):
            bodies = [
                trades.batch_body(accounts, sizes.batch_size) for _ in range(sizes.batch_requests)
            ]
            before = _position(client)
            cpu_before = server.cpu_seconds()
            replies: list[tuple[float, float, bytes]] = []
            started = time.perf_counter()
            for body in bodies:
                sent = time.perf_counter()
                reply = client.post(
                    "/v1/trades:batch", content=body, headers={"Idempotency-Key": uuid4().hex}
                )
                answered = time.perf_counter()
                if reply.status_code != 200:
                    raise RuntimeError(f"batch answered {reply.status_code}: {reply.text[:500]}")
                replies.append((sent, answered, reply.content))
            elapsed = time.perf_counter() - started
            cpu = server.cpu_seconds() - cpu_before
            last = before
            for sent, answered, content in replies:
                data = json.loads(content)
                _check_created(data["results"])
                last = int(data["position"])
                probe.reply(last, answered)
                out["request_ms"].append((answered - sent) * 1000)
            total = sizes.batch_size * sizes.batch_requests
            out["trades"].append(total / elapsed)
            out["events"].append((last - before) / elapsed)
            out["cores"].append(cpu / elapsed)
            log(f"batch rep {rep + 1}: {total / elapsed:,.0f} trades/s")
            probe.wait_caught_up()
    return out


# 2. Single posts from concurrent clients --------------------------------------------------


class _SingleClient(threading.Thread):
    """One bridge worker: its own HTTP connection, posting its trades one at a time."""

    def __init__(
        self,
        base_url: str,
        plan: list[tuple[str, bytes]],
        barrier: threading.Barrier,
        probe: LagProbe,
    ) -> None:
        super().__init__(name="bench-single-client")
        self.base_url = base_url
        self.plan = plan
        self.barrier = barrier
        self.probe = probe
        self.latencies_ms: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base_url, headers=auth_headers(), timeout=120
            ) as client:
                client.get("/health").raise_for_status()  # open the connection first
                self.barrier.wait()
                for account, body in self.plan:
                    sent = time.perf_counter()
                    reply = client.post(
                        f"/v1/accounts/{account}/trades",
                        content=body,
                        headers={"Idempotency-Key": uuid4().hex},
                    )
                    answered = time.perf_counter()
                    if reply.status_code != 201:
                        raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")
                    self.probe.reply(int(reply.json()["position"]), answered)
                    self.latencies_ms.append((answered - sent) * 1000)
        except Exception as error:
            self.error = repr(error)
            self.barrier.abort()


def bench_single(
    server: Server, accounts: list[str], trades: Trades, sizes: Sizes, probe: LagProbe
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"trades": [], "latency_ms": [], "cores": []}
    for rep in range(sizes.single_reps):
        barrier = threading.Barrier(sizes.clients + 1)
        clients = []
        for client_index in range(sizes.clients):
            own = accounts[client_index :: sizes.clients]
            plan = []
            for n in range(sizes.single_per_client):
                account = own[n % len(own)]
                plan.append((account, json.dumps(trades.trade(account)).encode()))
            clients.append(_SingleClient(server.base_url, plan, barrier, probe))
        for client in clients:
            client.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        cpu_before = server.cpu_seconds()
        started = time.perf_counter()
        for client in clients:
            client.join()
        elapsed = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu_before
        errors = [client.error for client in clients if client.error]
        if errors:
            raise RuntimeError(f"single posts failed: {errors[:3]}")
        total = sizes.clients * sizes.single_per_client
        out["trades"].append(total / elapsed)
        out["latency_ms"].extend(ms for client in clients for ms in client.latencies_ms)
        out["cores"].append(cpu / elapsed)
        log(f"single rep {rep + 1}: {total / elapsed:,.0f} trades/s")
        probe.wait_caught_up()
    return out


# 3. The raw baseline ---------------------------------------------------------------------


def trade_event_sample(url: str) -> tuple[str, bytes]:
    """The topic and state of a real stored TradeClosed event."""
    table = "stored_events" if is_sqlite(url) else "propledger_events"
    order = "rowid" if is_sqlite(url) else "notification_id"
    with connect(url) as connection:
        query = f"SELECT topic, state FROM {table} WHERE topic LIKE ? ORDER BY {order} DESC LIMIT 1"
        params = ("%TradingAccount.TradeClosed",)
        if is_sqlite(url):
            row = connection.execute(query, params).fetchone()
        else:
            row = connection.execute(query.replace("?", "%s"), params).fetchone()
    if row is None:
        raise RuntimeError("no TradeClosed event stored")
    return str(row[0]), bytes(row[1])


def bench_raw(url: str, rows: int, topic: str, state: bytes, reps: int) -> list[float]:
    """Rows/s inserting `rows` event-sized rows into a plain table, 1,000 a transaction."""
    rates = []
    sqlite = is_sqlite(url)
    if sqlite:
        create = (
            "CREATE TABLE bench_raw_events (originator_id TEXT NOT NULL, "
            "originator_version INTEGER NOT NULL, topic TEXT, state BLOB, "
            "PRIMARY KEY (originator_id, originator_version))"
        )
        insert = "INSERT INTO bench_raw_events VALUES (?, ?, ?, ?)"
    else:
        create = (
            "CREATE TABLE bench_raw_events (originator_id uuid NOT NULL, "
            "originator_version bigint NOT NULL, topic text, state bytea, "
            "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        insert = (
            "INSERT INTO bench_raw_events (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s)"
        )
    with connect(url) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_raw_events")
        connection.execute(create)
        if not sqlite:
            connection.execute(
                "CREATE UNIQUE INDEX bench_raw_events_nid ON bench_raw_events (notification_id)"
            )
        try:
            for _ in range(reps):
                connection.execute("DELETE FROM bench_raw_events")
                streams = [uuid4() for _ in range(max(1, rows // 10))]
                data = [
                    (str(streams[i % len(streams)]) if sqlite else streams[i % len(streams)],
                     i // len(streams) + 1, topic, state)
                    for i in range(rows)
                ]  # fmt: skip
                started = time.perf_counter()
                for start in range(0, rows, RAW_BATCH):
                    chunk = data[start : start + RAW_BATCH]
                    if sqlite:
                        connection.execute("BEGIN")
                        connection.executemany(insert, chunk)
                        connection.execute("COMMIT")
                    else:
                        with connection.transaction(), connection.cursor() as cursor:
                            cursor.executemany(insert, chunk)
                rates.append(rows / (time.perf_counter() - started))
        finally:
            connection.execute("DROP TABLE IF EXISTS bench_raw_events")
    return rates


# 5. Reading an account with many trades ----------------------------------------------------


def bench_reads(url: str, sizes: Sizes, run: str) -> tuple[list[float], list[float]]:
    ledger = PropLedger(url)
    try:
        account_id = str(ledger.purchase(purchase_body(10**9, run), "bench").account.id)
        trades = Trades()
        left = sizes.heavy_trades
        while left:
            size = min(1000, left)
            results, _ = ledger.record_trades_batch(
                [trades.batch_item(account_id) for _ in range(size)], "bench"
            )
            if any(result.result != "created" for result in results):
                raise RuntimeError("the heavy account refused a trade")
            left -= size
    finally:
        ledger.close()
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(sizes.read_reps):
        fresh = PropLedger(url)
        try:
            fresh.position()  # connect first: the figure is the load, not the connection
            started = time.perf_counter()
            account = fresh.account(account_id)
            cold.append((time.perf_counter() - started) * 1000)
            if account.version != sizes.heavy_trades + 1:
                raise RuntimeError(f"the heavy account is at version {account.version}")
            for _ in range(sizes.warm_reads):
                started = time.perf_counter()
                fresh.account(account_id)
                warm.append((time.perf_counter() - started) * 1000)
        finally:
            fresh.close()
    return cold, warm


# 6. Replay -----------------------------------------------------------------------------------


def bench_export(url: str, reps: int) -> tuple[list[float], int]:
    rates = []
    count = 0
    for _ in range(reps):
        with open(os.devnull, "w") as sink:
            started = time.perf_counter()
            count = export_log(url, sink)
            rates.append(count / (time.perf_counter() - started))
    return rates, count


def bench_rebuild(url: str, reps: int) -> tuple[list[float], int]:
    ledger = PropLedger(url)
    database = Database(url)
    rates = []
    count = 0
    try:
        runner = ProjectionRunner(ledger, database, default_projections())
        board = next(p for p in runner.projections if p.name == "account_board")
        for _ in range(reps):
            started = time.perf_counter()
            count = runner.rebuild(board)
            rates.append(count / (time.perf_counter() - started))
    finally:
        database.close()
        ledger.close()
    return rates, count


# 7. The payout report ------------------------------------------------------------------------


def fill_payout_board(url: str, rows: int) -> None:
    """Approved payouts written straight into the read model (setup, not measured)."""
    base = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    data = []
    for i in range(rows):
        profit = 100_000 + (i % 977) * 100
        trader = profit * 80 // 100
        requested = base + timedelta(seconds=i * 7)
        row = {
            "payout_id": f"bench-payout-{i:07d}",
            "account_id": str(uuid4()),
            "trader_id": f"bench-trader-{i}",
            "program_id": "bench-100k",
            "status": "approved" if i % 3 else "paid",
            "currency": "USD",
            "profit_minor": profit,
            "profit_split_pct": "80",
            "trader_share_minor": trader,
            "firm_share_minor": profit - trader,
            "fee_refund_minor": 54_000 if i % 5 == 0 else 0,
            "fee_refund_currency": "USD",
            "requested_by": "bench",
            "requested_at": instant_text(requested),
            "approved_by": "bench-approver",
            "approved_at": instant_text(requested + timedelta(hours=2)),
            "rejected_by": None,
            "rejection_reason": None,
            "paid_reference": None if i % 3 else f"SEPA-{i}",
            "paid_at": None if i % 3 else instant_text(requested + timedelta(days=1)),
            "version": 2 if i % 3 else 3,
        }
        data.append(tuple(row[column] for column in PAYOUT_COLUMNS))
    marks = ", ".join("?" for _ in PAYOUT_COLUMNS)
    insert = f"INSERT INTO payout_board ({', '.join(PAYOUT_COLUMNS)}) VALUES ({marks})"
    with connect(url) as connection:
        if is_sqlite(url):
            connection.execute("BEGIN")
            connection.executemany(insert, data)
            connection.execute("COMMIT")
            connection.execute("ANALYZE")
        else:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(insert.replace("?", "%s"), data)
            connection.execute("ANALYZE payout_board")


def bench_payout_report(url: str, rows: int, reps: int) -> list[float]:
    database = Database(url)
    timings = []
    try:
        for _ in range(reps):
            started = time.perf_counter()
            report = payout_report(database, None, None)
            timings.append((time.perf_counter() - started) * 1000)
            if len(report["rows"]) != rows:
                raise RuntimeError(f"the report holds {len(report['rows'])} of {rows} payouts")
    finally:
        database.close()
    return timings


# 8. Memory at scale ----------------------------------------------------------------------------


def open_accounts_bulk(url: str, count: int, run: str, chunk: int = 1000) -> list[str]:
    """Setup, not measured: `count` purchases' accounts, opened as `PropLedger.purchase`
    opens them (a trader, a phase-1 account, the fee's journal entry) but saved 1,000 a
    transaction instead of one, so 100,000 take seconds, not minutes."""
    ledger = PropLedger(url)
    opened: list[str] = []
    try:
        ledger.define_program(program_body(), "bench")
        program = ledger.program(program_body()["program_id"])
        fee = Money.of("540.00", "USD")
        lines = journal.transfer_lines(journal.ASSETS_BANK, journal.REVENUE_CHALLENGE_FEES, fee)
        for start in range(0, count, chunk):
            aggregates: list[Any] = []
            for index in range(start, min(count, start + chunk)):
                body = purchase_body(index, run)
                trader = Trader.register(body["trader_id"])
                purchase = {
                    "purchase_id": body["purchase_id"],
                    "method": body["method"],
                    "amount": fee.amount,
                    "currency": "USD",
                }
                account = ledger._open_first_account(
                    first_account_id(body["purchase_id"]),
                    trader,
                    program,
                    purchase=purchase,
                    journal_lines=lines,
                    actor="bench",
                )
                aggregates += [trader, account]
                opened.append(str(account.id))
            ledger._save(*aggregates)
    finally:
        ledger.close()
    return opened


def bench_scale(url: str, sizes: Sizes, run: str) -> tuple[list[float], float]:
    """A server with in-process projection workers takes one trade on each of
    `scale_accounts` accounts in batches of 1,000 (every account a cache miss), then
    its peak RSS is read once the workers caught up. Returns the batch rates and MB."""
    accounts = open_accounts_bulk(url, sizes.scale_accounts, f"{run}-scale")
    trades = Trades()
    server = Server(url)
    server.start()
    rates: list[float] = []
    try:
        with (
            LagProbe(url) as probe,
            httpx.Client(base_url=server.base_url, headers=auth_headers(), timeout=300) as client,
        ):
            probe.reply(_position(client))
            probe.wait_caught_up(timeout=600)  # the opened accounts' board rows
            size = min(sizes.batch_size, len(accounts))
            for offset in range(0, len(accounts), size):
                body = trades.batch_body(accounts[offset : offset + size], size)
                started = time.perf_counter()
                reply = client.post("/v1/trades:batch", content=body)
                elapsed = time.perf_counter() - started
                if reply.status_code != 200:
                    raise RuntimeError(f"batch answered {reply.status_code}: {reply.text[:500]}")
                _check_created(reply.json()["results"])
                probe.reply(int(reply.json()["position"]))
                rates.append(size / elapsed)
            probe.wait_caught_up(timeout=600)
        return rates, server.peak_rss_mb()
    finally:
        server.stop()


# One backend ---------------------------------------------------------------------------------


GROUPS = ("http", "raw", "reads", "replay", "report", "scale")


def run_backend(
    backend: str, sizes: Sizes, admin_url: str, only: tuple[str, ...] = GROUPS
) -> dict[str, Any]:
    figures = Figures()
    info: dict[str, Any] = {}
    with fresh_database(backend, admin_url) as url:
        info["server"] = server_version(url)
        run = uuid4().hex[:8]
        log(f"{backend}: migrate, program, {sizes.accounts} accounts")
        migrate(url)
        accounts = open_accounts(url, sizes.accounts, run)
        trades = Trades()
        if "http" in only or "raw" in only:
            run_http(url, backend, accounts, trades, sizes, figures, http="http" in only)
        if "raw" in only:
            log(f"{backend}: raw baseline")
            topic, state = trade_event_sample(url)
            raw_rows = sizes.batch_size * sizes.batch_requests
            raw = bench_raw(url, raw_rows, topic, state, sizes.raw_reps)
            raw_rate = figures.median(
                "raw_rows_per_s", raw, rows=raw_rows, row_state_bytes=len(state), batch=RAW_BATCH
            )
            if "http" in only:
                events_rate = figures.values["batch_events_per_s"]["value"]
                batch_rate = figures.values["batch_trades_per_s"]["value"]
                single_rate = figures.values["single_trades_per_s"]["value"]
                figures.add(
                    "batch_vs_raw_ratio",
                    events_rate / raw_rate,
                    trades_ratio=batch_rate / raw_rate,
                )
                figures.add("single_vs_raw_ratio", single_rate / raw_rate)

        if "reads" in only:
            log(f"{backend}: an account with {sizes.heavy_trades} trades")
            cold, warm = bench_reads(url, sizes, run)
            figures.median("account_load_cold_ms", cold, trades=sizes.heavy_trades)
            figures.median("account_load_warm_ms", warm, trades=sizes.heavy_trades)

        if "replay" in only:
            log(f"{backend}: replay")
            export, exported = bench_export(url, sizes.replay_reps)
            figures.median("export_events_per_s", export, events=exported)
            rebuild, rebuilt = bench_rebuild(url, sizes.replay_reps)
            figures.median("rebuild_events_per_s", rebuild, events=rebuilt)

        if "report" in only:
            log(f"{backend}: payout report over {sizes.payout_rows} payouts")
            fill_payout_board(url, sizes.payout_rows)
            figures.median(
                "payout_report_ms",
                bench_payout_report(url, sizes.payout_rows, sizes.payout_reps),
                payouts=sizes.payout_rows,
            )
        if "scale" in only:
            log(f"{backend}: {sizes.scale_accounts} accounts, one trade each, server memory")
            rates, rss = bench_scale(url, sizes, run)
            figures.median("scale_batch_trades_per_s", rates, accounts=sizes.scale_accounts)
            figures.add("scale_server_peak_rss_mb", rss, accounts=sizes.scale_accounts)
    return {"info": info, "figures": figures.values}


def run_http(
    url: str,
    backend: str,
    accounts: list[str],
    trades: Trades,
    sizes: Sizes,
    figures: Figures,
    *,
    http: bool,
) -> None:
    """The HTTP figures; without `http` only one batch (the raw baseline's sample event)."""
    server = Server(url)
    server.start()
    try:
        if not http:
            with httpx.Client(base_url=server.base_url, headers=auth_headers(), timeout=300) as c:
                body = trades.batch_body(accounts, min(sizes.batch_size, len(accounts)))
                c.post("/v1/trades:batch", content=body).raise_for_status()
            return
        with LagProbe(url) as probe:
            log(f"{backend}: batched ingestion")
            batch = bench_batches(server, accounts, trades, sizes, probe)
            batch_lags = probe.lags_ms()
        with LagProbe(url) as probe:
            log(f"{backend}: single posts from {sizes.clients} clients")
            single = bench_single(server, accounts, trades, sizes, probe)
            single_lags = probe.lags_ms()
        figures.add("server_peak_rss_mb", server.peak_rss_mb(), accounts=sizes.accounts)
    finally:
        server.stop()
    figures.median("batch_trades_per_s", batch["trades"])
    figures.median("batch_events_per_s", batch["events"])
    figures.median("batch_request_ms", batch["request_ms"])
    figures.median("batch_server_cpu_cores", batch["cores"])
    figures.median("single_trades_per_s", single["trades"])
    figures.add("single_request_p50_ms", percentile(single["latency_ms"], 50))
    figures.add("single_request_p99_ms", percentile(single["latency_ms"], 99))
    figures.median("single_server_cpu_cores", single["cores"])
    figures.add("lag_batch_p50_ms", percentile(batch_lags, 50), count=len(batch_lags))
    figures.add("lag_batch_p99_ms", percentile(batch_lags, 99), count=len(batch_lags))
    figures.add("lag_single_p50_ms", percentile(single_lags, 50), count=len(single_lags))
    figures.add("lag_single_p99_ms", percentile(single_lags, 99), count=len(single_lags))


# Output ------------------------------------------------------------------------------------


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(results: dict[str, Any]) -> str:
    backends = list(results["backends"])
    lines = []
    header = f"{'figure':<26}" + "".join(f"{b:>22}" for b in backends)
    header += f"  {'unit':<9}{'target':<11}"
    lines.append(header)
    lines.append("-" * len(header))
    for name in FIGURES:
        cells = []
        unit = target = ""
        for backend in backends:
            figure = results["backends"][backend]["figures"].get(name)
            if figure is None:
                cells.append(f"{'-':>22}")
                continue
            unit, target = figure["unit"], figure["target"] or ""
            mark = {True: "pass", False: "FAIL", None: ""}[figure["pass"]]
            cells.append(f"{_number(figure['value']):>16} {mark:>5}")
        lines.append(f"{name:<26}" + "".join(cells) + f"  {unit:<9}{target:<11}")
    lines.append(
        "Medians over repetitions; targets are issue 7's, set for PostgreSQL (information only)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CI smoke run)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups of figures to run: {', '.join(GROUPS)} (default: all)",
    )
    parser.add_argument("--out", default="bench/results/latest.json", help="JSON results file")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL),
        help=f"a URL of a role that may create databases (env {ADMIN_URL_ENV}); "
        "the run creates propledger_bench_* and drops it afterwards",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    only = tuple(group.strip() for group in args.only.split(",") if group.strip())
    unknown = [group for group in only if group not in GROUPS]
    if unknown:
        parser.error(f"unknown --only groups {unknown}; choose from {', '.join(GROUPS)}")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "sizes": asdict(sizes),
        "only": list(only),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "backends": {},
    }
    for backend in backends:
        backend_started = time.perf_counter()
        outcome = run_backend(backend, sizes, args.postgres_admin_url, only)
        outcome["info"]["seconds"] = round(time.perf_counter() - backend_started, 1)
        results["backends"][backend] = outcome
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"wrote {out} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
