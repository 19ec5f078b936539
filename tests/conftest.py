"""Shared fixtures: ledger databases (SQLite file and a throwaway PostgreSQL database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from include.esg_report.settings import PROJECT_ROOT, LedgerSettings

# Before Airflow is first imported: the project's plugins and DAGs, however pytest was started.
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

PG_HOST = os.environ.get("ESG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ESG_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ESG_TEST_PG_USER", "postgres")


@pytest.fixture
def postgres_ledger() -> Iterator[LedgerSettings]:
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    name = f"esg_test_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield LedgerSettings(dialect="postgresql", host=PG_HOST, port=PG_PORT, database=name, login=PG_USER)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_ledger(tmp_path) -> LedgerSettings:
    """A SQLite ledger file in the test's temporary folder."""
    return LedgerSettings(dialect="sqlite", sqlite_path=tmp_path / "ledger.sqlite")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_settings(request) -> LedgerSettings:
    """Each ledger test runs on both databases."""
    return request.getfixturevalue("sqlite_ledger" if request.param == "sqlite" else "postgres_ledger")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto's S3 server as a real HTTP server on loopback; yields its URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_client(moto_s3):
    """A boto3 S3 client for moto's server."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
