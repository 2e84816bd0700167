"""Faults on PostgreSQL that must lose nothing and apply nothing twice.

- The database connections dropped (every backend of the app's database terminated, a few
  times) while trades stream in; the client retries each failed trade with the same trade id
  until it is accepted: every trade is recorded exactly once.
- A projection worker (`propledger project`) SIGKILLed in the middle of its work and
  restarted: the live projections equal a rebuild from zero.
- Two API processes and two projection workers on one database under concurrent load,
  with copies of some trades sent to both servers at once: nothing lost, nothing doubled.
- An API process SIGKILLed in the middle of a trade request that carries an Idempotency-Key,
  then restarted: the client's retry records the trade once, and the key is usable again.
- The database refusing connections: /health is 503 within seconds, commands that meet
  the unreachable store 503 `store_unreachable` with Retry-After, and all recovers.

Each test has its own database (the connection killer ends every backend of its database).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import psycopg
import pytest
from eventsourcing import persistence
from fastapi.testclient import TestClient

from api.audit import verify
from api.views import account_state
from domain.account import TradingAccount
from ledger.app import PropLedger
from ledger.audit import verify_chain
from ledger.migrate import migrate
from projections.board import COLUMNS
from projections.compare import compare
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database
from tests.support import (
    SECRET,
    auth,
    make_app,
    program_body,
    purchase_body,
    trade_body,
    uid,
)

pytestmark = pytest.mark.postgres

T = TypeVar("T")

B0 = Decimal("100000.00")
ABANDONED_SECONDS = 15  # PROPLEDGER_IDEMPOTENCY_ABANDONED_SECONDS of the servers started here
KILL_BACKENDS = (
    "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
# Compared between the board (a projection) and the account state (the aggregate).
BOARD_FIELDS = tuple(column for column in COLUMNS if column != "updated_at")


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def fault_db(postgres_database_factory: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database of its own for each test."""
    with postgres_database_factory(f"faults_{request.node.name}") as url:
        migrate(url)
        yield url


def profit_for(index: int) -> str:
    """Small gains and losses (no rule is ever near): -3.75 .. +4.25."""
    return f"{(index * 37) % 9 - 4}.{(index * 13) % 4 * 25:02d}"


def trade_events(ledger: PropLedger, account_id: str) -> list[TradingAccount.TradeClosed]:
    events = ledger.events.get(UUID(account_id))
    return [event for event in events if isinstance(event, TradingAccount.TradeClosed)]


