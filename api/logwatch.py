"""Wakes whoever follows the event log when it grows, without each of them polling.

One `LogWatcher` per process knows the newest position of the log (`latest`) and wakes the
followers waiting for a position beyond theirs: threads (`wait_beyond`), asyncio tasks
(`wait_beyond_async`) and callbacks (`subscribe`, e.g. a worker's wake-up event).

- PostgreSQL: a thread holds its own connection and `LISTEN`s on the channel the library's
  recorder `NOTIFY`s in every inserting transaction (the events table's name,
  `propledger_events`). A notification arrives when the transaction commits; the watcher
  then reads the log's newest position once for everyone. It also re-reads every
  `fallback_interval` seconds, and reconnects after a lost connection, so a missed
  notification delays a follower, never strands it.
- SQLite has no notifications: the thread reads the newest position every `poll_interval`
  seconds, one cheap query per process however many followers wait.

A follower reads the log itself (pages after its own position); the watcher only says when
to look. Positions become visible in order (the PostgreSQL recorder locks the table for
each insert; SQLite has one writer), so "newest position > mine" means there is something
to read. It depends on nothing of ours but the settings' URL parsing, so the projection
runner could take one too (`subscribe(runner_wake_event.set)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import psycopg
from psycopg import sql

from ledger.config import database_url_to_env

logger = logging.getLogger("propledger.logwatch")

Callback = Callable[[int], None]


class LogWatcher:
    def __init__(
        self,
        read_position: Callable[[], int | None],
        *,
        listen: tuple[str, str] | None = None,
        poll_interval: float = 0.05,
        fallback_interval: float = 2.0,
    ) -> None:
        """`listen` is (psycopg conninfo, channel) on PostgreSQL; None polls."""
        self._read_position = read_position
        self._listen = listen
        self.poll_interval = poll_interval
        self.fallback_interval = fallback_interval
        self.latest = 0
        self.listening = False
        self._condition = threading.Condition()
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._callbacks: list[Callback] = []
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> str:
        return "listen" if self._listen else "poll"

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> LogWatcher:
        try:
            self._refresh()
        except Exception as error:  # the thread keeps trying
            logger.warning("log watcher: cannot read the log position yet: %s", error)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="propledger-log-watcher", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._wake_everyone()

    def poke(self) -> None:
        """Re-read the position now (in poll mode; a write in this process may call it)."""
        self._poke.set()

    # Waiting ---------------------------------------------------------------------------

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Calls `callback(latest)` from the watcher's thread each time the log grows.
        It must return quickly (set an event, schedule work). Returns an unsubscribe."""
        with self._condition:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._condition:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def wait_beyond(self, position: int, timeout: float) -> int:
        """Blocks until the log's newest position is beyond `position`, or `timeout`."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self.latest <= position and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            return self.latest

    async def wait_beyond_async(self, position: int, timeout: float) -> int:
        """The same for a coroutine: it waits on its own event, set from the thread."""
        if self.latest > position:
            return self.latest
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._condition:
            self._async_waiters.add(entry)
        try:
            if self.latest <= position and not self._stop.is_set():
                with anyio.move_on_after(timeout):
                    await entry[1].wait()
        finally:
            with self._condition:
                self._async_waiters.discard(entry)
        return self.latest

    # The watcher's thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._listen is None:
                    self._poll()
                else:
                    self._listen_for_notifications(*self._listen)
            except Exception as error:
                self.listening = False
                logger.warning("log watcher: %s; retrying in 1 s", error)
                self._stop.wait(1.0)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.poll_interval)
            self._poke.clear()
            self._refresh()

    def _listen_for_notifications(self, conninfo: str, channel: str) -> None:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.listening = True
            # Anything committed before LISTEN took effect is seen by this read.
            self._refresh()
            last_read = time.monotonic()
            while not self._stop.is_set():
                # Short waits so that stop() is prompt; a read only on a notification, a
                # poke, or when the fallback interval has passed.
                notified = False
                for _ in connection.notifies(timeout=0.25, stop_after=1):
                    notified = True
                now = time.monotonic()
                if notified or self._poke.is_set() or now - last_read >= self.fallback_interval:
                    self._poke.clear()
                    self._refresh()
                    last_read = now

    def _refresh(self) -> None:
        position = self._read_position() or 0
        if position <= self.latest:
            return
        with self._condition:
            self.latest = position
            self._condition.notify_all()
            callbacks = list(self._callbacks)
        self._wake_async()
        for callback in callbacks:
            try:
                callback(position)
            except Exception:
                logger.exception("log watcher: a callback failed")

    def _wake_async(self) -> None:
        with self._condition:
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def _wake_everyone(self) -> None:
        with self._condition:
            self._condition.notify_all()
        self._wake_async()


def log_watcher_for(recorder: Any, database_url: str, **options: Any) -> LogWatcher:
    """A watcher for the ledger's log: LISTEN/NOTIFY on PostgreSQL, polling on SQLite."""
    env = database_url_to_env(database_url)
    channel = getattr(recorder, "channel_name", None)
    listen = None
    if env["PERSISTENCE_MODULE"].endswith("postgres") and channel:
        conninfo = psycopg.conninfo.make_conninfo(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=10,
            application_name="propledger-log-watcher",
        )
        listen = (conninfo, str(channel))
    return LogWatcher(recorder.max_notification_id, listen=listen, **options)
