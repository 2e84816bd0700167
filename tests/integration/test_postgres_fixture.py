"""The PostgreSQL fixtures of tests/conftest.py: fresh, empty, isolated, module-scoped."""

from __future__ import annotations

import re

import psycopg

PUBLIC_TABLES = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"


def test_fresh_database_is_empty_and_named_for_module(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute(PUBLIC_TABLES).fetchone()
    assert name is not None
    assert re.fullmatch(r"propledger_t_test_postgres_fixture_[0-9a-f]{8}", name[0])
    assert tables == (0,)


def test_write_in_one_test(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE handover (note text NOT NULL)")
        conn.execute("INSERT INTO handover VALUES ('from the previous test')")


def test_is_visible_in_the_next_test_of_the_module(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT note FROM handover").fetchall()
    assert rows == [("from the previous test",)]


def test_another_module_gets_its_own_database(
    postgres_server: str, postgres_url: str, postgres_database_factory
) -> None:
    # postgres_url makes its database with this factory; another module would get this one.
    with postgres_database_factory("test_postgres_fixture") as other:
        assert other != postgres_url
        with psycopg.connect(other) as conn:
            assert conn.execute(PUBLIC_TABLES).fetchone() == (0,)
    dropped = other.rpartition("/")[2]
    with psycopg.connect(postgres_server) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (dropped,))
        assert left.fetchone() == (0,)
