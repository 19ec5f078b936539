"""Resume, cache and reruns under a real scheduler (LocalExecutor), checked against the sandbox's oracle.

One cluster and one sandbox serve the whole module; each test names its own report date and its own
ledger (SQLite or PostgreSQL, switched through the `esg_ledger` connection in the metadata database).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from sqlalchemy import delete, func, select

from include.esg_report.ledger import connect, results
from include.esg_report.publish import MANIFEST_NAME
from include.esg_report.settings import LedgerSettings
from include.esg_sandbox.dataset import Dataset
from include.esg_sandbox.process import SandboxProcess, run_sandbox
from tests.integration.airflow_cluster import AirflowCluster, AirflowError
from tests.integration.report_checks import assert_manifest_matches, assert_rows_are_the_oracle, sandbox_connections

pytestmark = pytest.mark.scheduler

DAG = "esg_ratings_report"
ACCOUNTS = 120
INACTIVE = 12
SEED = 7
BATCH_SIZE = 40
CONCURRENCY = 2
FAULTS = "transient_5xx=0.04,partial=0.06,not_found=0.03,invalid=0.02"
FINAL = ("Successful", "Partial")
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    with run_sandbox(accounts=ACCOUNTS, inactive=INACTIVE, seed=SEED, faults=FAULTS, rate_limit=200) as server:
        yield server


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def scheduled_ledger(tmp_path_factory) -> LedgerSettings:
    return LedgerSettings(dialect="sqlite", sqlite_path=tmp_path_factory.mktemp("ledger") / "scheduled.sqlite")


@pytest.fixture(scope="module")
def cluster(sandbox, reports, scheduled_ledger) -> Iterator[AirflowCluster]:
    env = {
        **sandbox_connections(
            sandbox.url,
            rate_limit_per_second=150,
            concurrency=CONCURRENCY,
            max_attempts=4,
            request_deadline=5,
            read_timeout=4,
        ),
        "AIRFLOW_VAR_ESG_REPORT_BASE": reports.as_uri(),
        "AIRFLOW_VAR_ESG_BATCH_SIZE": str(BATCH_SIZE),
        # Read by the scheduler when it creates a run (the deadline alert): from the environment it
        # needs no metadata-database session.
        "AIRFLOW_VAR_ESG_REPORT_DEADLINE": "07:00",
    }
    with AirflowCluster(env=env, pools={"esg_api": 4}) as running:
        use_ledger(running, scheduled_ledger)
        running.unpause(DAG)
        # Let the timetable's run finish first: the sandbox's call counts are not per report date.
        running.scheduled = _finished_scheduled_run(running)  # type: ignore[attr-defined]
        yield running


def _finished_scheduled_run(cluster: AirflowCluster) -> dict[str, Any] | None:
    """The run the timetable creates on unpause (catchup=False: the latest 05:00), once it finished."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = cluster.api("GET", f"/api/v2/dags/{DAG}/dagRuns?run_type=scheduled")["dag_runs"]
        if runs:
            cluster.wait_for_run(DAG, runs[0]["dag_run_id"], RUN_TIMEOUT)
            return cluster.dag_run(DAG, runs[0]["dag_run_id"])
        time.sleep(1)
    return None


@pytest.fixture
def scheduled_run(cluster) -> dict[str, Any] | None:
    return cluster.scheduled


# --- helpers ------------------------------------------------------------------------------------


def use_ledger(cluster: AirflowCluster, settings: LedgerSettings) -> None:
    """Point the `esg_ledger` connection (metadata database) at this ledger for the next runs."""
    if settings.dialect == "sqlite":
        body = {"connection_id": "esg_ledger", "conn_type": "sqlite", "host": str(settings.sqlite_path)}
    else:
        body = {
            "connection_id": "esg_ledger",
            "conn_type": "postgres",
            "host": settings.host,
            "port": settings.port,
            "schema": settings.database,
            "login": settings.login,
        }
    with contextlib.suppress(AirflowError):  # not there yet
        cluster.api("DELETE", "/api/v2/connections/esg_ledger")
    cluster.api("POST", "/api/v2/connections", body)


def run_dag(cluster: AirflowCluster, conf: dict[str, Any]) -> str:
    """Trigger a manual run and wait for it to succeed; return its run_id."""
    run_id = cluster.trigger(DAG, conf=conf)
    state = cluster.wait_for_run(DAG, run_id, RUN_TIMEOUT)
    assert state == "success", f"{run_id}: {state}: {cluster.task_instances(DAG, run_id)}"
    return run_id


def published(reports: Path, day: str) -> tuple[bytes, dict[str, Any]]:
    """The report bytes and manifest of a date; the manifest must match the bytes."""
    folder = reports / f"report_date={day}"
    body = (folder / f"esg_ratings_{day}.csv.gz").read_bytes()
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert_manifest_matches(body, manifest, day)
    return body, manifest


