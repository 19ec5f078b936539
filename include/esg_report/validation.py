"""Validation of one ESG Portfolio Analysis API 200 response body (pure: no Airflow, no HTTP)."""

from __future__ import annotations

import datetime
import enum
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

ESG_FIELDS: tuple[str, ...] = (
    "overall_esg_score",
    "environmental_score",
    "social_score",
    "governance_score",
    "primary_esg_focus",
    "primary_focus_score",
    "analysis_date",
)

SCORE_FIELDS: frozenset[str] = frozenset(
    {"overall_esg_score", "environmental_score", "social_score", "governance_score", "primary_focus_score"}
)
FOCUS_VALUES: tuple[str, ...] = ("Environmental", "Social", "Governance")

SCORE_MIN = Decimal(0)
SCORE_MAX = Decimal(100)
# A score is written in plain notation; a tiny exponent (1e-999999) would expand to millions of digits.
MAX_NUMBER_CHARS = 100
MAX_REASON_CHARS = 499
# Echoed values are cut so one hostile field cannot crowd the others out of the reason.
MAX_ECHO_CHARS = 40

_MEDIA_TYPE_RE = re.compile(r"application/(?:[a-z0-9!#$&^_.+-]+\+)?json")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Status(enum.StrEnum):
    """Processing status of one account's row in the report."""

    SUCCESSFUL = "Successful"
    PARTIAL = "Partial"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class RatingResult:
    """Outcome of validating one account's ESG rating."""

    account_id: str
    status: Status
    values: dict[str, str | None]
    reason: str | None


class _BadNumber:
    """A JSON number literal that Decimal cannot represent (e.g. an exponent beyond its limits)."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers which keys appeared more than once."""

    __slots__ = ("duplicates",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.duplicates: frozenset[str] = frozenset()
        if len(self) != len(pairs):
            counts = Counter(key for key, _ in pairs)
            self.duplicates = frozenset(key for key, n in counts.items() if n > 1)


def _parse_number(literal: str) -> Decimal | _BadNumber:
    try:
        return Decimal(literal)
    except (InvalidOperation, ValueError, OverflowError):
        return _BadNumber(literal)


def _cut(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: Any) -> str:
    """Render a decoded JSON value short, single-line and unambiguous for a reason text."""
    if isinstance(value, str):
        return "string " + repr(_cut(value))
    if isinstance(value, bool):
        return "boolean true" if value else "boolean false"
    if value is None:
        return "null"
    if isinstance(value, Decimal):
        return "number " + _cut(str(value))
    if isinstance(value, _BadNumber):
        return "number " + _cut(value.literal)
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _single_line(text: str) -> str:
    """Escape anything unprintable and bound the length, so a reason is always one short line."""
    text = text[: MAX_REASON_CHARS + 1]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return _cut(text, MAX_REASON_CHARS - 3)


def failed(account_id: str, reason: str) -> RatingResult:
    """Return a Failed result with every ESG value empty."""
    return RatingResult(
        account_id=account_id,
        status=Status.FAILED,
        values=dict.fromkeys(ESG_FIELDS),
        reason=_single_line(reason),
    )


def _media_type_ok(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return _MEDIA_TYPE_RE.fullmatch(media_type) is not None


def _check_score(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, _BadNumber):
        return None, f"unrepresentable number ({_cut(value.literal)})"
    if not isinstance(value, Decimal):
        return None, f"wrong type ({_show(value)})"
    if not value.is_finite():
        return None, f"not finite ({value})"
    if not SCORE_MIN <= value <= SCORE_MAX:
        return None, f"out of range ({_cut(str(value))})"
    digits, exponent = len(value.as_tuple().digits), int(value.as_tuple().exponent)
    if max(digits + max(exponent, 0), -exponent + 1) > MAX_NUMBER_CHARS:
        return None, f"too many digits ({_cut(str(value))})"
    if value.is_zero():
        # -0 and -0.0 are valid JSON; a signed zero in the report would only confuse readers.
        value = value.copy_abs()
    return format(value, "f"), None


def _check_focus(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, f"wrong type ({_show(value)})"
    if value not in FOCUS_VALUES:
        return None, f"not one of {', '.join(FOCUS_VALUES)} ({_show(value)})"
    return value, None


def _date_checker(report_date: datetime.date) -> Callable[[Any], tuple[str | None, str | None]]:
    def check(value: Any) -> tuple[str | None, str | None]:
        if not isinstance(value, str):
            return None, f"wrong type ({_show(value)})"
        if _DATE_RE.fullmatch(value) is None:
            return None, f"not a YYYY-MM-DD date ({_show(value)})"
        try:
            parsed = datetime.date.fromisoformat(value)
        except ValueError:
            return None, f"not a valid date ({_show(value)})"
        if parsed > report_date:
            return None, f"after report date ({value})"
        return value, None

    return check


def parse_rating(body: bytes, content_type: str | None, account_id: str, report_date: datetime.date) -> RatingResult:
    """Validate one ESG API 200 response body for `account_id`; never raises on any body."""
    if isinstance(report_date, datetime.datetime):
        # A datetime compares unequal to dates and hides which calendar (timezone) the date came from.
        raise TypeError("report_date must be a datetime.date, not a datetime.datetime")
    if not _media_type_ok(content_type):
        shown = "none" if content_type is None else repr(_cut(content_type))
        return failed(account_id, f"bad body: content type {shown}")
    try:
        text = str(body, "utf-8")
        document = json.loads(
            text,
            parse_float=_parse_number,
            parse_int=_parse_number,
            parse_constant=Decimal,
            object_pairs_hook=_JsonObject,
        )
    except RecursionError:
        return failed(account_id, "bad body: invalid JSON (nested too deeply)")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return failed(account_id, f"bad body: invalid JSON ({_cut(str(exc), 120)})")
    if not isinstance(document, _JsonObject):
        return failed(account_id, "bad body: not a JSON object")

    if "account_id" in document.duplicates:
        return failed(account_id, "account_id mismatch: duplicate account_id keys")
    if "account_id" not in document:
        return failed(account_id, "account_id mismatch: missing")
    received_id = document["account_id"]
    if not isinstance(received_id, str) or received_id != account_id:
        shown = repr(_cut(received_id)) if isinstance(received_id, str) else _show(received_id)
        return failed(account_id, f"account_id mismatch: got {shown}")

    check_date = _date_checker(report_date)
    values: dict[str, str | None] = {}
    problems: list[str] = []
    for field in ESG_FIELDS:
        raw = document.get(field)
        if field in document.duplicates:
            # Parsers disagree on which duplicate wins, so neither value can be trusted.
            value, problem = None, "duplicate key"
        elif raw is None:
            value, problem = None, "missing"
        elif field in SCORE_FIELDS:
            value, problem = _check_score(raw)
        elif field == "primary_esg_focus":
            value, problem = _check_focus(raw)
        else:
            value, problem = check_date(raw)
        values[field] = value
        if problem is not None:
            problems.append(f"{field}: {problem}")

    if not problems:
        return RatingResult(account_id=account_id, status=Status.SUCCESSFUL, values=values, reason=None)
    joined = "; ".join(problems)
    if len(problems) == len(ESG_FIELDS):
        return failed(account_id, f"no valid ESG field: {joined}")
    return RatingResult(account_id=account_id, status=Status.PARTIAL, values=values, reason=_single_line(joined))
