"""A real Airflow for tests: scheduler, dag-processor, api-server (and triggerer) on LocalExecutor.

Usage::

    with AirflowCluster(env={"AIRFLOW_CONN_ESG_API": "...", "AIRFLOW_VAR_ESG_BATCH_SIZE": "40"}) as cluster:
        cluster.unpause("esg_ratings_report")
        run_id = cluster.trigger("esg_ratings_report", conf={"report_date": "2026-11-02"})
        assert cluster.wait_for_run("esg_ratings_report", run_id, timeout=180) == "success"

Each cluster has its own temporary AIRFLOW_HOME and its own PostgreSQL metadata database (created
here, dropped by stop()); LocalExecutor cannot run on SQLite. Connections and variables come from
the caller as AIRFLOW_CONN_* / AIRFLOW_VAR_* env vars. The REST API (v2) is called as admin through
SimpleAuthManager's all-admins mode, with a JWT from /auth/token when the server wants one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
import psycopg

from tests.conftest import PG_HOST, PG_PORT, PG_USER, free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
FINISHED_RUN_STATES = frozenset({"success", "failed"})
# Loopback only: bypass any proxy configured in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fast_config(api_port: int, home: Path) -> dict[str, str]:
    """Config env that makes a local Airflow react in seconds instead of minutes."""
    api_url = f"http://127.0.0.1:{api_port}"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        # Every process of the cluster must sign and check the same tokens.
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
        # A worker killed together with its supervisor stops heartbeating: notice that in seconds.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


class AirflowError(RuntimeError):
    """The cluster failed to start, or an API call failed."""


class AirflowCluster:
    """A throwaway Airflow (LocalExecutor, PostgreSQL metadata database) run as real subprocesses."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        triggerer: bool = False,
        pools: Mapping[str, int] | None = None,
        startup_timeout: float = 180.0,
    ) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="airflow-cluster-"))
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.database = f"airflow_test_{uuid.uuid4().hex[:10]}"
        self.triggerer = triggerer
        self.pools = dict(pools if pools is not None else {"esg_api": 8})
        self.startup_timeout = startup_timeout
        self.env = {
            **os.environ,
            **fast_config(self.api_port, self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}"
            ),
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        self._database_created = False

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.dump_logs()
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.dump_logs()
        self.stop()

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres", autocommit=True)

    def start(self) -> None:
        """Create the metadata database, migrate it, create the pools, start the components."""
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._database_created = True
        self.run_cli(["db", "migrate"], timeout=300)
        for pool, slots in self.pools.items():
            self.run_cli(["pools", "set", pool, str(slots), f"{pool} (test cluster)"])
        self._spawn("api-server", ["api-server", "--port", str(self.api_port), "--host", "127.0.0.1", "-w", "1"])
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        if self.triggerer:
            self._spawn("triggerer", ["triggerer"])
        self._wait_healthy()

    def run_cli(self, args: list[str], timeout: float = 120) -> str:
        """Run an `airflow` command against this cluster; return its output, raise on failure."""
        done = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        output = done.stdout.decode(errors="replace")
        with (self.home / "cli.log").open("a") as out:
            out.write(f"$ airflow {' '.join(args)}\n{output}\n")
        if done.returncode != 0:
            raise AirflowError(f"airflow {' '.join(args)} exited {done.returncode}:\n{output[-4000:]}")
        return output

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.home / f"{name}.log").open("wb") as out:
            # A session of its own, so stop() can end the component with every child it forked.
            self.processes[name] = subprocess.Popen(
                [AIRFLOW, *args], env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AirflowError(f"airflow {name} exited with code {process.returncode}:\n{self.log_tail(name)}")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self.api("GET", "/api/v2/monitor/health")
            except (AirflowError, OSError):
                time.sleep(0.5)
                continue
            if health.get("scheduler", {}).get("status") == "healthy" and (
                health.get("dag_processor", {}).get("status") == "healthy"
            ):
                return
            time.sleep(0.5)
        raise AirflowError(f"the cluster was not healthy within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and drop the metadata database."""
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log.warning("airflow %s ignored SIGTERM; killing it", name)
            # Task workers forked by the executor may outlive it: end the whole session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        self.processes.clear()
        if self._database_created:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self._database_created = False
        if os.environ.get("AIRFLOW_CLUSTER_KEEP_HOME"):
            log.warning("keeping AIRFLOW_HOME %s", self.home)
        else:
            shutil.rmtree(self.home, ignore_errors=True)

    # --- logs ---------------------------------------------------------------------------------

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The end of one component's log (api-server, scheduler, dag-processor, triggerer, cli)."""
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def dump_logs(self, chars: int = 4000) -> None:
        """Write the tail of every component's log to stderr (pytest shows it on failure)."""
        for name in [*self.processes, "cli"]:
            sys.stderr.write(f"\n----- airflow {name} (tail) -----\n{self.log_tail(name, chars)}\n")

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """A task attempt's log as text (read from the files the workers write under AIRFLOW_HOME)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        path = folder / f"attempt={try_number}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- REST API -----------------------------------------------------------------------------

    def _get_token(self) -> str:
        # All-admins mode hands out an admin token without credentials.
        request = urllib.request.Request(self.api_url + "/auth/token", method="GET")
        with _OPENER.open(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    def api(self, method: str, path: str, json: Any = None) -> Any:
        """Call the REST API as admin and return the decoded JSON (None for an empty body)."""
        data = _dumps(json) if json is not None else None
        for attempt in (1, 2):
            request = urllib.request.Request(self.api_url + path, data=data, method=method)
            request.add_header("Accept", "application/json")
            if data is not None:
                request.add_header("Content-Type", "application/json")
            if self._token:
                request.add_header("Authorization", f"Bearer {self._token}")
            try:
                with _OPENER.open(request, timeout=60) as response:
                    raw = response.read()
                    return _loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")
                if exc.code in (401, 403) and attempt == 1:
                    self._token = self._get_token()
                    continue
                raise AirflowError(f"{method} {path} answered {exc.code}: {detail[:2000]}") from None
            except urllib.error.URLError as exc:
                raise AirflowError(f"{method} {path}: {exc.reason}") from None
        raise AssertionError("unreachable")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed the DAG and the API knows it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(AirflowError):
                self.api("GET", f"/api/v2/dags/{dag_id}")
                return
            time.sleep(1)
        errors = self.api("GET", "/api/v2/importErrors")
        raise AirflowError(f"DAG {dag_id} was not parsed within {timeout:.0f} s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        """Parse-wait and unpause a DAG."""
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None) -> str:
        """Trigger a manual run (as the UI and the REST API do); return its run_id."""
        body = {"conf": dict(conf or {}), "logical_date": logical_date}
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run as the REST API shows it."""
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait until a run is success or failed; return that state (raise on timeout)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            if state in FINISHED_RUN_STATES:
                return state
            time.sleep(1)
        raise AirflowError(f"run {run_id} still {state!r} after {timeout:.0f} s: {self.task_instances(dag_id, run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run, mapped ones included, ordered by task_id and map_index."""
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.api(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances?limit=100&offset={offset}"
            )
            found += page["task_instances"]
            offset += len(page["task_instances"])
            if not page["task_instances"] or offset >= page["total_entries"]:
                break
        return sorted(found, key=lambda ti: (ti["task_id"], ti["map_index"]))

    def wait_for_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        states: Iterable[str] = ("running",),
        timeout: float = 120,
    ) -> dict[str, Any]:
        """Wait until a task instance is in one of `states`; return it."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            for ti in self.task_instances(dag_id, run_id):
                if ti["task_id"] == task_id and ti["map_index"] == map_index and ti["state"] in wanted:
                    return ti
            time.sleep(0.5)
        raise AirflowError(f"{task_id}[{map_index}] of {run_id} not in {sorted(wanted)} within {timeout:.0f} s")

    def clear_task_instances(
        self, dag_id: str, run_id: str, tasks: Iterable[tuple[str, int] | str], include_downstream: bool = True
    ) -> list[dict[str, Any]]:
        """Clear task instances ([task_id, map_index] pairs or task ids) and, by default, their downstream."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [list(t) if isinstance(t, tuple) else t for t in tasks],
            "only_failed": False,
            "reset_dag_runs": True,
            "include_downstream": include_downstream,
        }
        return self.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)["task_instances"]

    # --- processes ----------------------------------------------------------------------------

    def task_processes(self, ti_id: str) -> list[psutil.Process]:
        """The running processes of a task instance: its supervisor, then the task process itself.

        The task process titles itself "airflow worker -- <ti id>"; its parent is the supervisor.
        """
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if f"airflow worker -- {ti_id}" in " ".join(process.info["cmdline"] or ()):
                    return [process.parent(), process] if process.parent() else [process]
        return []

    def kill_task(self, ti_id: str, supervisor: bool = False) -> int:
        """SIGKILL a running task's process (and its supervisor too if asked); return the task's pid."""
        found = self.task_processes(ti_id)
        if not found:
            raise AirflowError(f"no running process for task instance {ti_id}")
        victims = found if supervisor else found[-1:]
        for process in victims:
            process.send_signal(signal.SIGKILL)
        return found[-1].pid


def _quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def _dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def _loads(raw: bytes) -> Any:
    return json.loads(raw)
