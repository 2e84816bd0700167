"""Test fixtures shared by every test: PostgreSQL servers and databases, SQLite URLs.

PostgreSQL fixtures:

- ``postgres_server`` (session): an admin URL ``postgresql://USER@HOST:PORT/postgres``.
  Found, in order:
  1. ``PROPLEDGER_TEST_POSTGRES_URL`` if set (an unusable URL fails the tests, it is
     never silently replaced by another server);
  2. a server at ``PROPLEDGER_TEST_POSTGRES_PROBE`` (``HOST:PORT``, default
     ``127.0.0.1:5432``, user ``postgres``; ``off`` skips this probe);
  3. a throwaway cluster made with ``initdb``/``pg_ctl`` (on PATH or the newest
     ``/usr/lib/postgresql/*/bin``) in a temporary directory, run as the ``postgres``
     system user when the tests run as root, stopped at the end of the session.
  When none works, the tests that need PostgreSQL are skipped, loudly; under ``CI=true``
  they error instead and the session fails.
- ``postgres_database_factory`` (session): ``with factory("label") as url:`` makes a fresh,
  empty database and drops it afterwards.
- ``postgres_url`` (module): a fresh database for the test module,
  ``postgresql://USER@HOST:PORT/propledger_t_<module>_<8 hex>``, dropped after the module.

Tests using any of them get the ``postgres`` mark, so ``-m "not postgres"`` leaves them
out. The summary prints ``PostgreSQL tests: N passed, M failed, K skipped``; under
``CI=true`` a skipped PostgreSQL test fails the session.

This file must not import the project's packages: it has to work before they exist.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

ENV_URL = "PROPLEDGER_TEST_POSTGRES_URL"
ENV_PROBE = "PROPLEDGER_TEST_POSTGRES_PROBE"
DEFAULT_PROBE = "127.0.0.1:5432"
DB_PREFIX = "propledger_t_"
PG_NAME_MAX = 63

PostgresDatabaseFactory = Callable[[str], AbstractContextManager[str]]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


# --------------------------------------------------------------------------- URLs


def _normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    return url


def _with_dbname(url: str, dbname: str) -> str:
    """The same server URL (user, password, query kept) naming database ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _check_server(url: str) -> str | None:
    """None when ``url`` accepts connections from a role that may create databases."""
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if not row or not row[0]:
        return "connected, but the role may not create databases"
    return None


# ------------------------------------------------------------- throwaway cluster


class ClusterUnavailableError(RuntimeError):
    pass


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def _find_pg_binaries() -> tuple[str, str]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    bindirs = sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), key=_version_key)
    for bindir in reversed(bindirs):
        initdb, pg_ctl = f"{bindir}/initdb", f"{bindir}/pg_ctl"
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    raise ClusterUnavailableError(
        "initdb/pg_ctl not found on PATH nor in /usr/lib/postgresql/*/bin "
        "(install the PostgreSQL server package)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, trust auth, superuser ``postgres``."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _find_pg_binaries()
        self.run_as: dict[str, Any] = {}
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # initdb and postgres refuse to run as root: run them as the postgres user.
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailableError(
                    "running as root and there is no 'postgres' system user to run initdb/pg_ctl as"
                ) from None
            self.run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.base = Path(tempfile.mkdtemp(prefix="propledger-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "postgres.log"
        self.sockets.mkdir()
        if self.run_as:
            for path in (self.base, self.sockets):
                os.chown(path, self.run_as["user"], self.run_as["group"])
        self.port = 0
        self.running = False

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            args,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self.run_as,
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise ClusterUnavailableError(
                f"{shlex.join(args)} exited {proc.returncode}\n"
                f"{proc.stdout}{proc.stderr}{log}".rstrip()
            )

    def start(self) -> str:
        self._run(
            self.initdb,
            *("-D", str(self.data), "-A", "trust", "-U", "postgres"),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        )
        for attempt in range(3):  # a free port may be taken before the server binds it
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {shlex.quote(str(self.sockets))} "
                "-c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    self.pg_ctl,
                    *("-D", str(self.data), "-l", str(self.log), "-o", options),
                    *("-w", "-t", "60", "start"),
                )
            except ClusterUnavailableError:
                if attempt == 2:
                    raise
                continue
            break
        self.running = True
        atexit.register(self.stop)  # in case the session ends without fixture teardown
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
            except (ClusterUnavailableError, subprocess.TimeoutExpired):
                with contextlib.suppress(ClusterUnavailableError, subprocess.TimeoutExpired):
                    self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Admin URL of a PostgreSQL server: ``postgresql://USER@HOST:PORT/postgres``."""
    tally = request.config.stash[_TALLY_KEY]

    url = os.environ.get(ENV_URL, "").strip()
    if url:
        url = _normalise_url(url)
        problem = _check_server(url)
        if problem:
            tally.unavailable = f"{ENV_URL} unusable"
            pytest.fail(f"{ENV_URL}={_redact(url)} is set but unusable: {problem}", pytrace=False)
        tally.server = f"{ENV_URL} ({_redact(url)})"
        yield url
        return

    problems: list[str] = [f"{ENV_URL} is not set"]
    probe = os.environ.get(ENV_PROBE, DEFAULT_PROBE).strip()
    if probe.lower() in {"", "off", "none", "no", "0"}:
        problems.append(f"probe disabled ({ENV_PROBE}={probe!r})")
    else:
        url = f"postgresql://postgres@{probe}/postgres"
        problem = _check_server(url)
        if problem is None:
            tally.server = f"existing server at {probe}"
            yield url
            return
        problems.append(f"no usable server at {probe} as user postgres: {problem}")

    try:
        cluster = ThrowawayCluster()
    except (ClusterUnavailableError, OSError) as exc:
        problems.append(f"throwaway cluster: {exc}")
    else:
        try:
            url = cluster.start()
        except (ClusterUnavailableError, OSError, subprocess.TimeoutExpired) as exc:
            cluster.stop()
            problems.append(f"throwaway cluster: {exc}")
        else:
            tally.server = f"throwaway cluster at 127.0.0.1:{cluster.port} ({cluster.initdb})"
            try:
                yield url
            finally:
                cluster.stop()
            return

    message = "NO POSTGRESQL SERVER FOR TESTS:\n  - " + "\n  - ".join(problems)
    message += (
        f"\n  Set {ENV_URL}=postgresql://USER@HOST:PORT/postgres, run PostgreSQL on "
        f"{DEFAULT_PROBE} with trust auth for user postgres, or install initdb/pg_ctl."
    )
    tally.unavailable = message
    if _in_ci():
        pytest.fail(f"CI=true: PostgreSQL tests must run. {message}", pytrace=False)
    pytest.skip(message)


def _database_name(label: str) -> str:
    suffix = "_" + secrets.token_hex(4)
    label = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_") or "db"
    label = re.sub(r"_+", "_", label)[: PG_NAME_MAX - len(DB_PREFIX) - len(suffix)]
    return DB_PREFIX + label.rstrip("_") + suffix


def _drop_database(server_url: str, name: str) -> None:
    ident = sql.Identifier(name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        except psycopg.errors.SyntaxError:  # PostgreSQL < 13
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))


@pytest.fixture(scope="session")
def postgres_database_factory(postgres_server: str) -> PostgresDatabaseFactory:
    """``with postgres_database_factory("label") as url:`` -> a fresh database's URL."""

    @contextlib.contextmanager
    def make(label: str) -> Iterator[str]:
        name = _database_name(label)
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(name)
                )
            )
        try:
            yield _with_dbname(postgres_server, name)
        finally:
            _drop_database(postgres_server, name)

    return make


