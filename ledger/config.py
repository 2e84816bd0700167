"""Settings from the environment (or a .env file), validated at start-up."""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger("propledger")

DEFAULT_DATABASE_URL = "sqlite:///./var/propledger.db"
MIN_SECRET_BYTES = 32
# Placeholders found in tutorials and templates ("your-256-bit-secret" is jwt.io's): a
# word of theirs at the start of the key or after a separator, or a key in <angle
# brackets>. Random keys (any alphabet) do not take these shapes but by a fluke no key
# generator makes in practice.
_PLACEHOLDER_SHAPE = re.compile(
    r"(^|[-_ .])(your[-_ ]|change[-_ ]?me|replace[-_ ]?me|insert[-_ ]|placeholder|"
    r"dev[-_ ]secret|example[-_ ]|256[-_ ]bit[-_ ]secret)|^<.*>$",
    re.IGNORECASE,
)
# scheme://user:PASSWORD@host: the user part runs to the last '@' before the path.
_URL_USERINFO = re.compile(r"(://[^:/@\s'\"]*):[^/\s'\"]*@")
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)[^&\s'\"]+", re.IGNORECASE)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    propledger_database_url: str = DEFAULT_DATABASE_URL
    propledger_jwt_secret: str | None = None
    # A read replica of the PostgreSQL database: reports and listings are served from it.
    propledger_replica_url: str | None = None
    propledger_env: Literal["development", "production"] = "development"
    stripe_webhook_secret: str | None = None
    # "inprocess": `propledger serve` also runs the projection workers (the default, and
    # what the embedded SQLite setup needs); "external": only `propledger project` does.
    propledger_projections: Literal["inprocess", "external"] = "inprocess"
    # Requests per second per token (bursts of a few seconds' worth allowed); trading
    # bridges (role platform) get their own, larger, allowance.
    propledger_rate_limit_default: float = Field(default=500.0, gt=0)
    propledger_rate_limit_platform: float = Field(default=5000.0, gt=0)
    # Concurrent single trade posts are decided and saved together, one transaction for
    # what queued while the previous one committed (ledger/grouping.py); no added wait.
    propledger_write_grouping: bool = True
    # Milliseconds to wait for more posts before saving a group (0: none).
    propledger_write_group_window_ms: float = Field(default=0, ge=0, le=50)
    # How long an Idempotency-Key and its stored reply are kept.
    propledger_idempotency_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)
    # After this long a claim still in progress belongs to a request that died: its key is
    # usable again. Longer than any request runs (api/idempotency.py).
    propledger_idempotency_abandoned_seconds: float = Field(default=180, ge=1, le=3600)

    @field_validator("propledger_database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        database_url_to_env(value)
        return value

    @field_validator("propledger_replica_url")
    @classmethod
    def _check_replica(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        database_url_to_env(value)  # a URL the stores understand, checked at start-up
        return value

    @property
    def database_url(self) -> str:
        return self.propledger_database_url

    @property
    def is_production(self) -> bool:
        return self.propledger_env == "production"

    def jwt_secret(self) -> str:
        """The HS256 key. In development a missing one is generated once into ./var/."""
        secret = self.propledger_jwt_secret
        if secret:
            # The key is the text without surrounding whitespace, as checked (a Secret made
            # from a file often ends in a newline), and as the key file is read.
            stripped = secret.strip()
            # DESIGN: "a missing or short secret stops start-up"; and a template's
            # placeholder left in place. Nothing more is guessed about a key's quality
            # (until 2026-12-07 a key of few distinct characters or starting "secret" was
            # refused too, which refused keys an operator may well set on purpose).
            weak = (
                len(stripped.encode()) < MIN_SECRET_BYTES
                or _PLACEHOLDER_SHAPE.search(stripped) is not None
            )
            if weak and self.is_production:
                raise ValueError(
                    f"PROPLEDGER_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes of a "
                    "real random key, not a placeholder, in production"
                )
            return stripped
        if self.is_production:
            raise ValueError("PROPLEDGER_JWT_SECRET is required in production")
        path = Path("var") / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
            logger.warning(
                "PROPLEDGER_JWT_SECRET is not set: generated a development key in %s", path
            )
        return path.read_text().strip()


def database_url_to_env(url: str) -> dict[str, str]:
    """The eventsourcing persistence settings for a `sqlite:///` or `postgresql://` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if parts.netloc or not url.partition(":")[2].startswith("///"):
            # sqlite://var/x.db dropped "var" and served a new ./x.db; sqlite:x.db and
            # sqlite:/x.db were both ./x.db.
            raise ValueError(
                f"an SQLite URL is sqlite:/// and the file's path, got {url!r}: "
                "sqlite:///./var/propledger.db (relative) or sqlite:////srv/propledger.db"
            )
        path = unquote(parts.path)
        # sqlite:///./var/x.db -> ./var/x.db ; sqlite:////abs/x.db -> /abs/x.db
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValueError("an SQLite URL needs a file path: sqlite:///./var/propledger.db")
        if path == ":memory:" or path.startswith("file:"):
            # Each connection would get a database of its own, gone when it closes.
            raise ValueError(
                f"an SQLite URL needs a file path, got {path!r}: sqlite:///./var/propledger.db"
            )
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
            "CREATE_TABLE": "n",
            "APPLICATION_RECORDER_TOPIC": "ledger.chain:ChainedSQLiteApplicationRecorder",
        }
    if parts.scheme in ("postgresql", "postgres"):
        dbname = parts.path.lstrip("/")
        if not dbname:
            raise ValueError("a PostgreSQL URL needs a database: postgresql://user@host:5432/db")
        query = _query_parameters(parts.query)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(dbname),
            "POSTGRES_HOST": parts.hostname or query.get("host") or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "8",
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_LOCK_TIMEOUT": "10",
            "CREATE_TABLE": "n",
            "APPLICATION_RECORDER_TOPIC": "ledger.chain:ChainedPostgresApplicationRecorder",
        }
    raise ValueError(
        f"unsupported database URL {hide_password(url)!r}: use sqlite:///PATH or postgresql://..."
    )


# libpq parameters a PostgreSQL URL may carry (`?sslmode=verify-full&sslrootcert=...`, as
# managed databases hand them out). The event store's connections are made from the URL's
# parts, so each is applied through libpq's environment variable for it, which every
# connection of the process reads (one set wins: the first URL read, or what the
# environment already says). `host` is the server's address or socket directory.
_LIBPQ_ENVIRONMENT = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "sslcrl": "PGSSLCRL", "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE", "target_session_attrs": "PGTARGETSESSIONATTRS",
    "options": "PGOPTIONS", "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}  # fmt: skip


def _query_parameters(query: str) -> dict[str, str]:
    """The URL's libpq parameters, applied; an unknown one is refused rather than dropped
    without a word (a silently lost sslmode=verify-full drops the certificate check)."""
    found = dict(parse_qsl(query, keep_blank_values=True))
    for name, value in found.items():
        if name == "host":
            continue  # the address, taken as the URL's own host
        variable = _LIBPQ_ENVIRONMENT.get(name)
        if variable is None:
            shown = "***" if "password" in name else value
            raise ValueError(
                f"the PostgreSQL URL's parameter {name}={shown} is not one propledger applies "
                f"({', '.join(sorted(_LIBPQ_ENVIRONMENT))}, host): set it through libpq's "
                "environment instead"
            )
        os.environ.setdefault(variable, value)
    return found


def postgres_connect_args(env: dict[str, str]) -> dict[str, Any]:
    """psycopg.connect()'s arguments for the PostgreSQL settings `database_url_to_env` made."""
    return {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"] or None,
        "connect_timeout": 10,
    }


def hide_password(text: str) -> str:
    """`text` with every password in it written as ***: a URL's (`user:PASSWORD@`, up to
    its last '@', an unencoded '@' in the password included) and libpq's `password=...`
    (a URL's query or a key=value DSN)."""
    text = _URL_USERINFO.sub(lambda m: m.group(1) + ":***@", text)
    return _PASSWORD_PARAM.sub(r"\1***", text)


def sqlite_path(url: str) -> str | None:
    env = database_url_to_env(url)
    return env.get("SQLITE_DBNAME")
