"""A schemathesis run against the app's own OpenAPI schema, in process, on an SQLite file.

Every operation (but the Stripe webhook, which needs a signature, and the audit check, which
is slow) gets bounded, reproducible examples (a fixed seed, deterministic generation, no
deadline) sent with a token holding every role. Half the cases of an operation with path
parameters are pointed at ids that exist (a program, a trader, an account), so the fuzzed
bodies and queries reach the domain rather than stopping at "not found".

The examples, coverage (boundary values, missing fields, unexpected methods) and fuzzing
phases run, positive and negative data alike; POSTs carry a fresh Idempotency-Key.

Checked on every reply:
- no 5xx (schemathesis' `not_a_server_error`);
- the reply conforms to the schema where the schema declares one (`response_schema_conformance`
  and `content_type_conformance`);
- every 4xx body is the error envelope {"error": {"code", "message", "details"}};
- a refused request (4xx, or a batch whose every trade was rejected) changes nothing: the
  event log position and the chain head are the same before and after it.

Wiring: schemathesis 4's `schemathesis.pytest.from_fixture` fails under pytest 9
(`request.node._nodeid` is gone), and `from_asgi` would start the app (and open its
database) at import time. So the schema is the app's own `openapi()` loaded with
`schemathesis.openapi.from_dict`, attached to a stand-in ASGI app that the fixture points at
the real one, whose lifespan the fixture runs.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from ledger.app import PropLedger
from tests.support import (
    auth,
    make_app,
    program_body,
    purchase_body,
    sqlite_file_url,
    trade_body,
    uid,
)

MAX_EXAMPLES = 15
SEED = 20260302
EXCLUDED_PATHS = ("/v1/webhooks/stripe", "/v1/audit/verify")
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
ALL_ROLES = ("admin", "finance", "approver", "auditor", "platform", "trader")

CONFIG = {
    "seed": SEED,
    "generation": {
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
}


class LateApp:
    """An ASGI app whose target is set by the `fuzzed` fixture.

    The schema is loaded at import time from the app's own `openapi()` (no I/O); the app it
    talks to is made per module on a temporary SQLite file, and its lifespan is run by the
    fixture for the whole module. Schemathesis' pytest plugin starts and stops a lifespan
    around every test: here those are answered without reaching the app.
    """

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.target is not None, "the `fuzzed` fixture sets the app under test"
        await self.target(scope, receive, send)


LATE_APP = LateApp()
# The app's own schema; building it touches no database (the URL is never opened).
OPENAPI: dict[str, Any] = make_app("sqlite:///unused-schema-only.db").openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=SchemathesisConfig.from_dict(CONFIG))
schema.app = LATE_APP
for _path in EXCLUDED_PATHS:
    schema = schema.exclude(path=_path)


class Fuzzed:
    """The app under fuzzing, the ids that exist in its store, and a token for every role."""

    def __init__(self, app: Any, known: dict[str, str], headers: dict[str, str]) -> None:
        self.app = app
        self.known = known
        self.headers = headers
        self.counters: defaultdict[str, Iterator[int]] = defaultdict(itertools.count)

    @property
    def ledger(self) -> PropLedger:
        ledger: PropLedger = self.app.state.ledger
        return ledger

    def store_mark(self) -> tuple[int, Any]:
        """The log position and the chain head: what a refused request must not move."""
        head = self.app.state.database.query(
            "SELECT position, hash FROM event_chain_head WHERE id = 1"
        )
        return self.ledger.position(), [tuple(row.values()) for row in head]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    url = sqlite_file_url(tmp_path_factory.mktemp("fuzz") / "propledger.db")
    app = make_app(url)
    LATE_APP.target = app
    trader_id = uid("trader-")
    headers = auth(*ALL_ROLES, sub="fuzzer", trader_id=trader_id)
    try:
        with TestClient(app) as client:  # runs the app's lifespan for the whole module
            assert client.get("/health").status_code == 200
            created = client.post("/v1/programs", json=program_body(), headers=headers)
            assert created.status_code == 201, created.text
            program_id = created.json()["program_id"]
            bought = client.post(
                "/v1/purchases",
                json=purchase_body(program_id, trader_id=trader_id),
                headers=headers,
            )
            assert bought.status_code == 201, bought.text
            account_id = bought.json()["account_id"]
            traded = client.post(
                f"/v1/accounts/{account_id}/trades", json=trade_body(), headers=headers
            )
            assert traded.status_code == 201, traded.text
            known = {"program_id": program_id, "trader_id": trader_id, "account_id": account_id}
            yield Fuzzed(app, known, headers)
    finally:
        LATE_APP.target = None


def is_envelope(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) != {"error"}:
        return False
    error = body["error"]
    return (
        isinstance(error, dict)
        and set(error) == {"code", "message", "details"}
        and isinstance(error["code"], str)
        and bool(error["code"])
        and isinstance(error["message"], str)
        and bool(error["message"])
    )


def csv_report(case: Any, response: Any) -> bool:
    content_type = " ".join(response.headers.get("content-type", []))
    return case.operation.path == "/v1/reports/payouts" and content_type.startswith("text/csv")


def refused_batch(case: Any, response: Any) -> bool:
    """A batch reply in which every trade was rejected: nothing may have been recorded."""
    if case.operation.path != "/v1/trades:batch" or response.status_code != 200:
        return False
    results = response.json()["results"]
    return all(item["result"] == "rejected" for item in results)


@schema.parametrize()
def test_every_operation_survives_fuzzing(case: Any, fuzzed: Fuzzed) -> None:
    # Every other case of an operation with path parameters names ids that exist.
    if case.path_parameters and next(fuzzed.counters[case.operation.label]) % 2 == 0:
        for name in list(case.path_parameters):
            if name in fuzzed.known:
                case.path_parameters[name] = fuzzed.known[name]
    headers = dict(fuzzed.headers)
    if case.method.upper() == "POST":
        headers["Idempotency-Key"] = uid("fuzz-")
    before = fuzzed.store_mark()
    response = case.call(headers=headers)
    after = fuzzed.store_mark()
    checks = list(CHECKS)
    if csv_report(case, response):
        # Known: the CSV report's media type is missing from the schema (see the xfail below).
        checks.remove(content_type_conformance)
    case.validate_response(response, checks=checks, headers=headers)
    if 400 <= response.status_code < 500:
        assert is_envelope(response.json()), (response.status_code, response.text)
        assert after == before, f"a refused request ({response.status_code}) changed the store"
    if refused_batch(case, response):
        assert after == before, "a batch whose every trade was rejected changed the store"


def test_the_csv_payout_report_is_documented_in_the_schema() -> None:
    content = OPENAPI["paths"]["/v1/reports/payouts"]["get"]["responses"]["200"]["content"]
    assert any(media.startswith("text/csv") for media in content), content


def test_error_replies_are_documented_as_the_envelope() -> None:
    components = OPENAPI.get("components", {}).get("schemas", {})
    for path, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            declared = operation["responses"].get("422")
            if declared is None:
                continue
            reference = declared["content"]["application/json"]["schema"].get("$ref", "")
            described = components.get(reference.rpartition("/")[2], {})
            assert "error" in described.get("properties", {}), (method, path, described)
            assert "404" in operation["responses"] or "{" not in path, (method, path)
