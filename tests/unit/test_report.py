"""Tests of include.esg_report.report: the gzipped CSV of the output contract."""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import io
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.esg_report.report import (
    COLUMNS,
    TEXT_COLUMNS,
    ReportSummary,
    escape_formula,
    report_file_name,
    write_report,
)
from include.esg_report.validation import ESG_FIELDS

CSV_NAME = "esg_ratings_2026-12-04.csv"
HEADER = (
    b"account_id,account_name,overall_esg_score,environmental_score,social_score,governance_score,"
    b"primary_esg_focus,primary_focus_score,analysis_date,processing_status\r\n"
)
FULL = {
    "overall_esg_score": "72.5",
    "environmental_score": "80",
    "social_score": "65.250",
    "governance_score": "70",
    "primary_esg_focus": "Environmental",
    "primary_focus_score": "80",
    "analysis_date": "2026-12-01",
}

NASTY_NAMES = [
    "Acme, Inc.",
    'The "Best" Co',
    'quote at end"',
    "line\r\nbreak",
    "lone\nLF",
    "lone\rCR",
    "tab\tinside",
    "=SUM(A1:A9)",
    "+1 555 0100",
    "-42",
    "@import",
    "\tleading tab",
    "\rleading CR",
    "'already quoted",
    "Société Générale",
    "株式会社テスト",
    "Ελληνική Εταιρεία",
    "شركة الاختبار",
    "Emoji 🌱🏦",
    "  surrounding spaces  ",
    "",
    ",",
    '"',
    "a\x00nul",
]


def row(account_id: str, name: Any = "Name", status: str = "Successful", **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"account_id": account_id, "account_name": name}
    base.update(FULL if status == "Successful" else dict.fromkeys(ESG_FIELDS))
    base.update(values)
    base["processing_status"] = status
    return base


def frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = list(rows)
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in COLUMNS})


def write(*chunks: pd.DataFrame, csv_name: str = CSV_NAME) -> tuple[bytes, ReportSummary]:
    dest = io.BytesIO()
    summary = write_report(iter(chunks), dest, csv_name=csv_name)
    return dest.getvalue(), summary


def parse_back(gz_bytes: bytes) -> list[list[str]]:
    text = gzip.decompress(gz_bytes).decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), strict=True))


def nasty_frame() -> pd.DataFrame:
    return frame(row(f"A{i:03d}", name) for i, name in enumerate(NASTY_NAMES))


# --- names and escaping helpers ---------------------------------------------------------------


def test_report_file_name() -> None:
    assert report_file_name(datetime.date(2026, 12, 4)) == "esg_ratings_2026-12-04.csv.gz"
    assert report_file_name(datetime.date(2027, 1, 9)) == "esg_ratings_2027-01-09.csv.gz"


def test_report_file_name_rejects_datetime() -> None:
    with pytest.raises(TypeError):
        report_file_name(datetime.datetime(2026, 12, 4, 23, 0))


def test_columns_are_the_contract_columns() -> None:
    assert COLUMNS == (
        "account_id",
        "account_name",
        "overall_esg_score",
        "environmental_score",
        "social_score",
        "governance_score",
        "primary_esg_focus",
        "primary_focus_score",
        "analysis_date",
        "processing_status",
    )
    assert TEXT_COLUMNS == ("account_id", "account_name", "primary_esg_focus")


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM", "'@SUM"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        (" =1", " =1"),
        ("'=1", "'=1"),
        ("\nx", "\nx"),
        ("", ""),
        ("Social", "Social"),
    ],
)
def test_escape_formula(text: str, escaped: str) -> None:
    assert escape_formula(text) == escaped


# --- round trip --------------------------------------------------------------------------------


def test_round_trip_of_nasty_names() -> None:
    data, summary = write(nasty_frame())
    rows = parse_back(data)
    assert rows[0] == list(COLUMNS)
    assert len(rows) == len(NASTY_NAMES) + 1
    for i, (name, parsed) in enumerate(zip(NASTY_NAMES, rows[1:], strict=True)):
        assert parsed[0] == f"A{i:03d}"
        assert parsed[1] == escape_formula(name)
        assert parsed[2:] == [*FULL.values(), "Successful"]
    assert summary.row_count == len(NASTY_NAMES)


def test_formula_escaping_applies_to_every_text_column_only() -> None:
    chunk = frame([row("-1", "=name", primary_esg_focus="@focus", social_score="-0")])
    parsed = parse_back(write(chunk)[0])[1]
    assert parsed[0] == "'-1"
    assert parsed[1] == "'=name"
    assert parsed[COLUMNS.index("primary_esg_focus")] == "'@focus"
    # numbers are not text cells: they are written verbatim
    assert parsed[COLUMNS.index("social_score")] == "-0"


