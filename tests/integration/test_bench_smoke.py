"""The benchmark suite still runs: `python -m bench.run --quick` on each backend exits 0 and
writes every figure, each a positive number. A smoke check, not a timed test: the figures'
values are not judged here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Kept here rather than imported from bench, so a figure dropped there fails this test.
FIGURES = (
    "batch_trades_per_s",
    "batch_events_per_s",
    "batch_request_ms",
    "batch_server_cpu_cores",
    "single_trades_per_s",
    "single_request_p50_ms",
    "single_request_p99_ms",
    "single_server_cpu_cores",
    "raw_rows_per_s",
    "batch_vs_raw_ratio",
    "single_vs_raw_ratio",
    "lag_batch_p50_ms",
    "lag_batch_p99_ms",
    "lag_single_p50_ms",
    "lag_single_p99_ms",
    "account_load_cold_ms",
    "account_load_warm_ms",
    "export_events_per_s",
    "rebuild_events_per_s",
    "payout_report_ms",
    "server_peak_rss_mb",
    "scale_batch_trades_per_s",
    "scale_server_peak_rss_mb",
)


def run_quick(backend: str, out: Path, *extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROPLEDGER_")}
    command = [sys.executable, "-m", "bench.run", "--quick", "--backend", backend]
    proc = subprocess.run(
        [*command, "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert out.exists(), proc.stdout
    results: dict[str, Any] = json.loads(out.read_text())
    assert results["mode"] == "quick"
    assert list(results["backends"]) == [backend]
    figures = results["backends"][backend]["figures"]
    missing = [name for name in FIGURES if name not in figures]
    assert not missing, f"figures missing: {missing}"
    for name in FIGURES:
        value = figures[name]["value"]
        assert isinstance(value, int | float), (name, value)
        assert math.isfinite(value), (name, value)
        assert value > 0, (name, value)
        assert figures[name]["unit"], name
    assert "batch_trades_per_s" in proc.stdout  # the printed table
    return results


def test_quick_bench_on_sqlite(tmp_path: Path) -> None:
    run_quick("sqlite", tmp_path / "sqlite.json")


@pytest.mark.postgres
def test_quick_bench_on_postgres(tmp_path: Path, postgres_server: str) -> None:
    run_quick("postgres", tmp_path / "postgres.json", "--postgres-admin-url", postgres_server)


MULTIPROC_FIGURES = (
    "batch_trades_per_s",
    "batch_request_p50_ms",
    "batch_request_p99_ms",
    "lag_batch_p50_ms",
    "lag_batch_p99_ms",
    "single_trades_per_s",
    "single_request_p50_ms",
    "single_request_p99_ms",
    "lag_single_p50_ms",
    "lag_single_p99_ms",
)


@pytest.mark.postgres
def test_quick_multiprocess_bench_on_postgres(tmp_path: Path, postgres_server: str) -> None:
    """Two `propledger serve` and two `propledger project` processes on one database: the
    run exits 0 only when its own checks pass (each trade once, projections equal a
    replay, trial balance zero)."""
    out = tmp_path / "multiproc.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROPLEDGER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.multiproc", "--quick", "--out", str(out),
         "--postgres-admin-url", postgres_server],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(out.read_text())
    assert results["setup"] == {"api_processes": 2, "projection_workers": 2, "group_window_ms": 0}
    assert results["ok"] is True
    assert all(check["ok"] for check in results["checks"].values())
    exactly_once = results["checks"]["exactly_once"]
    assert exactly_once["trades_sent"] == exactly_once["trades_recorded"] > 0
    for name in MULTIPROC_FIGURES:
        value = results["figures"][name]
        assert isinstance(value, int | float), (name, value)
        assert math.isfinite(value), (name, value)
        # A lag can round to zero when the board was ahead of the reply.
        assert value >= 0 if name.startswith("lag_") else value > 0, (name, value)