def subprocess_env(url: str, **extra: str) -> dict[str, str]:
    """The environment for a `propledger` subprocess: no PROPLEDGER_* from outside."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROPLEDGER_")}
    env.update(
        PROPLEDGER_DATABASE_URL=url,
        PROPLEDGER_JWT_SECRET=SECRET,
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        **extra,
    )
    return env


def start_cli(args: list[str], env: dict[str, str], cwd: Path, name: str) -> subprocess.Popen[Any]:
    log = (cwd / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()  # the child holds its own descriptor


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def logs(cwd: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(cwd.glob("*.log"))
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def retry_on_dropped_connection(read: Callable[[], T], attempts: int = 20) -> T:
    """A pooled connection killed while idle fails once when next used: read again."""
    for attempt in range(attempts):
        try:
            return read()
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def tracked_positions(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute("SELECT projection, position FROM projection_tracking")
        return {name: int(position) for name, position in rows.fetchall()}


# ------------------------------------------------- a) connections dropped mid-stream


def test_trades_streamed_while_the_database_drops_connections_are_recorded_exactly_once(
    fault_db: str,
) -> None:
    accounts_count, trades_per_account, kills = 4, 50, 5
    platform = auth("platform", sub="bridge")
    outcomes: dict[str, list[int | str]] = defaultdict(list)  # trade id -> every attempt
    errors: list[BaseException] = []
    with TestClient(make_app(fault_db), raise_server_exceptions=False) as client:
        program = program_body()
        assert client.post("/v1/programs", json=program, headers=auth("admin")).status_code == 201
        accounts = []
        for _ in range(accounts_count):
            body = purchase_body(program["program_id"])
            reply = client.post("/v1/purchases", json=body, headers=auth("finance"))
            assert reply.status_code == 201, reply.text
            accounts.append(reply.json()["account_id"])
        trades = {
            account_id: [
                trade_body(f"drop-{n}-{i}", profit=profit_for(i)) for i in range(trades_per_account)
            ]
            for n, account_id in enumerate(accounts)
        }
        started = threading.Event()
        active = [len(accounts)]  # streams still sending
        active_lock = threading.Lock()

        def post_until_accepted(account_id: str, trade: dict[str, Any], keyed: bool) -> None:
            for attempt in range(60):
                headers = dict(platform)
                if keyed:  # a new key per attempt: the trade id alone makes a retry a duplicate
                    headers["Idempotency-Key"] = uid("drop-key-")
                try:
                    reply = client.post(
                        f"/v1/accounts/{account_id}/trades", json=trade, headers=headers
                    )
                except Exception as error:  # a connection error surfacing in the client
                    outcomes[trade["trade_id"]].append(type(error).__name__)
                else:
                    outcomes[trade["trade_id"]].append(reply.status_code)
                    if reply.status_code in (200, 201):
                        assert reply.json()["duplicate"] is (reply.status_code == 200)
                        return
                    assert reply.status_code >= 500, reply.text  # only faults are retried
                time.sleep(min(0.01 * (attempt + 1), 0.2))
            raise AssertionError(f"trade {trade['trade_id']} never accepted: {outcomes}")

        def stream(account_id: str, keyed: bool) -> None:
            try:
                for trade in trades[account_id]:
                    post_until_accepted(account_id, trade, keyed)
                    started.set()
            except BaseException as error:
                errors.append(error)
            finally:
                with active_lock:
                    active[0] -= 1

        terminated: list[int] = []  # backends ended by each kill made while trades streamed

        def kill_connections() -> None:
            try:
                started.wait(30)
                with psycopg.connect(fault_db, autocommit=True) as admin:
                    while len(terminated) < kills and active[0] > 0:
                        rows = admin.execute(KILL_BACKENDS).fetchall()
                        terminated.append(sum(1 for (killed,) in rows if killed))
                        time.sleep(0.12)
            except BaseException as error:
                errors.append(error)

        threads = [
            threading.Thread(target=stream, args=(account_id, n % 2 == 1))
            for n, account_id in enumerate(accounts)
        ]
        killer = threading.Thread(target=kill_connections)
        for thread in [*threads, killer]:
            thread.start()
        for thread in [*threads, killer]:
            thread.join(120)
        assert not errors, errors
        assert len(terminated) >= 3, f"only {len(terminated)} kills while trades streamed"
        assert sum(terminated) > 0, "no backend of the app was terminated"

        # The in-process projection runner survived the drops too: it catches up.
        runner: ProjectionRunner = client.app.state.runner  # type: ignore[attr-defined]
        ledger: PropLedger = client.app.state.ledger  # type: ignore[attr-defined]
        caught_up = retry_on_dropped_connection(lambda: runner.wait_for(ledger.position(), 30))
        assert caught_up

    failed_attempts = sum(
        1 for attempts in outcomes.values() for outcome in attempts if outcome not in (200, 201)
    )
    print(f"terminated backends per kill: {terminated}; failed attempts retried: {failed_attempts}")

    fresh = PropLedger(fault_db)  # no cache: what the store holds
    database = Database(fault_db)
    try:
        for account_id, sent in trades.items():
            recorded = Counter(event.trade["trade_id"] for event in trade_events(fresh, account_id))
            assert recorded == Counter(trade["trade_id"] for trade in sent), account_id
            expected = B0 + sum(Decimal(trade["profit"]) for trade in sent)
            assert Decimal(account_state(fresh.account(account_id))["balance"]) == expected
        assert verify_chain(fault_db).ok
        result = verify(fresh, fault_db, database, default_projections())
        assert result["ok"], result
    finally:
        database.close()
        fresh.close()


# ------------------------------------------- b) a projection worker killed mid-batch


WORKER_STATE = (
    # Has any projection gone past the threshold, and is a transaction writing right now?
    "SELECT (SELECT coalesce(max(position), 0) >= %s FROM projection_tracking), "
    "EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL)"
)


def assert_projections_equal_a_replay(ledger: PropLedger, live: Database, scratch: Path) -> None:
    scratch.mkdir()
    url = f"sqlite:///{scratch / 'replay.db'}"
    migrate(url)
    fresh = Database(url)
    try:
        for projection in default_projections():
            position = ProjectionRunner(ledger, live, [projection]).position(projection.name)
            ProjectionRunner(ledger, fresh, [projection]).rebuild(projection, until=position)
            assert compare(projection, live, fresh) == [], (projection.name, position)
    finally:
        fresh.close()


def test_a_projection_worker_killed_mid_batch_and_restarted_equals_a_rebuild(
    fault_db: str, tmp_path: Path
) -> None:
    ledger = PropLedger(fault_db)
    database = Database(fault_db)
    workers: list[subprocess.Popen[Any]] = []
    try:
        program = program_body()
        ledger.define_program(program, "setup")
        accounts = [
            str(ledger.purchase(purchase_body(program["program_id"]), "setup").account.id)
            for _ in range(10)
        ]
        for batch in range(3):
            items = [
                {
                    "account_id": accounts[i % len(accounts)],
                    **trade_body(f"kill-{batch}-{i}", profit=profit_for(i)),
                }
                for i in range(1000)
            ]
            results, _ = ledger.record_trades_batch(items, "setup")
            assert {result.result for result in results} == {"created"}
        end = ledger.position()
        assert end > 3000

        env = subprocess_env(fault_db)
        names = {projection.name for projection in default_projections()}
        kill_points: list[dict[str, int]] = []
        with psycopg.connect(fault_db, autocommit=True) as observer:
            for cycle, share in enumerate((0.3, 0.6)):
                worker = start_cli(
                    ["project", "--batch-size", "50", "--poll-interval", "0.01"],
                    env,
                    tmp_path,
                    f"worker-{cycle}",
                )
                workers.append(worker)
                threshold = int(end * share)
                deadline = time.monotonic() + 60
                while True:  # past the threshold, and a page being written right now
                    assert worker.poll() is None, logs(tmp_path)
                    assert time.monotonic() < deadline, f"no progress\n{logs(tmp_path)}"
                    progressed, writing = observer.execute(WORKER_STATE, (threshold,)).fetchone()
                    if progressed and writing:
                        break
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
                positions = tracked_positions(fault_db)
                kill_points.append(positions)
                # Killed before the end: some projection was still behind the log.
                assert min(positions.get(name, 0) for name in names) < end, positions
                # What a killed worker committed is whole pages: each projection equals a
                # replay from zero up to the position it tracks.
                assert_projections_equal_a_replay(ledger, database, tmp_path / f"replay-{cycle}")
        print(f"log end {end}; tracked positions when killed: {kill_points}")

        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "project", "--once", "--batch-size", "50"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert tracked_positions(fault_db) == dict.fromkeys(names, end)

        result = verify(ledger, fault_db, database, default_projections())
        assert result["chain"]["ok"], result["chain"]
        for name, outcome in result["projections"].items():
            assert outcome["differences"] == [], (name, outcome["differences"][:5])
            assert outcome["position"] == end
        assert result["ok"]
    finally:
        for worker in workers:
            stop(worker)
        database.close()
        ledger.close()


# ---------------------------- c) two API processes and two workers on one database


class Cluster:
    """Two `propledger serve` processes and two `propledger project` workers."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.url = url
        self.cwd = cwd
        self.processes: list[subprocess.Popen[Any]] = []
        self.bases: list[str] = []

    def start(self) -> None:
        env = subprocess_env(self.url, PROPLEDGER_PROJECTIONS="external")
        for index in range(2):
            port = free_port()
            where = self.cwd / f"api-{index}"
            where.mkdir()
            self.processes.append(start_cli(["serve", "--port", str(port)], env, where, "api"))
            self.bases.append(f"http://127.0.0.1:{port}")
        for index in range(2):
            where = self.cwd / f"worker-{index}"
            where.mkdir()
            self.processes.append(
                start_cli(["project", "--poll-interval", "0.02"], env, where, "worker")
            )
        for base in self.bases:
            wait_until(lambda base=base: self._healthy(base), 60, f"{base}/health\n{self.logs()}")

    def _healthy(self, base: str) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise AssertionError(f"a process exited early\n{self.logs()}")
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def logs(self) -> str:
        return "\n".join(logs(path) for path in sorted(self.cwd.iterdir()) if path.is_dir())

    def stop(self) -> None:
        for process in self.processes:
            stop(process)