def test_numbers_written_verbatim() -> None:
    literals = ["72.50", "100.000", "0.000000000000000000001", "33.333333333333333333333333", "0"]
    chunk = frame(row(f"A{i}", overall_esg_score=lit) for i, lit in enumerate(literals))
    parsed = parse_back(write(chunk)[0])
    assert [r[2] for r in parsed[1:]] == literals


# --- byte level ------------------------------------------------------------------------------


def test_header_and_line_endings_are_exact() -> None:
    text = gzip.decompress(write(frame([row("A1"), row("A2", "x")]))[0])
    assert text.startswith(HEADER)
    assert text == HEADER + (
        b"A1,Name,72.5,80,65.250,70,Environmental,80,2026-12-01,Successful\r\n"
        b"A2,x,72.5,80,65.250,70,Environmental,80,2026-12-01,Successful\r\n"
    )


def test_lone_cr_and_lf_fields_are_quoted() -> None:
    text = gzip.decompress(write(frame([row("A1", "lone\rCR"), row("A2", "lone\nLF")]))[0])
    assert b'A1,"lone\rCR",' in text
    assert b'A2,"lone\nLF",' in text


def test_quoting_is_minimal_and_quotes_are_doubled() -> None:
    chunk = frame([row("A1", 'He said "hi", then left'), row("A2", "  plain  ")])
    text = gzip.decompress(write(chunk)[0])
    assert b'A1,"He said ""hi"", then left",' in text
    assert b"A2,  plain  ," in text


def test_every_record_ends_with_crlf_and_no_bare_newlines_outside_quotes() -> None:
    text = gzip.decompress(write(nasty_frame())[0]).decode("utf-8")
    records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    rebuilt = io.StringIO()
    csv.writer(rebuilt, lineterminator="\r\n").writerows(records)
    assert text == rebuilt.getvalue()
    assert text.endswith("\r\n")


def test_utf8_without_bom() -> None:
    text = gzip.decompress(write(frame([row("A1", "Émile 😀")]))[0])
    assert not text.startswith(b"\xef\xbb\xbf")
    assert "Émile 😀".encode() in text


@pytest.mark.parametrize("missing", [None, np.nan, float("nan"), pd.NA])
def test_missing_values_are_empty_fields(missing: Any) -> None:
    chunk = frame([row("A1", missing, status="Partial", social_score="1", analysis_date=missing)])
    text = gzip.decompress(write(chunk)[0])
    assert text == HEADER + b"A1,,,,1,,,,,Partial\r\n"
    for bad in (b"nan", b"NaN", b"None", b"<NA>", b"NaT"):
        assert bad not in text[len(HEADER) :]  # the header itself contains "governance"


def test_failed_rows_have_every_esg_field_empty() -> None:
    text = gzip.decompress(write(frame([row("A1", "Acme", status="Failed")]))[0])
    assert text == HEADER + b"A1,Acme,,,,,,,,Failed\r\n"


def test_unpaired_surrogate_is_written_as_replacement_character() -> None:
    text = gzip.decompress(write(frame([row("A1", "bad\ud800name")]))[0])
    assert "bad\ufffdname".encode() in text
    text.decode("utf-8")


def test_pandas_string_dtype_columns_are_accepted() -> None:
    chunk = frame([row("A1", "x", status="Partial", social_score="5"), row("A2", None)]).astype("str")
    rows = parse_back(write(chunk)[0])
    assert rows[1] == ["A1", "x", "", "", "5", "", "", "", "", "Partial"]
    assert rows[2][1] == ""


# --- gzip container and summary --------------------------------------------------------------


def test_output_is_valid_gzip_with_inner_name_and_zero_mtime() -> None:
    data, _ = write(nasty_frame())
    assert data[:2] == b"\x1f\x8b"
    flags, mtime = data[3], int.from_bytes(data[4:8], "little")
    assert flags & 0x08  # FNAME present
    assert mtime == 0
    end = data.index(b"\x00", 10)
    assert data[10:end] == CSV_NAME.encode()
    # a full decompress checks the CRC32 and length trailer, as gzip -t does
    gzip.decompress(data)
    decompressor = zlib.decompressobj(wbits=31)
    decompressor.decompress(data)
    assert decompressor.eof and decompressor.unused_data == b""


def test_output_is_byte_identical_run_to_run() -> None:
    first, summary1 = write(nasty_frame(), frame([row("B1")]))
    second, summary2 = write(nasty_frame(), frame([row("B1")]))
    assert first == second
    assert summary1 == summary2


