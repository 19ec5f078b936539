"""Tests of include.esg_report.validation.parse_rating and failed."""

from __future__ import annotations

import datetime
import json
import random
from typing import Any

import pytest

from include.esg_report.validation import ESG_FIELDS, RatingResult, Status, failed, parse_rating

REPORT_DATE = datetime.date(2026, 12, 4)
ACCOUNT = "ACC-001"
JSON = "application/json"

GOOD: dict[str, Any] = {
    "account_id": ACCOUNT,
    "overall_esg_score": 72.5,
    "environmental_score": 80,
    "social_score": 65.25,
    "governance_score": 70,
    "primary_esg_focus": "Environmental",
    "primary_focus_score": 80,
    "analysis_date": "2026-12-01",
}
GOOD_VALUES = {
    "overall_esg_score": "72.5",
    "environmental_score": "80",
    "social_score": "65.25",
    "governance_score": "70",
    "primary_esg_focus": "Environmental",
    "primary_focus_score": "80",
    "analysis_date": "2026-12-01",
}


def body_with(**changes: Any) -> bytes:
    """GOOD as JSON bytes, with fields replaced; a value of ... removes the field."""
    doc = {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}
    return json.dumps(doc).encode()


def raw_body(field: str, literal: str) -> bytes:
    """GOOD as JSON bytes with one field's value written as a raw JSON literal."""
    doc = {k: v for k, v in GOOD.items() if k != field}
    text = json.dumps(doc)
    return (text[:-1] + f', "{field}": {literal}}}').encode()


def parse(body: bytes, content_type: str | None = JSON, account_id: str = ACCOUNT) -> RatingResult:
    return parse_rating(body, content_type, account_id, REPORT_DATE)


def assert_failed(result: RatingResult, reason_start: str) -> None:
    assert result.status is Status.FAILED
    assert result.values == dict.fromkeys(ESG_FIELDS)
    assert result.reason is not None
    assert result.reason.startswith(reason_start), result.reason


def assert_field_invalid(result: RatingResult, field: str, problem: str) -> None:
    assert result.status is Status.PARTIAL
    assert result.values[field] is None
    assert result.values == {**GOOD_VALUES, field: None}
    assert result.reason == f"{field}: {problem}"


# --- the happy path and the result shape -----------------------------------------------------


def test_all_fields_valid_is_successful() -> None:
    result = parse(body_with())
    assert result == RatingResult(ACCOUNT, Status.SUCCESSFUL, GOOD_VALUES, None)
    assert list(result.values) == list(ESG_FIELDS)


def test_status_values_are_the_contract_strings() -> None:
    assert [s.value for s in Status] == ["Successful", "Partial", "Failed"]
    assert Status.PARTIAL == "Partial"


def test_failed_helper_empties_every_value() -> None:
    result = failed("X", "http 404")
    assert result == RatingResult("X", Status.FAILED, dict.fromkeys(ESG_FIELDS), "http 404")


def test_failed_helper_keeps_reason_single_line_and_bounded() -> None:
    result = failed("X", "a\nb\r" + "y" * 2000)
    assert result.reason is not None
    assert "\n" not in result.reason and "\r" not in result.reason
    assert result.reason.startswith("a\\nb\\r")
    assert len(result.reason) < 500


# --- content type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;Charset=UTF-8",
        "  application/json  ",
        "application/vnd.esg.rating+json",
        "application/problem+json; charset=utf-8",
    ],
)
def test_json_content_types_accepted(content_type: str) -> None:
    assert parse(body_with(), content_type).status is Status.SUCCESSFUL


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "text/plain",
        "application/jsonx",
        "application/notjson",
        "application/json+xml",
        "application/xml",
        "text/json",
        "+json",
        "",
        "json",
    ],
)
def test_other_content_types_fail(content_type: str) -> None:
    result = parse(body_with(), content_type)
    assert_failed(result, f"bad body: content type {content_type!r}")


def test_missing_content_type_fails() -> None:
    assert_failed(parse(body_with(), None), "bad body: content type")


