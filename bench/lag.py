"""Projection lag: from a write's reply (its `position`) to the account board showing it.

A poller thread reads `projection_tracking` every few milliseconds on its own connection
and records (time, position). A write answered at time t with position p became visible
on the board at the first poll at or after t that saw a position >= p. The lag is the
difference: it includes up to one polling interval, so it errs on the high side.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any

from bench.db import connect, scalar

BOARD = "account_board"


class LagProbe:
    def __init__(self, database_url: str, *, interval: float = 0.005) -> None:
        self.database_url = database_url
        self.interval = interval
        self.poll_times: list[float] = []
        self.poll_positions: list[int] = []
        self.replies: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> LagProbe:
        self._thread = threading.Thread(target=self._poll, name="bench-lag-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _poll(self) -> None:
        connection = connect(self.database_url)
        query = "SELECT position FROM projection_tracking WHERE projection = ?"
        try:
            while not self._stop.is_set():
                position = int(scalar(connection, query, (BOARD,)) or 0)
                now = time.perf_counter()
                self.poll_times.append(now)
                self.poll_positions.append(position)
                self._stop.wait(self.interval)
        except BaseException as error:  # reported by lags()
            self.error = error
        finally:
            connection.close()

    def reply(self, position: int, at: float | None = None) -> None:
        """Notes a write reply (thread-safe)."""
        stamp = time.perf_counter() if at is None else at
        with self._lock:
            self.replies.append((stamp, position))

    def wait_caught_up(self, timeout: float = 120.0) -> None:
        """Until the board has shown every reply noted so far."""
        with self._lock:
            target = max((position for _, position in self.replies), default=0)
        deadline = time.monotonic() + timeout
        while not self.poll_positions or self.poll_positions[-1] < target:
            if self.error is not None:
                raise RuntimeError(f"lag probe failed: {self.error}") from self.error
            if time.monotonic() > deadline:
                raise RuntimeError(f"the account board did not reach position {target}")
            time.sleep(self.interval)
        # One more poll strictly after every reply, so each has a poll at or after it.
        seen = len(self.poll_times)
        while len(self.poll_times) <= seen:
            time.sleep(self.interval)

    def lags_ms(self) -> list[float]:
        if self.error is not None:
            raise RuntimeError(f"lag probe failed: {self.error}") from self.error
        times = list(self.poll_times)
        positions = list(self.poll_positions)
        lags = []
        for stamp, position in self.replies:
            first = bisect.bisect_left(times, stamp)
            # Positions only grow: the first poll from `first` on that saw `position`.
            index = bisect.bisect_left(positions, position, lo=first)
            if index >= len(times):
                raise RuntimeError(f"position {position} was never seen on the board")
            lags.append((times[index] - stamp) * 1000)
        return lags
