"""Profiles the hot paths the benchmark measures (developer tool, not run by CI).

    python -m bench.profile [--backend sqlite|postgres] [--what batch,single,...]
                            [--out-dir bench/results/profiles] [--postgres-admin-url URL]

- `batch`, `single`: the HTTP ingestion of bench.run against a real uvicorn server, sampled
  with py-spy (every thread of the server process: event loop, request threads,
  projection worker). Needs `py-spy` on PATH or in the venv (`pip install py-spy`; it is
  not a project dependency). Writes collapsed stacks and prints the functions with the
  most samples, by self time and inclusive time.
- `ledger-batch`, `ledger-single`, `load`, `rebuild`, `report`: the same work in-process
  without HTTP, under pyinstrument (`pip install pyinstrument`; not a project dependency),
  text reports written next to the stacks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bench.db import fresh_database
from bench.lag import LagProbe
from bench.run import (
    ADMIN_URL_ENV,
    DEFAULT_ADMIN_URL,
    FULL,
    Sizes,
    auth_headers,
    bench_batches,
    bench_single,
    fill_payout_board,
    open_accounts,
)
from bench.server import Server
from bench.workload import Trades, purchase_body
from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.payouts import payout_report
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database

WHAT = ("batch", "single", "ledger-batch", "ledger-single", "load", "rebuild", "report")


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else None


def summarise(collapsed: Path, top: int = 25) -> str:
    """Top functions by self samples and by inclusive samples from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame.split(" (")[0] + " " + _where(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if not frame.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples (all threads, idle excluded)", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def _where(frame: str) -> str:
    inside = frame.partition(" (")[2].rstrip(")")
    path = inside.rpartition(":")[0]
    for marker in ("site-packages/", "/work/main/", "python3.13/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"({path})" if path else ""


def spy_http(url: str, what: str, sizes: Sizes, out_dir: Path, *, gil: bool = False) -> None:
    spy = py_spy()
    if spy is None:
        raise SystemExit("py-spy not found: pip install py-spy (into the venv) to profile HTTP")
    accounts = open_accounts(url, sizes.accounts, os.urandom(4).hex())
    server = Server(url)
    server.start()
    raw = out_dir / f"{what}.collapsed.txt"
    try:
        if what == "single":
            # As in bench.run, where the batch runs come first: every account in the
            # server's cache before sampling, so cold loads do not dominate the profile.
            with httpx.Client(base_url=server.base_url, headers=auth_headers()) as client:
                warm = client.post("/v1/trades:batch", content=Trades().batch_body(accounts, 1000))
                warm.raise_for_status()
        recorder = subprocess.Popen(
            [spy, "record", "--pid", str(server.pid), "--format", "raw", "--rate", "200",
             "--output", str(raw), "--nonblocking", *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)
        with LagProbe(url) as probe:
            if what == "batch":
                bench_batches(server, accounts, Trades(), sizes, probe)
            else:
                bench_single(server, accounts, Trades(), sizes, probe)
        recorder.send_signal(2)  # SIGINT: py-spy writes its output and exits
        _, err = recorder.communicate(timeout=60)
        if not raw.exists():
            raise SystemExit(f"py-spy wrote nothing: {err.decode()[-2000:]}")
    finally:
        server.stop()
    summary = summarise(raw)
    (out_dir / f"{what}.summary.txt").write_text(summary + "\n")
    print(f"== {what} (HTTP, py-spy)\n{summary}\n")


def instrument(name: str, work: Callable[[], Any], out_dir: Path) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    work()
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (out_dir / f"{name}.pyinstrument.txt").write_text(text)
    print(f"== {name} (in-process, pyinstrument)\n{text}")


def in_process(url: str, what: str, sizes: Sizes, out_dir: Path) -> None:
    run = os.urandom(4).hex()
    accounts = open_accounts(url, sizes.accounts, run)
    trades = Trades()
    ledger = PropLedger(url)
    try:
        # Warm the aggregate cache as a running server's would be.
        ledger.record_trades_batch([trades.batch_item(a) for a in accounts], "bench")
        if what == "ledger-batch":

            def batches() -> None:
                for _ in range(3):
                    items = [trades.batch_item(a) for a in accounts]
                    ledger.record_trades_batch(items, "bench")

            instrument(what, batches, out_dir)
        elif what == "ledger-single":

            def singles() -> None:
                for n in range(500):
                    account = accounts[n % len(accounts)]
                    ledger.record_trade(account, trades.trade(account), "bench")

            instrument(what, singles, out_dir)
        elif what == "load":
            heavy = str(ledger.purchase(purchase_body(10**9, run), "bench").account.id)
            for _ in range(sizes.heavy_trades // 1000):
                ledger.record_trades_batch([trades.batch_item(heavy) for _ in range(1000)])
            fresh = PropLedger(url)
            fresh.position()
            instrument("load-cold", lambda: fresh.account(heavy), out_dir)
            instrument("load-warm", lambda: [fresh.account(heavy) for _ in range(10)], out_dir)
            fresh.close()
        elif what == "rebuild":
            for _ in range(10):
                ledger.record_trades_batch([trades.batch_item(a) for a in accounts], "bench")
            database = Database(url)
            runner = ProjectionRunner(ledger, database, default_projections())
            board = next(p for p in runner.projections if p.name == "account_board")
            instrument(what, lambda: runner.rebuild(board), out_dir)
            database.close()
        elif what == "report":
            fill_payout_board(url, sizes.payout_rows)
            database = Database(url)
            instrument(what, lambda: payout_report(database, None, None), out_dir)
            database.close()
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--what", default=",".join(WHAT), help=f"comma-separated: {WHAT}")
    parser.add_argument("--out-dir", default="bench/results/profiles")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="HTTP runs: sample only the thread holding the GIL (where the CPU goes)",
    )
    parser.add_argument(
        "--postgres-admin-url", default=os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL)
    )
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir) / args.backend
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = replace(FULL, batch_requests=5, batch_reps=2, single_per_client=30, single_reps=1)
    for what in args.what.split(","):
        if what not in WHAT:
            raise SystemExit(f"unknown --what {what!r}; choose from {WHAT}")
        with fresh_database(args.backend, args.postgres_admin_url) as url:
            migrate(url)
            if what in ("batch", "single"):
                spy_http(url, what, sizes, out_dir, gil=args.gil)
            else:
                in_process(url, what, sizes, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
