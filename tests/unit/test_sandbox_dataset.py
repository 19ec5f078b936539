"""Unit tests of the sandbox's pure parts: dataset, ratings, fault plan, oracle, cursors, limiter."""

import json
import random
import re
import unicodedata
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from include.esg_sandbox.config import SandboxConfig, parse_client
from include.esg_sandbox.dataset import (
    ACTIVE,
    CLOSED,
    ESG_FIELDS,
    HARD_ACTIVE_IDS,
    INACTIVE,
    MAX_ID_LENGTH,
    NASTY_NAMES,
    PILLAR_FIELD,
    PILLARS,
    Dataset,
    invalid_rating,
    normal_rating,
    number_text,
    parse_as_of,
    partial_rating,
)
from include.esg_sandbox.faultplan import (
    ESG_FAULT_KINDS,
    EVENTUAL_SUCCESS_KINDS,
    FAILED_KINDS,
    LISTING_FAULT_KINDS,
    FaultSpec,
    build_plan,
    expected_status,
)
from include.esg_sandbox.oracle import REPORT_COLUMNS, expected_report, served_rating
from include.esg_sandbox.pagination import CursorCodec, CursorError, Position, page_size, slice_page
from include.esg_sandbox.state import SlidingWindowLimiter, Stats

AS_OF = date(2026, 12, 4)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class _NonFinite:
    """Marker for NaN / Infinity literals, which the reference validator must reject."""


def reference_row(body: bytes, account_id: str, as_of: date) -> tuple[str, list[str]]:
    """Validate a body the way report-output.md says: return (processing_status, seven field texts)."""
    try:
        data = json.loads(body, parse_float=Decimal, parse_int=Decimal, parse_constant=lambda _: _NonFinite())
    except ValueError:
        return "Failed", [""] * 7
    if not isinstance(data, dict) or data.get("account_id") != account_id:
        return "Failed", [""] * 7
    texts = []
    for field in ESG_FIELDS:
        value = data.get(field)
        text = ""
        if field == "primary_esg_focus":
            text = value if isinstance(value, str) and value in PILLARS else ""
        elif field == "analysis_date":
            if isinstance(value, str) and _DATE_RE.fullmatch(value):
                try:
                    parsed = date.fromisoformat(value)
                except ValueError:
                    parsed = None
                text = value if parsed and parsed <= as_of else ""
        elif isinstance(value, Decimal) and value.is_finite() and 0 <= value <= 100:
            text = format(value, "f")
        texts.append(text)
    valid = sum(1 for t in texts if t)
    if not valid:
        return "Failed", [""] * 7
    return ("Successful" if valid == 7 else "Partial"), texts


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    """The default-sized dataset."""
    return Dataset(279, 28, 42)


# --- accounts -------------------------------------------------------------------------------


def test_dataset_is_deterministic_per_seed(dataset: Dataset) -> None:
    """The same seed builds the same accounts; another seed does not."""
    assert Dataset(279, 28, 42).accounts == dataset.accounts
    assert Dataset(279, 28, 43).accounts != dataset.accounts


def test_counts_and_statuses(dataset: Dataset) -> None:
    """N active accounts plus the inactive/closed ones, with unique ids."""
    statuses = [a.status for a in dataset.accounts]
    assert statuses.count(ACTIVE) == 279
    assert len(statuses) == 279 + 28
    assert {INACTIVE, CLOSED} <= set(statuses) <= {ACTIVE, INACTIVE, CLOSED}
    assert len(dataset.by_id) == len(dataset.accounts), "account ids must be unique"
    assert dataset.active_ids == sorted(a.account_id for a in dataset.accounts if a.status == ACTIVE)


def test_default_inactive_share() -> None:
    """Without --inactive the dataset holds about 10 % inactive accounts."""
    assert SandboxConfig(accounts=279).inactive == 28
    assert SandboxConfig(accounts=5000).inactive == 500


