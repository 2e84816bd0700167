"""Event-to-client latency of `/v1/stream` under trade load.

A real server (`bench.server.Server`: uvicorn + the whole app, in-process projection
workers) on a fresh SQLite file or PostgreSQL database; `--clients` SSE subscribers
(`types=TradeClosed`, no other filter, so each sees every trade) and `--writers` threads
posting single trades (`POST /v1/accounts/{id}/trades`) as fast as the server takes them
for `--seconds`. Every client notes when each event (by position) arrives; every writer
notes when it sent each trade and when the reply (carrying the event's position) came.

Figures, over every (trade, client) pair:
- `reply_to_client_ms`: client arrival minus the write's reply. The event is committed before
  the reply is sent, so this is the stream's own delay (it can be slightly negative: the
  stream may beat the reply);
- `post_to_client_ms`: client arrival minus the moment the trade was posted (write + stream).

    .venv/bin/python -m bench.stream_latency [--backend sqlite|postgres|both] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from api.auth import mint_token
from bench.db import fresh_database, server_version
from bench.server import Server
from bench.workload import SECRET, Trades, program_body, purchase_body
from ledger.app import PropLedger
from ledger.migrate import migrate

HEARTBEAT_SECONDS = "0.5"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def headers(*roles: str) -> dict[str, str]:
    token = mint_token(SECRET, sub="bench-stream", roles=list(roles), ttl=3600)
    return {"Authorization": f"Bearer {token}"}


def open_accounts(url: str, count: int) -> tuple[list[str], int]:
    """The accounts the writers trade on, and the log position after opening them."""
    migrate(url)
    ledger = PropLedger(url)
    run = f"stream-{os.getpid()}-{int(time.time())}"
    try:
        ledger.define_program(program_body(), "bench")
        accounts = [
            str(ledger.purchase(purchase_body(i, run), "bench").account.id) for i in range(count)
        ]
        return accounts, ledger.position()
    finally:
        ledger.close()


class Subscriber(threading.Thread):
    """One SSE client: notes the arrival time of every event position."""

    def __init__(self, base_url: str, after: int) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/v1/stream?types=TradeClosed&after={after}"
        self.arrivals: dict[int, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=30) as client,
                client.stream("GET", self.url, headers=headers("auditor")) as response,
            ):
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        now = time.perf_counter()
                        self.arrivals[json.loads(line[6:])["position"]] = now
                    elif line == ": ready":
                        self.ready.set()
                    if self.stop.is_set():
                        return
        except BaseException as error:
            self.error = error
            self.ready.set()


class Writer(threading.Thread):
    """Posts single trades to its accounts until the deadline."""

    def __init__(self, base_url: str, accounts: list[str], deadline: float) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.accounts = accounts
        self.deadline = deadline
        self.trades = Trades()
        self.samples: list[tuple[int, float, float]] = []  # position, posted, replied
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base_url, headers=headers("platform"), timeout=60
            ) as client:
                turn = 0
                while time.perf_counter() < self.deadline:
                    account = self.accounts[turn % len(self.accounts)]
                    turn += 1
                    posted = time.perf_counter()
                    reply = client.post(
                        f"/v1/accounts/{account}/trades", json=self.trades.trade(account)
                    )
                    replied = time.perf_counter()
                    reply.raise_for_status()
                    self.samples.append((int(reply.json()["position"]), posted, replied))
        except BaseException as error:
            self.error = error


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with fresh_database(backend, args.postgres_admin_url) as url:
        accounts, start_position = open_accounts(url, args.writers * 4)
        os.environ["PROPLEDGER_STREAM_HEARTBEAT_SECONDS"] = HEARTBEAT_SECONDS
        server = Server(url)
        server.start()
        subscribers: list[Subscriber] = []
        try:
            subscribers = [Subscriber(server.base_url, start_position) for _ in range(args.clients)]
            for subscriber in subscribers:
                subscriber.start()
            for subscriber in subscribers:
                subscriber.ready.wait(30)
                if subscriber.error:
                    raise subscriber.error
            deadline = time.perf_counter() + args.seconds
            writers = [
                Writer(server.base_url, accounts[i :: args.writers], deadline)
                for i in range(args.writers)
            ]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
                if writer.error:
                    raise writer.error
            samples = [sample for writer in writers for sample in writer.samples]
            wanted = {position for position, _, _ in samples}
            settle = time.perf_counter() + 30
            while time.perf_counter() < settle and not all(
                wanted <= set(subscriber.arrivals) for subscriber in subscribers
            ):
                time.sleep(0.05)
        finally:
            for subscriber in subscribers:
                subscriber.stop.set()
            time.sleep(float(HEARTBEAT_SECONDS) * 2)  # each reader returns on a heartbeat
            server.stop()
        return figures(backend, url, samples, subscribers, args)


def figures(
    backend: str,
    url: str,
    samples: list[tuple[int, float, float]],
    subscribers: list[Subscriber],
    args: argparse.Namespace,
) -> dict[str, Any]:
    reply_to_client: list[float] = []
    post_to_client: list[float] = []
    missing = 0
    for subscriber in subscribers:
        for position, posted, replied in samples:
            arrived = subscriber.arrivals.get(position)
            if arrived is None:
                missing += 1
                continue
            reply_to_client.append((arrived - replied) * 1000)
            post_to_client.append((arrived - posted) * 1000)
    result: dict[str, Any] = {
        "backend": backend,
        "store": server_version(url) if backend == "postgres" else "SQLite",
        "clients": args.clients,
        "writers": args.writers,
        "seconds": args.seconds,
        "trades": len(samples),
        "trades_per_s": round(len(samples) / args.seconds, 1),
        "deliveries": len(reply_to_client),
        "missing": missing,
    }
    for name, values in (
        ("reply_to_client_ms", reply_to_client),
        ("post_to_client_ms", post_to_client),
    ):
        result[name] = {
            "median": round(statistics.median(values), 2),
            "p99": round(percentile(values, 99), 2),
            "max": round(max(values), 2),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_latency", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--out", default="bench/results/stream_latency.json")
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "PROPLEDGER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = [run_backend(backend, args) for backend in backends]
    print(
        f"{'backend':10} {'trades/s':>9} {'deliveries':>10}  reply->client ms (p50 / p99)"
        "   post->client ms (p50 / p99)"
    )
    for result in results:
        reply, post = result["reply_to_client_ms"], result["post_to_client_ms"]
        print(
            f"{result['backend']:10} {result['trades_per_s']:>9} {result['deliveries']:>10}"
            f"  {reply['median']:>8} / {reply['p99']:<8}"
            f"          {post['median']:>8} / {post['p99']}"
        )
        if result["missing"]:
            print(f"  MISSING deliveries: {result['missing']}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(result["missing"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
