"""The outbox relay against a real NATS JetStream server (SQLite file and PostgreSQL).

NATS is found at `PROPLEDGER_TEST_NATS_URL`, else at nats://127.0.0.1:4222, else a throwaway
`nats-server -js` is started when the binary is installed. Without any of them the tests are
skipped, loudly; under `CI=true` they fail. Each test publishes to its own stream and
subjects (unique names) and deletes the stream afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from api.relay import NatsRelay, subject_parts
from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.store import Database
from tests.support import BACKENDS, backend_url, program_body, purchase_body, trade_body, uid

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NATS = "nats://127.0.0.1:4222"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _nats_problem(url: str) -> str | None:
    async def check() -> None:
        connection = await nats.connect(
            url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0
        )
        try:
            await connection.jetstream().account_info()
        finally:
            await connection.close()

    try:
        asyncio.run(check())
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    url = os.environ.get("PROPLEDGER_TEST_NATS_URL", "").strip()
    if url:
        problem = _nats_problem(url)
        if problem:
            pytest.fail(f"PROPLEDGER_TEST_NATS_URL={url} is set but unusable: {problem}")
        yield url
        return
    problem = _nats_problem(DEFAULT_NATS)
    if problem is None:
        yield DEFAULT_NATS
        return
    problems = [f"no NATS JetStream at {DEFAULT_NATS}: {problem}"]
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if os.access(binary, os.X_OK):
        port = _free_port()
        store = tempfile.mkdtemp(prefix="propledger-nats-")
        server = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"nats://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 10
            while (problem := _nats_problem(url)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if problem is None:
                yield url
                return
            problems.append(f"throwaway {binary}: {problem}")
        finally:
            server.terminate()
            server.wait(10)
            shutil.rmtree(store, ignore_errors=True)
    else:
        problems.append("no nats-server binary to start one (apt-get install nats-server)")
    message = "NO NATS JETSTREAM FOR THE RELAY TESTS:\n  - " + "\n  - ".join(problems)
    if _in_ci():
        pytest.fail(f"CI=true: the relay tests must run. {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = backend_url(request, tmp_path_factory)
    migrate(url)
    return url


@pytest.fixture
def ledger(database_url: str) -> Iterator[PropLedger]:
    app = PropLedger(database_url)
    yield app
    app.close()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.close()


@pytest.fixture
def names(nats_url: str) -> Iterator[dict[str, str]]:
    """A stream and subject prefix of this test's own; the stream is deleted afterwards."""
    tag = uid()
    yield {"stream": f"PLTEST_{tag}", "subject_prefix": f"pltest.{tag}.events"}

    async def delete() -> None:
        connection = await nats.connect(nats_url)
        try:
            await connection.jetstream().delete_stream(f"PLTEST_{tag}")
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await connection.close()

    asyncio.run(delete())


class Crash(BaseException):
    """A relay dying between publishing a page and committing its position."""


def record_events(ledger: PropLedger, trades: int) -> None:
    program = program_body()
    ledger.define_program(program, "admin")
    account = ledger.purchase(purchase_body(program["program_id"]), "finance").account
    for _ in range(trades):
        ledger.record_trade(str(account.id), trade_body(), "bridge")


def stored_messages(nats_url: str, stream: str) -> list[tuple[int, str, Any]]:
    """(position from Nats-Msg-Id, subject, body) of every message in the stream, in order."""
    import json

    async def read() -> list[tuple[int, str, Any]]:
        connection = await nats.connect(nats_url)
        try:
            js = connection.jetstream()
            info = await js.stream_info(stream)
            found = []
            for sequence in range(info.state.first_seq, info.state.last_seq + 1):
                message = await js.get_msg(stream, sequence)
                headers = message.headers or {}
                found.append(
                    (int(headers["Nats-Msg-Id"]), message.subject, json.loads(message.data or b""))
                )
            return found
        finally:
            await connection.close()

    return asyncio.run(read())


async def wait_for_messages(nats_url: str, stream: str, count: int, timeout: float) -> int:
    """Polls the stream until it holds `count` messages; returns how many it holds."""
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                held = (await js.stream_info(stream)).state.messages
            except nats.js.errors.NotFoundError:
                held = 0
            if held >= count:
                return int(held)
            await asyncio.sleep(0.005)
        raise AssertionError(f"the stream {stream} did not reach {count} messages")
    finally:
        await connection.close()


def deduplicated(messages: list[tuple[int, str, Any]]) -> list[int]:
    """What a consumer that skips positions it has processed sees."""
    seen: list[int] = []
    for position, _, _ in messages:
        if not seen or position > seen[-1]:
            seen.append(position)
    return seen


def relay_for(
    ledger: PropLedger, database: Database, nats_url: str, names: dict[str, str], **options: Any
) -> NatsRelay:
    return NatsRelay(
        ledger,
        database,
        nats_url=nats_url,
        tracking_name=f"relay:test:{names['stream']}",
        batch_size=10,
        **names,
        **options,
    )