@pytest.fixture(scope="module")
def postgres_url(
    request: pytest.FixtureRequest, postgres_database_factory: PostgresDatabaseFactory
) -> Iterator[str]:
    """A fresh, empty database for this test module: ``postgresql://USER@HOST:PORT/DB``."""
    with postgres_database_factory(request.module.__name__.rpartition(".")[2]) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """``sqlite:///<tmp_path>/propledger.db`` (a file in this test's temporary directory)."""
    return f"sqlite:///{tmp_path}/propledger.db"


# ------------------------------------------------------------ marks and summary


class _PostgresTally:
    """Counts outcomes of the tests marked ``postgres``."""

    RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "failed": 3}

    def __init__(self) -> None:
        self.nodeids: set[str] = set()
        self.outcomes: dict[str, str] = {}
        self.server: str | None = None
        self.unavailable: str | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.nodeids:
            return
        if report.failed:
            outcome = "failed"
        elif report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        else:
            outcome = "passed"
        previous = self.outcomes.get(report.nodeid, "passed")
        if self.RANK[outcome] >= self.RANK[previous]:
            self.outcomes[report.nodeid] = outcome

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


_TALLY_KEY = pytest.StashKey[_PostgresTally]()


def pytest_configure(config: pytest.Config) -> None:
    tally = _PostgresTally()
    config.stash[_TALLY_KEY] = tally
    config.pluginmanager.register(tally, "propledger-postgres-tally")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tally = config.stash[_TALLY_KEY]
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "postgres_url" in names or "postgres_server" in names:
            item.add_marker(pytest.mark.postgres)
        if item.get_closest_marker("postgres") is not None:
            tally.nodeids.add(item.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    tally = session.config.stash[_TALLY_KEY]
    if _in_ci() and tally.count("skipped") and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    tally = config.stash[_TALLY_KEY]
    line = (
        f"PostgreSQL tests: {tally.count('passed')} passed, {tally.count('failed')} failed, "
        f"{tally.count('skipped')} skipped"
    )
    if tally.count("xfailed"):
        line += f", {tally.count('xfailed')} xfailed"
    if tally.server:
        line += f" (server: {tally.server})"
    skipped = tally.count("skipped")
    terminalreporter.write_line(line, red=bool(tally.count("failed") or skipped))
    if skipped and tally.unavailable:
        terminalreporter.write_line(tally.unavailable, yellow=True)
    if skipped and _in_ci():
        terminalreporter.write_line(
            f"CI=true: {skipped} PostgreSQL test(s) were skipped; failing the session.",
            red=True,
            bold=True,
        )
