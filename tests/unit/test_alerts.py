"""The pure parts of the alerts: deadline times, report dates, progress, dedup keys, email bodies."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from include.esg_report import alerts
from include.esg_report.settings import ConfigError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("07:00", dt.time(7)), ("7:05", dt.time(7, 5)), (" 23:59 ", dt.time(23, 59)), ("06:30:15", dt.time(6, 30, 15))],
)
def test_parse_deadline(raw, expected):
    assert alerts.parse_deadline(raw) == expected


@pytest.mark.parametrize("raw", ["7am", "24:00", "07:60", "", "07"])
def test_bad_deadline_names_the_variable(raw):
    with pytest.raises(ConfigError, match="esg_report_deadline"):
        alerts.parse_deadline(raw)


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [(dt.date(2026, 12, 4), 13), (dt.date(2026, 7, 4), 12), (dt.date(2026, 3, 8), 12), (dt.date(2026, 11, 1), 13)],
)
def test_deadline_is_chicago_local_time_across_daylight_saving(day, utc_hour):
    assert alerts.deadline_for(day, dt.time(7)) == dt.datetime(day.year, day.month, day.day, utc_hour, tzinfo=dt.UTC)


def test_report_date_of_a_run():
    scheduled = "2026-12-04T11:00:00+00:00"  # 05:00 in Chicago
    assert alerts.run_report_date({}, scheduled, scheduled) == dt.date(2026, 12, 4)
    assert alerts.run_report_date({"report_date": "2026-11-02"}, scheduled, scheduled) == dt.date(2026, 11, 2)
    # 02:00 UTC is still the evening before in Chicago.
    assert alerts.run_report_date(None, None, "2026-12-05T02:00:00Z") == dt.date(2026, 12, 4)


def test_dedup_key_is_per_dag_and_date():
    assert alerts.dedup_key("esg_ratings_report", dt.date(2026, 12, 4)) == "esg_ratings_report/2026-12-04"
    assert alerts.dedup_key("d", "2026-12-04", "data-quality") == "d/2026-12-04/data-quality"


def test_progress_counts_finished_batches():
    states = {
        ("list_accounts", -1): "success",
        **{("fetch_batch", i): "success" for i in range(3)},
        ("fetch_batch", 3): "running",
        ("build_report", -1): None,
    }
    assert alerts.progress(states) == "3/4 batches fetched; build_report: not started; publish_report: not started"
    assert alerts.progress({("list_accounts", -1): "up_for_retry", ("fetch_batch", -1): None}).startswith(
        "accounts not listed yet (list_accounts: up_for_retry)"
    )


def test_task_states_parses_mapped_keys(monkeypatch):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    answer = {"r1": {"list_accounts": "success", "fetch_batch_0": "success", "fetch_batch_12": "failed"}}
    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(lambda **kw: answer))
    assert alerts.task_states("d", "r1") == {
        ("list_accounts", -1): "success",
        ("fetch_batch", 0): "success",
        ("fetch_batch", 12): "failed",
    }


def test_email_body_escapes_everything_it_shows():
    alert = alerts.Alert(
        subject="s",
        severity="critical",
        dedup_key="k",
        lines=["<script>x</script> {{ conf }}"],
        details={},
        link="http://h/dags/d/runs/manual__2026&x",
    )
    body = alerts.email_html(alert)
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert "{{ conf }}" in body  # sent as is: the notifier is never asked to render it
    assert 'href="http://h/dags/d/runs/manual__2026&amp;x"' in body


def test_first_line_of_an_error():
    assert alerts._first_line(ValueError("bad thing\nTraceback ...")) == "ValueError: bad thing"
    assert alerts._first_line(None) == ""


class _Session:
    def __init__(self, row):
        self.row = row

    def execute(self, _query):
        return SimpleNamespace(one_or_none=lambda: self.row)


def _row(run_type="scheduled", conf=None, when="2026-12-04T11:00:00+00:00"):
    moment = dt.datetime.fromisoformat(when)
    return SimpleNamespace(conf=conf or {}, logical_date=moment, run_after=moment, run_type=run_type)


@pytest.fixture
def deadline_variable(monkeypatch):
    values: dict[str, str | None] = {"esg_report_deadline": None}
    monkeypatch.setattr(alerts, "_deadline_setting", lambda session: values["esg_report_deadline"])
    return values


def test_deadline_setting_reads_the_environment_before_the_metastore(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_ESG_REPORT_DEADLINE", "06:45")
    # The metastore is asked last, and with the caller's session (never reached here).
    assert alerts._deadline_setting(session=None) == "06:45"


def _evaluate(row):
    return alerts.ReportDeadline()._evaluate_with(session=_Session(row), dag_id="esg_ratings_report", run_id="r")


def test_reference_uses_the_variable_on_the_report_date(deadline_variable):
    assert _evaluate(_row()) == dt.datetime(2026, 12, 4, 13, tzinfo=dt.UTC)  # default 07:00 CST
    deadline_variable["esg_report_deadline"] = "06:15"
    assert _evaluate(_row()) == dt.datetime(2026, 12, 4, 12, 15, tzinfo=dt.UTC)
    future = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    manual = _row("manual", {"report_date": future}, when=dt.datetime.now(dt.UTC).isoformat())
    assert _evaluate(manual).date().isoformat() == future


def test_reference_survives_a_bad_variable(deadline_variable, caplog):
    deadline_variable["esg_report_deadline"] = "7am"
    assert _evaluate(_row()) == dt.datetime(2026, 12, 4, 13, tzinfo=dt.UTC)
    assert "esg_report_deadline" in caplog.text


def test_manual_rerun_after_the_deadline_gets_no_deadline(deadline_variable):
    assert _evaluate(_row("manual", {"report_date": "2026-01-05"}, when=dt.datetime.now(dt.UTC).isoformat())) is None
    # A scheduled run created late (scheduler down) is late: its miss fires at once.
    assert _evaluate(_row("scheduled", when="2026-01-05T11:00:00+00:00")) is not None