def test_output_does_not_depend_on_chunking() -> None:
    rows = [row(f"A{i:03d}", name) for i, name in enumerate(NASTY_NAMES)]
    whole, _ = write(frame(rows))
    split, _ = write(frame(rows[:3]), frame([]), frame(rows[3:10]), frame(rows[10:]))
    assert gzip.decompress(whole) == gzip.decompress(split)


def test_summary_matches_bytes_written() -> None:
    dest = io.BytesIO(b"")
    summary = write_report(iter([nasty_frame()]), dest, csv_name=CSV_NAME)
    data = dest.getvalue()
    assert summary.bytes == len(data)
    assert summary.sha256 == hashlib.sha256(data).hexdigest()
    assert summary.csv_name == CSV_NAME


def test_summary_counts_statuses_over_all_chunks() -> None:
    chunk1 = frame([row("A1"), row("A2", status="Failed"), row("A3", status="Partial", social_score="1")])
    chunk2 = frame([row("B1"), row("B2")])
    _, summary = write(chunk1, chunk2)
    assert summary.row_count == 5
    assert summary.status_counts == {"Successful": 3, "Partial": 1, "Failed": 1}


def test_empty_report_has_header_only_and_zero_counts() -> None:
    data, summary = write()
    assert gzip.decompress(data) == HEADER
    assert summary.row_count == 0
    assert summary.status_counts == {"Successful": 0, "Partial": 0, "Failed": 0}
    assert summary.sha256 == hashlib.sha256(data).hexdigest()


def test_writes_to_a_real_file(tmp_path: Any) -> None:
    path = tmp_path / "esg_ratings_2026-12-04.csv.gz"
    with path.open("wb") as dest:
        summary = write_report([nasty_frame()], dest, csv_name=CSV_NAME)
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        assert len(list(csv.reader(handle))) == len(NASTY_NAMES) + 1


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([["A2", "A1"]], "'A2' then 'A1'"),
        ([["A1", "A1"]], "'A1' then 'A1'"),
        ([["A1", "A2"], ["A2", "A3"]], "'A2' then 'A2'"),
        ([["A1", "B2"], ["B1"]], "'B2' then 'B1'"),
        ([["a"], ["B"]], "'a' then 'B'"),  # Python str order: uppercase sorts before lowercase
        ([["A1"], [], ["A1"]], "'A1' then 'A1'"),
    ],
)
def test_order_and_uniqueness_checked_across_chunks(chunks: list[list[str]], message: str) -> None:
    frames = [frame(row(i) for i in ids) for ids in chunks]
    with pytest.raises(ValueError, match="not strictly increasing") as info:
        write(*frames)
    assert message in str(info.value)


def test_python_string_order_is_accepted() -> None:
    ids = ["A", "B", "a", "b", "é", "😀"]
    _, summary = write(frame(row(i) for i in ids[:3]), frame(row(i) for i in ids[3:]))
    assert summary.row_count == len(ids)


@pytest.mark.parametrize("status", ["successful", "OK", "", None])
def test_unknown_status_is_rejected(status: Any) -> None:
    bad = row("B2")
    bad["processing_status"] = status
    with pytest.raises(ValueError, match="processing_status") as info:
        write(frame([row("A1")]), frame([row("B1"), bad]))
    assert "'B2'" in str(info.value)


@pytest.mark.parametrize("account_id", ["", None])
def test_empty_account_id_is_rejected(account_id: Any) -> None:
    with pytest.raises(ValueError, match="empty account_id"):
        write(frame([row(account_id)]))


def test_wrong_columns_are_rejected() -> None:
    chunk = frame([row("A1")])
    with pytest.raises(ValueError, match="columns"):
        write(chunk[list(reversed(COLUMNS))])
    with pytest.raises(ValueError, match="columns"):
        write(chunk.drop(columns=["analysis_date"]))
    with pytest.raises(ValueError, match="columns"):
        write(frame([]).drop(columns=["analysis_date"]))


def test_non_text_numbers_are_rejected() -> None:
    chunk = frame([row("A1")])
    chunk["social_score"] = pd.Series([65.25], dtype=object)
    with pytest.raises(ValueError, match="social_score"):
        write(chunk)


def test_failed_write_leaves_no_valid_gzip() -> None:
    dest = io.BytesIO()
    with pytest.raises(ValueError):
        write_report(iter([frame(row(f"A{i:05d}") for i in range(2000)), frame([row("A0")])]), dest, csv_name=CSV_NAME)
    assert dest.getvalue()[:2] == b"\x1f\x8b"
    with pytest.raises(EOFError):
        gzip.decompress(dest.getvalue())