def test_hard_ids_are_present_and_bounded(dataset: Dataset) -> None:
    """Ids that break naive URL, CSV or spreadsheet handling are always there."""
    active = {a.account_id for a in dataset.accounts if a.status == ACTIVE}
    assert set(HARD_ACTIVE_IDS) <= active
    ids = list(dataset.by_id)
    for needle in ("/", " ", "?", "#", "%"):
        assert any(needle in i for i in active), needle
    assert any(not i.isascii() for i in active)
    for lead in "=-+@":
        assert any(i.startswith(lead) for i in active), lead
    assert all(1 <= len(i) <= MAX_ID_LENGTH for i in ids)
    assert max(len(i) for i in ids) == MAX_ID_LENGTH
    assert sum(1 for i in ids if re.fullmatch(r"AC\d{6}", i)) > 250


def test_small_dataset_has_no_hard_cases() -> None:
    """Below 20 accounts the dataset is plain."""
    small = Dataset(10, 1, 42)
    assert not small.hard_ids
    assert len([a for a in small.accounts if a.status == ACTIVE]) == 10


def _has_script(text: str, script: str) -> bool:
    return any(script in unicodedata.name(ch, "") for ch in text)


def test_nasty_names_are_present(dataset: Dataset) -> None:
    """Every kind of nasty account name is present at the default size."""
    names = [a.account_name for a in dataset.accounts if a.status == ACTIVE]
    checks = {
        "comma": lambda n: "," in n,
        "quote": lambda n: '"' in n,
        "crlf": lambda n: "\r\n" in n,
        "lone lf": lambda n: re.search(r"(?<!\r)\n", n) is not None,
        "lone cr": lambda n: re.search(r"\r(?!\n)", n) is not None,
        "tab": lambda n: "\t" in n.strip(),
        "leading =": lambda n: n.startswith("="),
        "leading +": lambda n: n.startswith("+"),
        "leading -": lambda n: n.startswith("-"),
        "leading @": lambda n: n.startswith("@"),
        "leading tab": lambda n: n.startswith("\t"),
        "leading cr": lambda n: n.startswith("\r"),
        "japanese": lambda n: _has_script(n, "KATAKANA") or _has_script(n, "CJK"),
        "arabic": lambda n: _has_script(n, "ARABIC"),
        "greek": lambda n: _has_script(n, "GREEK"),
        "cyrillic": lambda n: _has_script(n, "CYRILLIC"),
        "emoji": lambda n: any(ord(ch) > 0xFFFF for ch in n),
        "surrounding spaces": lambda n: n != n.strip(" ") and n.startswith(" ") and n.endswith(" "),
    }
    missing = [label for label, check in checks.items() if not any(check(n) for n in names)]
    assert not missing
    assert set(NASTY_NAMES) <= set(names)


def test_listing_is_shuffled_not_sorted(dataset: Dataset) -> None:
    """The listing order is a shuffle, and the status filter holds."""
    ids = [a.account_id for a in dataset.listing("all")]
    assert ids != sorted(ids)
    assert [a.status for a in dataset.listing("active")] == [ACTIVE] * 279
    assert {a.status for a in dataset.listing("inactive")} == {INACTIVE, CLOSED}


def test_large_dataset_keeps_unique_ids_and_some_nasty_names() -> None:
    """Large datasets keep unique ids and sprinkle nasty names."""
    big = Dataset(20_000, 2_000, 7)
    assert len(big.by_id) == 22_000
    sprinkled = [a for a in big.accounts if any(a.account_name.startswith(n) for n in NASTY_NAMES)]
    assert len(sprinkled) > 200


# --- ratings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "text"),
    [("7.25E1", "72.5"), ("1e2", "100"), ("72.50", "72.50"), ("100.0", "100.0"), ("0", "0"), ("725e-1", "72.5")],
)
def test_number_text_is_plain_decimal_of_the_literal(literal: str, text: str) -> None:
    """Report text of a number is the plain decimal of its literal."""
    assert number_text(literal) == text


