"""Publishing again and after a crash: the manifest never vouches for a report it does not match."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest

from include.esg_report.publish import MANIFEST_NAME, STAGING_DIR, manifest, publish, stage_report
from include.esg_report.report import COLUMNS

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 12, 4)
REPORT = f"esg_ratings_{DAY.isoformat()}.csv.gz"


def chunks(n: int, score: str = "50") -> list[pd.DataFrame]:
    rows = [
        [f"AC{i:04d}", f"Name {i}", score, "51", "52", "53", "Social", "52", "2026-12-01", "Successful"]
        for i in range(n)
    ]
    return [pd.DataFrame(rows, columns=list(COLUMNS))]


def stage(base: str, n: int, score: str = "50", run_id: str = "run-1") -> tuple[str, dict]:
    staged, summary = stage_report(chunks(n, score), base, DAY, run_id)
    return staged, manifest(summary, DAY, run_id, {})


def folder(tmp_path: Path) -> Path:
    return tmp_path / f"report_date={DAY.isoformat()}"


def consistent(tmp_path: Path) -> dict:
    """The published manifest, after checking it matches the report next to it."""
    content = json.loads((folder(tmp_path) / MANIFEST_NAME).read_text())
    body = (folder(tmp_path) / REPORT).read_bytes()
    assert content["sha256"] == hashlib.sha256(body).hexdigest()
    assert content["bytes"] == len(body)
    return content


def test_the_same_rows_give_the_same_bytes(tmp_path):
    base = tmp_path.as_uri()
    first, content_1 = stage(base, 50, run_id="run-1")
    second, content_2 = stage(base, 50, run_id="run-2")
    staging = folder(tmp_path) / STAGING_DIR
    assert (staging / first).read_bytes() == (staging / second).read_bytes()
    assert content_1["sha256"] == content_2["sha256"]


def test_crash_between_report_and_manifest_is_repaired_by_the_retry_and_by_a_rerun(tmp_path):
    base = tmp_path.as_uri()
    publish(*stage(base, 10, "40"), base, DAY)
    old = consistent(tmp_path)
    staged, content = stage(base, 12, "60")
    # A publish that dies (SIGKILL, no cleanup) right after the report is moved in, before the manifest.
    script = textwrap.dedent(
        f"""
        import datetime as dt, json, os, signal
        from include.esg_report import publish as p
        real_move = p._move
        def move_then_die(source, target, *args):
            real_move(source, target, *args)
            os.kill(os.getpid(), signal.SIGKILL)
        p._move = move_then_die
        p.publish({staged!r}, json.loads({json.dumps(content)!r}), {base!r}, dt.date.fromisoformat({DAY.isoformat()!r}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()
    # The new report is in place and the old manifest was withdrawn before it: nothing vouches for it yet.
    assert not (folder(tmp_path) / MANIFEST_NAME).exists()
    assert hashlib.sha256((folder(tmp_path) / REPORT).read_bytes()).hexdigest() == content["sha256"] != old["sha256"]

    # The task's retry publishes the same staged name again: it finds the report in place and finishes.
    publish(staged, content, base, DAY)
    assert consistent(tmp_path)["sha256"] == content["sha256"]
    # A whole new run of the date stages and publishes again, consistently.
    publish(*stage(base, 12, "60", run_id="run-3"), base, DAY)
    assert consistent(tmp_path)["run_id"] == "run-3"
    assert sorted(p.name for p in folder(tmp_path).iterdir()) == sorted([MANIFEST_NAME, REPORT, STAGING_DIR])
    assert not list((folder(tmp_path) / STAGING_DIR).iterdir())


def test_a_lost_staged_report_is_refused_not_published(tmp_path):
    base = tmp_path.as_uri()
    publish(*stage(base, 10, "40"), base, DAY)
    staged, content = stage(base, 12, "60")
    (folder(tmp_path) / STAGING_DIR / staged).unlink()
    with pytest.raises(FileNotFoundError, match="build the report again"):
        publish(staged, content, base, DAY)
    # The published pair is untouched.
    assert consistent(tmp_path)["row_count"] == 10


def test_readers_never_see_a_manifest_that_does_not_match_the_report(tmp_path):
    base = tmp_path.as_uri()
    publish(*stage(base, 5, "10", run_id="run-0"), base, DAY)
    stop = threading.Event()
    checked: list[int] = []
    failures: list[str] = []

    def reader() -> None:
        manifest_path, report_path = folder(tmp_path) / MANIFEST_NAME, folder(tmp_path) / REPORT
        while not stop.is_set():
            try:
                before = manifest_path.read_bytes()
                body = report_path.read_bytes()
                after = manifest_path.read_bytes()
            except FileNotFoundError:
                continue  # between publishes there may be no manifest: then nobody trusts the report
            # The same manifest before and after reading the report: it was there the whole time.
            if before == after:
                checked.append(1)
                if json.loads(before)["sha256"] != hashlib.sha256(body).hexdigest():
                    failures.append(json.loads(before)["run_id"])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 40):
            publish(*stage(base, 5 + i, str(10 + i), run_id=f"run-{i}"), base, DAY)
    finally:
        stop.set()
        thread.join()
    assert checked, "the reader never saw a published pair"
    assert not failures, failures
    assert consistent(tmp_path)["run_id"] == "run-39"
