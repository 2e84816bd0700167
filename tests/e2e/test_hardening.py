"""Rate limits, security headers, request ids and logs that keep secrets out."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.middleware import VerifiedTokens
from ledger.config import Settings
from tests.support import SECRET, assert_error, auth, program_body, sqlite_file_url, uid


@pytest.fixture
def slow_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        propledger_database_url=sqlite_file_url(tmp_path / "limits.db"),
        propledger_jwt_secret=SECRET,
        propledger_rate_limit_default=1.0,
        propledger_rate_limit_platform=1000.0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_token_past_its_rate_gets_429_with_retry_after_and_others_are_not_throttled(
    slow_client: TestClient,
) -> None:
    finance = auth("finance", sub="busy-finance")
    answers = [slow_client.get("/v1/programs/nope", headers=finance).status_code for _ in range(6)]
    assert answers[:4] == [404, 404, 404, 404]  # a burst of four (4 x 1/s) is allowed
    limited = slow_client.get("/v1/programs/nope", headers=finance)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    # Another subject has its own bucket; a bridge has a much larger one.
    assert (
        slow_client.get("/v1/programs/nope", headers=auth("finance", sub="calm")).status_code == 404
    )
    bridge = auth("platform", sub="bridge-1")
    statuses = {
        slow_client.post("/v1/accounts/nope/equity", json={}, headers=bridge).status_code
        for _ in range(50)
    }
    assert 429 not in statuses


def test_every_reply_carries_a_request_id_and_security_headers(slow_client: TestClient) -> None:
    reply = slow_client.get("/health", headers={"X-Request-ID": "abcdef123456"})
    assert reply.headers["x-request-id"] == "abcdef123456"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["content-security-policy"].startswith("default-src 'none'")
    generated = slow_client.get("/health", headers={"X-Request-ID": "bad id!"})
    assert len(generated.headers["x-request-id"]) == 32
    # No CORS: a cross-origin preflight gets no allow-origin header.
    preflight = slow_client.options(
        "/v1/purchases",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_the_access_log_names_the_subject_but_never_the_token(
    slow_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = auth("auditor", sub="log-reader")
    token = headers["Authorization"].split()[1]
    with caplog.at_level(logging.INFO, logger="propledger.access"):
        slow_client.get("/v1/programs/nope?secret=hunter2", headers=headers)
    lines = [record.getMessage() for record in caplog.records if record.name == "propledger.access"]
    assert any('"sub": "log-reader"' in line and '"status": 404' in line for line in lines)
    assert not any(token in line or "hunter2" in line for line in lines)


@pytest.mark.parametrize(
    ("claims", "algorithm", "key"),
    [
        ({"sub": "no-expiry", "roles": ["admin"]}, "HS256", SECRET),  # exp is required
        ({"sub": "other-alg", "roles": ["admin"], "exp": 4102444800}, "HS512", SECRET),
        ({"sub": "unsigned", "roles": ["admin"], "exp": 4102444800}, "none", None),
        ({"sub": "wrong-key", "roles": ["admin"], "exp": 4102444800}, "HS256", "k" * 40),
        ({"roles": ["admin"], "exp": 4102444800}, "HS256", SECRET),  # sub is required
    ],
)
def test_tokens_without_exp_or_sub_or_signed_otherwise_are_refused(
    slow_client: TestClient, claims: dict[str, object], algorithm: str, key: str | None
) -> None:
    token = jwt.encode(claims, key, algorithm=algorithm)
    reply = slow_client.get("/v1/programs/any", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_token"


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "fi\u0000n", "roles": ["admin"]},  # NUL: PostgreSQL text cannot hold it
        {"sub": "fi\ud800n", "roles": ["admin"]},  # a lone surrogate: no store encodes it
        {"sub": "fi\nn", "roles": ["admin"]},
        {"sub": "", "roles": ["admin"]},
        {"sub": "   ", "roles": ["admin"]},
        {"sub": 42, "roles": ["admin"]},
        {"sub": "x" * 201, "roles": ["admin"]},
        {"sub": "t", "roles": ["trader"], "trader_id": "t\u0000"},
    ],
)
def test_a_token_naming_its_subject_with_text_no_store_can_keep_is_refused_and_changes_nothing(
    slow_client: TestClient, claims: dict[str, object]
) -> None:
    # A `sub` is recorded as who requested or approved a payout: a NUL in it answered 201
    # and then stopped the payout projection on PostgreSQL for good; a lone surrogate
    # answered 500 on every write (black-box audit).
    token = jwt.encode({**claims, "exp": 4102444800}, SECRET, algorithm="HS256")
    program_id = uid("bad-sub-")
    reply = slow_client.post(
        "/v1/programs",
        json=program_body(program_id),
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uid()},
    )
    assert_error(reply, 401, "invalid_token")
    assert slow_client.get(f"/v1/programs/{program_id}", headers=auth("admin")).status_code == 404


@pytest.mark.parametrize("trader_id", [None, ""])
def test_a_staff_tokens_empty_trader_id_claim_names_no_trader(
    slow_client: TestClient, trader_id: str | None
) -> None:
    # Identity providers and test helpers write null claims for staff (an audit found these
    # refused 401 for a moment).
    claims = {"sub": "fin-9", "roles": ["finance"], "trader_id": trader_id, "exp": 4102444800}
    token = jwt.encode(claims, SECRET, "HS256")
    reply = slow_client.get(
        "/v1/ledger/trial-balance", headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status_code == 200, reply.text


def test_a_roles_claim_written_as_comma_separated_text_names_the_same_roles(
    slow_client: TestClient,
) -> None:
    # As `propledger token --roles a,b` takes them; a hand-made token may write them so.
    for roles in ("auditor", "finance, auditor"):
        token = jwt.encode({"sub": "r", "roles": roles, "exp": 4102444800}, SECRET, "HS256")
        reply = slow_client.get(
            "/v1/ledger/trial-balance", headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status_code == 200, reply.text
    token = jwt.encode({"sub": "r", "roles": "platform", "exp": 4102444800}, SECRET, "HS256")
    refused = slow_client.get(
        "/v1/ledger/trial-balance", headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(refused, 403, "forbidden")
    token = jwt.encode({"sub": "r", "roles": 7, "exp": 4102444800}, SECRET, "HS256")
    refused = slow_client.get(
        "/v1/ledger/trial-balance", headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(refused, 401, "invalid_token")


def test_propledger_token_refuses_a_subject_the_api_would_refuse() -> None:
    from api.auth import mint_token

    with pytest.raises(ValueError, match="sub must be printable"):
        mint_token(SECRET, sub="fi\udcffn", roles=["finance"])
    name = "x" * 200
    claims = jwt.decode(mint_token(SECRET, sub=name, roles=["finance"]), SECRET, ["HS256"])
    assert claims["sub"] == name


@pytest.mark.parametrize("secret", [None, "short", "changeme" + " " * 40])
def test_production_refuses_a_missing_short_or_placeholder_secret(secret: str | None) -> None:
    settings = Settings(propledger_env="production", propledger_jwt_secret=secret)
    with pytest.raises(ValueError, match="PROPLEDGER_JWT_SECRET"):
        settings.jwt_secret()


def test_development_generates_a_secret_once_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(propledger_env="development", propledger_jwt_secret=None)
    first = settings.jwt_secret()
    assert len(first) >= 32
    assert settings.jwt_secret() == first
    assert (tmp_path / "var" / "jwt-secret").stat().st_mode & 0o077 == 0


def test_a_token_verified_once_is_refused_once_it_expires(slow_client: TestClient) -> None:
    # At least two seconds of life (exp is whole seconds): a loaded machine still gets the
    # first request in before it expires.
    expires = int(time.time()) + 3
    token = jwt.encode({"sub": "short-lived", "roles": ["admin"], "exp": expires}, SECRET)
    headers = {"Authorization": f"Bearer {token}"}
    first = slow_client.get("/v1/programs/none", headers=headers)
    assert first.status_code == 404  # admitted (its verdict is kept): no such program
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    later = slow_client.get("/v1/programs/none", headers=headers)
    assert later.status_code == 401
    assert later.json()["error"]["code"] == "token_expired"


def test_kept_verdicts_are_per_secret_and_never_for_refused_tokens() -> None:
    tokens = VerifiedTokens()
    claims = {"sub": "s", "roles": ["admin"], "exp": int(time.time()) + 600}
    token = jwt.encode(claims, SECRET)
    assert tokens.verify(SECRET, token) == claims
    assert tokens.verify(SECRET, token) == claims  # the kept verdict
    assert tokens.verify("another-secret-" + "x" * 32, token) is None  # not kept for it
    not_yet = jwt.encode({**claims, "nbf": int(time.time()) + 600}, SECRET)
    assert tokens.verify(SECRET, not_yet) is None
    assert (SECRET, not_yet) not in tokens._tokens  # a refusal is decided again next time
    # A kept verdict lasts until the token's exp, not a moment longer.
    tokens.clock = lambda: float(claims["exp"])
    assert tokens.verify(SECRET, token) is None