def test_two_api_processes_and_two_workers_lose_nothing_and_double_nothing(
    fault_db: str, tmp_path: Path
) -> None:
    cluster = Cluster(fault_db, tmp_path)
    try:
        cluster.start()
        clients = [httpx.Client(base_url=base, timeout=30) for base in cluster.bases]
        try:
            run_cluster_load(clients)
        finally:
            for client in clients:
                client.close()
        assert cluster.alive(), cluster.logs()
        audit = subprocess.run(
            [sys.executable, "-m", "api.cli", "audit", "verify"],
            cwd=tmp_path,
            env=subprocess_env(fault_db),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert audit.returncode == 0, audit.stderr[-3000:]
    finally:
        cluster.stop()


def run_cluster_load(clients: list[httpx.Client]) -> None:
    admin, finance, auditor = auth("admin"), auth("finance"), auth("auditor")
    platform = auth("platform", sub="bridge")
    program = program_body()
    created = clients[0].post("/v1/programs", json=program, headers=admin)
    assert created.status_code == 201, created.text
    traders = [uid("trader-") for _ in range(2)]
    accounts: dict[str, str] = {}  # account id -> trader id
    for index in range(6):
        trader_id = traders[index % 2]
        body = purchase_body(program["program_id"], trader_id=trader_id)
        reply = clients[index % 2].post("/v1/purchases", json=body, headers=finance)
        assert reply.status_code == 201, reply.text
        accounts[reply.json()["account_id"]] = trader_id

    # 30 trades per account; every fifth goes to both servers at the same moment.
    jobs: list[tuple[str, dict[str, Any], bool, int]] = []
    for n, account_id in enumerate(accounts):
        for i in range(30):
            trade = trade_body(f"two-{n}-{i}", profit=profit_for(i + n))
            jobs.append((account_id, trade, i % 5 == 0, (i + n) % 2))
    replies: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def post(client: httpx.Client, account_id: str, trade: dict[str, Any]) -> None:
        for attempt in range(30):
            try:
                reply = client.post(
                    f"/v1/accounts/{account_id}/trades", json=trade, headers=platform
                )
            except httpx.TransportError:
                time.sleep(0.05 * (attempt + 1))
                continue
            with lock:
                replies[trade["trade_id"]].append(reply.status_code)
            if reply.status_code in (200, 201):
                assert reply.json()["duplicate"] is (reply.status_code == 200)
                return
            assert reply.status_code >= 500 or reply.status_code == 429, reply.text
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError(f"trade {trade['trade_id']} never accepted")

    def run(job: tuple[str, dict[str, Any], bool, int]) -> None:
        account_id, trade, both, server = job
        if not both:
            post(clients[server], account_id, trade)
            return
        barrier = threading.Barrier(2)

        def copy(client: httpx.Client) -> None:
            barrier.wait(10)
            post(client, account_id, trade)

        with ThreadPoolExecutor(2) as pair:
            list(pair.map(copy, clients))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, jobs))

    # Nothing doubled from the client's view: exactly one "created" per trade.
    for _, trade, both, _ in jobs:
        statuses = replies[trade["trade_id"]]
        assert statuses.count(201) == 1, (trade["trade_id"], statuses)
        if both:
            assert statuses.count(200) >= 1, (trade["trade_id"], statuses)

    # Nothing lost, nothing doubled in the store, seen from both servers.
    for account_id in accounts:
        sent = [trade for a, trade, _, _ in jobs if a == account_id]
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            page = clients[1].get(
                f"/v1/accounts/{account_id}/events",
                params={"after_version": after, "limit": 1000},
                headers=auditor,
            )
            assert page.status_code == 200, page.text
            events.extend(page.json()["events"])
            after = page.json()["next_after_version"]
            if after is None:
                break
        recorded = Counter(
            event["data"]["trade"]["trade_id"] for event in events if event["type"] == "TradeClosed"
        )
        assert recorded == Counter(trade["trade_id"] for trade in sent), account_id
        expected = B0 + sum(Decimal(trade["profit"]) for trade in sent)
        for client in clients:
            state = client.get(f"/v1/accounts/{account_id}", headers=auditor)
            assert state.status_code == 200, state.text
            assert Decimal(state.json()["balance"]) == expected

    # The board, projected by the two workers, equals the account states.
    for trader_id in traders:
        for client in clients:
            board = client.get(f"/v1/traders/{trader_id}/accounts", headers=auditor)
            assert board.status_code == 200, board.text
            rows = {row["account_id"]: row for row in board.json()["accounts"]}
            assert set(rows) == {a for a, t in accounts.items() if t == trader_id}
            for account_id, row in rows.items():
                state = client.get(f"/v1/accounts/{account_id}", headers=auditor).json()
                assert {f: row[f] for f in BOARD_FIELDS} == {f: state[f] for f in BOARD_FIELDS}


