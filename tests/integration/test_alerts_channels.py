"""The alerts through real channels: aiosmtpd on loopback and an HTTPS Events API v2 receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging

import pytest
from sqlalchemy import insert

from include.esg_report import alerts
from include.esg_report.ledger import connect, results
from include.esg_report.settings import LedgerSettings
from tests.integration.pagerduty_receiver import run_pagerduty_receiver
from tests.integration.smtp_capture import run_smtp_capture

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
SMTP_PASSWORD = "smtp-test-secret"
REPORT_DATE = dt.date(2026, 12, 4)
RUN_ID = "manual__2026-12-04T11:00:00+00:00"
TO = ["compliance@example.test", "oncall@example.test"]


@pytest.fixture
def channels(tmp_path, monkeypatch):
    """SMTP and PagerDuty receivers, with the connections and variables pointing at them."""
    with run_smtp_capture(password=SMTP_PASSWORD) as smtp, run_pagerduty_receiver(tmp_path, ROUTING_KEY) as pd:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(smtp.connection()))
        monkeypatch.setenv(
            "AIRFLOW_CONN_PAGERDUTY_EVENTS_DEFAULT",
            json.dumps({"conn_type": "pagerduty_events", "host": pd.url, "password": ROUTING_KEY}),
        )
        monkeypatch.setenv("AIRFLOW_VAR_ESG_ALERT_EMAILS", ", ".join(TO))
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.test")
        # The pagerduty client (httpx2) trusts SSL_CERT_FILE; requests-based code REQUESTS_CA_BUNDLE.
        monkeypatch.setenv("SSL_CERT_FILE", str(pd.cert_file))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pd.cert_file))
        yield smtp, pd


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    """A SQLite ledger holding 20 results of the report date, 5 of them Failed."""
    path = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("AIRFLOW_CONN_ESG_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    engine = connect(LedgerSettings(dialect="sqlite", sqlite_path=path))
    now = dt.datetime.now(dt.UTC)
    reasons = ["permanent error: HTTP 404 for A{}"] * 3 + ["bad body: not a JSON object"] * 2
    rows = [
        {
            "report_date": REPORT_DATE.isoformat(),
            "account_id": f"A{i:03d}",
            "status": "Failed" if i < 5 else "Successful",
            "reason": reasons[i].format(i) if i < 5 else None,
            "attempts": 1,
            "first_attempt_at": now,
            "last_attempt_at": now,
            "run_id": RUN_ID,
        }
        for i in range(20)
    ]
    with engine.begin() as conn:
        conn.execute(insert(results), rows)
    engine.dispose()
    return path


def _no_secret_in(text: str) -> None:
    assert ROUTING_KEY not in text
    assert SMTP_PASSWORD not in text


def test_data_quality_warning_pages_and_emails_the_top_reasons(channels, ledger, caplog):
    smtp, pd = channels
    caplog.set_level(logging.INFO)
    published = {"report": "s3://b/r.csv.gz", "row_count": 20, "status_counts": {"Successful": 15, "Failed": 5}}
    outcome = alerts.check_data_quality(published, REPORT_DATE, alerts.DAG_ID, RUN_ID)
    assert outcome["alerted"] is True and outcome["sent"] == {"page": True, "email": True}

    (event,) = pd.snapshot()
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "esg_ratings_report/2026-12-04/data-quality"
    assert event["payload"]["severity"] == "warning"
    assert "5 of 20 accounts Failed (25.0% > 5.0%)" in event["payload"]["summary"]
    assert event["payload"]["custom_details"]["top_reasons"] == {"permanent error": 3, "bad body": 2}

    (mail,) = smtp.snapshot()
    assert sorted(mail.rcpt_tos) == sorted(TO)
    assert mail.mail_from == "esg-alerts@example.test"
    assert "2026-12-04: 5 of 20 accounts Failed" in mail.subject
    assert "3 × permanent error" in mail.html and "2 × bad body (e.g. bad body: not a JSON object)" in mail.html
    assert "python -m include.esg_report.cli errors --date 2026-12-04" in mail.html
    assert "https://airflow.example.test/dags/esg_ratings_report/runs/manual__2026-12-04T11%3A00%3A00%2B00%3A00" in (
        mail.html
    )
    _no_secret_in(caplog.text)


def test_within_the_threshold_no_warning_and_the_old_one_is_resolved(channels, ledger, monkeypatch):
    smtp, pd = channels
    monkeypatch.setenv("AIRFLOW_VAR_ESG_FAILED_SHARE_ALERT", "0.25")
    published = {"row_count": 20, "status_counts": {"Successful": 15, "Failed": 5}}
    assert alerts.check_data_quality(published, REPORT_DATE, alerts.DAG_ID, RUN_ID)["alerted"] is False
    assert [(e["event_action"], e["dedup_key"]) for e in pd.snapshot()] == [
        ("resolve", "esg_ratings_report/2026-12-04/data-quality")
    ]
    assert smtp.snapshot() == []


def test_a_bad_threshold_fails_the_step_naming_the_variable(channels, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_ESG_FAILED_SHARE_ALERT", "five percent")
    with pytest.raises(ValueError, match="esg_failed_share_alert"):
        alerts.check_data_quality({"row_count": 1, "status_counts": {}}, REPORT_DATE, alerts.DAG_ID, RUN_ID)


def _states(monkeypatch, states):
    monkeypatch.setattr(alerts, "task_states", lambda dag_id, run_id: states)


def test_deadline_miss_pages_critical_and_emails_how_far_the_run_got(channels, monkeypatch, tmp_path):
    smtp, pd = channels
    monkeypatch.setenv("AIRFLOW_VAR_ESG_REPORT_BASE", (tmp_path / "reports").as_uri())
    _states(
        monkeypatch, {("list_accounts", -1): "success", ("fetch_batch", 0): "success", ("fetch_batch", 1): "running"}
    )
    context = {
        "dag_run": {
            "dag_id": alerts.DAG_ID,
            "dag_run_id": RUN_ID,
            "conf": {"report_date": "2026-12-04"},
            "logical_date": "2026-12-04T11:00:00Z",
            "run_after": "2026-12-04T11:00:00Z",
            "state": "running",
        },
        "deadline": {"id": "x", "deadline_time": "2026-12-04T13:00:00+00:00"},
    }
    assert asyncio.run(alerts.deadline_missed(context=context)) == "page sent, email sent"

    (event,) = pd.snapshot()
    assert event["dedup_key"] == "esg_ratings_report/2026-12-04"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["source"] == "airflow/esg_ratings_report"
    assert "deadline 2026-12-04 07:00:00 CST missed" in event["payload"]["summary"]
    assert event["payload"]["custom_details"]["progress"].startswith("1/2 batches fetched")
    assert event["links"][0]["href"].startswith("https://airflow.example.test/dags/esg_ratings_report/runs/manual__")

    (mail,) = smtp.snapshot()
    for text in ("DAG: esg_ratings_report", "Report date: 2026-12-04", f"Run: {RUN_ID}", "1/2 batches fetched"):
        assert text in mail.html


def test_no_deadline_alert_when_the_report_of_the_date_is_published(channels, monkeypatch, tmp_path):
    smtp, pd = channels
    folder = tmp_path / "reports" / "report_date=2026-12-04"
    folder.mkdir(parents=True)
    (folder / "_SUCCESS.json").write_text(json.dumps({"run_id": "scheduled__other", "report_date": "2026-12-04"}))
    monkeypatch.setenv("AIRFLOW_VAR_ESG_REPORT_BASE", (tmp_path / "reports").as_uri())
    _states(monkeypatch, {})
    run = {"dag_id": alerts.DAG_ID, "dag_run_id": RUN_ID, "conf": {"report_date": "2026-12-04"}, "run_after": None}
    assert asyncio.run(alerts.deadline_missed(context={"dag_run": run, "deadline": {}})) == (
        "no alert: the report is published"
    )
    assert pd.snapshot() == [] and smtp.snapshot() == []


def _run_context(**conf):
    moment = dt.datetime(2026, 12, 4, 11, tzinfo=dt.UTC)
    run = type("Run", (), {"dag_id": alerts.DAG_ID, "run_id": RUN_ID, "conf": conf, "logical_date": moment})
    run.run_after = moment
    return {"dag_run": run, "run_id": RUN_ID, "reason": "task_failure"}


def test_failed_run_pages_and_emails_the_failed_tasks_and_first_error_lines(channels, monkeypatch):
    smtp, pd = channels
    from airflow.sdk.execution_time import xcom

    errors = {("fetch_batch", 2): "ConfigError: connection 'esg_api': extra.token_url is required"}
    _states(
        monkeypatch,
        {("list_accounts", -1): "success", ("fetch_batch", 1): "success", ("fetch_batch", 2): "failed"},
    )
    monkeypatch.setattr(
        xcom.XCom, "get_one", classmethod(lambda cls, **kw: errors.get((kw["task_id"], kw["map_index"])))
    )
    alerts.on_run_failure(_run_context())

    (event,) = pd.snapshot()
    assert event["event_action"] == "trigger" and event["dedup_key"] == "esg_ratings_report/2026-12-04"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["summary"] == (
        "[ESG report] 2026-12-04: run failed in fetch_batch[2]: "
        "ConfigError: connection 'esg_api': extra.token_url is required"
    )
    (mail,) = smtp.snapshot()
    assert "Failed task fetch_batch[2]: ConfigError: connection &#x27;esg_api&#x27;" in mail.html


def test_success_resolves_the_incident_of_the_date_without_email(channels):
    smtp, pd = channels
    alerts.on_run_success(_run_context(report_date="2026-12-03"))
    assert [(e["event_action"], e["dedup_key"]) for e in pd.snapshot()] == [
        ("resolve", "esg_ratings_report/2026-12-03")
    ]
    assert smtp.snapshot() == []


def test_broken_channels_are_logged_and_never_raise_nor_leak_secrets(channels, monkeypatch, caplog):
    smtp, pd = channels
    pd.fail_with = 400
    bad = smtp.connection()
    bad["password"] = "wrong-" + SMTP_PASSWORD
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(bad))
    alert = alerts.Alert(subject="s", severity="critical", dedup_key="k", lines=["x"], details={})
    assert alerts.send(alert) == {"page": False, "email": False}
    assert "alert page not sent" in caplog.text and "alert email not sent" in caplog.text
    assert smtp.failed_logins >= 1
    assert "wrong-" + SMTP_PASSWORD not in caplog.text
    _no_secret_in(caplog.text)


def test_an_untrusted_certificate_is_refused(channels, monkeypatch, caplog):
    # The receiver is reached only because the test trusts its certificate: without that, no event.
    _smtp, pd = channels
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    import pagerduty

    # The client retries network (here: TLS) errors with a backoff; keep the test short.
    monkeypatch.setattr(pagerduty.EventsApiV2Client, "sleep_timer", 0.01)
    alert = alerts.Alert(subject="s", severity="critical", dedup_key="k", lines=["x"], details={})
    assert alerts.send(alert, email=False) == {"page": False}
    assert pd.snapshot() == []


def test_no_recipients_means_no_email_but_still_a_page(channels, monkeypatch):
    smtp, pd = channels
    monkeypatch.setenv("AIRFLOW_VAR_ESG_ALERT_EMAILS", "")
    alert = alerts.Alert(subject="s", severity="critical", dedup_key="k", lines=["x"], details={})
    assert alerts.send(alert) == {"page": True, "email": False}
    assert len(pd.snapshot()) == 1 and smtp.snapshot() == []
