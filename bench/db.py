"""Databases for a run: a fresh SQLite file or PostgreSQL database, plain connections."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from ledger.config import sqlite_path

DB_PREFIX = "propledger_bench_"


@contextmanager
def fresh_database(backend: str, postgres_admin_url: str) -> Iterator[str]:
    """Yields the URL of a new, empty database; removes it afterwards."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="propledger-bench-"))
        try:
            yield f"sqlite:///{folder / 'propledger.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    name = DB_PREFIX + secrets.token_hex(4)
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name)
            )
        )
    try:
        yield urlunsplit(urlsplit(postgres_admin_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def sqlite_file(url: str) -> str:
    path = sqlite_path(url)
    assert path is not None
    return path


def connect(url: str) -> Any:
    """A plain autocommit connection (sqlite3 or psycopg) with `?`/`%s` left to the caller."""
    if is_sqlite(url):
        connection = sqlite3.connect(sqlite_file(url), isolation_level=None, timeout=30)
        connection.execute("PRAGMA busy_timeout = 30000")
        return connection
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def scalar(connection: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
    if isinstance(connection, sqlite3.Connection):
        row = connection.execute(query, params).fetchone()
    else:
        row = connection.execute(query.replace("?", "%s"), params).fetchone()
    return None if row is None else row[0]


def server_version(url: str) -> str:
    if is_sqlite(url):
        return f"SQLite {sqlite3.sqlite_version}"
    with connect(url) as connection:
        return str(scalar(connection, "SHOW server_version"))
