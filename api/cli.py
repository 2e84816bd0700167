"""The `propledger` command line.

It lives in `api/` because it wires every layer together (the HTTP app, the ledger and
the projection workers), and only `api` may import all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from ledger.config import Settings, hide_password, sqlite_path


class ConfigurationError(Exception):
    """The service cannot start as configured (its settings, its address): said in one
    line naming the command, exit status 1."""


# Long-running services: Ctrl-C stops them on their own terms (exit 0), not `_Interrupt`.
SERVICES = ("serve", "project", "relay")


class _Interrupt:
    """Ctrl-C as `main` sees it. Python raises KeyboardInterrupt wherever the signal lands,
    and when that is a finaliser (a generator or connection closed by the garbage
    collector) the exception is printed as "ignored" and the command runs on to its end,
    exiting 0. So the handler also notes it: progress callbacks raise it again, and a
    command that returns after it answers "interrupted" (130) all the same."""

    seen = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.seen = True
        raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        """Raises KeyboardInterrupt again once Ctrl-C was seen (a progress callback)."""
        if cls.seen:
            raise KeyboardInterrupt


def _check_env_file(path: str = ".env") -> None:
    """python-dotenv skips a line it cannot read with a logged warning, so a setting with
    an unclosed quote was left out and its default used: the embedded SQLite store served
    in production instead of the PostgreSQL one the file named. Such a line stops the
    command (its number only: the line may hold a secret)."""
    from dotenv.parser import parse_stream

    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        unreadable = [binding.original.line for binding in parse_stream(handle) if binding.error]
    if unreadable:
        lines = ", ".join(str(number) for number in unreadable)
        raise ConfigurationError(
            f"invalid configuration: ./{path} line {lines} cannot be read "
            "(an unclosed quote? each line is NAME=value)"
        )


def _settings() -> Settings:
    settings: Settings = _validated(Settings)
    return settings


def _validated(kind: Any) -> Any:
    """`kind()` (a settings class), its problems summed up on one line."""
    from pydantic import ValidationError

    try:
        _check_env_file()
        return kind()
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in item['loc']).upper()}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        ]
        message = hide_password("; ".join(problems))
        raise ConfigurationError(f"invalid configuration: {message}") from None
    except ConfigurationError:
        raise
    except UnicodeDecodeError as error:
        # Only a file is decoded: the environment is text already.
        raise ConfigurationError(
            f"invalid configuration: ./.env is not UTF-8 text ({error.reason} at byte "
            f"{error.start})"
        ) from None
    except Exception as error:
        raise ConfigurationError(f"invalid configuration: {hide_password(str(error))}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.stream import StreamSettings
    from ledger.migrate import migrate

    # uvicorn shuts down gracefully on SIGTERM, restores the handler it found, then raises
    # the signal again: with the default handler the process died of it (status 143),
    # not the documented 0. Found this way, SIGTERM ends the process with 0 after the
    # graceful shutdown, and stops start-up (migrations, `--demo`) as cleanly.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = _settings()
    _validated(StreamSettings)  # read again by the app: bad values stop it before it starts
    try:
        settings.jwt_secret()
    except ValueError as error:
        raise ConfigurationError(f"invalid configuration: {error}") from None
    if args.demo and settings.is_production:
        # Demo staff tokens signed with the production key would let anyone reading the
        # logs request and approve payouts.
        raise ConfigurationError("--demo is for development: PROPLEDGER_ENV is production")
    _check_can_listen(args.host, args.port)
    applied = migrate(settings.database_url)
    if applied:
        print(f"propledger: applied migrations {', '.join(applied)}", file=sys.stderr)
    if args.demo:
        _serve_demo(settings, _base_url(args.host, args.port))
    where = sqlite_path(settings.database_url)
    store = f"SQLite file {where}" if where else "PostgreSQL"
    print(
        f"propledger: serving on {_base_url(args.host, args.port)} (docs at /docs), "
        f"event store: {store}, projections: {settings.propledger_projections}",
        file=sys.stderr,
    )
    # Streams (/v1/stream) never end by themselves: on shutdown they get a few seconds, then
    # are cancelled (clients resume elsewhere from their last position).
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": "info",
        "timeout_graceful_shutdown": 5,
    }
    if args.workers > 1:
        # Several processes on one port, each building the app from the environment; the
        # API is stateless and in-process projection workers may run in each (a page
        # commits only once, whichever process gets there first).
        uvicorn.run("api.cli:served_app", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


def _exit_cleanly(signum: int, frame: Any) -> None:
    sys.exit(0)


def _check_can_listen(host: str, port: int) -> None:
    """Binds the address once before anything is printed or migrated, so a port already in
    use (or a host that is not this machine's) is one plain error, not a "serving on" line
    followed by the server's own failure."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        if family == socket.AF_INET6:  # asyncio's servers listen on IPv6 alone
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {error.strerror or error}"
            ) from None


