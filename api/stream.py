"""`/v1/stream`: account updates, live, as Server-Sent Events (GET) or over a WebSocket.

Every stored event of a `TradingAccount` (and of a `Payout`) is one message: the log
`position`, the `account_id` and `trader_id` it belongs to, and the event as
`GET /v1/accounts/{id}/events` shows it (`type`, `version`, `recorded_at`, `actor`, `data`).

How a connection works: it has its own reader that pages through the notification log after
the connection's position (so a resumed connection reads exactly what it missed, from the
log itself, and the server keeps nothing per client but a bounded queue), keeps the events
that pass the filters, and puts them on the connection's queue; a writer sends them. When
the reader reaches the end of the log it waits on the process's `LogWatcher` (LISTEN/NOTIFY
on PostgreSQL, one poller on SQLite). Positions are visible in log order, so reading "after
my position" never skips an event and never repeats one.

Back-pressure: the reader never runs more than `queue_size` messages ahead of what the
client has taken. A client whose queue stays full for `stall_seconds` has fallen behind: it
is cut off with a last message (`slow_consumer`, with the position to resume after) and the
WebSocket is closed with 4408; a client that cannot take even that within
`close_grace_seconds` is dropped. Memory per client is bounded either way; the log is the
buffer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
import re
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol
from uuid import UUID

import anyio
from anyio.abc import TaskGroup
from eventsourcing.domain import CanMutateAggregate
from fastapi import FastAPI, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.auth import Principal, decode_token
from api.errors import ApiError
from api.logwatch import LogWatcher, log_watcher_for
from api.views import event_view
from domain.account import TradingAccount
from domain.ids import trader_id_to_uuid
from domain.payout import Payout

logger = logging.getLogger("propledger.stream")

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

ACCOUNT = "TradingAccount"
PAYOUT = "Payout"
_PREFIXES = {
    f"{TradingAccount.__module__}:{TradingAccount.__qualname__}.": ACCOUNT,
    f"{Payout.__module__}:{Payout.__qualname__}.": PAYOUT,
}
OWNERS_CACHED = 100_000
MAX_TYPES = 50
# WebSocket close codes: 4000 + the HTTP status an SSE request would get.
CLOSE_SLOW_CONSUMER = 4408
CLOSE_UNAVAILABLE = 1011
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_GOING_AWAY = 1001  # RFC 6455: the server is going down


def _event_names(aggregate: type) -> frozenset[str]:
    return frozenset(
        name
        for name, value in vars(aggregate).items()
        if inspect.isclass(value)
        and issubclass(value, CanMutateAggregate)
        and name not in ("Created", "Event")
    )


EVENT_TYPES = {ACCOUNT: _event_names(TradingAccount), PAYOUT: _event_names(Payout)}
KNOWN_TYPES = frozenset(
    name
    for aggregate, names in EVENT_TYPES.items()
    for name in {*names, *(f"{aggregate}.{name}" for name in names)}
)


# Configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    heartbeat_seconds: float = 15.0
    queue_size: int = 1000
    stall_seconds: float = 5.0
    close_grace_seconds: float = 5.0
    page_size: int = 500
    max_clients: int = 500
    # Log reads of all the streams at once, in worker threads of their own allowance (so
    # that many streams waking together never hold the threads HTTP requests run in).
    read_concurrency: int = 4
    # How long a reader at the end of the log waits before looking again by itself (the
    # watcher normally wakes it first).
    recheck_seconds: float = 5.0


class StreamSettings(BaseSettings):
    """`PROPLEDGER_STREAM_*` environment variables (or .env)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    propledger_stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    propledger_stream_queue_size: int = Field(default=1000, ge=1, le=100_000)
    propledger_stream_stall_seconds: float = Field(default=5.0, gt=0, le=300)
    propledger_stream_max_clients: int = Field(default=500, ge=1, le=100_000)

    def config(self) -> StreamConfig:
        return StreamConfig(
            heartbeat_seconds=self.propledger_stream_heartbeat_seconds,
            queue_size=self.propledger_stream_queue_size,
            stall_seconds=self.propledger_stream_stall_seconds,
            max_clients=self.propledger_stream_max_clients,
        )