def test_html_body_fails_on_content_type() -> None:
    result = parse(b"<html><body>Gateway</body></html>", "text/html; charset=utf-8")
    assert_failed(result, "bad body: content type 'text/html; charset=utf-8'")


def test_html_body_labelled_json_is_invalid_json() -> None:
    assert_failed(parse(b"<html>oops</html>"), "bad body: invalid JSON (")


# --- body decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason_start"),
    [
        (body_with()[:-5], "bad body: invalid JSON ("),
        (b"", "bad body: invalid JSON ("),
        (b"   ", "bad body: invalid JSON ("),
        (b"\xff\xfe{}", "bad body: invalid JSON ("),
        ('{"account_id": "ACC-001", "x": "é"}'.encode("latin-1"), "bad body: invalid JSON ("),
        (b"\xef\xbb\xbf" + body_with(), "bad body: invalid JSON ("),
        (b"{} {}", "bad body: invalid JSON ("),
        (b"[" * 100_000 + b"]" * 100_000, "bad body: invalid JSON (nested too deeply)"),
        (b"[]", "bad body: not a JSON object"),
        (b"[" + body_with() + b"]", "bad body: not a JSON object"),
        (b'"ACC-001"', "bad body: not a JSON object"),
        (b"null", "bad body: not a JSON object"),
        (b"72.5", "bad body: not a JSON object"),
        (b"NaN", "bad body: not a JSON object"),
    ],
)
def test_unusable_bodies_fail(body: bytes, reason_start: str) -> None:
    assert_failed(parse(body), reason_start)


def test_invalid_json_reason_is_single_line() -> None:
    result = parse(b'{"account_id": "ACC-001",\n\n "x": }')
    assert_failed(result, "bad body: invalid JSON (Expecting value")
    assert result.reason is not None and "\n" not in result.reason


def test_bytearray_and_memoryview_bodies() -> None:
    assert parse(bytearray(body_with())).status is Status.SUCCESSFUL  # type: ignore[arg-type]
    assert parse(memoryview(body_with())).status is Status.SUCCESSFUL  # type: ignore[arg-type]


# --- account_id ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "shown"),
    [
        ("ACC-002", "'ACC-002'"),
        ("acc-001", "'acc-001'"),
        ("ACC-001 ", "'ACC-001 '"),
        ("ACC-001\n", "'ACC-001\\n'"),
        ("", "''"),
        (1, "number 1"),
        (None, "null"),
        (True, "boolean true"),
        (["ACC-001"], "array"),
        ({"id": "ACC-001"}, "object"),
    ],
)
def test_wrong_account_id_fails(received: Any, shown: str) -> None:
    assert_failed(parse(body_with(account_id=received)), f"account_id mismatch: got {shown}")


def test_missing_account_id_fails() -> None:
    assert_failed(parse(body_with(account_id=...)), "account_id mismatch: missing")


def test_account_id_echo_is_truncated_and_escaped() -> None:
    result = parse(body_with(account_id="\x1b[31m" + "Z" * 500))
    assert_failed(result, "account_id mismatch: got '\\x1b[31m")
    assert result.reason is not None
    assert "\x1b" not in result.reason
    assert len(result.reason) < 80


def test_duplicate_account_id_keys_fail_even_if_one_matches() -> None:
    body = b'{"account_id": "ACC-001", "account_id": "ACC-002"}'
    assert_failed(parse(body), "account_id mismatch: duplicate account_id keys")
    body = b'{"account_id": "ACC-002", "account_id": "ACC-001"}'
    assert_failed(parse(body), "account_id mismatch: duplicate account_id keys")


def test_requested_id_with_special_characters_matches_exactly() -> None:
    odd = "a/b c?d=é😀"
    assert parse(body_with(account_id=odd), account_id=odd).status is Status.SUCCESSFUL


# --- scores ----------------------------------------------------------------------------------

SCORES = ("overall_esg_score", "environmental_score", "social_score", "governance_score", "primary_focus_score")


