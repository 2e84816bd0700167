"""The shipped deployment: manifests that say what the README promises, and a read
replica setting that serves reports from another connection."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from tests.support import SECRET, auth, program_body, purchase_body, sqlite_file_url, uid

ROOT = Path(__file__).resolve().parents[2]


def manifests() -> dict[str, dict[str, Any]]:
    documents = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "propledger.yaml").read_text())
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in documents}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = doc["spec"]["template"]["spec"]["containers"]
    return only


def env_names(doc: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container(doc).get("env", [])}


def test_the_manifests_run_migrations_api_workers_and_a_disruption_budget() -> None:
    found = manifests()
    assert container(found["Job/propledger-migrate"])["args"] == ["migrate"]
    # Re-applied before each rollout: a finished Job must be gone (its template is fixed).
    assert found["Job/propledger-migrate"]["spec"]["ttlSecondsAfterFinished"] > 0
    api = found["Deployment/propledger-api"]
    assert container(api)["readinessProbe"]["httpGet"]["path"] == "/health"
    # Not /health (it checks the store): a database outage must not restart every pod.
    assert "tcpSocket" in container(api)["livenessProbe"]
    assert env_names(api)["PROPLEDGER_PROJECTIONS"]["value"] == "external"
    assert "PROPLEDGER_REPLICA_URL" in env_names(api)
    workers = found["Deployment/propledger-projections"]
    assert container(workers)["args"] == ["project"]
    assert found["PodDisruptionBudget/propledger-api"]["spec"]["minAvailable"] >= 1
    for doc in (api, workers, found["Job/propledger-migrate"]):
        # `:latest` is pulled Always by default: an image loaded into the cluster never ran.
        assert container(doc)["imagePullPolicy"] == "IfNotPresent"
        secret = env_names(doc)["PROPLEDGER_JWT_SECRET"]["valueFrom"]["secretKeyRef"]
        assert secret["name"] == "propledger"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["propledger"]' in dockerfile
    assert "PROPLEDGER_ENV=production" in dockerfile


def test_reports_and_listings_read_from_the_replica_when_one_is_configured(
    tmp_path: Path,
) -> None:
    primary = sqlite_file_url(tmp_path / "primary.db")
    # A "replica" that is a different, empty database: listings must come from it.
    replica = sqlite_file_url(tmp_path / "replica.db")
    from ledger.migrate import migrate

    migrate(replica)
    settings = Settings(
        propledger_database_url=primary,
        propledger_jwt_secret=SECRET,
        propledger_replica_url=replica,
    )
    with TestClient(create_app(settings)) as client:
        program = program_body(uid("replica-"))
        client.post("/v1/programs", json=program, headers=auth("admin"))
        body = purchase_body(program["program_id"])
        assert client.post("/v1/purchases", json=body, headers=auth("finance")).status_code == 201
        # The replica never receives the writes, so its projections stay behind: a read
        # that must reflect the write waits, then says so (503), instead of answering stale.
        reply = client.get(f"/v1/traders/{body['trader_id']}/accounts", headers=auth("finance"))
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "projections_behind"
        assert reply.headers["retry-after"] == "1"
        # Account state comes from the aggregates (the primary), replica or not.
        account_id = client.get(f"/v1/traders/{body['trader_id']}", headers=auth("finance")).json()[
            "first_account_ids"
        ][0]
        assert client.get(f"/v1/accounts/{account_id}", headers=auth("finance")).status_code == 200


def test_a_replica_that_cannot_be_reached_leaves_reports_to_the_primary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every report and listing waited the pool's 30 s for the replica, then answered 503
    (past DESIGN's bounded 10 s wait), while the primary could answer at once."""
    settings = Settings(
        propledger_database_url=sqlite_file_url(tmp_path / "primary.db"),
        propledger_jwt_secret=SECRET,
        propledger_replica_url="postgresql://postgres@127.0.0.1:1/nowhere",  # refused
    )
    caplog.set_level(logging.WARNING, logger="api.reads")
    with TestClient(create_app(settings)) as client:
        program = program_body(uid("replica-"))
        client.post("/v1/programs", json=program, headers=auth("admin"))
        body = purchase_body(program["program_id"])
        assert client.post("/v1/purchases", json=body, headers=auth("finance")).status_code == 201
        for path in (
            "/v1/reports/audit",  # first: it waits for no position, yet must not hang
            f"/v1/traders/{body['trader_id']}/accounts",
            "/v1/ledger/trial-balance",
            "/v1/payouts",
        ):
            reply = client.get(path, headers=auth("finance"))
            assert reply.status_code == 200, (path, reply.text)
        accounts = client.get(f"/v1/traders/{body['trader_id']}/accounts", headers=auth("finance"))
        assert [a["program_id"] for a in accounts.json()["accounts"]] == [program["program_id"]]
        rows = client.get("/v1/ledger/trial-balance", headers=auth("finance")).json()["rows"]
        assert {"account": "assets:bank", "currency": "USD", "debit": "540.00"}.items() <= next(
            row for row in rows if row["account"] == "assets:bank"
        ).items()
    # Tried once, then left alone for a while: not once per request.
    warnings = [r for r in caplog.records if "read replica cannot be reached" in r.getMessage()]
    assert len(warnings) == 1