@pytest.mark.parametrize("text", ["2026-02-30", "2026-2-3", "20261204", "2026-12-04T00:00:00", "", "0001-01-01"])
def test_parse_as_of_is_strict(text: str) -> None:
    """Only YYYY-MM-DD dates are accepted."""
    with pytest.raises(ValueError):
        parse_as_of(text)
    assert parse_as_of("2026-12-04") == AS_OF


def test_normal_ratings_are_valid_deterministic_and_consistent(dataset: Dataset) -> None:
    """Normal ratings validate fully and match their intent."""
    for account_id in dataset.active_ids:
        rating = normal_rating(42, account_id, AS_OF)
        assert rating == normal_rating(42, account_id, AS_OF)
        data = json.loads(rating.body(), parse_float=Decimal, parse_int=Decimal)
        assert data["account_id"] == account_id
        literals = dict(zip(ESG_FIELDS, rating.literals, strict=True))
        assert literals["primary_focus_score"] == literals[PILLAR_FIELD[data["primary_esg_focus"]]]
        assert 0 <= (AS_OF - date.fromisoformat(data["analysis_date"])).days <= 30
        assert reference_row(rating.body(), account_id, AS_OF) == ("Successful", list(rating.expected))
    assert normal_rating(42, "AC000001", AS_OF) != normal_rating(42, "AC000001", AS_OF + timedelta(days=1))
    assert normal_rating(42, "AC000001", AS_OF) != normal_rating(43, "AC000001", AS_OF)


def test_score_literals_include_other_valid_spellings() -> None:
    """Scores use exponent and trailing-zero spellings now and then."""
    literals = [
        lit
        for i in range(3000)
        for field, lit in zip(ESG_FIELDS, normal_rating(1, f"AC{i:06d}", AS_OF).literals, strict=True)
        if field not in ("primary_esg_focus", "analysis_date")
    ]
    assert any("E" in lit for lit in literals)
    assert any("e" in lit for lit in literals)
    assert any(re.fullmatch(r"\d+\.\d*0", lit) for lit in literals), "trailing zero"
    assert any(re.fullmatch(r"\d+", lit) for lit in literals), "integers"
    assert any(re.fullmatch(r"\d+\.\d{2}", lit) for lit in literals), "two decimals"
    assert all("E" not in number_text(lit) and 0 <= Decimal(lit) <= 100 for lit in literals)


def test_partial_ratings_break_one_to_four_fields(dataset: Dataset) -> None:
    """Partial ratings break 1-4 fields by missing, null or invalid values."""
    modes: set[str] = set()
    for account_id in dataset.active_ids:
        rating = partial_rating(42, account_id, AS_OF)
        broken = [f for f, text in zip(ESG_FIELDS, rating.expected, strict=True) if not text]
        assert 1 <= len(broken) <= 4
        status, texts = reference_row(rating.body(), account_id, AS_OF)
        assert (status, texts) == ("Partial", list(rating.expected))
        for field, literal in zip(ESG_FIELDS, rating.literals, strict=True):
            if field in broken:
                modes.add("missing" if literal is None else "null" if literal == "null" else "invalid")
    assert modes == {"missing", "null", "invalid"}


def test_invalid_ratings_break_all_seven_fields_differently(dataset: Dataset) -> None:
    """Invalid ratings break all seven fields, each differently."""
    for account_id in dataset.active_ids[:100]:
        rating = invalid_rating(42, account_id, AS_OF)
        assert None not in rating.literals and "null" not in rating.literals
        assert len(set(rating.literals)) == 7
        assert reference_row(rating.body(), account_id, AS_OF) == ("Failed", [""] * 7)


# --- fault spec and plan --------------------------------------------------------------------


def test_fault_spec_parsing() -> None:
    """none, default and kind=fraction lists parse."""
    assert FaultSpec.parse("none").esg == {}
    assert FaultSpec.parse("none").listing == frozenset()
    default = FaultSpec.parse("default")
    assert set(default.esg) == set(ESG_FAULT_KINDS)
    assert all(0.02 <= f <= 0.05 for f in default.esg.values())
    assert default.listing == frozenset(LISTING_FAULT_KINDS)
    spec = FaultSpec.parse("html=0.1, partial=0.25,short_pages=1,repeat_accounts")
    assert spec.esg == {"html": 0.1, "partial": 0.25}
    assert spec.listing == {"short_pages", "repeat_accounts"}


