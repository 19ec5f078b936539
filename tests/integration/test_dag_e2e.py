"""End to end: `airflow dags test` against the sandbox with faults on, publishing to moto's S3 server."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from include.esg_report.report import COLUMNS
from include.esg_sandbox.process import run_sandbox
from tests.integration.report_checks import (
    assert_manifest_matches,
    assert_rows_are_the_oracle,
    dags_test_env,
    report_rows,
    sandbox_connections,
)

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
REPORT_DATE = "2026-12-04"
LOGICAL_DATE = "2026-12-04T05:00:00-06:00"
BUCKET = "esg-reports"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/esg-report-test"
FAULTS = (
    "transient_5xx=0.04,rate_429=0.03,trickle=0.02,revoked_token=0.03,always_401=0.02,always_5xx=0.01,"
    "html=0.02,truncated=0.02,not_json_object=0.01,not_found=0.02,bad_request=0.01,forbidden=0.01,"
    "wrong_id=0.02,invalid=0.02,partial=0.06,slow=0.01,"
    "repeat_accounts=1,inactive_in_active=1,short_pages=1,accounts_5xx=1"
)

pytestmark = pytest.mark.e2e


def airflow_env(home: Path, sandbox_url: str, s3_url: str) -> dict[str, str]:
    return dags_test_env(
        home,
        **sandbox_connections(
            sandbox_url, rate_limit_per_second=100, request_deadline=3.5, read_timeout=3, max_attempts=4
        ),
        AIRFLOW_CONN_ESG_LEDGER=json.dumps({"conn_type": "sqlite", "host": str(home / "ledger.sqlite")}),
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_url, "region_name": "us-east-1", "sse_kms_key_id": KMS_KEY},
            }
        ),
        AIRFLOW_VAR_ESG_REPORT_BASE=f"s3://aws_default@{BUCKET}/esg-ratings",
        AIRFLOW_VAR_ESG_BATCH_SIZE="60",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )


def run(args: list[str], env: dict[str, str], log: Path, timeout: int = 600) -> None:
    with log.open("a") as out:
        done = subprocess.run(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]} failed; log tail:\n{log.read_text()[-4000:]}"


@pytest.fixture(scope="module")
def published(tmp_path_factory, moto_s3, s3_client):
    home = tmp_path_factory.mktemp("airflow_home")
    log = home / "run.log"
    s3 = s3_client
    s3.create_bucket(Bucket=BUCKET)
    with run_sandbox(accounts=240, faults=FAULTS, rate_limit=100, trickle_seconds=8, seed=11) as sandbox:
        env = airflow_env(home, sandbox.url, moto_s3)
        run([AIRFLOW, "db", "migrate"], env, log)
        run([AIRFLOW, "pools", "set", "esg_api", "4", "ESG fetches"], env, log)
        run([AIRFLOW, "dags", "test", "esg_ratings_report", LOGICAL_DATE], env, log)
        with sqlite3.connect(home / "airflow.db") as db:
            labels = db.execute(
                "SELECT map_index, rendered_map_index, state FROM task_instance WHERE task_id = 'fetch_batch'"
                " ORDER BY map_index"
            ).fetchall()
        yield {
            "labels": labels,
            "s3": s3,
            "oracle": sandbox.expected(REPORT_DATE),
            "stats": sandbox.stats(per_account=True),
            "log": log.read_text(),
        }


def _key(name: str) -> str:
    return f"esg-ratings/report_date={REPORT_DATE}/{name}"


def test_report_rows_match_what_the_sandbox_served(published):
    s3 = published["s3"]
    body = s3.get_object(Bucket=BUCKET, Key=_key(f"esg_ratings_{REPORT_DATE}.csv.gz"))["Body"].read()
    assert_rows_are_the_oracle(body, published["oracle"], 240)
    assert {r[-1] for r in report_rows(body)[1:]} == {"Successful", "Partial", "Failed"}


def test_manifest_matches_report_and_is_complete(published):
    s3 = published["s3"]
    body = s3.get_object(Bucket=BUCKET, Key=_key(f"esg_ratings_{REPORT_DATE}.csv.gz"))["Body"].read()
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=_key("_SUCCESS.json"))["Body"].read())
    assert_manifest_matches(body, manifest, REPORT_DATE)
    assert manifest["row_count"] == 240
    assert manifest["report"] == f"esg_ratings_{REPORT_DATE}.csv.gz"
    assert manifest["schema_version"] == 1
    assert manifest["columns"] == list(COLUMNS)
    assert manifest["formula_escaping"] == "leading-apostrophe"
    assert manifest["run_id"].startswith("manual__") or manifest["run_id"]
    oracle_counts = {}
    for row in published["oracle"]["rows"]:
        oracle_counts[row[-1]] = oracle_counts.get(row[-1], 0) + 1
    assert manifest["status_counts"] == oracle_counts


def test_objects_are_encrypted_with_the_configured_kms_key(published):
    s3 = published["s3"]
    for name in (f"esg_ratings_{REPORT_DATE}.csv.gz", "_SUCCESS.json"):
        head = s3.head_object(Bucket=BUCKET, Key=_key(name))
        assert head["ServerSideEncryption"] == "aws:kms", name
        assert head["SSEKMSKeyId"].endswith("esg-report-test"), name


def test_nothing_left_in_staging(published):
    listing = published["s3"].list_objects_v2(Bucket=BUCKET, Prefix="esg-ratings/")
    keys = sorted(o["Key"] for o in listing.get("Contents", []))
    assert keys == [_key("_SUCCESS.json"), _key(f"esg_ratings_{REPORT_DATE}.csv.gz")]


def test_the_job_caused_no_429_and_each_account_succeeded_at_most_once(published):
    stats = published["stats"]
    assert stats["rate_limited_429"] == 0
    assert all(v["ok"] <= 1 for v in stats["per_account"].values())


def test_four_batches_ran_labelled_in_the_ui(published):
    labels = published["labels"]
    assert [(i, state) for i, _, state in labels] == [(i, "success") for i in range(4)]
    for index, label, _ in labels:
        assert label.startswith(f"batch {index + 1}/4: ") and label.endswith("(60)"), label


def test_secrets_stay_out_of_the_log(published):
    log = published["log"]
    assert "Authorization" not in log
    assert "esg-local-secret" not in log