@pytest.mark.parametrize(
    ("literal", "canonical"),
    [
        ("72.5", "72.5"),
        ("72.50", "72.50"),
        ("72.500000000000000001", "72.500000000000000001"),
        ("0.1", "0.1"),
        ("33.333333333333333333333333333333", "33.333333333333333333333333333333"),
        ("7.25E1", "72.5"),
        ("7.25e+1", "72.5"),
        ("1e2", "100"),
        ("1E-3", "0.001"),
        ("100", "100"),
        ("100.0", "100.0"),
        ("0", "0"),
        ("0.0", "0.0"),
        ("-0", "0"),
        ("-0.0", "0.0"),
        ("-0E+2", "0"),
        ("0e5", "0"),
        ("0.000", "0.000"),
    ],
)
def test_score_literals_kept_exactly_in_plain_notation(literal: str, canonical: str) -> None:
    result = parse(raw_body("social_score", literal))
    assert result.status is Status.SUCCESSFUL, result.reason
    assert result.values["social_score"] == canonical


@pytest.mark.parametrize("field", SCORES)
def test_every_score_field_is_range_checked(field: str) -> None:
    assert_field_invalid(parse(raw_body(field, "101")), field, "out of range (101)")


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        ("101", "out of range (101)"),
        ("100.0000001", "out of range (100.0000001)"),
        ("-0.01", "out of range (-0.01)"),
        ("-1", "out of range (-1)"),
        ("1e3", "out of range (1E+3)"),
        ("1" * 400, "out of range (" + "1" * 40 + "...)"),
        ("1e999999999999999999", "out of range (1E+999999999999999999)"),
        ("1e-999999999999999999", "too many digits (1E-999999999999999999)"),
        ("1e99999999999999999999", "unrepresentable number (1e99999999999999999999)"),
        ("1e-99999999999999999999", "unrepresentable number (1e-99999999999999999999)"),
        ("1e-200", "too many digits (1E-200)"),
        ("NaN", "not finite (NaN)"),
        ("Infinity", "not finite (Infinity)"),
        ("-Infinity", "not finite (-Infinity)"),
        ('"72"', "wrong type (string '72')"),
        ('"NaN"', "wrong type (string 'NaN')"),
        ("true", "wrong type (boolean true)"),
        ("false", "wrong type (boolean false)"),
        ("[72]", "wrong type (array)"),
        ('{"value": 72}', "wrong type (object)"),
    ],
)
def test_invalid_scores(literal: str, problem: str) -> None:
    assert_field_invalid(parse(raw_body("governance_score", literal)), "governance_score", problem)


def test_huge_numbers_do_not_crash_or_blow_up() -> None:
    for literal in ("9" * 100_000, "1e99999999", "0." + "0" * 100_000 + "1", "1" + "0" * 5000 + "e-5000"):
        result = parse(raw_body("overall_esg_score", literal))
        assert result.status is Status.PARTIAL
        assert result.values["overall_esg_score"] is None
        assert result.reason is not None and len(result.reason) < 500


def test_null_score_is_missing() -> None:
    assert_field_invalid(parse(body_with(social_score=None)), "social_score", "missing")


def test_absent_score_is_missing() -> None:
    assert_field_invalid(parse(body_with(social_score=...)), "social_score", "missing")


def test_duplicate_score_key_is_invalid() -> None:
    body = body_with()[:-1] + b', "social_score": 65.25}'
    assert_field_invalid(parse(body), "social_score", "duplicate key")


# --- primary_esg_focus -----------------------------------------------------------------------


