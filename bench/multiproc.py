"""Scale-out on one machine: several API processes and projection workers on one database.

    python -m bench.multiproc [--quick] [--api 2] [--projectors 2] [--out FILE]
                              [--group-window-ms MS] [--postgres-admin-url URL]

On a fresh PostgreSQL database it starts `--api` processes of `propledger serve` (each on
its own port, `PROPLEDGER_PROJECTIONS=external`: no projection worker inside) and
`--projectors` processes of `propledger project`, the real commands with their settings
from the environment, exactly as a deployment runs them. Then:

1. batched ingestion: `--bridges` bridges, each with its own accounts, post
   `POST /v1/trades:batch` (1,000 trades over its 1,000 accounts) back to back, their
   requests spread round-robin over the API processes, as a load balancer would;
2. single posts: 32 clients, each its own connection to one API process (clients spread
   evenly), each posting its own accounts' trades one at a time;
3. projection lag during both, commit (reply) to account board (bench/lag.py);
4. CPU per process kind (API, projector, PostgreSQL) per wall second;
5. checks at the end, after the workers caught up: every trade sent is recorded exactly
   once, the account board and every other projection equal a replay from zero (the
   audit's verify: chain, snapshots, projections), each board row is at its account's
   version, and the trial balance is zero (debits equal credits).

Writes `bench/results/multiproc.json` and prints a table. A failed check exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from bench.db import connect, fresh_database, server_version
from bench.lag import LagProbe
from bench.run import ADMIN_URL_ENV, DEFAULT_ADMIN_URL, auth_headers, log, percentile
from bench.server import free_port
from bench.workload import SECRET, Trades, program_body, purchase_body
from ledger.app import PropLedger
from ledger.migrate import migrate

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    bridges: int  # batch posters, each with its own accounts
    accounts_per_bridge: int
    batch_size: int
    batch_requests: int  # per bridge per repetition
    batch_reps: int
    clients: int  # single posters
    single_per_client: int
    single_reps: int


FULL = Sizes(
    bridges=2,
    accounts_per_bridge=1000,
    batch_size=1000,
    batch_requests=5,
    batch_reps=3,
    clients=32,
    single_per_client=50,
    single_reps=3,
)
QUICK = Sizes(
    bridges=2,
    accounts_per_bridge=20,
    batch_size=20,
    batch_requests=2,
    batch_reps=2,
    clients=8,
    single_per_client=3,
    single_reps=2,
)


# Processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL server process on this machine (backends come and go:
    an exited one's time is lost, so this errs low)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        total += cpu_seconds(int(entry))
    return total


def _command() -> list[str]:
    script = Path(sys.executable).with_name("propledger")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())"]


class Fleet:
    """The API processes and projection workers, started with the real CLI."""

    def __init__(
        self, database_url: str, apis: int, projectors: int, group_window_ms: float
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="propledger-multiproc-"))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROPLEDGER_")},
            "PROPLEDGER_DATABASE_URL": database_url,
            "PROPLEDGER_JWT_SECRET": SECRET,
            "PROPLEDGER_PROJECTIONS": "external",
            # The limiter still runs on every request; it never throttles the benchmark.
            "PROPLEDGER_RATE_LIMIT_PLATFORM": "1000000",
            "PROPLEDGER_RATE_LIMIT_DEFAULT": "1000000",
            "PROPLEDGER_WRITE_GROUP_WINDOW_MS": str(group_window_ms),
        }
        self.ports = [free_port() for _ in range(apis)]
        self.projectors = projectors
        self.api_procs: list[subprocess.Popen[bytes]] = []
        self.projector_procs: list[subprocess.Popen[bytes]] = []

    @property
    def base_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        logfile = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [*_command(), *args],
            cwd=self.workdir,  # no .env of the working tree is read; var/ stays here
            env=self.env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )

    def start(self, timeout: float = 60.0) -> None:
        for index, port in enumerate(self.ports):
            self.api_procs.append(
                self._spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], f"api{index}")
            )
        deadline = time.monotonic() + timeout
        for url, proc in zip(self.base_urls, self.api_procs, strict=True):
            with httpx.Client(base_url=url, timeout=5.0) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"an API process exited: {self.logs()}")
                    with contextlib.suppress(httpx.TransportError):
                        if client.get("/health").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"an API process did not start: {self.logs()}")
                    time.sleep(0.1)
        for index in range(self.projectors):
            self.projector_procs.append(self._spawn(["project"], f"project{index}"))
        time.sleep(1.0)
        if any(proc.poll() is not None for proc in self.projector_procs):
            raise RuntimeError(f"a projection worker exited: {self.logs()}")

    def check_alive(self) -> None:
        dead = [p.args for p in self.api_procs + self.projector_procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"processes exited during the run: {dead}\n{self.logs()}")

    def cpu(self) -> dict[str, float]:
        return {
            "api": sum(cpu_seconds(p.pid) for p in self.api_procs),
            "projector": sum(cpu_seconds(p.pid) for p in self.projector_procs),
            "postgres": postgres_cpu_seconds(),
        }

    def peak_rss_mb(self) -> dict[str, float]:
        def hwm(pid: int) -> float:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
            return 0.0

        return {
            "api": max(hwm(p.pid) for p in self.api_procs),
            "projector": max(hwm(p.pid) for p in self.projector_procs),
        }

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.projector_procs + self.api_procs:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: uvicorn and the worker shut down cleanly
        for proc in self.projector_procs + self.api_procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# Load ---------------------------------------------------------------------------------------


class Ledgerbook:
    """Every trade id sent, by account, and every reply's problems (thread-safe)."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def note(self, account: str, trade_id: str) -> None:
        with self._lock:
            self.sent.setdefault(account, []).append(trade_id)

    def problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)