def test_every_event_is_stored_once_in_log_order_across_a_crash_before_the_commit(
    ledger: PropLedger, database: Database, nats_url: str, names: dict[str, str]
) -> None:
    before = ledger.position()
    record_events(ledger, trades=30)

    def crash_on_second_page(start: int, end: int) -> None:
        if start > before:
            raise Crash(f"published {start + 1}..{end}, not committed")

    crashing = relay_for(ledger, database, nats_url, names, before_commit=crash_on_second_page)
    # The log may hold other tests' events: start this relay where this test's begin.
    crashing._commit(0, before)
    with pytest.raises(Crash):
        asyncio.run(crashing.run(once=True))
    assert crashing.position() == before + 10  # the first page only

    restarted = relay_for(ledger, database, nats_url, names)
    asyncio.run(restarted.run(once=True))
    end = ledger.position()
    assert restarted.position() == end
    assert restarted.duplicates == 10  # the second page, published again, dropped by JetStream

    messages = stored_messages(nats_url, names["stream"])
    assert [position for position, _, _ in messages] == list(range(before + 1, end + 1))
    position, subject, body = messages[-1]
    assert subject == f"{names['subject_prefix']}.TradingAccount.TradeClosed"
    assert body["position"] == position
    assert body["type"] == "TradeClosed"
    assert body["aggregate"] == "TradingAccount"
    assert body["data"]["trade"]["symbol"] == "EURUSD"
    assert {subject.split(".")[-2] for _, subject, _ in messages} == {
        "Program",
        "Trader",
        "TradingAccount",
    }

    # Later events follow from the committed position.
    record_events(ledger, trades=3)
    asyncio.run(restarted.run(once=True))
    messages = stored_messages(nats_url, names["stream"])
    assert [position for position, _, _ in messages] == list(
        range(before + 1, ledger.position() + 1)
    )


def test_past_the_duplicate_window_a_consumer_deduplicating_by_id_sees_each_event_once(
    ledger: PropLedger, database: Database, nats_url: str, names: dict[str, str]
) -> None:
    before = ledger.position()
    record_events(ledger, trades=25)

    def crash_on_second_page(start: int, end: int) -> None:
        if start > before:
            raise Crash

    crashing = relay_for(
        ledger,
        database,
        nats_url,
        names,
        duplicate_window=0.5,
        before_commit=crash_on_second_page,
    )
    crashing._commit(0, before)
    with pytest.raises(Crash):
        asyncio.run(crashing.run(once=True))
    time.sleep(1.0)  # the window has passed: JetStream no longer knows those ids
    restarted = relay_for(ledger, database, nats_url, names)
    asyncio.run(restarted.run(once=True))

    messages = stored_messages(nats_url, names["stream"])
    positions = [position for position, _, _ in messages]
    assert len(positions) == ledger.position() - before + 10  # the second page twice
    assert deduplicated(messages) == list(range(before + 1, ledger.position() + 1))


def test_the_relay_command_resumes_after_being_killed(
    ledger: PropLedger, database_url: str, nats_url: str, names: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PROPLEDGER_DATABASE_URL": database_url,
        "PROPLEDGER_NATS_URL": nats_url,
        "PROPLEDGER_NATS_STREAM": names["stream"],
        "PROPLEDGER_NATS_SUBJECT_PREFIX": names["subject_prefix"],
    }
    command = [sys.executable, "-m", "api.cli", "relay", "--batch-size", "5"]
    env["PYTHONPATH"] = str(ROOT)
    record_events(ledger, trades=20)
    relay = subprocess.Popen(command, cwd=tmp_path, env=env)
    try:
        at_kill = asyncio.run(wait_for_messages(nats_url, names["stream"], 5, timeout=20))
        relay.send_signal(signal.SIGKILL)
    finally:
        relay.wait(10)
    print(f"killed the relay with {at_kill} of {ledger.position()} events in the stream")
    record_events(ledger, trades=5)
    done = subprocess.run(
        [*command, "--once"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    messages = stored_messages(nats_url, names["stream"])
    # A fresh tracking row (`relay:nats`) in this module's database starts at 0: every
    # event of the log is in the stream once, in order.
    assert [position for position, _, _ in messages] == list(range(1, ledger.position() + 1))


def test_the_relay_command_without_a_broker_url_exits_with_a_plain_error(
    database_url: str, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROPLEDGER_")}
    env.update({"PROPLEDGER_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)})
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "relay"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "PROPLEDGER_NATS_URL is not set" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("topic", "parts"),
    [
        ("domain.account:TradingAccount.TradeClosed", ("TradingAccount", "TradeClosed")),
        ("domain.payout:Payout.Approved", ("Payout", "Approved")),
        ("x:Odd Name.Ev*nt", ("Odd_Name", "Ev_nt")),
    ],
)
def test_subjects_name_the_aggregate_and_the_event_type(topic: str, parts: tuple[str, str]) -> None:
    assert subject_parts(topic) == parts


def test_a_stream_lost_after_publishing_is_recreated_with_a_warning_that_names_the_gap(
    ledger: PropLedger,
    database: Database,
    nats_url: str,
    names: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an audit: the relay's position belongs to the database, so a JetStream
    stream deleted after it published comes back empty and the events up to the position
    are not published again. That may be what an operator wants, never silently."""
    record_events(ledger, 3)
    relay = relay_for(ledger, database, nats_url, names)
    asyncio.run(relay.run(once=True))
    position = relay.position()
    assert position == ledger.position()

    async def delete() -> None:
        connection = await nats.connect(nats_url)
        try:
            await connection.jetstream().delete_stream(names["stream"])
        finally:
            await connection.close()

    asyncio.run(delete())
    with caplog.at_level(logging.WARNING, logger="propledger.relay"):
        again = relay_for(ledger, database, nats_url, names)
        asyncio.run(again.run(once=True))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"stream {names['stream']} was created empty" in text
        and f"events 1-{position} were published" in text
        for text in warnings
    ), warnings

    async def held() -> int:
        connection = await nats.connect(nats_url)
        try:
            return int((await connection.jetstream().stream_info(names["stream"])).state.messages)
        finally:
            await connection.close()

    assert asyncio.run(held()) == 0  # not republished by itself
