"""Operator commands: `summary` of a published report and `errors`, the error log of a report date."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from include.esg_report import settings as cfg
from include.esg_report.dates import REPORT_TIMEZONE
from include.esg_report.ledger import Ledger, connect
from include.esg_report.publish import MANIFEST_NAME, report_dir, sha256_of


def _today() -> str:
    return dt.datetime.now(REPORT_TIMEZONE).date().isoformat()


def summary(report_date: dt.date) -> int:
    """Print where the report of a date is, whether its manifest matches it, and its status counts."""
    folder = report_dir(cfg.variable("esg_report_base", cfg.DEFAULT_REPORT_BASE), report_date)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.exists():
        sys.stderr.write(f"no published report for {report_date}: {manifest_path} does not exist\n")
        return 1
    content = json.loads(manifest_path.read_bytes())
    report = folder / content["report"]
    verified = sha256_of(report) == content["sha256"]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(content["status_counts"].items()))
    sys.stdout.write(
        f"report:   {report}\n"
        f"manifest: {manifest_path}\n"
        f"run:      {content['run_id']}\n"
        f"rows:     {content['row_count']} ({counts})\n"
        f"sha256:   {content['sha256']} ({'verified' if verified else 'MISMATCH'})\n"
    )
    return 0 if verified else 2


def _utc(moment: object) -> str:
    """ISO 8601 in UTC; SQLite hands timestamps back without their zone, and they were written in UTC."""
    if not isinstance(moment, dt.datetime):
        return str(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: object) -> str:
    """One TSV cell: reasons may hold tabs or line breaks, which would split the row."""
    return " ".join(str("" if value is None else value).split())


def errors(report_date: dt.date) -> int:
    """Print the Failed and Partial accounts of a date with reason, attempts and last attempt time."""
    rows = Ledger(connect(cfg.load_ledger_settings())).problems(report_date)
    writer = sys.stdout.write
    writer("account_id\tstatus\tattempts\tlast_attempt_at\trun_id\treason\n")
    for row in rows:
        cells = (row["account_id"], row["status"], row["attempts"], _utc(row["last_attempt_at"]), row["run_id"])
        writer("\t".join(map(_cell, (*cells, row["reason"]))) + "\n")
    sys.stderr.write(f"{len(rows)} Failed or Partial accounts for {report_date}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: python -m include.esg_report.cli {summary,errors} [--date YYYY-MM-DD]."""
    parser = argparse.ArgumentParser(prog="esg-report", description=__doc__)
    parser.add_argument("command", choices=["summary", "errors"])
    parser.add_argument("--date", default=_today(), type=dt.date.fromisoformat, help="report date (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    return summary(args.date) if args.command == "summary" else errors(args.date)


if __name__ == "__main__":
    raise SystemExit(main())
