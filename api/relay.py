"""The outbox relay: every stored event, in log order, to NATS JetStream.

The event log is the outbox: an event is recorded once, in the command's own transaction,
and the relay publishes it afterwards. It follows the log like a projection: its position is
a row of `projection_tracking` (`relay:nats`), advanced only after JetStream has
acknowledged every message up to it. A crash between a publish and the commit of the
position publishes those events again on restart: at least once.

Each message:
- subject `<prefix>.<Aggregate>.<EventType>`, e.g. `propledger.events.TradingAccount.TradeClosed`
  (the stream, `PROPLEDGER` by default, is created with subjects `<prefix>.>` if missing);
- header `Nats-Msg-Id` = the log position: JetStream drops a message whose id it has seen
  within the stream's duplicate window (two minutes by default), so a restart inside it adds
  no duplicate; consumers deduplicate by the same id beyond it (positions only grow, so "skip
  what is not above the last position I processed" is enough);
- a JSON body: `position`, `stream_id`, `aggregate`, and the event as the HTTP API shows it
  (`type`, `version`, `recorded_at`, `actor`, `data`).

Order: one connection, pages of `batch_size` published back to back and then awaited. NATS
keeps a connection's messages in order, so the stream holds them in log order; a page that
fails is published again whole, from the committed position.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.logwatch import LogWatcher
from api.views import event_view

logger = logging.getLogger("propledger.relay")

TRACKING_NAME = "relay:nats"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class RelaySettings(BaseSettings):
    """`PROPLEDGER_NATS_*` environment variables (or .env). No URL: no relay."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    propledger_nats_url: str | None = None
    propledger_nats_stream: str = "PROPLEDGER"
    propledger_nats_subject_prefix: str = "propledger.events"

    @field_validator("propledger_nats_stream")
    @classmethod
    def _check_stream(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("a JetStream stream name is letters, digits, '-' and '_'")
        return value

    @field_validator("propledger_nats_subject_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not all(_TOKEN.match(token) for token in value.split(".")):
            raise ValueError("a subject prefix is dot-separated tokens of letters, digits, - _")
        return value


def subject_parts(topic: str) -> tuple[str, str]:
    """(aggregate, event type) of a stored event's topic, `module:Aggregate.Event`."""
    qualname = topic.rpartition(":")[2]
    parts = qualname.split(".")
    aggregate = parts[-2] if len(parts) > 1 else "Unknown"
    safe = [re.sub(r"[^A-Za-z0-9_-]", "_", part) or "_" for part in (aggregate, parts[-1])]
    return safe[0], safe[1]


class NatsRelay:
    def __init__(
        self,
        ledger: Any,
        database: Any,
        *,
        nats_url: str,
        stream: str = "PROPLEDGER",
        subject_prefix: str = "propledger.events",
        tracking_name: str = TRACKING_NAME,
        batch_size: int = 256,
        ack_timeout: float = 10.0,
        duplicate_window: float | None = None,
        watcher: LogWatcher | None = None,
        idle_interval: float = 1.0,
        before_commit: Callable[[int, int], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.database = database
        self.nats_url = nats_url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.tracking_name = tracking_name
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.duplicate_window = duplicate_window
        self.watcher = watcher
        self.idle_interval = idle_interval
        # For tests: called after a page's acks, before its position is committed.
        self.before_commit = before_commit
        self.published = 0
        self.duplicates = 0

    # Position ----------------------------------------------------------------------------

    def position(self) -> int:
        rows = self.database.query(
            "SELECT position FROM projection_tracking WHERE projection = ?",
            (self.tracking_name,),
        )
        return int(rows[0]["position"]) if rows else 0

    def _commit(self, start: int, end: int) -> bool:
        """Moves the position from `start` to `end`; False if another relay moved it."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO projection_tracking (projection, position) VALUES (?, 0) "
                "ON CONFLICT (projection) DO NOTHING",
                (self.tracking_name,),
            )
            select = "SELECT position FROM projection_tracking WHERE projection = ?"
            if self.database.dialect == "postgres":
                select += " FOR UPDATE"
            current = int(cursor.execute(select, (self.tracking_name,))[0]["position"])
            if current != start:
                return False
            cursor.execute(
                "UPDATE projection_tracking SET position = ? WHERE projection = ?",
                (end, self.tracking_name),
            )
        return True

    # Messages ----------------------------------------------------------------------------

    def _page(self, after: int) -> list[tuple[int, str, bytes]]:
        """Blocking: (position, subject, body) for the events after `after`."""
        notifications = self.ledger.recorder.select_notifications(
            start=after + 1, limit=self.batch_size
        )
        return [self._message(notification) for notification in notifications]

    def _message(self, notification: Any) -> tuple[int, str, bytes]:
        aggregate, name = subject_parts(notification.topic)
        view = event_view(self.ledger.mapper.to_domain_event(notification))
        body = {
            "position": notification.id,
            "stream_id": str(notification.originator_id),
            "aggregate": aggregate,
            **{key: view[key] for key in ("type", "version", "recorded_at", "actor", "data")},
        }
        subject = f"{self.subject_prefix}.{aggregate}.{name}"
        return notification.id, subject, json.dumps(body, separators=(",", ":")).encode()

    # NATS ----------------------------------------------------------------------------------

    async def ensure_stream(self, js: Any) -> None:
        """Creates the stream with subjects `<prefix>.>` unless it exists."""
        from nats.js.errors import NotFoundError

        subjects = [f"{self.subject_prefix}.>"]
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            options: dict[str, Any] = {"name": self.stream, "subjects": subjects}
            if self.duplicate_window is not None:
                options["duplicate_window"] = self.duplicate_window
            await js.add_stream(**options)
            logger.info("relay: created JetStream stream %s (%s)", self.stream, subjects[0])
            published = self.position()
            if published:
                # The position belongs to the database, not to the stream: a stream deleted
                # or lost after the relay published to it comes back empty, and the events
                # up to the position are not published again unless someone says so.
                logger.warning(
                    "relay: stream %s was created empty, but the relay's position is %d "
                    "(`%s` in projection_tracking): events 1-%d were published to a stream "
                    "that is gone and are not published again. To publish the whole log "
                    "into the new stream, stop the relay, delete that row, and start it.",
                    self.stream,
                    published,
                    self.tracking_name,
                    published,
                )
            return
        if subjects[0] not in (info.config.subjects or []):
            raise RuntimeError(
                f"the JetStream stream {self.stream} exists without subjects {subjects[0]}"
            )

    async def publish_page(self, js: Any) -> int:
        """Publishes the next page and commits its position; returns the events published."""
        start = await asyncio.to_thread(self.position)
        messages = await asyncio.to_thread(self._page, start)
        if not messages:
            return 0
        futures = []
        try:
            for position, subject, body in messages:
                futures.append(
                    await js.publish_async(
                        subject,
                        body,
                        headers={"Nats-Msg-Id": str(position), "Content-Type": "application/json"},
                    )
                )
            acks = await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        self._check_order(messages, acks)
        end = messages[-1][0]
        if self.before_commit is not None:
            self.before_commit(start, end)
        if not await asyncio.to_thread(self._commit, start, end):
            logger.info("relay: another relay moved the position past %s", start)
        self.published += len(messages)
        self.duplicates += sum(1 for ack in acks if ack.duplicate)
        return len(messages)

    def _check_order(self, messages: Sequence[tuple[int, str, bytes]], acks: Sequence[Any]) -> None:
        """New messages got increasing stream sequences (duplicates keep their old one)."""
        sequences = [ack.seq for ack in acks if not ack.duplicate]
        if sequences != sorted(sequences):
            raise RuntimeError(f"JetStream stored a page out of order: {sequences}")

    async def run(self, stop: asyncio.Event | None = None, *, once: bool = False) -> int:
        """Follows the log until `stop` (or, with `once`, until it is caught up).
        Broker or database errors are logged and retried with a growing pause; an error
        with `once` is raised. Returns the events published."""
        import nats

        stop = stop or asyncio.Event()
        backoff = 0.5
        while not stop.is_set():
            try:
                connection = await nats.connect(
                    self.nats_url,
                    name="propledger-relay",
                    connect_timeout=5,
                    max_reconnect_attempts=3,
                    reconnect_time_wait=1,
                    allow_reconnect=True,
                    error_cb=_log_nats_error,
                )
            except Exception as error:
                if once:
                    raise
                logger.warning("relay: cannot reach NATS at %s: %s", self.nats_url, error)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            try:
                js = connection.jetstream(
                    timeout=self.ack_timeout, publish_async_max_pending=self.batch_size * 2
                )
                await self.ensure_stream(js)
                backoff = 0.5
                await self._follow(js, stop, once=once)
                return self.published
            except Exception as error:
                if once:
                    raise
                logger.warning(
                    "relay: %s; resuming from the committed position",
                    str(error) or type(error).__name__,  # a NATS timeout says nothing
                )
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                await connection.close()
        return self.published

    async def _follow(self, js: Any, stop: asyncio.Event, *, once: bool) -> None:
        while not stop.is_set():
            if await self.publish_page(js) >= self.batch_size:
                continue
            if once:
                return
            position = await asyncio.to_thread(self.position)
            if self.watcher is not None:
                await self.watcher.wait_beyond_async(position, self.idle_interval)
            else:
                await _sleep_unless(stop, self.idle_interval)


async def _log_nats_error(error: Exception) -> None:
    logger.warning("relay: NATS: %s: %s", type(error).__name__, error)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def run_relay(database_url: str, settings: RelaySettings, *, once: bool, batch_size: int) -> int:
    """`propledger relay`: the process's ledger, tracking database and log watcher."""
    import signal

    from api.logwatch import log_watcher_for
    from ledger.app import PropLedger
    from ledger.migrate import migrate
    from projections.store import Database

    assert settings.propledger_nats_url
    migrate(database_url)
    ledger = PropLedger(database_url)
    database = Database(database_url)
    watcher = log_watcher_for(ledger.recorder, database_url).start()
    relay = NatsRelay(
        ledger,
        database,
        nats_url=settings.propledger_nats_url,
        stream=settings.propledger_nats_stream,
        subject_prefix=settings.propledger_nats_subject_prefix,
        batch_size=batch_size,
        watcher=watcher,
    )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        logger.info(
            "relay: publishing to %s, stream %s, from position %s (watcher: %s)",
            settings.propledger_nats_url,
            settings.propledger_nats_stream,
            relay.position(),
            watcher.mode,
        )
        return await relay.run(stop, once=once)

    try:
        published = asyncio.run(main())
    except Exception as error:  # only with --once: a follower retries by itself
        raise SystemExit(f"propledger relay: {type(error).__name__}: {error}") from None
    finally:
        watcher.stop()
        database.close()
        ledger.close()
    logger.info("relay: published %s events (%s duplicates dropped)", published, relay.duplicates)
    return 0