def _base_url(host: str, port: int) -> str:
    """Where `serve` answers, as a URL: an IPv6 address goes in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_token(args: argparse.Namespace) -> int:
    from api.auth import mint_token

    if "trader" in args.roles and not args.trader_id:
        args.parser.error("a trader token needs --trader-id")  # exit 2, before any key is made
    settings = _settings()
    try:
        token = mint_token(
            settings.jwt_secret(),
            sub=args.sub,
            roles=args.roles,
            trader_id=args.trader_id,
            ttl=args.ttl,
        )
    except ValueError as error:
        raise SystemExit(f"propledger token: {error}") from None
    print(token)
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from ledger.migrate import migrate

    applied = migrate(_settings().database_url)
    print(f"applied: {', '.join(applied)}" if applied else "the schema is up to date")
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from api.logwatch import log_watcher_for
    from ledger.app import PropLedger
    from projections.registry import default_projections
    from projections.runner import ProjectionRunner
    from projections.store import Database

    signal.signal(signal.SIGTERM, _exit_cleanly)  # a rebuild under way rolls back; 0
    settings = _settings()
    # A worker pointed at a database with no store (a mistyped URL) would create one and
    # follow its empty log for ever: it says so instead. The schema is the migration's job.
    _existing_store("project", settings.database_url)
    ledger = PropLedger(settings.database_url)
    database = Database(settings.database_url)
    runner = ProjectionRunner(ledger, database, default_projections(), batch_size=args.batch_size)
    try:
        if args.rebuild:
            for projection in runner.projections:
                started = time.monotonic()
                count = runner.rebuild(projection)
                elapsed = time.monotonic() - started
                print(
                    f"rebuilt {projection.name}: {count} events in {elapsed:.1f}s", file=sys.stderr
                )
        if args.once:
            count = runner.catch_up()
            print(f"caught up: {count} events", file=sys.stderr)
            return 0
        print(
            f"propledger project: following the log (position {ledger.position()})", file=sys.stderr
        )
        # Woken by LISTEN/NOTIFY on PostgreSQL; on SQLite the watcher polls.
        watcher = log_watcher_for(ledger.recorder, settings.database_url).start()
        watcher.subscribe(lambda _latest: runner.wake())
        listening = watcher.mode == "listen"
        idle = max(args.poll_interval, 1.0) if listening else args.poll_interval

        def stop(*_: Any) -> None:
            runner.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            runner.run_forever(idle_interval=idle)
        finally:
            watcher.stop()
        return 0
    finally:
        database.close()
        ledger.close()


def cmd_relay(args: argparse.Namespace) -> int:
    """Publishes every stored event to NATS JetStream (api/relay.py)."""
    from api.relay import RelaySettings, run_relay

    settings = _settings()
    relay_settings = _validated(RelaySettings)
    if not relay_settings.propledger_nats_url:
        raise SystemExit(
            "propledger relay: PROPLEDGER_NATS_URL is not set (e.g. nats://127.0.0.1:4222); "
            "the relay publishes the event log to NATS JetStream and needs a broker"
        )
    return run_relay(
        settings.database_url, relay_settings, once=args.once, batch_size=args.batch_size
    )


def cmd_report_payouts(args: argparse.Namespace) -> int:
    import json

    from api.app import parse_range
    from ledger.app import PropLedger
    from projections.payouts import payout_report, report_csv
    from projections.registry import default_projections
    from projections.runner import ProjectionRunner
    from projections.store import Database

    settings = _settings()
    _existing_store("report payouts", settings.database_url)
    ledger = PropLedger(settings.database_url)
    database = Database(settings.database_url)
    try:
        start, end = parse_range(args.start, args.end)
        # The report reflects every event recorded before it was asked for.
        ProjectionRunner(ledger, database, default_projections()).catch_up()
        report = payout_report(database, start, end)
    except Exception as error:
        raise SystemExit(f"propledger report payouts: {error}") from None
    finally:
        database.close()
        ledger.close()
    text = report_csv(report) if args.format == "csv" else json.dumps(report, indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        print(f"wrote {len(report['rows'])} payouts to {args.output}", file=sys.stderr)
    return 0


def _existing_store(label: str, database_url: str) -> None:
    """Refuses a URL that names no propledger store (a mistyped path, an empty database):
    reading one would create it and report an empty, clean ledger."""
    from ledger.migrate import migrate, store_exists

    if not store_exists(database_url):
        where = sqlite_path(database_url) or hide_password(database_url)
        raise SystemExit(
            f"propledger {label}: no propledger store at {where} (PROPLEDGER_DATABASE_URL); "
            "`propledger migrate` or `propledger serve` creates one"
        )
    migrate(database_url)  # an existing store is brought up to this version's schema


def _progress(label: str) -> Any:
    """A progress line on standard error, rewritten in place on a terminal."""
    terminal = sys.stderr.isatty()
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        _Interrupt.check()
        rate = done / max(time.monotonic() - started, 1e-6)
        line = f"{label}: {done}/{total} events ({rate:,.0f}/s)"
        print(("\r" + line) if terminal else line, end="" if terminal else "\n", file=sys.stderr)
        if terminal and done >= total:
            print(file=sys.stderr)

    return show


def _anchor(text: str) -> tuple[int, str]:
    """`--anchor POSITION:SHA256HEX`, checked by the parser (a bad option: exit 2)."""
    position, _, digest = text.partition(":")
    if not position.isdigit() or len(digest) != 64 or not _is_hex(digest):
        raise argparse.ArgumentTypeError(f"takes POSITION:SHA256HEX, got {text!r}")
    return int(position), digest.lower()


def _is_hex(text: str) -> bool:
    return all(character in "0123456789abcdefABCDEF" for character in text)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    import json

    from api.audit import verify
    from ledger.app import PropLedger
    from projections.registry import default_projections
    from projections.runner import ProjectionRunner
    from projections.store import Database

    settings = _settings()
    anchor = args.anchor
    _existing_store("audit verify", settings.database_url)
    ledger = PropLedger(settings.database_url)
    database = Database(settings.database_url)
    try:
        # Catch the live projections up first: nothing else may be running them.
        try:
            ProjectionRunner(ledger, database, default_projections()).catch_up()
        except Exception as error:
            print(f"propledger audit: projections cannot catch up: {error}", file=sys.stderr)
        result = verify(
            ledger,
            settings.database_url,
            database,
            default_projections(),
            anchor=anchor,
            progress=_progress("chain"),
            say=lambda text: print(f"propledger audit: {text}", file=sys.stderr),
        )
    finally:
        database.close()
        ledger.close()
    print(json.dumps(result, indent=2, default=str))
    chain = result["chain"]
    broken = chain["first_broken_link"]
    if broken:
        print(f"FAIL chain: {broken['message']}", file=sys.stderr)
    for finding in result["snapshots"]["findings"][:10]:
        print(f"FAIL snapshots: {finding['message']}", file=sys.stderr)
    for name, outcome in result["projections"].items():
        if outcome["differences"]:
            print(f"FAIL {name}: {len(outcome['differences'])} differences", file=sys.stderr)
    head = chain["head"]
    ended = "no chain head yet" if head["position"] is None else "chain head"
    where = "" if head["position"] is None else f" {head['position']}:{head['hash']}"
    print(
        f"{'OK' if result['ok'] else 'FAILED'}: {chain['events']} events, {ended}{where}",
        file=sys.stderr,
    )
    return 0 if result["ok"] else 1


def cmd_export(args: argparse.Namespace) -> int:
    from ledger.audit import export_log

    settings = _settings()
    _existing_store("export", settings.database_url)
    if args.output == "-":
        count = export_log(settings.database_url, sys.stdout, progress=_progress("export"))
    else:
        # Written beside the target and renamed at the end: a failed export leaves no
        # file that looks complete.
        partial = f"{args.output}.partial"
        if os.path.isdir(args.output):
            raise SystemExit(f"propledger export: {args.output} is a directory, not a file")
        try:
            try:
                handle = open(partial, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as error:  # named after the file asked for
                raise OSError(error.errno, error.strerror, args.output) from None
            with handle:
                count = export_log(settings.database_url, handle, progress=_progress("export"))
            os.replace(partial, args.output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
    print(f"exported {count} events", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ledger.app import PropLedger
    from ledger.audit import ReplayError, replay_log
    from ledger.migrate import migrate
    from projections.registry import default_projections
    from projections.runner import ProjectionRunner
    from projections.store import Database

    settings = _settings()
    try:
        # Opened before anything is created: a missing file leaves no empty store behind.
        handle = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        raise SystemExit(f"propledger replay: {error}") from None
    try:
        # The store's own errors (an unwritable directory...) are its own, not the file's.
        migrate(settings.database_url)
        read_models = [table for p in default_projections() for table, _ in p.tables]
        try:
            count = replay_log(
                settings.database_url,
                handle,
                read_models=read_models,
                progress=_progress("replay"),
            )
        except ReplayError as error:
            raise SystemExit(f"propledger replay: {error}") from None
        except (OSError, ValueError) as error:
            source = "standard input" if args.input == "-" else args.input
            raise SystemExit(
                f"propledger replay: {source} is not a propledger export (JSON Lines): {error}"
            ) from None
    finally:
        if handle is not sys.stdin:
            handle.close()
    ledger = PropLedger(settings.database_url)
    database = Database(settings.database_url)
    try:
        projected = ProjectionRunner(ledger, database, default_projections()).catch_up()
    finally:
        database.close()
        ledger.close()
    print(f"replayed {count} events; projections built from {projected} events", file=sys.stderr)
    return 0


def _demo_secret(settings: Settings) -> tuple[str, str]:
    """The secret the demo signs its Stripe webhooks with, and where it came from."""
    import secrets

    if settings.stripe_webhook_secret:
        return settings.stripe_webhook_secret, "signed with STRIPE_WEBHOOK_SECRET"
    return (
        "whsec_demo_" + secrets.token_hex(24),
        "signed with a one-off demo secret: STRIPE_WEBHOOK_SECRET is not set",
    )


def _demo_progress() -> Any:
    """A bar on standard error, redrawn in place on a terminal; elsewhere a line per tenth."""
    terminal = sys.stderr.isatty()
    shown: dict[str, int] = {}

    def show(phase: str, done: int, total: int, note: str) -> None:
        _Interrupt.check()
        fraction = done / total if total else 1.0
        percent = f"{int(fraction * 100):3d}%"  # floored: 100% only when done
        if terminal:
            filled = int(fraction * 30)
            bar = "#" * filled + "-" * (30 - filled)
            line = f"\rdemo {phase:<11} [{bar}] {percent} {note}"
            print(f"{line:<100}", end="", file=sys.stderr, flush=True)
            if done >= total:
                print(file=sys.stderr)
            return
        tenth = int(fraction * 10)
        if shown.get(phase, -1) < tenth:
            shown[phase] = tenth
            print(f"demo {phase}: {percent} {note}".rstrip(), file=sys.stderr, flush=True)

    return show


def _demo_tokens(settings: Settings, base_url: str) -> list[str]:
    """Ready-to-paste console sign-in tokens for the demo's staff (valid for a day)."""
    from api.auth import mint_token
    from api.demo import USERS

    secret = settings.jwt_secret()
    lines = [f"console: {base_url}/console (paste a token to sign in; each is valid for a day)"]
    for sub, role in USERS:
        token = mint_token(secret, sub=sub, roles=[role], ttl=86_400)
        lines.append(f"  {role:<9} {sub:<7} {token}")
    return lines