def assert_report_is_the_oracle(body: bytes, sandbox: SandboxProcess, day: str) -> None:
    """Row by row, the report is what the sandbox served for the date."""
    assert_rows_are_the_oracle(body, sandbox.expected(day), ACCOUNTS)


def oracle_status(sandbox: SandboxProcess, day: str) -> dict[str, str]:
    """account_id -> expected processing_status."""
    return {row[0]: row[-1] for row in sandbox.expected(day)["rows"]}


def fetched(sandbox: SandboxProcess) -> dict[str, dict[str, int]]:
    """Per account ESG calls since the last reset: {"calls": n, "ok": usable ratings served}."""
    return {k: v for k, v in sandbox.stats(per_account=True)["per_account"].items() if v["calls"]}


def result_count(settings: LedgerSettings, day: str, ids: list[str] | None = None) -> int:
    engine = connect(settings)
    try:
        query = select(func.count()).select_from(results).where(results.c.report_date == day)
        if ids is not None:
            query = query.where(results.c.account_id.in_(ids))
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def forget_results(settings: LedgerSettings, day: str, ids: list[str]) -> None:
    """Delete some accounts' results of a date (work that was lost)."""
    engine = connect(settings)
    try:
        with engine.begin() as conn:
            conn.execute(delete(results).where(results.c.report_date == day, results.c.account_id.in_(ids)))
    finally:
        engine.dispose()


def xcom(cluster: AirflowCluster, run_id: str, task_id: str, map_index: int = -1) -> Any:
    path = f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    entry = cluster.api("GET", f"{path}?map_index={map_index}&deserialize=true&stringify=false")
    return entry["value"]


def ti(tis: list[dict[str, Any]], task_id: str, map_index: int = -1) -> dict[str, Any]:
    return next(t for t in tis if t["task_id"] == task_id and t["map_index"] == map_index)


def batch_ids(index: int) -> list[str]:
    """The account ids of one mapped batch (active ids in byte order, BATCH_SIZE each)."""
    active = Dataset(ACCOUNTS, INACTIVE, SEED).active_ids
    return active[index * BATCH_SIZE : (index + 1) * BATCH_SIZE]


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ledger_kind", "kill_supervisor"),
    [("sqlite", False), ("postgresql", True)],
    ids=["sqlite-kill-task-process", "postgresql-kill-supervisor-and-task"],
)
def test_sigkilled_fetch_batch_is_resumed_by_the_retry(
    cluster, sandbox, reports, request, ledger_kind, kill_supervisor
):
    settings = request.getfixturevalue(f"{'sqlite' if ledger_kind == 'sqlite' else 'postgres'}_ledger")
    day = "2026-11-02" if ledger_kind == "sqlite" else "2026-11-03"
    use_ledger(cluster, settings)
    sandbox.reset()
    # Slow enough to kill the batch mid-way: a batch needs ~20 s at 1 s per call and 2 in flight.
    sandbox.configure(latency_ms=1000)
    try:
        run_id = cluster.trigger(DAG, conf={"report_date": day})
        victim = cluster.wait_for_task(DAG, run_id, "fetch_batch", 1, states=["running"], timeout=120)
        target = batch_ids(1)
        wait_until(lambda: result_count(settings, day, target) >= 4, 60, "batch 1 to record some results")
        cluster.kill_task(victim["id"], supervisor=kill_supervisor)
        recorded_at_kill = result_count(settings, day, target)
    finally:
        sandbox.configure(latency_ms=0)
    assert 4 <= recorded_at_kill < len(target)

    assert cluster.wait_for_run(DAG, run_id, RUN_TIMEOUT) == "success"
    tis = cluster.task_instances(DAG, run_id)
    assert ti(tis, "fetch_batch", 1)["try_number"] == 2
    assert [ti(tis, "fetch_batch", i)["try_number"] for i in (0, 2)] == [1, 1]
    retried = xcom(cluster, run_id, "fetch_batch", 1)
    status = oracle_status(sandbox, day)
    # The retry reused every final result the killed attempt had recorded (Failed ones are fetched again).
    assert retried["reused"] >= 1
    assert retried["reused"] + retried["fetched"] == len(target)

    calls = fetched(sandbox)
    twice = {k for k, v in calls.items() if v["ok"] > 1}
    # Only calls in flight at the kill (served, not yet recorded) may have been repeated.
    assert len(twice) <= CONCURRENCY, twice
    assert twice <= set(target)
    for account_id, expected in status.items():
        if expected in FINAL:
            assert calls.get(account_id, {}).get("ok", 0) >= 1, account_id
    assert result_count(settings, day) == ACCOUNTS
    body, manifest = published(reports, day)
    assert_report_is_the_oracle(body, sandbox, day)
    assert manifest["run_id"] == run_id