@pytest.mark.parametrize("text", ["bogus=0.1", "html=2", "html=abc", "html=0.6,partial=0.6", "short_pages=0.5"])
def test_fault_spec_rejects_bad_specs(text: str) -> None:
    """Unknown kinds and bad fractions are rejected."""
    with pytest.raises(ValueError):
        FaultSpec.parse(text)


def test_default_plan_has_every_kind_once_per_account(dataset: Dataset) -> None:
    """The default plan has every kind, on active non-hard accounts only."""
    plan = build_plan(FaultSpec.parse("default"), dataset)
    assert plan == build_plan(FaultSpec.parse("default"), Dataset(279, 28, 42))
    assert set(plan.esg.values()) == set(ESG_FAULT_KINDS)
    assert all(dataset.by_id[a].status == ACTIVE for a in plan.esg)
    assert not set(plan.esg) & dataset.hard_ids
    for kind in ESG_FAULT_KINDS:
        assert 1 <= len(plan.accounts_with(kind)) <= 0.05 * 279 + 1
    assert 0.3 < len(plan.esg) / 279 < 0.45


def test_default_plan_at_fifty_accounts_and_tiny_datasets() -> None:
    """Every kind at 50 accounts; tiny datasets still get a plan."""
    fifty = Dataset(50, 5, 3)
    assert set(build_plan(FaultSpec.parse("default"), fifty).esg.values()) == set(ESG_FAULT_KINDS)
    build_plan(FaultSpec.parse("default"), Dataset(20, 2, 3))
    build_plan(FaultSpec.parse("default"), Dataset(3, 0, 3))


def test_explicit_plan_counts_and_overflow() -> None:
    """Fractions become counts (at least one); too many faults is an error."""
    data = Dataset(100, 10, 5)
    plan = build_plan(FaultSpec.parse("html=0.1,slow=0.001"), data)
    assert len(plan.accounts_with("html")) == 10
    assert len(plan.accounts_with("slow")) == 1
    with pytest.raises(ValueError, match="needs"):
        build_plan(FaultSpec.parse("html=1"), data)


@pytest.mark.parametrize(
    ("kind", "status"),
    [(None, "Successful"), ("partial", "Partial")]
    + [(k, "Successful") for k in EVENTUAL_SUCCESS_KINDS]
    + [(k, "Failed") for k in FAILED_KINDS],
)
def test_expected_status_per_kind(kind: str | None, status: str) -> None:
    """Each fault kind maps to its processing_status."""
    assert expected_status(kind) == status


# --- oracle ---------------------------------------------------------------------------------


def test_oracle_rows_follow_the_plan(dataset: Dataset) -> None:
    """Oracle rows agree with re-validating what the server serves."""
    plan = build_plan(FaultSpec.parse("default"), dataset)
    report = expected_report(dataset, plan, AS_OF)
    assert report["columns"] == list(REPORT_COLUMNS) and len(REPORT_COLUMNS) == 10
    rows = report["rows"]
    assert [r[0] for r in rows] == sorted(dataset.active_ids)
    for row in rows:
        account_id, name, *fields, status = row
        kind = plan.kind_of(account_id)
        assert name == dataset.by_id[account_id].account_name
        assert status == expected_status(kind)
        if status == "Failed":
            assert fields == [""] * 7
            continue
        body = served_rating(dataset, plan, account_id, AS_OF).body()
        # The oracle comes from intent; re-validating what is served must agree with it.
        assert reference_row(body, account_id, AS_OF) == (status, fields)
    statuses = {r[-1] for r in rows}
    assert statuses == {"Successful", "Partial", "Failed"}