def cmd_demo(args: argparse.Namespace) -> int:
    from api.demo import (
        APPROVER,
        AUDITOR,
        FINANCE,
        DemoError,
        DemoOptions,
        build_demo,
        parse_until,
    )

    settings = _settings()
    if settings.is_production:
        raise ConfigurationError("demo is for development: PROPLEDGER_ENV is production")
    secret, source = _demo_secret(settings)
    try:
        until = parse_until(args.until) if args.until else None
        options = DemoOptions(args.traders, args.days, args.seed, until)
        summary = build_demo(
            settings.database_url,
            options,
            webhook_secret=secret,
            secret_source=source,
            progress=_demo_progress(),
        )
    except DemoError as error:
        print(f"propledger demo: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    steps = [
        ("propledger serve", "then open http://127.0.0.1:8000/console, paste a token:"),
        (f"propledger token --sub {FINANCE} --roles finance --ttl 86400",
         "finance: the payout queue, reports"),
        (f"propledger token --sub {APPROVER} --roles approver --ttl 86400",
         f"approver: approves what {FINANCE} or a trader asked for"),
        (f"propledger token --sub {AUDITOR} --roles auditor --ttl 86400",
         "auditor: timelines, events, verify"),
        ("propledger audit verify", "the hash chain and every projection against a replay"),
    ]  # fmt: skip
    width = max(len(command) for command, _ in steps)
    print("look at it:")
    for command, what in steps:
        print(f"  {command:<{width}}  {what}")
    return 0


