"""Where reports and listings are read: the read replica when one is configured and can be
reached, else the primary.

A request waits (bounded) until the projections it reads have reached the log position
of its arrival (DESIGN: reports reflect every event recorded before the request). With a
replica, replication lag counts like projection lag. A replica that cannot be reached is
not waited on for the pool's 30 s at every request: the request reads from the primary
(always current) and the replica is left alone for a while, then tried again.
"""

from __future__ import annotations

import logging
import time

from fastapi import Request

from api.errors import store_unreachable
from projections.runner import ProjectionRunner
from projections.store import Database

logger = logging.getLogger(__name__)

REPLICA_PROBE_SECONDS = 2.0  # the wait for a replica connection before reading the primary
REPLICA_RETRY_SECONDS = 30.0  # how long an unreachable replica is left alone
REPLICA_BUSY_SECONDS = 10.0  # a replica that answered this recently is busy, not gone


class ReportReads:
    def __init__(
        self,
        primary: Database,
        primary_runner: ProjectionRunner,
        replica: Database | None = None,
        replica_runner: ProjectionRunner | None = None,
    ) -> None:
        self.primary, self.primary_runner = primary, primary_runner
        self.replica, self.replica_runner = replica, replica_runner
        self._replica_down_until = 0.0
        self._replica_answered_at = -REPLICA_BUSY_SECONDS

    def current(self) -> Database:
        """The database to read from now, for a read that waits for no position: the
        replica if it can be reached (tried as `wait` tries it), else the primary."""
        if self._usable_replica() is None:
            return self.primary
        return self.wait(0, timeout=REPLICA_PROBE_SECONDS) or self.primary

    def wait(self, position: int, timeout: float) -> Database | None:
        """The database whose projections have reached `position`, waiting at most
        `timeout` seconds; None when they have not (the caller answers 503)."""
        deadline = time.monotonic() + timeout
        replica = self._usable_replica()
        if replica is not None:
            database, runner = replica
            # A replica that answered a moment ago is up: waiting for one of its pooled
            # connections is it being busy (given the whole wait), not it being gone.
            answered = time.monotonic() - self._replica_answered_at < REPLICA_BUSY_SECONDS
            probe = None if answered else REPLICA_PROBE_SECONDS
            try:
                reached = runner.wait_for(position, timeout=timeout, connect_timeout=probe)
            except Exception as error:
                if not store_unreachable(error):
                    raise
                self._replica_unreachable(error)
            else:
                self._replica_answered_at = time.monotonic()
                return database if reached else None
        remaining = max(0.0, deadline - time.monotonic())
        return self.primary if self.primary_runner.wait_for(position, timeout=remaining) else None

    def _usable_replica(self) -> tuple[Database, ProjectionRunner] | None:
        if self.replica is None or self.replica_runner is None:
            return None
        if time.monotonic() < self._replica_down_until:
            return None
        return self.replica, self.replica_runner

    def _replica_unreachable(self, error: BaseException) -> None:
        self._replica_down_until = time.monotonic() + REPLICA_RETRY_SECONDS
        logger.warning(
            "the read replica cannot be reached (%s): reading from the primary for %.0f s",
            error,
            REPLICA_RETRY_SECONDS,
        )


def reports_db(request: Request) -> Database:
    """The database this request's reads go to: the one its wait settled on, else the
    one to read from now."""
    chosen: Database | None = getattr(request.state, "reports_db", None)
    if chosen is not None:
        return chosen
    reads: ReportReads = request.app.state.reads
    return reads.current()