# ------------------------- d) an API process killed while it holds an Idempotency-Key


class Crashed:
    """A trade posted with an Idempotency-Key to a server that died mid-request."""

    def __init__(self, url: str, client: httpx.Client, account_id: str) -> None:
        self.url = url
        self.client = client
        self.account_id = account_id
        self.trade = trade_body(uid("crash-"), profit="12.50")
        self.key = uid("crash-key-")
        self.headers = auth("platform", sub="crash-bridge")

    def post(self, *, key: str | None) -> httpx.Response:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post(
            f"/v1/accounts/{self.account_id}/trades", json=self.trade, headers=headers
        )


def serve(url: str, cwd: Path, name: str) -> tuple[subprocess.Popen[Any], str]:
    port = free_port()
    process = start_cli(
        ["serve", "--port", str(port)],
        subprocess_env(
            url,
            PROPLEDGER_PROJECTIONS="external",
            PROPLEDGER_IDEMPOTENCY_ABANDONED_SECONDS=str(ABANDONED_SECONDS),
        ),
        cwd,
        name,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, logs(cwd)
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 60, f"{base}/health\n{logs(cwd)}")
    return process, base


@pytest.fixture(scope="module")
def crashed(
    postgres_database_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Crashed]:
    """The server is SIGKILLed after it claimed the key and before the trade was saved (the
    event table is held locked meanwhile), then a new server is started on the database."""
    cwd = tmp_path_factory.mktemp("crash")
    processes: list[subprocess.Popen[Any]] = []
    with postgres_database_factory("faults_crash") as url:
        migrate(url)
        try:
            first, base = serve(url, cwd, "api-first")
            processes.append(first)
            with httpx.Client(base_url=base, timeout=30) as setup:
                program = program_body()
                assert setup.post("/v1/programs", json=program, headers=auth("admin")).is_success
                bought = setup.post(
                    "/v1/purchases",
                    json=purchase_body(program["program_id"]),
                    headers=auth("finance"),
                )
                assert bought.status_code == 201, bought.text
                account_id = bought.json()["account_id"]
            pending = Crashed(url, httpx.Client(base_url=base, timeout=30), account_id)
            lost: list[BaseException] = []
            with psycopg.connect(url) as blocker, psycopg.connect(url, autocommit=True) as spy:
                blocker.execute("LOCK TABLE propledger_events IN ACCESS EXCLUSIVE MODE")

                def doomed() -> None:
                    try:
                        pending.post(key=pending.key)
                    except httpx.HTTPError as error:  # the server dies under it
                        lost.append(error)

                request = threading.Thread(target=doomed)
                request.start()

                def claimed_and_stuck() -> bool:
                    row = spy.execute(
                        "SELECT (SELECT count(*) FROM idempotency_keys "
                        "WHERE idempotency_key = %s AND status IS NULL), "
                        "(SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock')",
                        (pending.key,),
                    ).fetchone()
                    return row is not None and row[0] == 1 and row[1] >= 1

                wait_until(claimed_and_stuck, 20, f"the request to block\n{logs(cwd)}")
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
                request.join(30)
                blocker.rollback()
            assert lost, "the request was answered although its server was killed"
            pending.client.close()
            second, base = serve(url, cwd, "api-second")
            processes.append(second)
            with httpx.Client(base_url=base, timeout=30) as client:
                pending.client = client
                yield pending
        finally:
            for process in processes:
                stop(process)


