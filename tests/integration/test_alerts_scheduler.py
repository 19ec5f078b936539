"""Alerts under a real scheduler, dag-processor, triggerer and api-server (LocalExecutor).

A run slowed past its deadline is emailed and paged exactly once (by the triggerer); a failed run
pages once with the failed task and its error; the successful rerun of that date resolves the incident.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from include.esg_report.dates import REPORT_TIMEZONE
from include.esg_sandbox.process import run_sandbox
from tests.integration.airflow_cluster import AirflowCluster, AirflowError
from tests.integration.pagerduty_receiver import PagerDutyReceiver, run_pagerduty_receiver
from tests.integration.report_checks import sandbox_connections
from tests.integration.smtp_capture import SmtpCapture, run_smtp_capture

pytestmark = [
    pytest.mark.scheduler,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

DAG = "esg_ratings_report"
ROUTING_KEY = "E2EROUTINGKEY0123456789abcdefABC"
SMTP_PASSWORD = "smtp-e2e-secret"
TO = "compliance@example.test,oncall@example.test"
RUN_TIMEOUT = 240
FAILED_DATE = "2026-11-02"


def set_variable(cluster: AirflowCluster, key: str, value: str) -> None:
    """Set a Variable in the metadata database (what an operator does in the UI)."""
    try:
        cluster.api("PATCH", f"/api/v2/variables/{key}", {"key": key, "value": value})
    except AirflowError:
        cluster.api("POST", "/api/v2/variables", {"key": key, "value": value})


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[AirflowCluster, Any, SmtpCapture, PagerDutyReceiver]]:
    folder = tmp_path_factory.mktemp("alerts-e2e")
    with (
        run_sandbox(accounts=40, seed=5, faults="none", rate_limit=200) as sandbox,
        run_smtp_capture(password=SMTP_PASSWORD) as smtp,
        run_pagerduty_receiver(folder, ROUTING_KEY) as pd,
    ):
        env = {
            # One request at a time, so the sandbox's latency decides how long a batch takes.
            **sandbox_connections(sandbox.url, rate_limit_per_second=150, concurrency=1),
            "AIRFLOW_CONN_ESG_LEDGER": json.dumps({"conn_type": "sqlite", "host": str(folder / "ledger.sqlite")}),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp.connection()),
            "AIRFLOW_CONN_PAGERDUTY_EVENTS_DEFAULT": json.dumps(
                {"conn_type": "pagerduty_events", "host": pd.url, "password": ROUTING_KEY}
            ),
            "AIRFLOW_VAR_ESG_REPORT_BASE": (folder / "reports").as_uri(),
            "ESG_TEST_REPORTS": str(folder / "reports"),
            "AIRFLOW_VAR_ESG_ALERT_EMAILS": TO,
            # Every component trusts the receiver's self-signed certificate, and only through these.
            "SSL_CERT_FILE": str(pd.cert_file),
            "REQUESTS_CA_BUNDLE": str(pd.cert_file),
        }
        with AirflowCluster(env=env, triggerer=True, pools={"esg_api": 4}) as cluster:
            # Variables the tests change live in the metadata database, as an operator's would.
            set_variable(cluster, "esg_batch_size", "20")
            # The run the timetable creates on unpause (today's 05:00) must not miss a deadline here.
            set_variable(cluster, "esg_report_deadline", "23:59:59")
            cluster.unpause(DAG)
            _wait_for_scheduled_run(cluster)
            smtp.messages.clear()
            pd.events.clear()
            try:
                yield cluster, sandbox, smtp, pd
            finally:
                logs = "".join(cluster.log_tail(name, 200_000) for name in ("scheduler", "triggerer", "dag-processor"))
                assert ROUTING_KEY not in logs and SMTP_PASSWORD not in logs


def _wait_for_scheduled_run(cluster: AirflowCluster) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        runs = cluster.api("GET", f"/api/v2/dags/{DAG}/dagRuns?run_type=scheduled")["dag_runs"]
        if runs:
            cluster.wait_for_run(DAG, runs[0]["dag_run_id"], RUN_TIMEOUT)
            return
        time.sleep(1)


def _of_run(events: list[dict[str, Any]], run_id: str, action: str = "trigger") -> list[dict[str, Any]]:
    return [e for e in events if e["event_action"] == action and e["payload"]["custom_details"].get("run_id") == run_id]


def test_missed_deadline_emails_and_pages_exactly_once_then_publishing_resolves(stack):
    cluster, sandbox, smtp, pd = stack
    # 40 accounts in 2 batches, one request at a time at 1 s each: about 20 s of fetching, deadline in 8 s.
    sandbox.configure(latency_ms=1000)
    try:
        due = dt.datetime.now(REPORT_TIMEZONE) + dt.timedelta(seconds=8)
        set_variable(cluster, "esg_report_deadline", due.strftime("%H:%M:%S"))
        # The timetable's run published today's report, and a miss is not alerted for a published
        # report: take it away, as if that run had not happened.
        shutil.rmtree(Path(cluster.env["ESG_TEST_REPORTS"]) / f"report_date={due.date().isoformat()}")
        # force_refresh: the timetable's run already holds every rating of today in the ledger.
        run_id = cluster.trigger(DAG, conf={"report_date": due.date().isoformat(), "force_refresh": True})
        key = f"{DAG}/{due.date().isoformat()}"
        pages = pd.wait_for(1, timeout=90, event_action="trigger", dedup_key=key)
        assert cluster.dag_run(DAG, run_id)["state"] == "running", "the page came only after the run ended"
        assert cluster.wait_for_run(DAG, run_id, RUN_TIMEOUT) == "success"
    finally:
        sandbox.configure(latency_ms=0)
        set_variable(cluster, "esg_report_deadline", "23:59:59")
    pd.wait_for(1, timeout=60, event_action="resolve", dedup_key=key)
    time.sleep(5)  # anything duplicated would arrive by now

    events = pd.snapshot()
    (page,) = _of_run(events, run_id)
    assert page == pages[0]
    assert page["payload"]["severity"] == "critical"
    assert f"deadline {due:%Y-%m-%d %H:%M:%S} C" in page["payload"]["summary"]
    details = page["payload"]["custom_details"]
    assert details["report_date"] == due.date().isoformat() and details["dag_id"] == DAG
    assert "/2 batches fetched" in details["progress"]
    assert (
        page["links"][0]["href"]
        == f"{cluster.api_url}/dags/{DAG}/runs/{run_id.replace(':', '%3A').replace('+', '%2B')}"
    )
    # The successful run closes the incident of that date.
    assert [e["dedup_key"] for e in _of_run(events, run_id, "resolve")].count(key) == 1

    mails = [m for m in smtp.snapshot() if run_id in m.html]
    assert len(mails) == 1
    (mail,) = mails
    assert sorted(mail.rcpt_tos) == sorted(TO.split(","))
    assert "deadline" in mail.subject and due.date().isoformat() in mail.subject
    for text in (f"DAG: {DAG}", f"Report date: {due.date().isoformat()}", "batches fetched", cluster.api_url):
        assert text in mail.html


def test_failed_run_pages_once_and_the_successful_rerun_resolves(stack):
    cluster, _sandbox, smtp, pd = stack
    key = f"{DAG}/{FAILED_DATE}"
    set_variable(cluster, "esg_batch_size", "many")
    try:
        run_id = cluster.trigger(DAG, conf={"report_date": FAILED_DATE})
        cluster.wait_for_task(DAG, run_id, "list_accounts", states=("up_for_retry",), timeout=90)
        # Its retries would take minutes (30 s, 60 s, 120 s): fail it now, as an operator would in the UI.
        cluster.api(
            "PATCH",
            f"/api/v2/dags/{DAG}/dagRuns/{run_id.replace(':', '%3A').replace('+', '%2B')}/taskInstances/list_accounts",
            {"new_state": "failed"},
        )
        assert cluster.wait_for_run(DAG, run_id, RUN_TIMEOUT) == "failed"
    finally:
        set_variable(cluster, "esg_batch_size", "20")
    pages = pd.wait_for(1, timeout=90, event_action="trigger", dedup_key=key)
    time.sleep(5)
    assert len(_of_run(pd.snapshot(), run_id)) == 1
    (page,) = pages
    assert page["payload"]["severity"] == "critical"
    assert page["payload"]["summary"] == (
        f"[ESG report] {FAILED_DATE}: run failed in list_accounts: "
        "ConfigError: variable 'esg_batch_size' must be an integer, got 'many'"
    )
    (mail,) = [m for m in smtp.snapshot() if run_id in m.html]
    assert "Failed task list_accounts: ConfigError: variable &#x27;esg_batch_size&#x27;" in mail.html

    rerun = cluster.trigger(DAG, conf={"report_date": FAILED_DATE})
    assert cluster.wait_for_run(DAG, rerun, RUN_TIMEOUT) == "success"
    resolved = pd.wait_for(1, timeout=90, event_action="resolve", dedup_key=key)
    assert [e["payload"]["custom_details"]["run_id"] for e in resolved] == [rerun]
    # No new trigger for the date: one incident, opened once, closed once.
    assert len([e for e in pd.snapshot() if e["dedup_key"] == key and e["event_action"] == "trigger"]) == 1
