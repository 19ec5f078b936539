"""Helpers shared by the DAG-level tests: sandbox connections and checks of a published report."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from include.esg_report.report import COLUMNS, escape_formula

ROOT = Path(__file__).resolve().parents[2]


def dags_test_env(home: Path, **variables: str) -> dict[str, str]:
    """Environment of a one-process Airflow on its own AIRFLOW_HOME, running the project's DAGs."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT),
        **variables,
    }


def api_connection(url: str, scope: str, **extra: Any) -> str:
    """AIRFLOW_CONN_* JSON of an upstream connection pointing at the sandbox."""
    return json.dumps(
        {
            "conn_type": "http",
            "host": url,
            "login": "esg-local",
            "password": "esg-local-secret",
            "extra": {"token_url": f"{url}/oauth2/token", "scope": scope, **extra},
        }
    )


def sandbox_connections(url: str, page_size: int = 50, **esg_extra: Any) -> dict[str, str]:
    """Both upstream connections of the job, pointing at the sandbox."""
    return {
        "AIRFLOW_CONN_ACCOUNT_MANAGEMENT": api_connection(url, "accounts:read", page_size=page_size),
        "AIRFLOW_CONN_ESG_API": api_connection(url, "esg:read", **esg_extra),
    }


def report_rows(body: bytes) -> list[list[str]]:
    """The CSV rows (header first) of a gzipped report."""
    return list(csv.reader(io.StringIO(gzip.decompress(body).decode("utf-8"), newline="")))


def oracle_rows(oracle: dict[str, Any]) -> list[list[str]]:
    """The sandbox's expected rows as the report must carry them (formula-escaped)."""
    return [[escape_formula(r[0]), escape_formula(r[1]), *r[2:6], escape_formula(r[6]), *r[7:]] for r in oracle["rows"]]


def assert_rows_are_the_oracle(body: bytes, oracle: dict[str, Any], accounts: int) -> None:
    """Row by row, the report is what the sandbox served for the date."""
    rows = report_rows(body)
    assert tuple(rows[0]) == COLUMNS
    expected = oracle_rows(oracle)
    assert len(rows) - 1 == len(expected) == accounts
    for got, want in zip(rows[1:], expected, strict=True):
        assert got == want


def assert_manifest_matches(body: bytes, manifest: dict[str, Any], day: str) -> None:
    """The manifest describes exactly these bytes, for this date."""
    assert manifest["sha256"] == hashlib.sha256(body).hexdigest()
    assert manifest["bytes"] == len(body)
    assert manifest["report_date"] == day
