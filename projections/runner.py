"""A batching projection runner with exactly-once tracking.

Why not the library's ProjectionRunner: it commits once per event (~1,000 events/s here)
and needs a recorder subscription, which its SQLite recorder does not have. This runner
reads the application's notification log in pages (up to `batch_size` events), lets each
projection write its rows for the whole page, and records the page's last position in the
same transaction. A crash mid-page rolls the page back whole; a restart resumes after the
last committed position. Two runners on one database are safe: a runner commits a page only
if the tracked position is still the one it started from, under a row lock.

On PostgreSQL the event recorder takes a table lock on insert, so notification ids become
visible in order and a reader that asks for ids after its position never skips one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from projections.store import Cursor, Database

logger = logging.getLogger("propledger.projections")


class Notifications(Protocol):
    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None
    ) -> Sequence[Any]: ...
    def max_notification_id(self) -> int | None: ...


class Mapper(Protocol):
    def to_domain_event(self, stored: Any) -> Any: ...


class EventSource(Protocol):
    """What a runner needs of an eventsourcing Application: its log and its mapper."""

    @property
    def recorder(self) -> Notifications: ...

    @property
    def mapper(self) -> Mapper: ...


class Projection(Protocol):
    name: str
    # The tables it writes, each with its key columns (for comparisons with a rebuild).
    tables: tuple[tuple[str, tuple[str, ...]], ...]

    def handles(self, topic: str) -> bool: ...
    def apply(self, cursor: Cursor, events: list[tuple[int, Any]]) -> None:
        """Writes the rows for a page of (position, domain event) pairs."""

    def reset(self, cursor: Cursor) -> None: ...


class NeedsLatest(Protocol):
    """Optional for a projection: which of a page's notifications it must be given.

    A projection whose rows are "the state after the newest event" (the account board)
    needs only the newest event of each stream in a page, and the events that create a
    row; leaving the others undecoded is most of the work of a replay (see `_Page`)."""

    def needs(self, notifications: Sequence[Any]) -> Sequence[Any]: ...


class DecodesItself(Protocol):
    """Optional for a projection: reads a notification into what its `apply` takes, or
    returns None to be given the domain event (the mapper's decoding) instead."""

    def decode(self, notification: Any) -> Any | None: ...


class ProjectionRunner:
    def __init__(
        self,
        source: EventSource,
        database: Database,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
    ) -> None:
        self.source = source
        self.database = database
        self.projections = list(projections)
        self.batch_size = batch_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tracked: set[str] = set()
        self.last_error: BaseException | None = None

    # Positions ----------------------------------------------------------------------

    def position(self, name: str) -> int:
        rows = self.database.query(
            "SELECT position FROM projection_tracking WHERE projection = ?", (name,)
        )
        return int(rows[0]["position"]) if rows else 0

    def positions(self, *, timeout: float | None = None, fresh: bool = False) -> dict[str, int]:
        """Every projection's tracked position, in one query (0 when not tracked yet);
        `timeout`: at most this long waiting for a connection (Database.transaction);
        `fresh`: on a connection of its own (Database.query_fresh), not the pool's."""
        names = [projection.name for projection in self.projections]
        marks = ", ".join("?" for _ in names)
        sql = f"SELECT projection, position FROM projection_tracking WHERE projection IN ({marks})"
        if fresh:
            rows = self.database.query_fresh(sql, names, timeout=timeout or 3.0)
        else:
            rows = self.database.query(sql, names, timeout=timeout)
        found = {row["projection"]: int(row["position"]) for row in rows}
        return {name: found.get(name, 0) for name in names}

    def lowest_position(self) -> int:
        return min(self.positions().values())

    def wait_for(
        self, position: int, timeout: float = 10.0, *, connect_timeout: float | None = None
    ) -> bool:
        """Blocks until every projection has processed the log up to `position`. The wait
        for a pooled connection is bounded too (by `connect_timeout`, and by what is left
        of `timeout`): a database that cannot be reached raises within it (PoolTimeout),
        not after the pool's own 30 s."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            left = max(0.1, deadline - time.monotonic())
            bound = left if connect_timeout is None else min(left, connect_timeout)
            if min(self.positions(timeout=bound).values()) >= position:
                return True
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # Processing ---------------------------------------------------------------------

    def run_once(self, until: int | None = None, *, skip_busy: bool = False) -> int:
        """Processes at most one page of the log for every projection; returns the
        events read. `skip_busy` (PostgreSQL): leave projections another runner is
        processing right now to it instead of waiting for it."""
        try:
            return self._process_page(self.projections, until, skip_busy=skip_busy)
        except Exception:
            if len(self.projections) == 1:
                raise
        # A projection failed the shared page (rolled back whole): each on its own now,
        # so one that keeps failing does not hold the others back; its error is raised.
        processed = 0
        failure: Exception | None = None
        for projection in self.projections:
            try:
                processed += self._process_page([projection], until, skip_busy=skip_busy)
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return processed

    def catch_up(self, until: int | None = None) -> int:
        """Processes the log up to `until` (or its end); returns the events read."""
        total = 0
        while (processed := self.run_once(until)) > 0:
            total += processed
        return total

    def _process_page(
        self,
        projections: Sequence[Projection],
        until: int | None = None,
        *,
        skip_busy: bool = False,
        page_size: int | None = None,
    ) -> int:
        """One page of the log, read and decoded once, for every projection that is not
        past it, written with their positions in one transaction.

        PostgreSQL: the projections' tracking rows are locked first, and the page is read
        and written under those locks, so a second runner never repeats the work: it
        waits, or with `skip_busy` leaves the locked projections to the first. SQLite:
        the page is read without holding the database's one write lock, then written only
        for projections whose position did not move meanwhile."""
        self._ensure_tracked(projections)
        if self.database.dialect == "postgres":
            with self.database.transaction() as cursor:
                positions = _lock_positions(
                    self.database, cursor, [p.name for p in projections], skip_locked=skip_busy
                )
                page = self._read_page(projections, positions, until, page_size)
                if page is None:
                    return 0
                self._write_page(cursor, projections, positions, page)
                return len(page.notifications)
        names = [p.name for p in projections]
        read = self._positions_of(names)
        page = self._read_page(projections, read, until, page_size)
        if page is None:
            return 0
        with self.database.transaction() as cursor:
            now = _lock_positions(self.database, cursor, names)
            # Another runner committed some of this page first: theirs stands.
            unmoved = {name: at for name, at in read.items() if now.get(name) == at}
            self._write_page(cursor, projections, unmoved, page)
        return len(page.notifications)

    def _ensure_tracked(self, projections: Sequence[Projection]) -> None:
        missing = [p.name for p in projections if p.name not in self._tracked]
        if not missing:
            return
        with self.database.transaction() as cursor:
            cursor.executemany(
                "INSERT INTO projection_tracking (projection, position) VALUES (?, 0) "
                "ON CONFLICT (projection) DO NOTHING",
                [(name,) for name in missing],
            )
        self._tracked.update(missing)

    def _positions_of(self, names: list[str]) -> dict[str, int]:
        marks = ", ".join("?" for _ in names)
        rows = self.database.query(
            f"SELECT projection, position FROM projection_tracking WHERE projection IN ({marks})",
            names,
        )
        return {row["projection"]: int(row["position"]) for row in rows}

    def _read_page(
        self,
        projections: Sequence[Projection],
        positions: dict[str, int],
        until: int | None,
        page_size: int | None = None,
    ) -> _Page | None:
        behind = [
            positions[p.name]
            for p in projections
            if p.name in positions and (until is None or positions[p.name] < until)
        ]
        if not behind:
            return None
        notifications = self.source.recorder.select_notifications(
            start=min(behind) + 1, limit=page_size or self.batch_size, stop=until
        )
        if not notifications:
            return None
        return _Page(notifications, self.source.mapper)

    @staticmethod
    def _write_page(
        cursor: Cursor,
        projections: Sequence[Projection],
        positions: dict[str, int],
        page: _Page,
    ) -> None:
        end = page.notifications[-1].id
        moved = []
        for projection in projections:
            start = positions.get(projection.name)
            if start is None or start >= end:
                continue  # busy elsewhere, moved meanwhile, or already past this page
            projection.apply(cursor, page.events_for(projection, start))
            moved.append((end, projection.name))
        if moved:
            cursor.executemany(
                "UPDATE projection_tracking SET position = ? WHERE projection = ?", moved
            )

    def rebuild(
        self, projection: Projection, until: int | None = None, *, page_size: int = 10_000
    ) -> int:
        """Empties the projection and replays the log (up to `until`) into it, in pages of
        up to `page_size` events (larger than a live page: nobody waits on a rebuild's
        lag, and a projection that keeps the newest state per stream writes each stream
        once a page), all in one transaction: until it commits, readers see the tables as
        they were, complete at their position, never emptied or half rebuilt (a rebuild
        that committed its reset first let a report answer 200 with no rows, and verify
        call a healthy projection behind: black-box audit). Live runners leave the
        projection to it meanwhile (PostgreSQL: its tracking row is locked; SQLite: the
        transaction holds the database's write lock, so writers wait for the rebuild)."""
        total = 0
        with self.database.transaction() as cursor:
            _lock_position(self.database, cursor, projection.name)
            projection.reset(cursor)
            position = 0
            while page := self._read_page(
                [projection], {projection.name: position}, until, page_size
            ):
                self._write_page(cursor, [projection], {projection.name: position}, page)
                position = page.notifications[-1].id
                total += len(page.notifications)
            cursor.execute(
                "UPDATE projection_tracking SET position = ? WHERE projection = ?",
                (position, projection.name),
            )
        return total

    # Following the live log -------------------------------------------------------------

    def run_forever(self, *, idle_interval: float = 0.05) -> None:
        """Follows the log until stop(); polls when idle (the SQLite recorder has no
        subscription), and wakes at once when a reader is waiting."""
        while not self._stop.is_set():
            try:
                processed = self.run_once(skip_busy=True)
                self.last_error = None
            except Exception as error:
                self.last_error = error
                logger.exception("projection page failed; retrying")
                processed = 0
                self._stop.wait(1.0)
            if processed == 0:
                self._wake.wait(idle_interval)
                self._wake.clear()

    def wake(self) -> None:
        """Look at the log now (a follower of LISTEN/NOTIFY calls this on each commit)."""
        self._wake.set()

    def start(self, *, idle_interval: float = 0.05) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever,
            kwargs={"idle_interval": idle_interval},
            name="propledger-projections",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class _Page:
    """A page of the log; each event is decoded once, when a projection first needs it."""

    def __init__(self, notifications: Sequence[Any], mapper: Mapper) -> None:
        self.notifications = notifications
        self._mapper = mapper
        self._events: dict[int, Any] = {}

    def events_for(self, projection: Projection, after: int) -> list[tuple[int, Any]]:
        wanted = [
            notification
            for notification in self.notifications
            if notification.id > after and projection.handles(notification.topic)
        ]
        needs = getattr(projection, "needs", None)
        if needs is not None:
            wanted = list(needs(wanted))
        # A projection may read some events itself, more cheaply than as domain events
        # (`decode` returns None for those it leaves to the mapper).
        decode = getattr(projection, "decode", None)
        events = []
        for notification in wanted:
            event = None if decode is None else decode(notification)
            if event is None:
                event = self._events.get(notification.id)
            if event is None:
                event = self._events[notification.id] = self._mapper.to_domain_event(notification)
            events.append((notification.id, event))
        return events


def _lock_position(database: Database, cursor: Cursor, name: str) -> int:
    """Reads the tracked position inside the writing transaction, holding it locked."""
    cursor.execute(
        "INSERT INTO projection_tracking (projection, position) VALUES (?, 0) "
        "ON CONFLICT (projection) DO NOTHING",
        (name,),
    )
    return _lock_positions(database, cursor, [name])[name]


def _lock_positions(
    database: Database, cursor: Cursor, names: list[str], *, skip_locked: bool = False
) -> dict[str, int]:
    """The tracked positions of `names`, locked until the transaction ends (PostgreSQL;
    SQLite's write transaction holds the whole database). With `skip_locked`, rows
    another transaction holds are left out."""
    marks = ", ".join("?" for _ in names)
    select = f"SELECT projection, position FROM projection_tracking WHERE projection IN ({marks})"
    if database.dialect == "postgres":
        select += " ORDER BY projection FOR UPDATE"
        if skip_locked:
            select += " SKIP LOCKED"
    return {row["projection"]: int(row["position"]) for row in cursor.execute(select, names)}
