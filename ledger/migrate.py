"""Applies the versioned SQL in `migrations/<backend>/NNNN_name.sql`, each once, in order.

Safe to run from several processes at once: PostgreSQL serialises runners with an advisory
lock, SQLite with an immediate write transaction.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from ledger.config import database_url_to_env, postgres_connect_args

_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_ADVISORY_LOCK_KEY = 0x70726F706C6564  # "propled"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available(backend: str) -> list[Migration]:
    folder = resources.files("migrations").joinpath(backend)
    found = []
    for entry in folder.iterdir():
        match = _FILE_PATTERN.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in migrations/{backend}")
    return found


def migrate(database_url: str) -> list[str]:
    """Applies pending migrations; returns the names of those applied now."""
    env = database_url_to_env(database_url)
    if env["PERSISTENCE_MODULE"].endswith("sqlite"):
        return _migrate_sqlite(env["SQLITE_DBNAME"])
    return _migrate_postgres(env)


def store_exists(database_url: str) -> bool:
    """Whether the URL names a propledger store (one migrations have run on), without
    creating anything: a file, a directory or a table."""
    env = database_url_to_env(database_url)
    if env["PERSISTENCE_MODULE"].endswith("sqlite"):
        path = env["SQLITE_DBNAME"]
        if path == ":memory:" or path.startswith("file:") or not Path(path).is_file():
            return False
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return reader.execute(query, ("schema_migrations",)).fetchone() is not None
        finally:
            reader.close()
    with psycopg.connect(**postgres_connect_args(env)) as connection:
        row = connection.execute("SELECT to_regclass('schema_migrations')").fetchone()
        return row is not None and row[0] is not None


def _migrate_sqlite(path: str) -> list[str]:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
        done = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        applied = []
        for migration in available("sqlite"):
            if migration.version in done:
                continue
            # executescript() would commit; run statement by statement inside the transaction.
            for statement in _statements(migration.sql):
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
            applied.append(f"{migration.version:04d}_{migration.name}")
        connection.execute("COMMIT")
        return applied
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    finally:
        connection.close()


def _statements(sql: str) -> list[str]:
    """Splits an SQLite script into whole statements (a trigger body holds several ';')."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    statements, buffer = [], ""
    for part in "\n".join(lines).split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n;"):
        raise RuntimeError(f"incomplete SQL statement in migration: {buffer[:80]!r}")
    return statements


def _migrate_postgres(env: dict[str, str]) -> list[str]:
    with (
        psycopg.connect(**postgres_connect_args(env)) as connection,
        connection.transaction(),
    ):
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        applied = []
        for migration in available("postgres"):
            if migration.version in done:
                continue
            connection.execute(migration.sql.encode())
            connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(f"{migration.version:04d}_{migration.name}")
        return applied