@pytest.mark.parametrize("focus", ["Environmental", "Social", "Governance"])
def test_focus_values_kept(focus: str) -> None:
    result = parse(body_with(primary_esg_focus=focus))
    assert result.status is Status.SUCCESSFUL
    assert result.values["primary_esg_focus"] == focus


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("environmental", "not one of Environmental, Social, Governance (string 'environmental')"),
        ("Social ", "not one of Environmental, Social, Governance (string 'Social ')"),
        ("E", "not one of Environmental, Social, Governance (string 'E')"),
        ("", "not one of Environmental, Social, Governance (string '')"),
        ("=HYPERLINK(1)", "not one of Environmental, Social, Governance (string '=HYPERLINK(1)')"),
        (1, "wrong type (number 1)"),
        (True, "wrong type (boolean true)"),
        (["Social"], "wrong type (array)"),
    ],
)
def test_invalid_focus(value: Any, problem: str) -> None:
    result = parse(body_with(primary_esg_focus=value))
    assert_field_invalid(result, "primary_esg_focus", problem)


# --- analysis_date ---------------------------------------------------------------------------


def test_date_equal_to_report_date_is_valid() -> None:
    result = parse(body_with(analysis_date="2026-12-04"))
    assert result.status is Status.SUCCESSFUL
    assert result.values["analysis_date"] == "2026-12-04"


def test_date_after_report_date_is_invalid() -> None:
    result = parse(body_with(analysis_date="2026-12-05"))
    assert_field_invalid(result, "analysis_date", "after report date (2026-12-05)")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-02-30", "not a valid date (string '2026-02-30')"),
        ("2026-13-01", "not a valid date (string '2026-13-01')"),
        ("0000-01-01", "not a valid date (string '0000-01-01')"),
        ("20261204", "not a YYYY-MM-DD date (string '20261204')"),
        ("2026-1-4", "not a YYYY-MM-DD date (string '2026-1-4')"),
        ("2026-12-04T00:00:00", "not a YYYY-MM-DD date (string '2026-12-04T00:00:00')"),
        ("2026-12-04\n", "not a YYYY-MM-DD date (string '2026-12-04\\n')"),
        (" 2026-12-04", "not a YYYY-MM-DD date (string ' 2026-12-04')"),
        ("２０２６-１２-０４", "not a YYYY-MM-DD date (string '２０２６-１２-０４')"),
        ("", "not a YYYY-MM-DD date (string '')"),
        (20261204, "wrong type (number 20261204)"),
        (False, "wrong type (boolean false)"),
        ({"d": 1}, "wrong type (object)"),
    ],
)
def test_invalid_dates(value: Any, problem: str) -> None:
    assert_field_invalid(parse(body_with(analysis_date=value)), "analysis_date", problem)


def test_datetime_report_date_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_rating(body_with(), JSON, ACCOUNT, datetime.datetime(2026, 12, 4))


# --- status and reason -----------------------------------------------------------------------


def test_partial_reason_lists_problems_in_field_order() -> None:
    body = body_with(analysis_date="2026-12-07", social_score=101, governance_score=...)
    result = parse(body)
    assert result.status is Status.PARTIAL
    assert result.reason == (
        "social_score: out of range (101); governance_score: missing; analysis_date: after report date (2026-12-07)"
    )
    assert result.values == {**GOOD_VALUES, "social_score": None, "governance_score": None, "analysis_date": None}


def test_single_valid_field_is_partial() -> None:
    result = parse(json.dumps({"account_id": ACCOUNT, "analysis_date": "2026-01-01"}).encode())
    assert result.status is Status.PARTIAL
    assert result.values == {**dict.fromkeys(ESG_FIELDS), "analysis_date": "2026-01-01"}
    assert result.reason == "; ".join(f"{f}: missing" for f in ESG_FIELDS if f != "analysis_date")


def test_no_esg_field_at_all_fails() -> None:
    result = parse(json.dumps({"account_id": ACCOUNT}).encode())
    assert_failed(result, "no valid ESG field: overall_esg_score: missing; environmental_score: missing")


def test_all_fields_invalid_fails_with_every_problem() -> None:
    doc = {"account_id": ACCOUNT, **dict.fromkeys(SCORES, "x"), "primary_esg_focus": 3, "analysis_date": 3}
    result = parse(json.dumps(doc).encode())
    assert_failed(result, "no valid ESG field: overall_esg_score: wrong type (string 'x'); ")
    assert result.reason is not None and result.reason.endswith("analysis_date: wrong type (number 3)")


