"""Stage the report in object storage, then publish it atomically with its _SUCCESS.json manifest last."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

import pandas as pd
from airflow.sdk import ObjectStoragePath

from include.esg_report.report import COLUMNS, ReportSummary, report_file_name, write_report
from include.esg_report.settings import ConfigError

log = logging.getLogger(__name__)

MANIFEST_NAME = "_SUCCESS.json"
STAGING_DIR = "_staging"
SCHEMA_VERSION = 1
S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})


def report_dir(base: str, report_date: dt.date) -> ObjectStoragePath:
    """The folder of one report date under the configured base."""
    if not base.startswith(("s3://", "s3a://", "file:///")):
        raise ConfigError(
            f"variable 'esg_report_base' must be s3://[conn_id@]bucket/prefix or file:///abs/path, got {base!r}"
        )
    return ObjectStoragePath(base.rstrip("/")) / f"report_date={report_date.isoformat()}"


def _encryption(path: ObjectStoragePath) -> dict[str, str]:
    """S3 server-side encryption arguments: aws:kms with the connection's key, else AES256."""
    if path.protocol not in S3_PROTOCOLS:
        return {}
    from airflow.sdk import BaseHook

    conn_id = path.conn_id or "aws_default"
    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except Exception:
        # Without a connection the default AWS credential chain applies; encryption still does.
        extra = {}
    key_id = extra.get("sse_kms_key_id")
    if key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": str(key_id)}
    return {"ServerSideEncryption": "AES256"}


def stage_report(
    chunks: Iterable[pd.DataFrame], base: str, report_date: dt.date, run_id: str
) -> tuple[str, ReportSummary]:
    """Write the gzipped CSV under the date's staging folder; return its file name and summary."""
    folder = report_dir(base, report_date)
    staged = folder / STAGING_DIR / f"{uuid.uuid4().hex}.csv.gz"
    staged.parent.mkdir(parents=True, exist_ok=True)
    csv_name = report_file_name(report_date).removesuffix(".gz")
    with staged.fs.open(staged.path, "wb", **_encryption(staged)) as out:
        summary = write_report(chunks, out, csv_name=csv_name)
    log.info("staged %s for run %s: %d rows, %d bytes", staged, run_id, summary.row_count, summary.bytes)
    return staged.name, summary


def manifest(summary: ReportSummary, report_date: dt.date, run_id: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The _SUCCESS.json content of the contract."""
    return {
        "schema_version": SCHEMA_VERSION,
        "report_date": report_date.isoformat(),
        "run_id": run_id,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "report": report_file_name(report_date),
        "sha256": summary.sha256,
        "bytes": summary.bytes,
        "row_count": summary.row_count,
        "status_counts": summary.status_counts,
        "columns": list(COLUMNS),
        "formula_escaping": "leading-apostrophe",
        **extra,
    }


def _move(source: ObjectStoragePath, target: ObjectStoragePath, encryption: dict[str, str]) -> None:
    """Put source at target in one step: a rename locally, a server-side copy on S3."""
    fs = source.fs
    if source.protocol in S3_PROTOCOLS:
        # CopyObject makes the target appear whole; it must repeat the encryption arguments.
        fs.copy(source.path, target.path, **encryption)
        fs.rm(source.path)
    else:
        fs.mv(source.path, target.path)


def sha256_of(path: ObjectStoragePath) -> str:
    """Hex sha256 of an object's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(staged_name: str, content: dict[str, Any], base: str, report_date: dt.date) -> str:
    """Move the staged report to its final key and write the manifest last; return the report URL.

    Idempotent: when an earlier attempt already moved this staged report in and stopped before the
    manifest (a crash, a killed worker), a retry finds the report in place and writes the manifest.
    """
    folder = report_dir(base, report_date)
    staged = folder / STAGING_DIR / staged_name
    final = folder / report_file_name(report_date)
    manifest_path = folder / MANIFEST_NAME
    # Every object of the date lives in one store: one look-up of its encryption settings.
    encryption = _encryption(folder)
    if staged.exists():
        # Withdraw the old manifest first: no reader may pair it with the report about to replace it.
        if manifest_path.exists():
            manifest_path.unlink()
        _move(staged, final, encryption)
    elif final.exists() and sha256_of(final) == content["sha256"]:
        log.warning("%s is already in place (an earlier attempt stopped before the manifest): finishing", final)
    else:
        raise FileNotFoundError(f"staged report {staged} is gone and {final} is not it: build the report again")
    body = json.dumps(content, indent=2, sort_keys=True).encode()
    staged_manifest = folder / STAGING_DIR / f"{uuid.uuid4().hex}.json"
    with staged_manifest.fs.open(staged_manifest.path, "wb", **encryption) as out:
        out.write(body)
    _move(staged_manifest, manifest_path, encryption)
    log.info("published %s (%d rows, sha256 %s)", final, content["row_count"], content["sha256"])
    return str(final)
