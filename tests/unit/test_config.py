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


@pytest.mark.parametrize(
    "query",
    ["sslmode=verify-full&sslrootcert=/ca.pem", "sslmode=require", "options=-c%20x=1", "host=/x"],
)
def test_a_postgresql_url_parameter_that_would_be_dropped_is_refused(query: str) -> None:
    """The event store connects from the URL's parts: a parameter it would not apply (an
    sslmode=verify-full silently losing its certificate check) is refused instead."""
    from ledger.config import database_url_to_env

    with pytest.raises(ValueError, match="environment"):
        database_url_to_env(f"postgresql://u@h/db?{query}")


@pytest.mark.parametrize("query", ["", "sslmode=disable", "sslmode=prefer", "application_name=x"])
def test_harmless_postgresql_url_parameters_are_accepted(query: str) -> None:
    from ledger.config import database_url_to_env

    assert database_url_to_env(f"postgresql://u@h/db?{query}")["POSTGRES_DBNAME"] == "db"


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
