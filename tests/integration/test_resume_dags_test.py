"""The whole `airflow dags test` process is SIGKILLed mid-fetch; running the date again finishes the job."""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from include.esg_sandbox.process import run_sandbox
from tests.integration.report_checks import (
    assert_manifest_matches,
    assert_rows_are_the_oracle,
    dags_test_env,
    sandbox_connections,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAY = "2026-11-20"
ACCOUNTS = 150
CONCURRENCY = 4


def _env(home: Path, sandbox_url: str, reports: Path) -> dict[str, str]:
    return dags_test_env(
        home,
        **sandbox_connections(sandbox_url, rate_limit_per_second=100, concurrency=CONCURRENCY, max_attempts=4),
        AIRFLOW_CONN_ESG_LEDGER=json.dumps({"conn_type": "sqlite", "host": str(home / "ledger.sqlite")}),
        AIRFLOW_VAR_ESG_REPORT_BASE=reports.as_uri(),
        AIRFLOW_VAR_ESG_BATCH_SIZE="50",
    )


def _results(home: Path) -> int:
    try:
        with sqlite3.connect(home / "ledger.sqlite", timeout=5) as db:
            return db.execute("SELECT count(*) FROM esg_results WHERE report_date = ?", (DAY,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_killed_dags_test_then_rerun_fetches_each_account_once(tmp_path):
    home, reports = tmp_path / "home", tmp_path / "reports"
    home.mkdir()
    log = (home / "run.log").open("a")
    with run_sandbox(accounts=ACCOUNTS, faults="partial=0.06,not_found=0.03", latency_ms=150, seed=5) as sandbox:
        env = _env(home, sandbox.url, reports)
        airflow = functools.partial(subprocess.run, env=env, cwd=ROOT, stdout=log, stderr=log, check=True)
        airflow([AIRFLOW, "db", "migrate"])
        airflow([AIRFLOW, "pools", "set", "esg_api", "4", "x"])
        first = subprocess.Popen(
            [AIRFLOW, "dags", "test", "esg_ratings_report", f"{DAY}T05:00:00-06:00"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while _results(home) < 40 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        recorded = _results(home)
        assert 40 <= recorded < ACCOUNTS, f"kill landed outside the fetch: {recorded} results"
        assert not (reports / f"report_date={DAY}").exists()

        # Another run of the same report date (a later logical time of the same Chicago day).
        airflow([AIRFLOW, "dags", "test", "esg_ratings_report", f"{DAY}T06:00:00-06:00"], timeout=300)
        served = sandbox.stats(per_account=True)["per_account"]
        oracle = sandbox.expected(DAY)

    served_twice = [a for a, v in served.items() if v["ok"] > 1]
    # Only requests in flight at the kill (at most `concurrency`) may have been answered twice.
    assert len(served_twice) <= CONCURRENCY, served_twice
    folder = reports / f"report_date={DAY}"
    body = (folder / f"esg_ratings_{DAY}.csv.gz").read_bytes()
    assert_manifest_matches(body, json.loads((folder / "_SUCCESS.json").read_text()), DAY)
    assert_rows_are_the_oracle(body, oracle, ACCOUNTS)