def test_invalid_values_never_leak_into_values() -> None:
    doc = {**GOOD, "social_score": "65", "primary_esg_focus": "=cmd|' /C calc'!A0", "analysis_date": "2099-01-01"}
    result = parse(json.dumps(doc).encode())
    assert result.values["social_score"] is None
    assert result.values["primary_esg_focus"] is None
    assert result.values["analysis_date"] is None


def test_unknown_and_nested_fields_are_ignored() -> None:
    doc = {**GOOD, "extra": {"deep": [1, {"x": None}]}, "meta": [1, 2, 3]}
    assert parse(json.dumps(doc).encode()).status is Status.SUCCESSFUL


def test_nested_esg_fields_do_not_count() -> None:
    doc = {"account_id": ACCOUNT, "rating": {k: v for k, v in GOOD.items() if k != "account_id"}}
    assert_failed(parse(json.dumps(doc).encode()), "no valid ESG field:")


def test_reason_is_bounded_and_single_line_with_hostile_values() -> None:
    nasty = "\n\r\x00\u2028" + "é" * 300
    doc = {"account_id": ACCOUNT, **dict.fromkeys(SCORES, nasty), "primary_esg_focus": nasty}
    doc["analysis_date"] = nasty
    result = parse(json.dumps(doc).encode())
    assert result.status is Status.FAILED
    assert result.reason is not None
    assert len(result.reason) < 500
    assert result.reason.isprintable()


# --- fuzz ------------------------------------------------------------------------------------


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -0.0, 100, 101, -1, 72.5, 1e300, 10**40, rng.uniform(-10, 110)])
    if kind == 3:
        return rng.choice(["", "Social", "2026-12-04", "2026-12-05", "72", ACCOUNT, "\x00\n", "é😀"])
    if kind == 4:
        return float(rng.choice(["nan", "inf", "-inf"]))
    if kind == 5:
        return rng.choice(["Environmental", "Governance", "2026-02-30", "2025-01-01"])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice([*ESG_FIELDS, "account_id", "x"]): random_json(rng, depth + 1) for _ in range(3)}


def check_invariants(result: RatingResult) -> None:
    assert isinstance(result, RatingResult)
    assert result.account_id == ACCOUNT
    assert list(result.values) == list(ESG_FIELDS)
    assert all(v is None or isinstance(v, str) for v in result.values.values())
    valid = sum(v is not None for v in result.values.values())
    if result.status is Status.SUCCESSFUL:
        assert valid == len(ESG_FIELDS) and result.reason is None
    else:
        assert result.reason is not None and 0 < len(result.reason) < 500 and result.reason.isprintable()
        assert (valid == 0) == (result.status is Status.FAILED)


def test_fuzz_random_bytes_never_raise() -> None:
    rng = random.Random(20261204)
    seed = body_with()
    for _ in range(3000):
        mode = rng.randrange(3)
        if mode == 0:
            body = rng.randbytes(rng.randrange(64))
        elif mode == 1:  # mutate a valid body so the parser gets deep into it before failing
            data = bytearray(seed)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            body = bytes(data)
        else:
            body = seed[: rng.randrange(len(seed) + 1)]
        check_invariants(parse(body))


def test_fuzz_random_json_shapes_never_raise() -> None:
    rng = random.Random(42)
    for _ in range(3000):
        doc: Any = {"account_id": ACCOUNT} if rng.random() < 0.8 else random_json(rng)
        if isinstance(doc, dict):
            for field in rng.sample(ESG_FIELDS, rng.randrange(len(ESG_FIELDS) + 1)):
                doc[field] = GOOD[field] if rng.random() < 0.4 else random_json(rng)
        # allow_nan emits NaN/Infinity literals, which the parser must treat as invalid values
        check_invariants(parse(json.dumps(doc, allow_nan=True).encode()))
