"""`POST /v1/audit/verify` and `propledger audit verify`: the chain, the snapshots, then
every projection against a fresh replay.

Each projection is rebuilt from zero in a scratch database (a temporary SQLite file with
the same migrations) up to the position the live one has reached, then compared row by
row. Only `api` sees both the ledger and the projections, so the check lives here.

Safe on a live service: the chain is read in one snapshot of the log (`verify_chain`), and
each live projection's rows are read in one snapshot together with its tracked position,
which is then the position the replay stops at (`read_live`). Writers committing during
the check change neither answer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger.app import PropLedger
from ledger.audit import Progress, verify_chain, verify_snapshots
from ledger.migrate import migrate
from projections.compare import compare, read_live
from projections.runner import Projection, ProjectionRunner
from projections.store import Database


def verify(
    ledger: PropLedger,
    database_url: str,
    live: Database,
    projections: list[Projection],
    *,
    anchor: tuple[int, str] | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = say or (lambda _: None)
    say("checking the hash chain")
    chain = verify_chain(database_url, anchor=anchor, progress=progress)
    say("checking snapshots against a replay of their events")
    snapshots = verify_snapshots(ledger, database_url)
    live_runner = ProjectionRunner(ledger, live, projections)
    logged = ledger.position()  # what every live projection must have reached
    try:
        live_runner.wait_for(logged, timeout=30.0)
    except Exception as error:
        say(f"the live projections cannot catch up: {error}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="propledger-verify-") as scratch_dir:
        scratch_url = f"sqlite:///{Path(scratch_dir) / 'rebuild.db'}"
        migrate(scratch_url)
        scratch = Database(scratch_url)
        try:
            for projection in projections:
                say(f"rebuilding {projection.name} from zero")
                results[projection.name] = _check_projection(
                    ledger, projection, live, scratch, logged
                )
        finally:
            scratch.close()
    ok = chain.ok and snapshots.ok and all(not result["differences"] for result in results.values())
    return {
        "ok": ok,
        "chain": {
            "ok": chain.ok,
            "events": chain.events,
            "head": {"position": chain.head_position, "hash": chain.head_hash},
            "first_broken_link": chain.findings[0].to_dict() if chain.findings else None,
            "findings": [finding.to_dict() for finding in chain.findings[:100]],
        },
        "snapshots": {
            "ok": snapshots.ok,
            "checked": snapshots.checked,
            "findings": [finding.to_dict() for finding in snapshots.findings[:100]],
        },
        "projections": results,
    }


def _check_projection(
    ledger: PropLedger, projection: Projection, live: Database, scratch: Database, logged: int
) -> dict[str, Any]:
    """The live rows as of the position they reflect, against a replay to exactly there.

    Not "wait until the live view reaches P, then compare": a row a later event updated
    (an account's balance) differs from a replay to P however the comparison is limited,
    so the live rows and their position must come from one snapshot."""
    view = read_live(projection, live)
    rebuild = ProjectionRunner(ledger, scratch, [projection])
    try:
        rebuild.rebuild(projection, until=view.position)
    except Exception as error:
        # A stored event that no longer decodes (edited bytes) stops the replay.
        failure = {"problem": "rebuild_failed", "error": f"{type(error).__name__}: {error}"}
        return {"position": view.position, "differences": [failure]}
    differences = compare(projection, view, scratch)
    if view.position < logged:
        # Still behind after the wait: a projection that cannot apply an event stays
        # there for good, and its rows agree with a replay to where it stopped.
        differences.insert(
            0,
            {
                "problem": "behind",
                "position": view.position,
                "log_position": logged,
                "message": f"{projection.name} stopped at position {view.position}; the "
                f"log had reached {logged} when verify began",
            },
        )
    return {"position": view.position, "differences": differences}


def stream_links(
    database: Database, stream_id: str, after_version: int, until_version: int
) -> dict[int, dict[str, Any]]:
    """The chain links of one stream's events, by version."""
    try:
        stream = UUID(stream_id).hex
    except ValueError:
        return {}
    rows = database.query(
        "SELECT position, version, hash FROM event_chain "
        "WHERE stream_id = ? AND version > ? AND version <= ?",
        (stream, after_version, until_version),
    )
    return {
        int(row["version"]): {"position": int(row["position"]), "hash": row["hash"]} for row in rows
    }


_COUNTED = {
    "breaches": "domain.account:TradingAccount.RuleBreached",
    "passes": "domain.account:TradingAccount.PhasePassed",
    "payouts_requested": "domain.payout:Payout.Requested",
    "payouts_approved": "domain.payout:Payout.Approved",
    "payouts_paid": "domain.payout:Payout.Paid",
    "refunds": "domain.payment:Payment.RefundBooked",
    "chargebacks": "domain.payment:Payment.DisputeFundsMoved",
    "disputes": "domain.payment:Payment.DisputeChanged",
}


def period_report(
    database: Database, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    """Counts of events by type recorded in [start, end), the notable ones named, and the
    chain head (to keep as an anchor outside the database)."""
    clauses, params = [], []
    if start is not None:
        clauses.append("c.recorded_at >= ?")
        params.append(start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    if end is not None:
        clauses.append("c.recorded_at < ?")
        params.append(end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    events_table = "stored_events" if database.dialect == "sqlite" else "propledger_events"
    position = "rowid" if database.dialect == "sqlite" else "notification_id"
    rows = database.query(
        f"SELECT e.topic AS topic, COUNT(*) AS n FROM {events_table} e "
        f"JOIN event_chain c ON c.position = e.{position} {where} GROUP BY e.topic",
        params,
    )
    by_topic = {row["topic"]: int(row["n"]) for row in rows}
    by_type = {topic.partition(":")[2] or topic: count for topic, count in sorted(by_topic.items())}
    head = database.query("SELECT position, hash FROM event_chain_head WHERE id = 1")
    return {
        "events": sum(by_topic.values()),
        "events_by_type": by_type,
        **{name: by_topic.get(topic, 0) for name, topic in _COUNTED.items()},
        "chain_head": (
            {"position": int(head[0]["position"]), "hash": head[0]["hash"]} if head else None
        ),
    }
