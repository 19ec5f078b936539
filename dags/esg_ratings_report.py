"""
### ESG ratings report

Every day at 05:00 America/Chicago: list the active accounts (Account Management), fetch each
account's ESG rating in mapped batches (pool `esg_api`, one shared rate limit), keep every result
in the ledger, then build one gzipped CSV for the report date and publish it with `_SUCCESS.json`,
then check its share of Failed accounts.
Alerts (docs/runbook.md): a report not published by `esg_report_deadline`, a failed run and too many
Failed accounts email `esg_alert_emails` (`smtp_default`) and page (`pagerduty_events_default`).
Configuration: connections `account_management`, `esg_api`, `esg_ledger`, `aws_default`;
variables `esg_report_base`, `esg_batch_size`. See README.md and docs/.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import AsyncCallback, CronTriggerTimetable, DeadlineAlert, Param, dag, get_current_context, task

from include.esg_report import alerts, pipeline
from include.esg_report.dates import REPORT_TIMEZONE, report_date_for

# `airflow dags test` crashes after a successful run of any DAG with a deadline (apache/airflow#73428,
# fix pending in #73430): the one-process test run goes without the deadline until that fix ships.
_DAGS_TEST = sys.argv[1:3] == ["dags", "test"]


@dag(
    dag_id="esg_ratings_report",
    schedule=CronTriggerTimetable("0 5 * * *", timezone="America/Chicago"),
    start_date=pendulum.datetime(2026, 1, 1, tz=str(REPORT_TIMEZONE)),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        # Keeps each failed try's error for the run's failure alert.
        "on_retry_callback": alerts.record_task_error,
        "on_failure_callback": alerts.record_task_error,
    },
    # The deadline is computed when a run is created (esg_report_deadline on its report date), never here.
    deadline=None
    if _DAGS_TEST
    else DeadlineAlert(
        reference=alerts.ReportDeadline(),
        interval=timedelta(0),
        callback=AsyncCallback(alerts.deadline_missed),
        name="esg_report_deadline",
    ),
    on_failure_callback=alerts.on_run_failure,
    on_success_callback=alerts.on_run_success,
    params={
        "report_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Report date",
            description="YYYY-MM-DD. Empty: the run's date in America/Chicago.",
        ),
        "account_ids": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Account ids",
            description="Re-fetch only these accounts, keep the other rows of the date, republish. Empty: all.",
        ),
        "force_refresh": Param(
            False, type="boolean", title="Force refresh", description="Ignore cached ratings for this run."
        ),
    },
    tags=["esg", "compliance"],
    doc_md=__doc__,
)
def esg_ratings_report() -> None:
    @task
    def list_accounts(**context: Any) -> list[dict[str, Any]]:
        """List active accounts into the ledger; return the batches to fetch."""
        run = context["dag_run"]
        report_date = report_date_for(context["params"]["report_date"], run.logical_date, run.run_after)
        return pipeline.list_accounts(run.run_id, report_date, context["params"]["account_ids"])

    @task(pool="esg_api", map_index_template="{{ batch_label }}")
    def fetch_batch(batch: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Fetch the ESG ratings of one batch into the ledger."""
        get_current_context()["batch_label"] = pipeline.batch_label(batch)  # type: ignore[typeddict-unknown-key]
        params = context["params"]
        return pipeline.fetch_batch(batch, context["run_id"], params["force_refresh"], params["account_ids"])

    @task
    def build_report(batches: list[dict[str, Any]], fetched: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        """Stage the report CSV built from the ledger."""
        return pipeline.build_report(batches[0], context["run_id"])

    @task
    def publish_report(built: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Publish the report, then its manifest."""
        return pipeline.publish_report(built, context["run_id"])

    @task
    def check_quality(published: dict[str, Any], **context: Any) -> dict[str, Any]:
        """Warn when too many accounts Failed; the report stays published."""
        run = context["dag_run"]
        report_date = report_date_for(context["params"]["report_date"], run.logical_date, run.run_after)
        return alerts.check_data_quality(published, report_date, run.dag_id, run.run_id)

    batches = list_accounts()
    fetched = fetch_batch.expand(batch=batches)
    check_quality(publish_report(build_report(batches, fetched)))


esg_ratings_report()
