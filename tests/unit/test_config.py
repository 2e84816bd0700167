"""Settings helpers: what an error message may say about the configured URL."""

from __future__ import annotations

import pytest

from ledger.config import hide_password


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:hunter2@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=hunter2&sslmode=x",
            "postgresql://u@h/db?password=***&sslmode=x",
        ),
        ("host=h password=hunter2 dbname=x", "host=h password=*** dbname=x"),
        ("'mysql://u:hun@ter2@h/db'", "'mysql://u:***@h/db'"),
        ("failed for postgresql://a:hunter2@h: x@y", "failed for postgresql://a:***@h: x@y"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_a_password_is_hidden_wherever_a_message_holds_it(text: str, shown: str) -> None:
    assert hide_password(text) == shown


def test_a_postgresql_urls_libpq_parameters_are_applied_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The event store connects from the URL's parts; its sslmode and friends reach every
    connection through libpq's environment (silently dropped, sslmode=verify-full lost its
    certificate check). An unknown parameter is refused, not dropped."""
    from ledger.config import database_url_to_env

    for variable in ("PGSSLMODE", "PGSSLROOTCERT", "PGAPPNAME"):
        # Set, then removed: the monkeypatch restores the variable's absence afterwards
        # (what database_url_to_env sets must not reach the rest of the suite).
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    env = database_url_to_env(
        "postgresql://u@/db?host=/var/run/postgresql&sslmode=verify-full"
        "&sslrootcert=/ca.pem&application_name=ledger"
    )
    import os

    assert env["POSTGRES_HOST"] == "/var/run/postgresql"
    assert os.environ["PGSSLMODE"] == "verify-full"
    assert os.environ["PGSSLROOTCERT"] == "/ca.pem"
    assert os.environ["PGAPPNAME"] == "ledger"
    with pytest.raises(ValueError, match="environment"):
        database_url_to_env("postgresql://u@h/db?fallback_application_name=x")


@pytest.mark.parametrize(
    "secret",
    [
        "your-256-bit-secret-your-256-bit-secret",
        "CHANGE_ME_CHANGE_ME_CHANGE_ME_CHANGE_ME",
        "replace-me-with-a-long-random-string-please",
        "<insert-your-jwt-secret-here-32-bytes-min>",
        "placeholder-placeholder-placeholder-x",
        "dev-secret-dev-secret-dev-secret-dev-secret",
    ],
)
def test_a_placeholder_jwt_secret_stops_production(secret: str) -> None:
    from ledger.config import Settings

    settings = Settings(propledger_env="production", propledger_jwt_secret=secret)
    with pytest.raises(ValueError, match="placeholder"):
        settings.jwt_secret()


@pytest.mark.parametrize("secret", ["x" * 32, "secret-for-the-acceptance-run-0123456789"])
def test_production_starts_with_any_long_enough_key_that_is_no_template_placeholder(
    secret: str,
) -> None:
    """DESIGN: "outside development a missing or short secret stops start-up"; a key an
    operator set on purpose is not second-guessed beyond a template's placeholder."""
    from ledger.config import Settings

    settings = Settings(propledger_env="production", propledger_jwt_secret=secret)
    assert settings.jwt_secret() == secret


def test_the_jwt_secret_is_used_as_checked_without_surrounding_whitespace() -> None:
    from ledger.config import Settings

    key = "k3Y-" + "0123456789abcdefghijklmnopqrstuvwxyzABCD"
    settings = Settings(propledger_env="production", propledger_jwt_secret=f"  {key}\n")
    assert settings.jwt_secret() == key


def test_a_read_replica_url_is_checked_with_the_configuration() -> None:
    from pydantic import ValidationError

    from ledger.config import Settings

    with pytest.raises(ValidationError, match="unsupported database URL 'mysql://u:\\*\\*\\*@h"):
        Settings(propledger_replica_url="mysql://u:hunter2@h/db")
    assert Settings(propledger_replica_url="").propledger_replica_url is None


@pytest.mark.parametrize(
    ("logged", "shown"),
    [
        ("GET /v1/stream?token=eyJa.eyJb.sig HTTP/1.1", "GET /v1/stream?token=[redacted] HTTP/1.1"),
        ("GET /x?access_token=abc&y=1", "GET /x?access_token=[redacted]&y=1"),
        ("GET /x?TOKEN=abc", "GET /x?TOKEN=[redacted]"),
        ("Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl seen", "Bearer [redacted] seen"),
        ("GET /v1/accounts/abc?as_of=2026-01-01", "GET /v1/accounts/abc?as_of=2026-01-01"),
    ],
)
def test_tokens_never_reach_the_server_log(logged: str, shown: str) -> None:
    import logging

    from api.stream import _RedactTokens

    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, "%s", (logged,), None)
    assert _RedactTokens().filter(record)
    assert record.getMessage() == shown


def test_a_rate_limit_below_one_request_in_four_seconds_still_lets_requests_through() -> None:
    """The burst is the rate times a factor; below 1 a bucket never held a whole request."""
    from api.middleware import RateLimits, TokenBuckets

    buckets = TokenBuckets(RateLimits(default_per_second=0.05, default_burst=0.2))
    assert buckets.take("someone", platform=False) == 0.0  # the first request passes
    wait = buckets.take("someone", platform=False)
    assert 19.0 < wait <= 20.0  # then one every 20 s, and Retry-After says so


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://var/propledger.db",  # the host part was dropped: a new ./propledger.db
        "sqlite:/x.db",
        "sqlite:x.db",
        "sqlite:///:memory:",  # a database per connection, gone when it closes
        "sqlite:///file:x.db?mode=memory",
    ],
)
def test_an_sqlite_url_must_name_a_file_after_three_slashes(url: str) -> None:
    from ledger.config import database_url_to_env

    with pytest.raises(ValueError, match="SQLite URL"):
        database_url_to_env(url)


def test_an_sqlite_url_names_a_relative_or_an_absolute_file() -> None:
    from ledger.config import database_url_to_env

    assert database_url_to_env("sqlite:///./var/x.db")["SQLITE_DBNAME"] == "./var/x.db"
    assert database_url_to_env("sqlite:///x.db")["SQLITE_DBNAME"] == "x.db"
    assert database_url_to_env("sqlite:////srv/x.db")["SQLITE_DBNAME"] == "/srv/x.db"
