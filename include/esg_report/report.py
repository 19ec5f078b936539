"""Streaming writer of the gzipped ESG ratings CSV of the output contract (pure: no Airflow)."""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd

from include.esg_report.validation import ESG_FIELDS, Status

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("account_id", "account_name", *ESG_FIELDS, "processing_status")
TEXT_COLUMNS: tuple[str, ...] = ("account_id", "account_name", "primary_esg_focus")
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

# gzip(1)'s default: level 9 costs twice the CPU for a few percent smaller files.
COMPRESS_LEVEL = 6
# How many offending ids an error message names; enough to find them, short enough to log.
_MAX_IDS_IN_ERROR = 5


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """What the manifest needs to know about a written report."""

    csv_name: str
    bytes: int
    sha256: str
    row_count: int
    status_counts: dict[str, int]


def report_file_name(report_date: datetime.date) -> str:
    """Return the report object's name for a report date, e.g. esg_ratings_2026-12-04.csv.gz."""
    if isinstance(report_date, datetime.datetime):
        raise TypeError("report_date must be a datetime.date, not a datetime.datetime")
    return f"esg_ratings_{report_date.isoformat()}.csv.gz"


def escape_formula(text: str) -> str:
    """Prefix an apostrophe to text a spreadsheet would evaluate as a formula (OWASP CSV injection)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


class _HashingWriter(io.RawIOBase):
    """Pass bytes through to dest while hashing and counting them, so dest is never re-read."""

    def __init__(self, dest: BinaryIO) -> None:
        super().__init__()
        self._dest = dest
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.discard = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        size = memoryview(data).nbytes
        if not self.discard:
            self._dest.write(data)
            self.sha256.update(data)
            self.bytes += size
        return size

    def flush(self) -> None:
        self._dest.flush()


def _show_ids(ids: Iterable[object]) -> str:
    shown = [repr(i) for i in ids]
    extra = len(shown) - _MAX_IDS_IN_ERROR
    return ", ".join(shown[:_MAX_IDS_IN_ERROR]) + (f" and {extra} more" if extra > 0 else "")


def _check_columns(chunk: pd.DataFrame) -> None:
    if tuple(chunk.columns) != COLUMNS:
        raise ValueError(f"chunk columns {list(chunk.columns)!r} are not {list(COLUMNS)!r}")


def _check_chunk(chunk: pd.DataFrame, previous_id: str | None) -> np.ndarray:
    """Validate one non-empty chunk; return its account_ids as an object array of str."""
    for column in COLUMNS:
        kind = pd.api.types.infer_dtype(chunk[column], skipna=True)
        if kind not in ("string", "empty"):
            # Floats here would be re-formatted by the writer; the contract wants numbers as received.
            raise ValueError(f"column {column!r} holds {kind} values; every value must be str or empty")

    ids = chunk["account_id"].to_numpy(dtype=object)
    missing = chunk["account_id"].isna().to_numpy() | (ids == "")
    if missing.any():
        raise ValueError(
            f"empty account_id in rows at positions {np.flatnonzero(missing)[:_MAX_IDS_IN_ERROR].tolist()}"
        )

    with_previous = ids if previous_id is None else np.concatenate(([previous_id], ids))
    ascending = np.greater(with_previous[1:], with_previous[:-1]).astype(bool)
    if not ascending.all():
        bad = np.flatnonzero(~ascending)
        pairs = [f"{with_previous[i]!r} then {with_previous[i + 1]!r}" for i in bad[:_MAX_IDS_IN_ERROR]]
        raise ValueError(f"account_id not strictly increasing ({len(bad)} place(s)): " + "; ".join(pairs))

    status = chunk["processing_status"]
    bad_status = ~status.isin(STATUSES).to_numpy()
    if bad_status.any():
        raise ValueError(
            f"processing_status not one of {', '.join(STATUSES)} for account_id " + _show_ids(ids[bad_status])
        )
    return ids


def _cells(chunk: pd.DataFrame) -> list[pd.Series]:
    """Return the chunk's columns as text, empty for missing values, with text columns formula-escaped."""
    columns = []
    for column in COLUMNS:
        values = chunk[column].astype(object)
        values = values.where(values.notna(), "")
        if column in TEXT_COLUMNS:
            risky = values.str.startswith(FORMULA_PREFIXES).to_numpy(dtype=bool)
            if risky.any():
                values = values.where(~risky, "'" + values)
        columns.append(values)
    return columns


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. a JSON "\ud800" escape in a name) have no UTF-8 form: write U+FFFD.
        log.warning("report contains unpaired surrogates; writing them as U+FFFD")
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _csv_bytes(rows: Iterable[Iterable[str]]) -> bytes:
    buffer = io.StringIO()
    # "\r\n" as terminator also makes the csv module quote a lone CR (it would not with "\n").
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL, doublequote=True)
    writer.writerows(rows)
    return _encode(buffer.getvalue())


def write_report(chunks: Iterable[pd.DataFrame], dest: BinaryIO, *, csv_name: str) -> ReportSummary:
    """Stream sorted row chunks into dest as the contract's gzipped CSV; return its summary.

    Raises ValueError on unordered or duplicate account_ids, unknown statuses or wrong columns;
    dest then holds a truncated gzip stream (no trailer) that must not be published.
    """
    sink = _HashingWriter(dest)
    counts = dict.fromkeys(STATUSES, 0)
    row_count = 0
    previous_id: str | None = None
    # mtime=0 and a fixed inner name make the bytes depend on the rows only, run to run.
    gz = gzip.GzipFile(filename=csv_name, mode="wb", fileobj=sink, mtime=0, compresslevel=COMPRESS_LEVEL)
    try:
        gz.write(_csv_bytes([COLUMNS]))
        for chunk in chunks:
            _check_columns(chunk)
            if chunk.empty:
                continue
            ids = _check_chunk(chunk, previous_id)
            previous_id = ids[-1]
            for status, n in chunk["processing_status"].value_counts().items():
                counts[str(status)] += int(n)
            row_count += len(chunk)
            gz.write(_csv_bytes(zip(*(c.tolist() for c in _cells(chunk)), strict=True)))
    except BaseException:
        # Without its trailer the partial stream fails gzip -t, so nobody can mistake it for a report.
        sink.discard = True
        raise
    finally:
        gz.close()
    log.info("wrote report %s: %d rows, %d gzipped bytes", csv_name, row_count, sink.bytes)
    return ReportSummary(
        csv_name=csv_name,
        bytes=sink.bytes,
        sha256=sink.sha256.hexdigest(),
        row_count=row_count,
        status_counts=counts,
    )
