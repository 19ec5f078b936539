"""Publishing: staged then moved, manifest last, S3 encryption without a KMS key, local storage."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json

import pandas as pd
import pytest

from include.esg_report.publish import MANIFEST_NAME, STAGING_DIR, manifest, publish, report_dir, stage_report
from include.esg_report.report import COLUMNS
from include.esg_report.settings import ConfigError

DAY = dt.date(2026, 12, 4)


def chunks(n: int, name: str = "Name"):
    rows = [
        [f"AC{i:04d}", f"{name} {i}", "50", "51", "52", "53", "Social", "52", "2026-12-01", "Successful"]
        for i in range(n)
    ]
    yield pd.DataFrame(rows, columns=list(COLUMNS))


def stage_and_publish(base: str, n: int, name: str = "Name") -> dict:
    staged, summary = stage_report(chunks(n, name), base, DAY, "run-1")
    content = manifest(summary, DAY, "run-1", {})
    publish(staged, content, base, DAY)
    return content


def test_local_publish_is_complete_and_leaves_no_staging(tmp_path):
    base = (tmp_path / "reports").as_uri()
    content = stage_and_publish(base, 3)
    folder = tmp_path / "reports" / "report_date=2026-12-04"
    report = folder / "esg_ratings_2026-12-04.csv.gz"
    written = json.loads((folder / MANIFEST_NAME).read_text())
    assert written == content
    assert written["sha256"] == hashlib.sha256(report.read_bytes()).hexdigest()
    assert gzip.decompress(report.read_bytes()).decode().count("\r\n") == 4
    assert list((folder / STAGING_DIR).iterdir()) == []


def test_republish_replaces_report_and_manifest_together(tmp_path):
    base = (tmp_path / "reports").as_uri()
    stage_and_publish(base, 3)
    second = stage_and_publish(base, 5, name="Renamed")
    folder = tmp_path / "reports" / "report_date=2026-12-04"
    report = (folder / "esg_ratings_2026-12-04.csv.gz").read_bytes()
    assert json.loads((folder / MANIFEST_NAME).read_text())["sha256"] == hashlib.sha256(report).hexdigest()
    assert second["row_count"] == 5


@pytest.mark.parametrize("base", ["reports", "http://x/y", "/abs/path", "gs://bucket"])
def test_bad_base_names_the_variable(base):
    with pytest.raises(ConfigError, match="esg_report_base"):
        report_dir(base, DAY)


def test_s3_without_kms_key_uses_aes256(moto_s3, s3_client, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AES_ONLY",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto_s3, "region_name": "us-east-1"},
            }
        ),
    )
    s3 = s3_client
    s3.create_bucket(Bucket="aes-reports")
    content = stage_and_publish("s3://aes_only@aes-reports/esg", 4)
    prefix = "esg/report_date=2026-12-04/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="aes-reports", Prefix="esg/")["Contents"])
    assert keys == [prefix + MANIFEST_NAME, prefix + "esg_ratings_2026-12-04.csv.gz"]
    for key in keys:
        assert s3.head_object(Bucket="aes-reports", Key=key)["ServerSideEncryption"] == "AES256"
    body = s3.get_object(Bucket="aes-reports", Key=prefix + "esg_ratings_2026-12-04.csv.gz")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == content["sha256"]