def open_accounts(url: str, count: int, run: str) -> list[str]:
    ledger = PropLedger(url)
    try:
        ledger.define_program(program_body(), "bench")
        return [
            str(ledger.purchase(purchase_body(i, run), "bench").account.id) for i in range(count)
        ]
    finally:
        ledger.close()


def post(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    """A POST with an Idempotency-Key, sent again with the same key when the connection
    drops (`propledger serve` closes keep-alive connections idle for 5 s, and a loaded
    machine can keep a client waiting that long) or while the first is in progress: the
    server answers a repeat with the first reply, so nothing is recorded twice."""
    key = uuid4().hex
    for attempt in range(5):
        try:
            reply = client.post(path, content=content, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            if attempt == 4:
                raise
            continue
        if reply.status_code == 409 and "in_progress" in reply.text and attempt < 4:
            time.sleep(0.5)
            continue
        return reply
    raise AssertionError("unreachable")


def _post_batch(
    client: httpx.Client, items: list[dict[str, Any]], book: Ledgerbook
) -> tuple[float, float, int]:
    sent = time.perf_counter()
    reply = post(client, "/v1/trades:batch", json.dumps({"trades": items}).encode())
    answered = time.perf_counter()
    if reply.status_code != 200:
        raise RuntimeError(f"batch answered {reply.status_code}: {reply.text[:500]}")
    data = reply.json()
    for item, result in zip(items, data["results"], strict=True):
        if result["result"] != "created":
            book.problem(f"batch trade {item['trade_id']}: {result}")
    return sent, answered, int(data["position"])


class _Bridge(threading.Thread):
    """A batch poster: its own accounts; request k goes to API process (offset + k) % N."""

    def __init__(
        self,
        clients: list[httpx.Client],
        offset: int,
        plan: list[list[dict[str, Any]]],
        barrier: threading.Barrier,
        probe: LagProbe,
        book: Ledgerbook,
    ) -> None:
        super().__init__(name="bench-bridge")
        self.clients = clients
        self.offset = offset
        self.plan = plan
        self.barrier = barrier
        self.probe = probe
        self.book = book
        self.latencies_ms: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.barrier.wait()
            for k, items in enumerate(self.plan):
                client = self.clients[(self.offset + k) % len(self.clients)]
                sent, answered, position = _post_batch(client, items, self.book)
                self.probe.reply(position, answered)
                self.latencies_ms.append((answered - sent) * 1000)
        except Exception as error:
            self.error = repr(error)
            self.barrier.abort()


class _Poster(threading.Thread):
    """A single-trade client: one keep-alive connection to one API process."""

    def __init__(
        self,
        base_url: str,
        plan: list[tuple[str, dict[str, Any]]],
        barrier: threading.Barrier,
        probe: LagProbe,
        book: Ledgerbook,
    ) -> None:
        super().__init__(name="bench-poster")
        self.base_url = base_url
        self.plan = plan
        self.barrier = barrier
        self.probe = probe
        self.book = book
        self.latencies_ms: list[float] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, headers=auth_headers(), timeout=120) as c:
                c.get("/health").raise_for_status()
                self.barrier.wait()
                for account, body in self.plan:
                    sent = time.perf_counter()
                    reply = post(c, f"/v1/accounts/{account}/trades", json.dumps(body).encode())
                    answered = time.perf_counter()
                    if reply.status_code != 201:
                        raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")
                    self.probe.reply(int(reply.json()["position"]), answered)
                    self.latencies_ms.append((answered - sent) * 1000)
        except Exception as error:
            self.error = repr(error)
            self.barrier.abort()


def _run_threads(threads: list[Any], barrier: threading.Barrier) -> float:
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    errors = [thread.error for thread in threads if thread.error]
    if errors:
        raise RuntimeError(f"load failed: {errors[:3]}")
    return elapsed


def bench_batches(
    fleet: Fleet,
    bridges: list[list[str]],
    trades: Trades,
    sizes: Sizes,
    probe: LagProbe,
    book: Ledgerbook,
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"trades": [], "latency_ms": [], "cores": []}
    clients = [
        httpx.Client(base_url=url, headers=auth_headers(), timeout=300) for url in fleet.base_urls
    ]
    try:
        # Warm-up (not timed): each API process loads every bridge's accounts once.
        for accounts in bridges:
            for client in clients:
                items = [trades.batch_item(a) for a in accounts[: sizes.batch_size]]
                for item in items:
                    book.note(item["account_id"], item["trade_id"])
                _, answered, position = _post_batch(client, items, book)
                probe.reply(position, answered)
        probe.wait_caught_up()
        for rep in range(sizes.batch_reps):
            barrier = threading.Barrier(len(bridges) + 1)
            threads = []
            for index, accounts in enumerate(bridges):
                plan = []
                for k in range(sizes.batch_requests):
                    count = len(accounts)
                    items = [
                        trades.batch_item(accounts[(k + i) % count])
                        for i in range(sizes.batch_size)
                    ]
                    for item in items:
                        book.note(item["account_id"], item["trade_id"])
                    plan.append(items)
                threads.append(_Bridge(clients, index, plan, barrier, probe, book))
            cpu_before = fleet.cpu()
            elapsed = _run_threads(threads, barrier)
            cpu_after = fleet.cpu()
            total = len(bridges) * sizes.batch_size * sizes.batch_requests
            out["trades"].append(total / elapsed)
            out["latency_ms"].extend(ms for t in threads for ms in t.latencies_ms)
            for kind in cpu_before:
                out.setdefault(f"cores_{kind}", []).append(
                    (cpu_after[kind] - cpu_before[kind]) / elapsed
                )
            log(f"batch rep {rep + 1}: {total / elapsed:,.0f} trades/s")
            probe.wait_caught_up()
            fleet.check_alive()
    finally:
        for client in clients:
            client.close()
    return out


def bench_single(
    fleet: Fleet,
    accounts: list[str],
    trades: Trades,
    sizes: Sizes,
    probe: LagProbe,
    book: Ledgerbook,
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"trades": [], "latency_ms": []}
    urls = fleet.base_urls
    for rep in range(sizes.single_reps):
        barrier = threading.Barrier(sizes.clients + 1)
        threads = []
        for index in range(sizes.clients):
            own = accounts[index :: sizes.clients]
            plan = []
            for n in range(sizes.single_per_client):
                account = own[n % len(own)]
                body = trades.trade(account)
                book.note(account, body["trade_id"])
                plan.append((account, body))
            threads.append(_Poster(urls[index % len(urls)], plan, barrier, probe, book))
        cpu_before = fleet.cpu()
        elapsed = _run_threads(threads, barrier)
        cpu_after = fleet.cpu()
        total = sizes.clients * sizes.single_per_client
        out["trades"].append(total / elapsed)
        out["latency_ms"].extend(ms for t in threads for ms in t.latencies_ms)
        for kind in cpu_before:
            out.setdefault(f"cores_{kind}", []).append(
                (cpu_after[kind] - cpu_before[kind]) / elapsed
            )
        log(f"single rep {rep + 1}: {total / elapsed:,.0f} trades/s")
        probe.wait_caught_up()
        fleet.check_alive()
    return out


# Checks ---------------------------------------------------------------------------------------


def check_exactly_once(url: str, book: Ledgerbook) -> dict[str, Any]:
    """Every trade id sent is recorded once, on its account, and nothing else is."""
    recorded: Counter[tuple[str, str]] = Counter()
    ledger = PropLedger(url)
    try:
        topic = "domain.account:TradingAccount.TradeClosed"
        start = 1
        while True:
            page = ledger.recorder.select_notifications(start, 5000, topics=[topic])
            if not page:
                break
            for notification in page:
                event: Any = ledger.mapper.to_domain_event(notification)
                recorded[(str(event.originator_id), event.trade["trade_id"])] += 1
            start = page[-1].id + 1
    finally:
        ledger.close()
    sent = Counter((account, tid) for account, ids in book.sent.items() for tid in ids)
    twice = [key for key, n in recorded.items() if n > 1]
    missing = [key for key in sent if key not in recorded]
    unexpected = [key for key in recorded if key not in sent]
    resent = [key for key, n in sent.items() if n > 1]
    return {
        "ok": not (twice or missing or unexpected or resent),
        "trades_sent": sum(sent.values()),
        "trades_recorded": sum(recorded.values()),
        "recorded_twice": len(twice),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "examples": [str(k) for k in (twice + missing + unexpected)[:5]],
    }


def check_board_versions(url: str) -> dict[str, Any]:
    """Each account board row is at its account's newest version in the store."""
    with connect(url) as connection:
        rows = connection.execute(
            "SELECT b.account_id, b.version, e.version AS stored FROM account_board b "
            "JOIN (SELECT originator_id::text AS id, max(originator_version) AS version "
            "      FROM propledger_events GROUP BY originator_id) e ON e.id = b.account_id "
            "WHERE b.version <> e.version"
        ).fetchall()
        accounts = connection.execute("SELECT count(*) FROM account_board").fetchone()[0]
    return {"ok": not rows, "accounts": int(accounts), "behind": len(rows)}


def check_audit(url: str) -> dict[str, Any]:
    """The chain, the snapshots and every projection against a replay from zero."""
    from api.audit import verify
    from projections.journal import trial_balance
    from projections.registry import default_projections
    from projections.store import Database

    ledger = PropLedger(url)
    database = Database(url)
    try:
        result = verify(ledger, url, database, default_projections())
        balance = trial_balance(database)
    finally:
        database.close()
        ledger.close()
    unbalanced = [t for t in balance["totals"] if t["debit"] != t["credit"]]
    return {
        "ok": bool(result["ok"]) and not unbalanced,
        "chain_ok": result["chain"]["ok"],
        "chain_events": result["chain"]["events"],
        "snapshots_ok": result["snapshots"]["ok"],
        "projections": {
            name: {"position": r["position"], "differences": len(r["differences"])}
            for name, r in result["projections"].items()
        },
        "trial_balance_totals": balance["totals"],
        "trial_balance_zero": not unbalanced,
    }


# Run ------------------------------------------------------------------------------------------


def _ms(values: list[float], pct: float) -> float:
    return round(percentile(values, pct), 2)


def run(sizes: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    with fresh_database("postgres", args.postgres_admin_url) as url:
        run_id = uuid4().hex[:8]
        migrate(url)
        total_accounts = sizes.bridges * sizes.accounts_per_bridge
        log(f"opening {total_accounts} accounts")
        accounts = open_accounts(url, total_accounts, run_id)
        bridges = [
            accounts[i * sizes.accounts_per_bridge : (i + 1) * sizes.accounts_per_bridge]
            for i in range(sizes.bridges)
        ]
        fleet = Fleet(url, args.api, args.projectors, args.group_window_ms)
        trades = Trades()
        book = Ledgerbook()
        log(f"starting {args.api} API processes and {args.projectors} projection workers")
        try:
            fleet.start()  # inside: processes started before a failure are stopped too
            with LagProbe(url) as probe:
                log("batched ingestion")
                batch = bench_batches(fleet, bridges, trades, sizes, probe, book)
                batch_lags = probe.lags_ms()
            with LagProbe(url) as probe:
                log(f"single posts from {sizes.clients} clients")
                single = bench_single(fleet, accounts, trades, sizes, probe, book)
                single_lags = probe.lags_ms()
            rss = fleet.peak_rss_mb()
        finally:
            fleet.stop()
        log("checks: exactly once, board versions, chain + snapshots + projections vs replay")
        checks = {
            "replies": {"ok": not book.problems, "problems": book.problems[:5]},
            "exactly_once": check_exactly_once(url, book),
            "board_versions": check_board_versions(url),
            "audit": check_audit(url),
        }
        figures = {
            "batch_trades_per_s": round(statistics.median(batch["trades"]), 1),
            "batch_request_p50_ms": _ms(batch["latency_ms"], 50),
            "batch_request_p99_ms": _ms(batch["latency_ms"], 99),
            "lag_batch_p50_ms": _ms(batch_lags, 50),
            "lag_batch_p99_ms": _ms(batch_lags, 99),
            "single_trades_per_s": round(statistics.median(single["trades"]), 1),
            "single_request_p50_ms": _ms(single["latency_ms"], 50),
            "single_request_p99_ms": _ms(single["latency_ms"], 99),
            "lag_single_p50_ms": _ms(single_lags, 50),
            "lag_single_p99_ms": _ms(single_lags, 99),
        }
        for phase, data in (("batch", batch), ("single", single)):
            for kind in ("api", "projector", "postgres"):
                figures[f"{phase}_cores_{kind}"] = round(
                    statistics.median(data[f"cores_{kind}"]), 2
                )
        return {
            "server": server_version(url),
            "figures": figures,
            "samples": {
                "batch_trades_per_s": [round(v, 1) for v in batch["trades"]],
                "single_trades_per_s": [round(v, 1) for v in single["trades"]],
                "lag_batch_count": len(batch_lags),
                "lag_single_count": len(single_lags),
            },
            "peak_rss_mb": rss,
            "checks": checks,
            "ok": all(check["ok"] for check in checks.values()),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.multiproc", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CI smoke run)")
    parser.add_argument("--api", type=int, default=2, help="API processes (propledger serve)")
    parser.add_argument(
        "--projectors", type=int, default=2, help="projection workers (propledger project)"
    )
    parser.add_argument(
        "--group-window-ms",
        type=float,
        default=0,
        help="PROPLEDGER_WRITE_GROUP_WINDOW_MS of the API processes (0: no added wait; "
        "grouping itself follows PROPLEDGER_WRITE_GROUPING, on unless set off)",
    )
    parser.add_argument("--out", default="bench/results/multiproc.json")
    parser.add_argument(
        "--postgres-admin-url", default=os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL)
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_before = os.getloadavg()
    outcome = run(sizes, args)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
        },
        "setup": {
            "api_processes": args.api,
            "projection_workers": args.projectors,
            "group_window_ms": args.group_window_ms,
        },
        "sizes": asdict(sizes),
        **outcome,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{args.api} API processes, {args.projectors} projection workers, one PostgreSQL")
    for name, value in outcome["figures"].items():
        print(f"  {name:<28}{value:>12,}")
    for name, check in outcome["checks"].items():
        print(f"  check {name:<22}{'ok' if check['ok'] else 'FAILED'}")
    print(f"wrote {out} in {results['seconds']} s (load average before: {load_before[0]:.2f})")
    if not outcome["ok"]:
        print(json.dumps(outcome["checks"], indent=2), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