def _serve_demo(settings: Settings, base_url: str) -> None:
    """`serve --demo`: a small firm into an empty store (a store with events is served as
    it is), then tokens to sign in with."""
    from api.demo import SERVE_DAYS, SERVE_TRADERS, DemoError, DemoOptions, build_demo

    secret, source = _demo_secret(settings)
    try:
        summary = build_demo(
            settings.database_url,
            DemoOptions(SERVE_TRADERS, SERVE_DAYS),
            webhook_secret=secret,
            secret_source=source,
            progress=_demo_progress(),
        )
        print("\n".join(summary.lines()), file=sys.stderr)
    except DemoError as error:
        # Development only (production refuses --demo): tokens to sign in again.
        print(f"propledger: no demo built ({error}); serving the store as it is", file=sys.stderr)
    print("\n".join(_demo_tokens(settings, base_url)), file=sys.stderr, flush=True)


def _port(text: str) -> int:
    port = _integer(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1-65535, not {port}")
    return port


def _period(field: str) -> Any:
    """`--from`/`--to` checked by the parser (a bad option: exit 2, before the store is
    touched); kept as text, read again with the period (a `to` before its `from`: 1)."""

    def check(text: str) -> str:
        from api.app import parse_period

        try:
            parse_period(text, field, end=field == "to")
        except Exception as error:  # ApiError (a date) or InvalidInput (an instant)
            raise argparse.ArgumentTypeError(str(error)) from None
        return text

    return check


def _relay_batch(text: str) -> int:
    number = _positive(text)
    if number > 10_000:
        raise argparse.ArgumentTypeError(f"must be at most 10000, not {number}")
    return number


def _positive(text: str) -> int:
    number = _integer(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)  # a polling interval in seconds, not money
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _nonblank(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


def _roles(text: str) -> list[str]:
    """`--roles`: known roles, comma-separated (refused here, before a development key is
    generated for a token that would never be printed)."""
    from api.auth import ROLES

    roles = [role.strip() for role in text.split(",") if role.strip()]
    if not roles:
        raise argparse.ArgumentTypeError("names no role")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown roles: {', '.join(unknown)}; roles are {', '.join(ROLES)}"
        )
    return roles


def _token_name(text: str) -> str:
    """A token's `sub` or `trader_id`: what the API would accept in one."""
    from api.auth import name_problem

    problem = name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    if text != text.strip():
        # Not stripped quietly: " X" is another trader than "X" to the API.
        raise argparse.ArgumentTypeError("must not start or end with whitespace")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="propledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations and serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument(
        "--workers", type=_positive, default=1, help="API processes on this port (one per core)"
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="first build a small demo firm into an empty store, print sign-in tokens",
    )
    serve.set_defaults(run=cmd_serve)

    demo = commands.add_parser(
        "demo", help="build a realistic demo firm (traders, trades, payouts) in an empty store"
    )
    demo.add_argument("--traders", type=int, default=500, help="traders who buy challenges")
    demo.add_argument("--days", type=int, default=60, help="calendar days of history")
    demo.add_argument("--seed", type=int, default=7, help="the same seed builds the same firm")
    demo.add_argument(
        "--until", default=None, help="end of the history: a date or RFC 3339 instant (now)"
    )
    demo.set_defaults(run=cmd_demo)

    token = commands.add_parser("token", help="print a signed bearer token")
    token.add_argument(
        "--sub", required=True, type=_token_name, help="who the token names (recorded as actor)"
    )
    token.add_argument(
        "--roles", required=True, type=_roles, help="comma-separated: admin,finance,..."
    )
    token.add_argument(
        "--trader-id", default=None, type=_token_name, help="for trader tokens: the trader's id"
    )
    token.add_argument("--ttl", type=_positive, default=3600, help="seconds until it expires")
    token.set_defaults(run=cmd_token, parser=token)

    migrate_cmd = commands.add_parser("migrate", help="apply pending schema migrations")
    migrate_cmd.set_defaults(run=cmd_migrate)

    project = commands.add_parser("project", help="run the projection workers")
    project.add_argument("--once", action="store_true", help="catch up, then exit")
    project.add_argument("--rebuild", action="store_true", help="rebuild from zero first")
    project.add_argument("--batch-size", type=_positive, default=1000)
    project.add_argument("--poll-interval", type=_seconds, default=0.05)
    project.set_defaults(run=cmd_project)

    relay = commands.add_parser(
        "relay", help="publish every stored event to NATS JetStream (PROPLEDGER_NATS_URL)"
    )
    relay.add_argument("--once", action="store_true", help="publish what is stored, then exit")
    relay.add_argument(
        "--batch-size", type=_relay_batch, default=256, help="events per acknowledged page"
    )
    relay.set_defaults(run=cmd_relay)

    report = commands.add_parser("report", help="finance reports")
    reports = report.add_subparsers(dest="report", required=True)
    payouts = reports.add_parser("payouts", help="payouts approved in a period")
    payouts.add_argument(
        "--from", dest="start", type=_period("from"), default=None, help="RFC 3339 instant or date"
    )
    payouts.add_argument(
        "--to", dest="end", type=_period("to"), default=None, help="exclusive; a date includes it"
    )
    payouts.add_argument("--format", choices=("csv", "json"), default="csv")
    payouts.add_argument("--output", default="-", help="file to write, or - for stdout")
    payouts.set_defaults(run=cmd_report_payouts)

    audit = commands.add_parser("audit", help="auditing the log")
    audits = audit.add_subparsers(dest="audit", required=True)
    verify = audits.add_parser(
        "verify", help="check the hash chain and every projection against a fresh replay"
    )
    verify.add_argument(
        "--anchor", type=_anchor, default=None, help="POSITION:HASH the chain must pass through"
    )
    verify.set_defaults(run=cmd_audit_verify)

    export = commands.add_parser("export", help="write the whole log as JSON Lines")
    export.add_argument("--output", required=True, help="file, or - for standard output")
    export.set_defaults(run=cmd_export)

    replay = commands.add_parser("replay", help="load an export into an empty store")
    replay.add_argument("--input", required=True, help="file, or - for standard input")
    replay.set_defaults(run=cmd_replay)
    return parser


