"""docker-compose.yaml cannot run here (no Docker engine): check what can be checked of it."""

import json
from pathlib import Path

import pytest
import yaml

from include.esg_report.settings import api_settings_from_fields

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_has_every_service_the_stack_needs(compose):
    services = compose["services"]
    assert set(services) >= {"postgres", "esg-sandbox", "airflow-init", *AIRFLOW_SERVICES}
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["postgres"]["healthcheck"]


def test_airflow_services_share_image_and_configuration(compose):
    services = compose["services"]
    images = {services[name]["image"] for name in [*AIRFLOW_SERVICES, "airflow-init"]}
    assert len(images) == 1
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert {"AIRFLOW_CONN_ACCOUNT_MANAGEMENT", "AIRFLOW_CONN_ESG_API", "AIRFLOW_CONN_ESG_LEDGER"} <= set(env)


def test_init_creates_the_pool_and_database(compose):
    command = " ".join(compose["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in command and "airflow pools set esg_api" in command


def test_connections_are_valid_for_the_job(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    for conn_id, scope, rate in (("ACCOUNT_MANAGEMENT", "accounts:read", None), ("ESG_API", "esg:read", 50.0)):
        conn = json.loads(env[f"AIRFLOW_CONN_{conn_id}"])
        settings = api_settings_from_fields(
            conn_id.lower(),
            host=conn["host"],
            schema=None,
            port=None,
            login=conn["login"],
            password=conn["password"],
            extra=conn["extra"],
            default_scope=scope,
            default_rate=rate,
        )
        assert settings.base_url.startswith("http://127.0.0.1:")
    ledger = json.loads(env["AIRFLOW_CONN_ESG_LEDGER"])
    assert ledger["conn_type"] == "postgres"


def test_sandbox_is_reachable_on_the_schedulers_loopback(compose):
    sandbox = compose["services"]["esg-sandbox"]
    assert sandbox["network_mode"] == "service:airflow-scheduler"
    assert "127.0.0.1" in sandbox["command"]


def test_ports_are_published_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), name


def test_dockerfile_installs_the_pinned_set():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2" in dockerfile
    assert "-r /opt/esg/requirements.txt -c /opt/esg/constraints.txt" in dockerfile