def test_oracle_without_faults_is_all_successful(dataset: Dataset) -> None:
    """Without faults every row is Successful with all fields set."""
    plan = build_plan(FaultSpec.parse("none"), dataset)
    rows = expected_report(dataset, plan, AS_OF)["rows"]
    assert len(rows) == 279 and {r[-1] for r in rows} == {"Successful"}
    assert all(all(r[2:9]) for r in rows)


# --- cursors, pages, rate window, stats, config ---------------------------------------------


def test_cursor_roundtrip_and_tampering() -> None:
    """Cursors round-trip; tampered or foreign ones are rejected."""
    codec = CursorCodec(42)
    cursor = codec.encode(Position("active", 500, 1))
    assert codec.decode(cursor) == Position("active", 500, 1)
    payload, _, signature = cursor.partition(".")
    forged = CursorCodec(42).encode(Position("active", 5, 1)).partition(".")[0] + "." + signature
    for bad in (cursor[:-1] + ("0" if cursor[-1] != "0" else "1"), payload, forged, "x" + cursor, "", "é.abc"):
        with pytest.raises(CursorError):
            codec.decode(bad)
    with pytest.raises(CursorError):
        CursorCodec(43).decode(cursor)


@pytest.mark.parametrize(("short", "repeat"), [(False, False), (True, False), (False, True), (True, True)])
def test_page_walk_covers_every_item(short: bool, repeat: bool) -> None:
    """Walking the pages reaches every item, whatever the listing faults."""
    items = list(range(1234))
    seen: list[int] = []
    offset, page = 0, 0
    while True:
        data, offset = slice_page(items, offset, page, 100, short_pages=short, repeat=repeat)
        assert 1 <= len(data) <= 100
        if short:
            assert len(data) < 100
        if repeat and page:
            assert data[0] in seen
        seen += data
        page += 1
        if offset >= len(items):
            break
    assert sorted(set(seen)) == items
    assert (len(seen) > len(items)) == repeat
    assert page_size(1, 3, True) == 1


def test_sliding_window_limiter() -> None:
    """The limiter counts accepted requests in (now - 1 s, now] per client."""
    limiter = SlidingWindowLimiter()
    results = [limiter.acquire("c", 10.0 + i * 0.1, 5) for i in range(5)]
    assert [r[:2] for r in results] == [(True, 4), (True, 3), (True, 2), (True, 1), (True, 0)]
    assert limiter.acquire("c", 10.5, 5) == (False, 0, 1)
    assert limiter.acquire("other", 10.5, 5)[0]
    assert limiter.acquire("c", 11.0, 5) == (True, 0, 0)
    assert limiter.remaining(None, 11.0, 5) == 5
    limiter.reset()
    assert limiter.remaining("c", 11.0, 5) == 5


def test_max_requests_in_any_second_is_exact() -> None:
    """max_requests_in_any_second equals a brute-force count."""
    rng = random.Random(1)
    arrivals = sorted(rng.uniform(0, 5) for _ in range(400))
    stats = Stats()
    for t in arrivals:
        stats.esg_arrival("AC1", True, t, t)
    brute = max(sum(1 for s in arrivals if t - 1.0 < s <= t) for t in arrivals)
    assert stats.max_requests_in_any_second == brute
    snapshot: dict[str, Any] = stats.snapshot(per_account=True)
    assert snapshot["per_account"] == {"AC1": {"calls": 400, "ok": 0}}


def test_config_validation() -> None:
    """Runtime settings and --client values are validated."""
    config = SandboxConfig()
    config.update({"latency_ms": 5, "rate_limit": 10})
    assert (config.latency_ms, config.rate_limit) == (5.0, 10)
    for bad in ({"rate_limit": 0}, {"latency_ms": -1}, {"seed": 1}, {"rate_limit": 1.5}, {"latency_ms": True}):
        with pytest.raises(ValueError):
            config.update(bad)
    assert parse_client("id:sec:ret") == ("id", "sec:ret")
    with pytest.raises(ValueError):
        parse_client("nosecret")
