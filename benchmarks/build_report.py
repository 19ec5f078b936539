"""Benchmark: build the report of 1,000,000 accounts from a SQLite ledger; wall time and peak memory.

Fills a fresh ledger with N listed accounts and their results (nasty names, every status), then
runs the job's build step (ledger -> pandas chunks -> gzipped CSV staged on local storage) in a
child process whose peak RSS is measured.

    .venv/bin/python benchmarks/build_report.py --accounts 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPORT_DATE = dt.date(2026, 12, 4)
NAMES = ["Plain Name", 'Quote "q", comma', "=SUM(A1)", "line\r\nbreak", "lone\rcr", "日本語の名前", "  spaced  "]


def fill(ledger_path: Path, accounts: int) -> None:
    """Insert listed accounts and their results in bulk."""
    from sqlalchemy import insert

    from include.esg_report.ledger import connect, listed_accounts, results
    from include.esg_report.settings import LedgerSettings

    engine = connect(LedgerSettings("sqlite", ledger_path))
    now = dt.datetime(2026, 12, 4, 11, tzinfo=dt.UTC)
    step = 50_000
    with engine.begin() as conn:
        for start in range(0, accounts, step):
            ids = [f"AC{i:08d}" for i in range(start, min(start + step, accounts))]
            conn.execute(
                insert(listed_accounts),
                [
                    {
                        "list_id": "bench",
                        "account_id": a,
                        "account_name": NAMES[i % len(NAMES)],
                        "status": "active",
                        "report_date": REPORT_DATE.isoformat(),
                    }
                    for i, a in enumerate(ids)
                ],
            )
            rows = []
            for i, a in enumerate(ids):
                status = ("Successful", "Successful", "Partial", "Failed")[i % 4]
                value = None if status == "Failed" else f"{i % 100}.{i % 7}"
                rows.append(
                    {
                        "report_date": REPORT_DATE.isoformat(),
                        "account_id": a,
                        "status": status,
                        "overall_esg_score": value,
                        "environmental_score": value,
                        "social_score": value,
                        "governance_score": None if status == "Partial" else value,
                        "primary_esg_focus": None if status == "Failed" else "Social",
                        "primary_focus_score": value,
                        "analysis_date": None if status == "Failed" else "2026-12-01",
                        "reason": None,
                        "attempts": 1,
                        "first_attempt_at": now,
                        "last_attempt_at": now,
                        "run_id": "bench",
                    }
                )
            conn.execute(insert(results), rows)


def build(ledger_path: str, base: str) -> tuple[float, int, dict]:
    """The job's build step, in this (child) process; returns wall time, peak RSS and the descriptor."""
    os.environ["AIRFLOW_CONN_ESG_LEDGER"] = json.dumps({"conn_type": "sqlite", "host": ledger_path})
    os.environ["AIRFLOW_VAR_ESG_REPORT_BASE"] = base
    from include.esg_report import pipeline

    started = time.monotonic()
    built = pipeline.build_report({"list_id": "bench", "report_date": REPORT_DATE.isoformat()}, "bench")
    wall = time.monotonic() - started
    return wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, built


def baseline() -> int:
    """Peak RSS of a child that only imports the job's modules (what the build adds is the rest)."""
    from include.esg_report import pipeline  # noqa: F401

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger.sqlite"
        started = time.monotonic()
        fill(ledger, args.accounts)
        print(f"ledger filled       {args.accounts} accounts in {time.monotonic() - started:.1f} s")
        with ProcessPoolExecutor(1) as pool:
            base_rss = pool.submit(baseline).result()
        with ProcessPoolExecutor(1) as pool:
            wall, rss, built = pool.submit(build, str(ledger), Path(tmp, "reports").as_uri()).result()
    summary = built["summary"]
    print(f"build wall time     {wall:.1f} s ({args.accounts / wall:,.0f} rows/s)")
    print(f"report              {summary['bytes'] / 1e6:.1f} MB gzipped, {summary['row_count']} rows")
    print(f"peak RSS            {rss / 1024:.0f} MiB (imports alone: {base_rss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