# Who owns an event ---------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    account_id: str
    trader_id: str


def _owner_of_first_event(stream_id: UUID, event: Any) -> Owner | None:
    if isinstance(event, TradingAccount.Opened):
        return Owner(str(stream_id), event.trader_id)
    if isinstance(event, Payout.Requested):
        return Owner(event.account_id, event.trader_id)
    return None


class Owners:
    """The account and trader of an account's or a payout's stream, read from its first
    event once and kept (they never change), in a bounded LRU shared by every connection."""

    def __init__(self, ledger: Any, size: int = OWNERS_CACHED) -> None:
        self.ledger = ledger
        self.size = size
        self._items: OrderedDict[UUID, Owner] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, stream_id: UUID, owner: Owner) -> None:
        with self._lock:
            self._items[stream_id] = owner
            self._items.move_to_end(stream_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def of(self, stream_id: UUID) -> Owner | None:
        """Blocking: may read the stream's first event."""
        with self._lock:
            owner = self._items.get(stream_id)
        if owner is not None:
            return owner
        stored = self.ledger.recorder.select_events(stream_id, lte=1, limit=1)
        if not stored:
            return None
        owner = _owner_of_first_event(stream_id, self.ledger.mapper.to_domain_event(stored[0]))
        if owner is not None:
            self.remember(stream_id, owner)
        return owner


# Filters ---------------------------------------------------------------------------------


# What a token may see on the stream, as on the REST API (issue 9: "authorised like the
# REST API"): journal lines are the ledger's (`GET /v1/accounts/{id}/events` and
# `/v1/ledger/entries`: admin, finance, auditor); payouts are finance's, approvers' and
# auditors' (`GET /v1/payouts`), and a trader's own.
JOURNAL_ROLES = frozenset({"admin", "finance", "auditor"})
PAYOUT_ROLES = frozenset({"finance", "approver", "auditor"})


@dataclass(frozen=True)
class Filters:
    trader_id: str | None = None
    account_id: UUID | None = None
    types: frozenset[str] = frozenset()
    payouts: bool = True  # Payout events are sent
    journal: bool = True  # events keep their journal lines

    def wants_type(self, aggregate: str, name: str) -> bool:
        if aggregate == PAYOUT and not self.payouts:
            return False
        return not self.types or name in self.types or f"{aggregate}.{name}" in self.types

    def admits(self, owner: Owner) -> bool:
        if self.trader_id is not None and owner.trader_id != self.trader_id:
            return False
        return self.account_id is None or owner.account_id == str(self.account_id)

    def shown(self) -> dict[str, Any]:
        return {
            "trader_id": self.trader_id,
            "account_id": None if self.account_id is None else str(self.account_id),
            "types": sorted(self.types),
        }


@dataclass(frozen=True)
class StreamRequest:
    principal: Principal
    filters: Filters
    after: int | None  # None: from the log's end at connection time


def _parse_position(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    text = value.strip()
    # ASCII digits only: str.isdigit() admits "²" and "①", which int() refuses (a 500).
    if not (text.isascii() and text.isdigit()):
        raise ApiError(422, "invalid_position", f"{name} must be a log position (an integer >= 0)")
    if len(text) > 18:
        # Past any log: a position is a 64-bit integer in the store.
        raise ApiError(422, "invalid_position", f"{name} {text[:24]} is past the log's end")
    return int(text)


def _parse_types(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    names = [name.strip() for name in value.split(",") if name.strip()]
    if len(names) > MAX_TYPES:
        raise ApiError(422, "invalid_types", f"at most {MAX_TYPES} event types")
    unknown = sorted(set(names) - KNOWN_TYPES)
    if unknown:
        raise ApiError(
            422,
            "invalid_types",
            f"unknown event types: {', '.join(unknown)}",
            {"unknown": unknown, "known": sorted(KNOWN_TYPES)},
        )
    return frozenset(names)


def _principal(secret: str, authorization: str | None, token: str | None) -> Principal:
    """A Bearer header as for the REST API, or `?token=` (browsers' WebSocket and
    EventSource cannot set headers). Any role may stream; what it is sent depends on the
    role (`Filters.payouts`, `Filters.journal`)."""
    scheme, _, header_token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and header_token.strip():
        principal = decode_token(secret, header_token.strip())
    elif token:
        principal = decode_token(secret, token.strip())
    else:
        raise ApiError(
            401,
            "unauthenticated",
            "an 'Authorization: Bearer <JWT>' header (or a ?token= parameter) is required",
        )
    if not principal.roles:
        raise ApiError(403, "forbidden", "the token holds no role")
    return principal


def _stream_request(
    hub: StreamHub,
    principal: Principal,
    *,
    trader_id: str | None,
    account_id: str | None,
    types: str | None,
    after: str | None,
    last_event_id: str | None,
) -> StreamRequest:
    """Blocking (it may read an account's first event): validation and authorisation."""
    account: UUID | None = None
    if account_id:
        try:
            account = UUID(account_id)
        except ValueError:
            raise ApiError(422, "invalid_account_id", "account_id is not an account id") from None
    if trader_id is not None and not (0 < len(trader_id) <= 128):
        raise ApiError(422, "invalid_trader_id", "trader_id must be 1 to 128 characters")
    # An EventSource reconnecting sends Last-Event-ID with the URL it first opened: the
    # header is the newer position.
    position = _parse_position(last_event_id, "Last-Event-ID")
    if position is None:
        position = _parse_position(after, "after")
    payouts = principal.is_only_trader or bool(principal.roles & PAYOUT_ROLES)
    wanted = _parse_types(types)
    if not payouts and any(_is_payout_type(name) for name in wanted):
        raise ApiError(
            403,
            "forbidden",
            f"payout events stream to {', '.join(sorted(PAYOUT_ROLES))} and a trader's own",
        )
    filters = Filters(
        trader_id=trader_id or None,
        account_id=account,
        types=wanted,
        payouts=payouts,
        journal=bool(principal.roles & JOURNAL_ROLES),
    )
    owner = hub.owners.of(account) if account is not None else None
    if owner is not None and owner.account_id != str(account):
        owner = None  # a payout's id names its account's stream, not an account
    if position is not None and position > (head := hub.ledger.position()):
        # No event this log sent has that position: resuming there would skip, silently,
        # every event up to it.
        raise ApiError(
            422,
            "invalid_position",
            f"position {position} is past the log's end ({head})",
            {"position": position, "log_position": head},
        )
    if principal.is_only_trader:
        own = principal.trader_id
        if filters.trader_id is not None and filters.trader_id != own:
            raise ApiError(403, "forbidden", "a trader's token streams only its own trader")
        if account is not None and (owner is None or owner.trader_id != own):
            raise ApiError(403, "forbidden", "a trader's token streams only its own accounts")
        filters = dataclasses.replace(filters, trader_id=own)
    else:
        if account is not None and owner is None:
            raise ApiError(404, "unknown_account", f"account {account_id} not found")
        if filters.trader_id is not None and (
            trader_id_to_uuid(filters.trader_id) not in hub.ledger.repository
        ):
            raise ApiError(404, "unknown_trader", f"trader {filters.trader_id} not found")
    return StreamRequest(principal, filters, position)


# Reading the log -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    position: int
    text: str  # the JSON message


@dataclass(frozen=True)
class Page:
    messages: list[Outgoing]
    end: int  # the last position read (every event up to it has been looked at)
    full: bool  # the page was as long as asked: more may follow at once


def read_page(hub: StreamHub, filters: Filters, after: int, limit: int) -> Page:
    """Blocking: the messages for the events after `after` (at most `limit` read)."""
    ledger = hub.ledger
    notifications = ledger.recorder.select_notifications(start=after + 1, limit=limit)
    messages = []
    for notification in notifications:
        topic: str = notification.topic
        aggregate = _aggregate_of(topic)
        if aggregate is None:
            continue
        name = topic.rpartition(".")[2]
        if not filters.wants_type(aggregate, name):
            continue
        stream_id = notification.originator_id
        if aggregate == ACCOUNT and filters.account_id not in (None, stream_id):
            continue
        event = ledger.mapper.to_domain_event(notification)
        owner = _owner_of_first_event(stream_id, event)
        if owner is not None:
            hub.owners.remember(stream_id, owner)
        else:
            owner = hub.owners.of(stream_id)
        if owner is None or not filters.admits(owner):
            continue
        text = _message(notification.id, aggregate, owner, event, journal=filters.journal)
        messages.append(Outgoing(notification.id, text))
    end = notifications[-1].id if notifications else after
    return Page(messages, end, full=len(notifications) >= limit)


def _aggregate_of(topic: str) -> str | None:
    for prefix, aggregate in _PREFIXES.items():
        if topic.startswith(prefix):
            return aggregate
    return None


def _is_payout_type(name: str) -> bool:
    if name.startswith(f"{PAYOUT}."):
        return True
    return "." not in name and name in EVENT_TYPES[PAYOUT] and name not in EVENT_TYPES[ACCOUNT]


def _message(
    position: int, aggregate: str, owner: Owner, event: Any, *, journal: bool = True
) -> str:
    view = event_view(event)
    if not journal and isinstance(view["data"], dict):
        view["data"].pop("journal", None)
    message: dict[str, Any] = {
        "kind": "event",
        "position": position,
        "aggregate": aggregate,
        "account_id": owner.account_id,
        "trader_id": owner.trader_id,
    }
    if aggregate == PAYOUT:
        message["payout_id"] = str(event.originator_id)
    message.update({key: view[key] for key in ("type", "version", "recorded_at", "actor", "data")})
    return json.dumps(message, separators=(",", ":"))


# A connection --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    code: str
    message: str
    close_code: int


SLOW_CONSUMER = Ending(
    "slow_consumer",
    "the client fell behind: its queue stayed full; reconnect with after=resume_after",
    CLOSE_SLOW_CONSUMER,
)
UNAVAILABLE = Ending(
    "unavailable",
    "the event log cannot be read right now; reconnect with after=resume_after",
    CLOSE_UNAVAILABLE,
)
TOKEN_EXPIRED = Ending(
    "token_expired",
    "the token has expired; reconnect with a new token and after=resume_after",
    CLOSE_TOKEN_EXPIRED,
)

SHUTTING_DOWN = Ending(
    "shutting_down",
    "the server is stopping; reconnect (to another server) with after=resume_after",
    CLOSE_GOING_AWAY,
)


class Transport(Protocol):
    async def ready(self, position: int, filters: Filters) -> None: ...
    async def event(self, item: Outgoing) -> None: ...
    async def heartbeat(self, position: int) -> None: ...
    async def end(self, ending: Ending, position: int) -> None: ...
    async def wait_closed(self) -> None:
        """Returns when the client has gone."""


_WAKE = Outgoing(-1, "")  # puts a writer waiting on an empty queue back to its checks
# What sending to (or receiving from) a client that has gone raises, depending on the server.
_CLIENT_GONE = (
    OSError,
    RuntimeError,
    WebSocketDisconnect,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


@dataclass
class StreamSession:
    hub: StreamHub
    filters: Filters
    start: int
    # Every event that passes the filters, up to `safe_position`, has been handed to the
    # client: the position to resume after.
    safe_position: int = 0
    scanned: int = 0
    ending: Ending | None = None
    aborted: bool = False
    # The token's `exp`: the stream ends then, as a REST request would be refused.
    expires_at: float | None = None
    queue: asyncio.Queue[Outgoing] = field(init=False)

    def __post_init__(self) -> None:
        self.safe_position = self.scanned = self.start
        self.queue = asyncio.Queue(self.hub.config.queue_size)

    @property
    def config(self) -> StreamConfig:
        return self.hub.config

    async def run(self, transport: Transport) -> None:
        """Until the server ends the stream, the client goes, or the server drops it."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._read, group)
            group.start_soon(self._watch_client, transport, group)
            if self.expires_at is not None:
                group.start_soon(self._expire, self.expires_at, group)
            group.start_soon(self._until_shutdown, group)
            try:
                await self._write(transport)
            except _CLIENT_GONE as error:
                logger.debug("stream: the client went away mid-send: %r", error)
            group.cancel_scope.cancel()

    async def _expire(self, at: float, group: TaskGroup) -> None:
        await anyio.sleep(max(0.0, at - time.time()))
        if self.ending is None:
            await self._end(TOKEN_EXPIRED, group)

    async def _until_shutdown(self, group: TaskGroup) -> None:
        await self.hub.closing.wait()
        if self.ending is None:
            await self._end(SHUTTING_DOWN, group)

    async def _watch_client(self, transport: Transport, group: TaskGroup) -> None:
        try:
            await transport.wait_closed()
        except _CLIENT_GONE as error:
            logger.debug("stream: the client is gone: %r", error)
        group.cancel_scope.cancel()

    async def _read(self, group: TaskGroup) -> None:
        position = self.start
        watcher = self.hub.watcher
        while True:
            try:
                page = await anyio.to_thread.run_sync(
                    read_page,
                    self.hub,
                    self.filters,
                    position,
                    self.config.page_size,
                    limiter=self.hub.read_limiter,
                )
            except Exception as error:
                logger.warning("stream: reading the log failed: %s", error)
                await self._end(UNAVAILABLE, group)
                return
            for item in page.messages:
                if not await self._enqueue(item):
                    await self._end(SLOW_CONSUMER, group)
                    return
            position = self.scanned = page.end
            if not page.full:
                await watcher.wait_beyond_async(position, self.config.recheck_seconds)

    async def _enqueue(self, item: Outgoing) -> bool:
        """False when the queue stays full for `stall_seconds`: the client fell behind."""
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            pass
        try:
            await asyncio.wait_for(self.queue.put(item), self.config.stall_seconds)
        except TimeoutError:
            return False
        return True

    async def _end(self, ending: Ending, group: TaskGroup) -> None:
        self.ending = ending
        if not self.queue.full():
            self.queue.put_nowait(_WAKE)
        # The writer says goodbye as soon as its current send returns; a client that does
        # not even take that is dropped.
        await anyio.sleep(self.config.close_grace_seconds)
        self.aborted = True
        group.cancel_scope.cancel()

    async def _write(self, transport: Transport) -> None:
        await transport.ready(self.start, self.filters)
        while True:
            if self.ending is not None:
                # What is still queued is dropped: the client resumes from safe_position.
                await transport.end(self.ending, self.safe_position)
                return
            try:
                item = await asyncio.wait_for(self.queue.get(), self.config.heartbeat_seconds)
            except TimeoutError:
                # The reader sets `scanned` right after queueing a page's messages; with the
                # queue empty now, each of them has been taken and sent.
                if self.queue.empty():
                    self.safe_position = max(self.safe_position, self.scanned)
                await transport.heartbeat(self.safe_position)
                continue
            if item is _WAKE:
                continue
            await transport.event(item)
            self.safe_position = item.position


# Transports ------------------------------------------------------------------------------


class _ServerSentEvents:
    def __init__(self, send: Send, receive: Receive) -> None:
        self._send = send
        self._receive = receive

    async def _chunk(self, text: str) -> None:
        await self._send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    async def start(self) -> None:
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )

    async def ready(self, position: int, filters: Filters) -> None:
        # An `id:` without data sets the client's Last-Event-ID without an event.
        await self._chunk(f": ready\nretry: 2000\nid: {position}\n\n")

    async def event(self, item: Outgoing) -> None:
        await self._chunk(f"id: {item.position}\ndata: {item.text}\n\n")

    async def heartbeat(self, position: int) -> None:
        await self._chunk(f": keepalive\nid: {position}\n\n")

    async def end(self, ending: Ending, position: int) -> None:
        text = json.dumps(_ending_message(ending, position), separators=(",", ":"))
        await self._chunk(f"event: cutoff\nid: {position}\ndata: {text}\n\n")

    async def finish(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def wait_closed(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


class _WebSocketTransport:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def ready(self, position: int, filters: Filters) -> None:
        await self._json({"kind": "ready", "position": position, "filters": filters.shown()})

    async def event(self, item: Outgoing) -> None:
        await self.websocket.send_text(item.text)

    async def heartbeat(self, position: int) -> None:
        await self._json({"kind": "heartbeat", "position": position})

    async def end(self, ending: Ending, position: int) -> None:
        await self._json(_ending_message(ending, position))
        await self.websocket.close(ending.close_code, ending.code)

    async def wait_closed(self) -> None:
        while (await self.websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def _json(self, value: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(value, separators=(",", ":")))


def _ending_message(ending: Ending, position: int) -> dict[str, Any]:
    return {
        "kind": "cutoff",
        "code": ending.code,
        "message": ending.message,
        "resume_after": position,
    }


# Tokens in URLs ----------------------------------------------------------------------------

# Any query parameter naming a token (`token`, `access_token`, `TOKEN`...), and anything
# shaped like a JWT wherever it appears.
_TOKEN_IN_QUERY = re.compile(r"([?&][^=&\s\"']*token=)[^&\s\"']+", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _redacted(text: str) -> str:
    return _JWT.sub("[redacted]", _TOKEN_IN_QUERY.sub(r"\1[redacted]", text))


class _RedactTokens(logging.Filter):
    """`?token=` must not reach a log: uvicorn logs request paths with their query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _redacted(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _redacted(record.msg)
        return True


def redact_tokens_in_server_logs() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        target = logging.getLogger(name)
        if not any(isinstance(existing, _RedactTokens) for existing in target.filters):
            target.addFilter(_RedactTokens())


# The hub and the routes -------------------------------------------------------------------


class StreamHub:
    """Per app: the configuration, the log watcher, the owners cache, the open streams."""

    def __init__(self, config: StreamConfig | None = None) -> None:
        self.config = config or StreamSettings().config()
        self.ledger: Any = None
        self.owners: Owners = Owners(None)
        self.watcher: LogWatcher = LogWatcher(lambda: 0)
        self.open_streams = 0
        self._read_limiter: anyio.CapacityLimiter | None = None
        self._closing: asyncio.Event | None = None

    @property
    def read_limiter(self) -> anyio.CapacityLimiter:
        if self._read_limiter is None:  # made inside the event loop
            self._read_limiter = anyio.CapacityLimiter(self.config.read_concurrency)
        return self._read_limiter

    @property
    def closing(self) -> asyncio.Event:
        """Set when the server is stopping: every stream ends with a cutoff."""
        if self._closing is None:  # made inside the event loop
            self._closing = asyncio.Event()
        return self._closing

    def close_streams(self) -> None:
        """Ends every open stream with a `shutting_down` cutoff (in the event loop)."""
        self.closing.set()

    def end_streams_on_exit_signals(self) -> None:
        """Called in the event loop at start-up: SIGTERM and SIGINT, as the server handles
        them, end every open stream first with a cutoff, so clients learn where to resume
        and the server need not wait out its graceful-shutdown timeout, then cancel them.
        Only in the main thread (where the server listens for signals); the server
        restores its own handlers when it stops."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)
            if not callable(previous):
                continue

            def handler(
                signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous
            ) -> None:
                loop.call_soon_threadsafe(self.close_streams)
                previous(signum, frame)

            signal.signal(number, handler)

    def start(self, ledger: Any, database_url: str) -> None:
        redact_tokens_in_server_logs()
        self.ledger = ledger
        self.owners = Owners(ledger)
        self.watcher = log_watcher_for(ledger.recorder, database_url).start()

    def stop(self) -> None:
        self.watcher.stop()

    def claim(self) -> None:
        if self.open_streams >= self.config.max_clients:
            raise ApiError(
                503,
                "too_many_streams",
                "this server holds as many streams as it may; retry shortly",
                headers={"Retry-After": "5"},
            )
        self.open_streams += 1

    def release(self) -> None:
        self.open_streams -= 1

    async def open(
        self, secret: str, authorization: str | None, token: str | None, **query: str | None
    ) -> StreamSession:
        """Authorises and validates a stream request; the session to run (claimed)."""
        principal = _principal(secret, authorization, token)
        request = await anyio.to_thread.run_sync(
            functools.partial(_stream_request, self, principal, **query)
        )
        if request.after is not None:
            start = request.after
        else:  # live: from the log's end now
            start = int(await anyio.to_thread.run_sync(self.ledger.position))
        self.claim()
        return StreamSession(self, request.filters, start, expires_at=principal.expires_at)


class EventStreamResponse(Response):
    """A `text/event-stream` reply that runs a stream session until either side ends it."""

    media_type = "text/event-stream"

    def __init__(self, hub: StreamHub, session: StreamSession) -> None:
        super().__init__(status_code=200)
        self.hub = hub
        self.session = session

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        transport = _ServerSentEvents(send, receive)
        try:
            await transport.start()
            await self.session.run(transport)
            if not self.session.aborted:
                await transport.finish()
        except _CLIENT_GONE as error:
            logger.debug("stream: the client went away: %r", error)
        finally:
            self.hub.release()


def stream_routes(app: FastAPI, config: StreamConfig | None = None) -> StreamHub:
    """Registers `GET /v1/stream` (SSE) and the WebSocket on the same path. The app's
    lifespan calls `app.state.streams.start(ledger, url)` and `.stop()`."""
    hub = StreamHub(config)
    app.state.streams = hub

    # Not in the OpenAPI schema: an endless reply is not something a schema-driven client or
    # fuzzer can call, and WebSockets have no OpenAPI form. README.md documents both.
    @app.get("/v1/stream", tags=["stream"], include_in_schema=False)
    async def stream_sse(
        request: Request,
        trader_id: Annotated[str | None, Query(max_length=128)] = None,
        account_id: Annotated[str | None, Query(max_length=64)] = None,
        types: Annotated[str | None, Query(max_length=2000)] = None,
        after: Annotated[str | None, Query(max_length=20)] = None,
        token: Annotated[str | None, Query(max_length=4096)] = None,
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> Response:
        hub: StreamHub = request.app.state.streams
        session = await hub.open(
            request.app.state.jwt_secret,
            request.headers.get("authorization"),
            token,
            trader_id=trader_id,
            account_id=account_id,
            types=types,
            after=after,
            last_event_id=last_event_id,
        )
        return EventStreamResponse(hub, session)

    @app.websocket("/v1/stream")
    async def stream_websocket(websocket: WebSocket) -> None:
        hub: StreamHub = websocket.app.state.streams
        # Accepted first, so that a refusal's close code reaches a browser (a handshake
        # refused before accept shows only as a failed connection).
        await websocket.accept()
        query = websocket.query_params
        try:
            session = await hub.open(
                websocket.app.state.jwt_secret,
                websocket.headers.get("authorization"),
                query.get("token"),
                trader_id=query.get("trader_id"),
                account_id=query.get("account_id"),
                types=query.get("types"),
                after=query.get("after"),
                last_event_id=None,
            )
        except ApiError as error:
            body = {"code": error.code, "message": error.message, "details": error.details}
            await websocket.send_text(json.dumps({"kind": "error", "error": body}))
            await websocket.close(4000 + error.status, error.code)
            return
        try:
            await session.run(_WebSocketTransport(websocket))
        finally:
            hub.release()

    return hub
