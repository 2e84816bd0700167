"""Browser tests: the real app served by uvicorn (`propledger serve` in its own process)
and Debian's chromium driven by Playwright (`executable_path`, never a downloaded browser).

Without chromium or the playwright package the tests are skipped with a loud reason,
except under ``CI=true``, where that is a failure (as for a missing PostgreSQL server).
`scripts/test` installs both: chromium with apt-get, playwright with the dev extra.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import SECRET

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ENV = "PROPLEDGER_TEST_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    message = (
        f"NO BROWSER FOR TESTS: {reason}. scripts/test installs it: Debian's chromium with "
        "'apt-get install -y --no-install-recommends chromium' (as root or with sudo -n) and "
        "playwright with pip install -e '.[dev]'."
    )
    if _in_ci():
        pytest.fail(f"CI=true: the browser tests must run. {message}", pytrace=False)
    pytest.skip(message)


def chromium_path() -> str | None:
    given = os.environ.get(CHROMIUM_ENV, "").strip()
    if given:
        return given if os.access(given, os.X_OK) else None
    found = shutil.which("chromium")
    if found:
        return found
    return DEFAULT_CHROMIUM if os.access(DEFAULT_CHROMIUM, os.X_OK) else None


# Module scope: while Playwright's sync API runs, its event loop counts as the running loop
# of the main thread, so `asyncio.run()` in tests after these would fail. It is stopped as
# soon as the browser tests are done.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
        return
    path = chromium_path()
    if path is None:
        _unavailable(f"no chromium at {DEFAULT_CHROMIUM}, on PATH or in ${CHROMIUM_ENV}")
        return
    # Chromium refuses to run as root inside its own sandbox.
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=path, headless=True, args=args)
        except Exception as error:
            _unavailable(f"{path} did not start: {error}")
            return
        try:
            yield launched
        finally:
            launched.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def serve(database_url: str, folder: Path) -> Iterator[Server]:
    """`propledger serve` on a free port until the block ends; killed, never left behind."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROPLEDGER_")}
    env.update(
        {
            "PROPLEDGER_DATABASE_URL": database_url,
            "PROPLEDGER_JWT_SECRET": SECRET,
            "PYTHONPATH": str(ROOT),
        }
    )
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, f"the server exited:\n{server.log()}"
                try:
                    if httpx.get(f"{server.base}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"the server did not start:\n{server.log()}"
                time.sleep(0.1)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
