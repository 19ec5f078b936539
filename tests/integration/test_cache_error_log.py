"""`python -m include.esg_report.cli errors --date D`: the error log, straight from the ledger."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from include.esg_report.ledger import Ledger, connect
from include.esg_report.settings import LedgerSettings
from include.esg_report.validation import ESG_FIELDS, RatingResult, Status, failed

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 12, 4)
T0 = dt.datetime(2026, 12, 4, 11, 0, tzinfo=dt.UTC)


def ledger_conn(settings: LedgerSettings) -> str:
    if settings.dialect == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": str(settings.sqlite_path)})
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": settings.host,
            "port": settings.port,
            "schema": settings.database,
            "login": settings.login,
        }
    )


def cli(settings: LedgerSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW_CONN_ESG_LEDGER": ledger_conn(settings), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "include.esg_report.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_errors_lists_failed_and_partial_accounts_of_the_date(ledger_settings):
    ledger = Ledger(connect(ledger_settings))
    good = dict.fromkeys(ESG_FIELDS, "50") | {"primary_esg_focus": "Social", "analysis_date": "2026-12-01"}
    partial = good | {"social_score": None}
    ledger.record(DAY, "run-1", RatingResult("AC1", Status.SUCCESSFUL, good, None), 1, T0, T0)
    ledger.record(DAY, "run-1", RatingResult("AC2", Status.PARTIAL, partial, "social_score: missing"), 2, T0, T0)
    reason = "HTTP 503 after 4 attempts"
    ledger.record(DAY, "run-2", failed("AC3", reason), 4, T0, T0 + dt.timedelta(seconds=7))
    # Another date's failure is not in this date's log.
    ledger.record(DAY + dt.timedelta(days=1), "run-3", failed("AC4", "HTTP 404"), 1, T0, T0)

    done = cli(ledger_settings, "errors", "--date", DAY.isoformat())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split("\t") == ["account_id", "status", "attempts", "last_attempt_at", "run_id", "reason"]
    assert [line.split("\t") for line in lines[1:]] == [
        ["AC2", "Partial", "2", "2026-12-04T11:00:00Z", "run-1", "social_score: missing"],
        ["AC3", "Failed", "4", "2026-12-04T11:00:07Z", "run-2", "HTTP 503 after 4 attempts"],
    ]
    assert "2 Failed or Partial accounts for 2026-12-04" in done.stderr


def test_errors_of_a_date_without_problems_is_empty(sqlite_ledger):
    done = cli(sqlite_ledger, "errors", "--date", "2026-01-02")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["account_id\tstatus\tattempts\tlast_attempt_at\trun_id\treason"]
    assert "0 Failed or Partial accounts" in done.stderr