def _plain_error(error: BaseException) -> str | None:
    """One line for an error of the environment (the database, a file), or None for
    anything else (a bug keeps its traceback)."""
    import sqlite3

    import psycopg
    from eventsourcing import persistence

    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    environment = (
        psycopg.OperationalError,
        psycopg.ProgrammingError,
        sqlite3.OperationalError,
        sqlite3.DatabaseError,
        persistence.OperationalError,
        persistence.InterfaceError,
        persistence.ProgrammingError,
    )
    if not isinstance(error, environment):
        return None
    from ledger.config import hide_password

    text = hide_password(text)  # a driver's message may quote the DSN
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return f"the store has no propledger tables ({text}): run `propledger migrate` first"
    return f"the database: {text} (PROPLEDGER_DATABASE_URL={_shown_url()})"


def _shown_url() -> str:
    """The configured database URL with any password hidden."""
    from ledger.config import hide_password

    try:
        return hide_password(_settings().database_url)
    except ConfigurationError:
        return "?"


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def served_app() -> Any:
    """The app as each process of `serve --workers N` builds it: uvicorn starts them
    afresh, without the logging `main` configured, and their access log (propledger.access)
    went nowhere."""
    from api.app import create_app

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return create_app()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    args = build_parser().parse_args(argv)
    words = [args.command, getattr(args, args.command, None)]  # `report payouts`
    label = " ".join(word for word in words if isinstance(word, str))
    _Interrupt.seen = False
    previous = None
    if args.command not in SERVICES and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _Interrupt.handler)
    try:
        result: int = args.run(args)
        _Interrupt.check()  # Ctrl-C that landed where it was swallowed
    except KeyboardInterrupt:
        # Ctrl-C: one line, not the traceback of wherever it landed; what was committed
        # stays committed (every command writes whole transactions).
        print(f"propledger {label}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`propledger export --output - | head`): stop quietly, as
        # other tools do, and keep Python from complaining again when it flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ConfigurationError as error:
        print(f"propledger {label}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        message = _plain_error(error)
        if message is None:
            raise
        print(f"propledger {label}: {message}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return result


if __name__ == "__main__":
    sys.exit(main())
