"""`propledger demo` and `propledger serve --demo`, run in their own processes as a
newcomer would run them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support import sqlite_file_url

SECRET = "demo-cli-test-secret-" + "q" * 40
UNTIL = "2025-03-14"


def _environment(database: Path, **extra: str) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("PROPLEDGER_", "STRIPE_"))}  # fmt: skip
    clean.update(
        PROPLEDGER_DATABASE_URL=sqlite_file_url(database), PROPLEDGER_JWT_SECRET=SECRET, **extra
    )
    return clean


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_demo_builds_a_firm_then_refuses_to_build_over_it(tmp_path: Path) -> None:
    env = _environment(tmp_path / "demo.db", STRIPE_WEBHOOK_SECRET="whsec_" + "w" * 32)
    built = run_cli(
        "demo", "--traders", "25", "--days", "20", "--seed", "3", "--until", UNTIL,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    out = built.stdout
    assert "demo firm: 25 traders, 20 days (2025-02-23 00:00 to 2025-03-15 00:00 UTC)" in out
    assert "trial balance: sums to zero" in out
    assert "(Stripe webhooks, signed with STRIPE_WEBHOOK_SECRET)" in out
    breaches = int(re.search(r"breaches: (\d+); passes: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert breaches > 0
    for command in (
        "propledger serve",
        "propledger token --sub fiona --roles finance",
        "propledger token --sub arthur --roles approver",
        "propledger token --sub ada --roles auditor",
        "propledger audit verify",
    ):
        assert command in out, command  # fmt: skip
    # Progress without a terminal: plain lines, never a carriage return.
    assert "demo firm: 100% 2025-03-15" in built.stderr
    assert "demo projections: 100%" in built.stderr
    assert "\r" not in built.stderr

    exported = run_cli("export", "--output", "before.jsonl", cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    again = run_cli("demo", "--traders", "3", "--days", "2", cwd=tmp_path, env=env)
    assert again.returncode == 2
    assert "propledger demo: the store already holds" in again.stderr
    assert "an empty store" in again.stderr
    assert "Traceback" not in again.stderr
    assert again.stdout == ""
    run_cli("export", "--output", "after.jsonl", cwd=tmp_path, env=env)
    assert (tmp_path / "after.jsonl").read_text() == (tmp_path / "before.jsonl").read_text()


def test_a_bad_argument_exits_2_with_a_plain_error_and_touches_nothing(tmp_path: Path) -> None:
    done = run_cli("demo", "--traders", "-5", cwd=tmp_path, env=_environment(tmp_path / "no.db"))
    assert done.returncode == 2
    assert "propledger demo: --traders must be from 1 to 20000, got -5" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "no.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--traders", "0"), "--traders must be from 1"),
        (("--days", "0"), "--days must be from 1"),
        (("--days", "-3"), "--days must be from 1"),
        (("--until", "2999-01-01"), "is in the future"),
        (("--until", "next week"), "--until must be a date"),
        (("--until", "2025-03-01T10:00:00"), "--until needs an offset"),
        (("--seed", "seven"), "invalid int value"),
    ],
    ids=["no-traders", "no-days", "negative-days", "future", "not-a-date", "naive", "not-a-seed"],
)
def test_bad_arguments_exit_2_and_touch_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, str],
    message: str,
) -> None:
    """The same command line, in this process (a process per case costs seconds)."""
    from api.cli import main

    monkeypatch.chdir(tmp_path)
    for key, value in _environment(tmp_path / "none.db").items():
        monkeypatch.setenv(key, value)
    try:
        status = main(["demo", *args])
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code  # type: ignore[assignment]
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    assert not (tmp_path / "var").exists()


# serve --demo ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Server:
    """`propledger serve --demo` in its own process; its standard error in a file."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.log = cwd / f"serve-{self.port}.log"
        with self.log.open("w") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--demo", "--port", str(self.port)],
                cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=handle, text=True,
            )  # fmt: skip

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log.read_text()
            if text in log:
                return log
            assert self.process.poll() is None, f"the server stopped:\n{log[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in time:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve_demo(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    env = _environment(tmp_path / "serve.db")
    server = Server(tmp_path, env)
    try:
        yield server, tmp_path
    finally:
        server.stop()


def _tokens(log: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+\w+\s+(fiona|arthur|ada)\s+(\S+)$", log, re.MULTILINE))


def test_serve_demo_builds_a_firm_then_serves_it_with_sign_in_tokens(
    serve_demo: tuple[Server, Path],
) -> None:
    server, cwd = serve_demo
    log = server.wait_for("propledger: serving on")
    assert "demo firm: 100 traders, 45 days" in log
    assert "signed with a one-off demo secret: STRIPE_WEBHOOK_SECRET is not set" in log
    assert f"console: http://127.0.0.1:{server.port}/console" in log
    tokens = _tokens(log)
    assert set(tokens) == {"fiona", "arthur", "ada"}
    roles = {"fiona": ["finance"], "arthur": ["approver"], "ada": ["auditor"]}
    for sub, token in tokens.items():
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["roles"]) == (sub, roles[sub])
        assert claims["exp"] - claims["iat"] == 86_400
    base = f"http://127.0.0.1:{server.port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not answer"
        time.sleep(0.2)
    for status in ("requested", "approved", "paid", "rejected"):
        listed = httpx.get(
            f"{base}/v1/payouts",
            params={"status": status},
            headers={"Authorization": f"Bearer {tokens['fiona']}"},
            timeout=30,
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["payouts"], f"no {status} payout in the served demo"
    assert httpx.get(f"{base}/console/login", timeout=10).status_code == 200
    server.stop()

    # The store now holds a firm: a second `serve --demo` serves it as it is.
    again = Server(cwd, _environment(cwd / "serve.db"))
    try:
        log = again.wait_for("propledger: serving on")
    finally:
        again.stop()
    assert "no demo built (the store already holds" in log
    assert "demo firm:" not in log
    assert set(_tokens(log)) == {"fiona", "arthur", "ada"}


@pytest.mark.parametrize("command", [("demo",), ("serve", "--demo", "--port", "1")])
def test_the_demo_is_refused_in_production_and_prints_no_tokens(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Demo staff tokens signed with the production key would let anyone reading the logs
    request and approve payouts."""
    key = "Pr0d-" + "k" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"
    env = {**_environment(tmp_path / "store.db", PROPLEDGER_ENV="production")}
    env["PROPLEDGER_JWT_SECRET"] = key
    done = run_cli(*command, cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    assert "is for development: PROPLEDGER_ENV is production" in done.stderr
    assert "eyJ" not in done.stdout + done.stderr  # no token
    assert not (tmp_path / "store.db").exists()
