"""
### ESG ratings report

Every day at 05:00 America/Chicago: list the active accounts (Account Management), fetch each
account's ESG rating in mapped batches (pool `esg_api`, one shared rate limit), keep every result
in the ledger, then build one gzipped CSV for the report date and publish it with `_SUCCESS.json`.
Configuration: connections `account_management`, `esg_api`, `esg_ledger`, `aws_default`;
variables `esg_report_base`, `esg_batch_size`. See README.md and docs/.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from include.esg_report import pipeline
from include.esg_report.dates import REPORT_TIMEZONE, report_date_for


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
    },
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

    batches = list_accounts()
    fetched = fetch_batch.expand(batch=batches)
    publish_report(build_report(batches, fetched))


esg_ratings_report()
