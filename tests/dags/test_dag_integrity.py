"""The DAG imports cleanly, is wired as designed, and reads no configuration while parsing."""

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "esg_ratings_report"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_schedule_is_5am_chicago_without_catchup(dag):
    timetable = dag.timetable
    assert type(timetable).__name__ == "CronTriggerTimetable"
    assert timetable.expression == "0 5 * * *"
    assert str(timetable.timezone) == "America/Chicago"
    assert dag.catchup is False
    assert dag.max_active_runs == 1


@pytest.mark.parametrize(
    ("after", "expected_utc"),
    [
        (dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC), dt.datetime(2026, 12, 4, 11, tzinfo=dt.UTC)),  # CST
        (dt.datetime(2026, 7, 3, 12, tzinfo=dt.UTC), dt.datetime(2026, 7, 4, 10, tzinfo=dt.UTC)),  # CDT
        (dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC), dt.datetime(2026, 3, 8, 10, tzinfo=dt.UTC)),  # DST starts
        (dt.datetime(2026, 10, 31, 12, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, 11, tzinfo=dt.UTC)),  # DST ends
    ],
)
def test_runs_follow_daylight_saving(dag, after, expected_utc):
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    core = CronTriggerTimetable(dag.timetable.expression, timezone=str(dag.timetable.timezone))
    info = core.next_dagrun_info(
        last_automated_data_interval=DataInterval(after, after),
        restriction=TimeRestriction(earliest=after, latest=None, catchup=True),
    )
    assert info.run_after == expected_utc


def test_every_task_retries_with_exponential_backoff(dag):
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.retry_exponential_backoff, task.task_id


def test_flow_and_fetch_mapping(dag):
    assert [t.task_id for t in dag.topological_sort()] == [
        "list_accounts",
        "fetch_batch",
        "build_report",
        "publish_report",
        "check_quality",
    ]
    fetch = dag.get_task("fetch_batch")
    assert fetch.pool == "esg_api"
    assert "batch_label" in fetch.map_index_template
    assert type(fetch).__name__.endswith("MappedOperator")


def test_params_are_typed_and_documented(dag):
    params = dag.params
    assert set(params.keys()) == {"report_date", "account_ids", "force_refresh"}
    assert params["account_ids"] == [] and params["force_refresh"] is False and params["report_date"] is None
    for name in params:
        param = params.get_param(name)
        assert param.description and param.schema.get("type")


def test_deadline_alert_is_computed_at_run_creation_and_runs_in_the_triggerer(dag):
    from airflow.sdk import AsyncCallback

    from include.esg_report.alerts import ReportDeadline

    (alert,) = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert isinstance(alert.reference, ReportDeadline)
    assert alert.interval == dt.timedelta(0)
    assert isinstance(alert.callback, AsyncCallback)
    # The triggerer imports the callback by this path.
    assert alert.callback.path == "include.esg_report.alerts.deadline_missed"
    assert alert.callback.kwargs == {}


def test_run_and_task_callbacks_are_wired(dag):
    from include.esg_report import alerts

    assert dag.on_failure_callback in (alerts.on_run_failure, [alerts.on_run_failure])
    assert dag.on_success_callback in (alerts.on_run_success, [alerts.on_run_success])
    for task in dag.tasks:
        assert alerts.record_task_error in _as_list(task.on_failure_callback), task.task_id
        assert alerts.record_task_error in _as_list(task.on_retry_callback), task.task_id
    assert dag.get_task("check_quality").upstream_task_ids == {"publish_report"}


def _as_list(callbacks):
    return callbacks if isinstance(callbacks, list) else [callbacks]


def test_the_plugin_lets_the_scheduler_decode_the_deadline(dag):
    # What the dag-processor stores and the scheduler reads back must name a class the plugin registers.
    from airflow.plugins_manager import get_deadline_references_plugins
    from airflow.serialization.decoders import decode_deadline_reference
    from airflow.serialization.encoders import encode_deadline_reference

    from include.esg_report.alerts import ReportDeadline

    (alert,) = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    encoded = encode_deadline_reference(alert.reference)
    assert encoded["__class_path"] == "include.esg_report.alerts.ReportDeadline"
    assert get_deadline_references_plugins()[encoded["__class_path"]] is ReportDeadline
    decoded = decode_deadline_reference(encoded)
    assert isinstance(decoded.inner_ref, ReportDeadline)


PARSE = textwrap.dedent(
    """
    import sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    assert "esg_ratings_report" in bag.dags
    with open(sys.argv[2], "a") as log:
        log.write("parsed\\n")
    if sys.argv[3] == "control":
        from airflow.sdk import Variable
        Variable.get("esg_report_base", default=None)
    """
)


def _parse_and_record(tmp_path, mode):
    log = tmp_path / "lookups.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ESG_LOOKUP_LOG": str(log),
        "AIRFLOW__SECRETS__BACKEND": "tests.dags.recording_backend.RecordingBackend",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    subprocess.run(
        [sys.executable, "-c", PARSE, str(ROOT / "dags"), str(log), mode], env=env, cwd=ROOT, check=True, timeout=120
    )
    return log.read_text().splitlines()


def test_parsing_reads_no_connection_or_variable(tmp_path):
    assert _parse_and_record(tmp_path, "parse") == ["parsed"]


def test_the_recorder_does_see_lookups(tmp_path):
    # Positive control: without it, a silent recorder would make the test above pass vacuously.
    assert _parse_and_record(tmp_path, "control") == ["parsed", "variable:esg_report_base"]
