"""A real uvicorn server for the benchmark, in its own (spawned) process."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from typing import Any

import httpx

from bench.workload import SECRET

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(database_url: str, port: int) -> None:
    """The server process: the whole app (middleware, auth, idempotency, in-process
    projection workers) as `propledger serve` runs it."""
    import uvicorn

    from api.app import create_app
    from ledger.config import Settings

    settings = Settings(
        propledger_database_url=database_url,
        propledger_jwt_secret=SECRET,
        propledger_projections="inprocess",
        # The limiter still runs on every request; it just never throttles the benchmark.
        propledger_rate_limit_platform=1_000_000.0,
        propledger_rate_limit_default=1_000_000.0,
    )
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        # Clients open their connection, then wait for all 32 to be ready; on a loaded
        # machine that wait can pass uvicorn's 5 s default, and a connection the server
        # closes just as a client posts on it fails the run (RemoteProtocolError).
        timeout_keep_alive=120,
    )


class Server:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        context = multiprocessing.get_context("spawn")
        self.process: Any = context.Process(
            target=serve, args=(database_url, self.port), name="propledger-bench-server"
        )

    def start(self, timeout: float = 60.0) -> None:
        self.process.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            while True:
                if not self.process.is_alive():
                    raise RuntimeError(f"the server exited with {self.process.exitcode}")
                try:
                    if client.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the server did not answer /health in time")
                time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM: uvicorn shuts down, lifespan stops workers
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)

    @property
    def pid(self) -> int:
        pid: int = self.process.pid
        return pid

    def peak_rss_mb(self) -> float:
        """VmHWM: the process's peak resident set size so far."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/PID/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        # After the command name: state is field 3, utime 14 and stime 15 (1-based).
        return (int(fields[11]) + int(fields[12])) / _TICKS