def test_a_key_held_by_a_crashed_request_is_usable_again_after_a_restart(
    crashed: Crashed,
) -> None:
    # A claim left by a dead request is abandoned after the configured time (the servers
    # here are given 15 s instead of the default).
    deadline = time.monotonic() + ABANDONED_SECONDS + 5
    while True:
        reply = crashed.post(key=crashed.key)
        if reply.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(float(reply.headers.get("retry-after", "1")))
    assert reply.status_code in (200, 201), (reply.status_code, reply.text)


def test_a_trade_whose_server_crashed_mid_request_is_recorded_once_on_retry(
    crashed: Crashed,
) -> None:
    reply = crashed.post(key=None)  # the retry a bridge makes without the stuck key
    assert reply.status_code in (200, 201), reply.text
    again = crashed.post(key=uid("crash-key-"))
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    ledger = PropLedger(crashed.url)
    try:
        recorded = [event.trade["trade_id"] for event in trade_events(ledger, crashed.account_id)]
        assert recorded == [crashed.trade["trade_id"]]
        assert Decimal(
            account_state(ledger.account(crashed.account_id))["balance"]
        ) == B0 + Decimal("12.50")
        assert verify_chain(crashed.url).ok
    finally:
        ledger.close()


def test_an_unreachable_store_is_503_with_retry_after_and_health_says_so_in_seconds(
    fault_db: str, postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses connections (as when it is down): /health answers 503 within
    seconds, not after the event store's retries; a command that meets the unreachable
    store answers 503 `store_unreachable` with Retry-After, from a route or a middleware;
    once the database is back, the service is too."""
    name = fault_db.rpartition("/")[2].partition("?")[0]
    platform = auth("platform", sub="bridge")
    with TestClient(make_app(fault_db), raise_server_exceptions=False) as client:
        program = program_body()
        assert client.post("/v1/programs", json=program, headers=auth("admin")).status_code == 201
        bought = client.post(
            "/v1/purchases", json=purchase_body(program["program_id"]), headers=auth("finance")
        )
        account_id = bought.json()["account_id"]
        trade = trade_body("T-reach", profit="10.00")
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                admin.execute(KILL_BACKENDS.replace("current_database()", "%s"), (name,))
                started = time.monotonic()
                health = client.get("/health")
                assert time.monotonic() - started < 15
                assert health.status_code == 503, health.text
                assert health.json()["error"]["code"] == "store_unreachable"
                assert health.headers["Retry-After"] == "5"
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        wait_until(lambda: client.get("/health").status_code == 200, 60, "/health back")

        # What the event store raises when it cannot reach the database, in a command and
        # in the Idempotency-Key middleware (outside the routes): 503, then it recovers.
        ledger = client.app.state.ledger  # type: ignore[attr-defined]

        def refused(*_: Any, **__: Any) -> Any:
            # As the event store raises it: its own class, the driver's error as the cause.
            raise persistence.OperationalError("connection refused") from (
                psycopg.OperationalError("connection refused")
            )

        monkeypatch.setattr(ledger, "post_trade_later", refused)
        post = client.post(f"/v1/accounts/{account_id}/trades", json=trade, headers=platform)
        assert post.status_code == 503, post.text
        assert post.json()["error"]["code"] == "store_unreachable"
        assert post.headers["Retry-After"] == "5"
        store = client.app.state.idempotency  # type: ignore[attr-defined]
        monkeypatch.setattr(store, "claim_soon", refused)
        # Answered inside the app, not raised on to the server (which closes the keep-alive
        # connection): a client that re-raises what escapes gets the 503 too.
        strict = TestClient(client.app, raise_server_exceptions=True)
        keyed = strict.post(
            f"/v1/accounts/{account_id}/trades",
            json=trade,
            headers={**platform, "Idempotency-Key": uid("key-")},
        )
        assert keyed.status_code == 503, keyed.text
        assert keyed.json()["error"]["code"] == "store_unreachable"
        monkeypatch.undo()
        accepted = client.post(f"/v1/accounts/{account_id}/trades", json=trade, headers=platform)
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["balance"] == "100010.00"  # once


def test_health_asks_the_database_itself_when_the_pool_is_still_backing_off(
    fault_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage the projections' pool retries with a doubling delay: /health
    stayed 503 for 30-40 s after the database was back (black-box audit) while the API
    already served. A pool that cannot hand out a connection is not the store."""
    import psycopg_pool

    with TestClient(make_app(fault_db), raise_server_exceptions=False) as client:
        database = client.app.state.runner.database  # type: ignore[attr-defined]

        def backing_off(*_: Any, **__: Any) -> Any:
            raise psycopg_pool.PoolTimeout("couldn't get a connection after 3.00 sec")

        monkeypatch.setattr(database, "query", backing_off)
        health = client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["store"] == "ok"
        assert set(health.json()["projections"]) >= {"account_board", "journal"}