def test_scheduled_then_manual_run_of_a_date_is_served_from_the_cache(
    cluster, sandbox, reports, scheduled_run, scheduled_ledger
):
    if scheduled_run is None or scheduled_run["state"] != "success":
        pytest.fail(f"the timetable's run on unpause did not succeed: {scheduled_run}")
    use_ledger(cluster, scheduled_ledger)  # the ledger the scheduled run wrote
    logical = pendulum.parse(scheduled_run["logical_date"]).in_timezone("America/Chicago")
    day = logical.date().isoformat()
    first, first_manifest = published(reports, day)
    assert_report_is_the_oracle(first, sandbox, day)
    status = oracle_status(sandbox, day)
    failed = {k for k, v in status.items() if v == "Failed"}
    assert failed, "the fault plan should leave some Failed accounts"

    sandbox.reset()
    run_id = run_dag(cluster, {"report_date": day})
    # Zero ESG calls for final results; Failed ones are tried again, not served from the cache.
    assert set(fetched(sandbox)) == failed
    again, manifest = published(reports, day)
    assert again == first
    assert manifest["sha256"] == first_manifest["sha256"]
    assert manifest["run_id"] == run_id != first_manifest["run_id"]

    sandbox.reset()
    run_dag(cluster, {"report_date": day, "force_refresh": True})
    calls = fetched(sandbox)
    assert set(calls) == set(status)
    assert all(calls[k]["ok"] == 1 for k, v in status.items() if v in FINAL)
    assert published(reports, day)[0] == first


def test_override_fetches_only_the_named_accounts_and_republishes_the_whole_report(
    cluster, sandbox, reports, postgres_ledger
):
    day = "2026-11-05"
    use_ledger(cluster, postgres_ledger)
    sandbox.reset()
    run_dag(cluster, {"report_date": day})
    status = oracle_status(sandbox, day)
    good = sorted(k for k, v in status.items() if v == "Successful")
    named, lost = good[:2], good[-2:]
    inactive = Dataset(ACCOUNTS, INACTIVE, SEED).listing("inactive")[0].account_id
    # Rows lost since the first run: the override run must fetch them too, or the report is incomplete.
    forget_results(postgres_ledger, day, lost)

    sandbox.reset()
    run_id = run_dag(cluster, {"report_date": day, "account_ids": [*named, "NO-SUCH-ACCOUNT", inactive]})
    assert set(fetched(sandbox)) == {*named, *lost}
    body, manifest = published(reports, day)
    assert_report_is_the_oracle(body, sandbox, day)
    override = {
        "account_ids": sorted([*named, "NO-SUCH-ACCOUNT", inactive]),
        "not_active": sorted(["NO-SUCH-ACCOUNT", inactive]),
    }
    assert manifest["override"] == override
    assert xcom(cluster, run_id, "publish_report")["override"] == override
    listing_log = cluster.task_log(DAG, run_id, "list_accounts")
    assert "NO-SUCH-ACCOUNT" in listing_log and "not active" in listing_log


def test_clearing_one_map_index_reruns_that_batch_and_republishes(cluster, sandbox, reports, postgres_ledger):
    day = "2026-11-06"
    use_ledger(cluster, postgres_ledger)
    sandbox.reset()
    run_id = run_dag(cluster, {"report_date": day})
    before, _ = published(reports, day)
    status = oracle_status(sandbox, day)
    target = batch_ids(1)
    lost = [k for k in target if status[k] == "Successful"][:5]
    forget_results(postgres_ledger, day, lost)

    sandbox.reset()
    cluster.clear_task_instances(DAG, run_id, [("fetch_batch", 1)])
    assert cluster.wait_for_run(DAG, run_id, RUN_TIMEOUT) == "success"
    tis = cluster.task_instances(DAG, run_id)
    assert ti(tis, "fetch_batch", 1)["try_number"] == 2
    assert [ti(tis, "fetch_batch", i)["try_number"] for i in (0, 2)] == [1, 1]
    assert ti(tis, "build_report")["try_number"] == ti(tis, "publish_report")["try_number"] == 2
    # The cleared batch fetched what was lost and its Failed accounts; nothing else, no other batch.
    assert set(fetched(sandbox)) == set(lost) | {k for k in target if status[k] == "Failed"}
    after, manifest = published(reports, day)
    assert after == before
    assert_report_is_the_oracle(after, sandbox, day)
    assert manifest["run_id"] == run_id
    assert not list((reports / f"report_date={day}" / "_staging").iterdir())


def test_report_dates_are_cached_separately(cluster, sandbox, reports, postgres_ledger):
    """A new report date fetches every account anew, even right after another date was fetched."""
    use_ledger(cluster, postgres_ledger)
    sandbox.reset()
    run_dag(cluster, {"report_date": "2026-11-09"})
    sandbox.reset()
    run_dag(cluster, {"report_date": "2026-11-10"})
    status = oracle_status(sandbox, "2026-11-10")
    calls = fetched(sandbox)
    assert set(calls) == set(status)
    assert all(calls[k]["ok"] == 1 for k, v in status.items() if v in FINAL)
    assert_report_is_the_oracle(published(reports, "2026-11-10")[0], sandbox, "2026-11-10")
