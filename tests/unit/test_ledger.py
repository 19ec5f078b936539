"""The ledger on SQLite and PostgreSQL: listing, batches, results, cache and report rows."""

import datetime as dt

import pandas as pd
import pytest

from include.esg_report.accounts import Account
from include.esg_report.ledger import Ledger, connect
from include.esg_report.report import COLUMNS
from include.esg_report.validation import ESG_FIELDS, RatingResult, Status, failed

DAY = dt.date(2026, 12, 4)
T0 = dt.datetime(2026, 12, 4, 11, 0, tzinfo=dt.UTC)


@pytest.fixture
def ledger(ledger_settings):
    return Ledger(connect(ledger_settings))


def ok(account_id, score="50"):
    values = dict.fromkeys(ESG_FIELDS, score)
    values["primary_esg_focus"], values["analysis_date"] = "Social", "2026-12-01"
    return RatingResult(account_id, Status.SUCCESSFUL, values, None)


def accounts(*ids, status="active"):
    return [Account(i, f"name {i}", status) for i in ids]


def test_listing_dedupes_latest_wins_and_orders_bytewise(ledger):
    ledger.add_listed("run1", DAY, accounts("b", "a", "Z", "é", "-x"))
    ledger.add_listed("run1", DAY, [Account("a", "renamed", "active"), Account("b", "gone", "inactive")])
    batches = ledger.plan_batches("run1", 2)
    ids = [i for b in batches for i, _ in ledger.batch_accounts("run1", b)]
    assert ids == sorted(["a", "Z", "é", "-x"])  # Python str order == byte order of UTF-8
    assert [b.size for b in batches] == [2, 2]
    names = dict(x for b in batches for x in ledger.batch_accounts("run1", b))
    assert names["a"] == "renamed"


def test_batches_cover_every_account_once(ledger):
    ids = [f"AC{i:05d}" for i in range(1, 1002)]
    ledger.add_listed("run1", DAY, accounts(*ids))
    batches = ledger.plan_batches("run1", 250)
    assert [b.size for b in batches] == [250, 250, 250, 250, 1]
    seen = [i for b in batches for i, _ in ledger.batch_accounts("run1", b)]
    assert seen == ids


def test_clear_list_and_lists_are_separate(ledger):
    ledger.add_listed("run1", DAY, accounts("a", "b"))
    ledger.add_listed("run2", DAY, accounts("c"))
    ledger.clear_list("run1")
    assert ledger.plan_batches("run1", 10) == []
    assert len(ledger.plan_batches("run2", 10)) == 1


def test_record_replaces_and_cache_rules(ledger):
    ledger.add_listed("run1", DAY, accounts("a", "b", "c"))
    ledger.record(DAY, "run1", ok("a"), 1, T0, T0)
    ledger.record(DAY, "run1", failed("b", "HTTP 404"), 1, T0, T0)
    ids = ["a", "b", "c"]
    assert ledger.done_accounts(DAY, ids, "run2", reuse="final") == {"a"}
    assert ledger.done_accounts(DAY, ids, "run2", reuse="any") == {"a", "b"}
    assert ledger.done_accounts(DAY, ids, "run2", reuse="run") == set()
    # A retry of run1 keeps run1's final results and fetches its Failed one again.
    assert ledger.done_accounts(DAY, ids, "run1", reuse="run") == {"a"}
    with pytest.raises(ValueError, match="reuse"):
        ledger.done_accounts(DAY, ids, "run1", reuse="none")
    assert ledger.done_accounts(DAY + dt.timedelta(days=1), ids, "run2", reuse="final") == set()
    ledger.record(DAY, "run2", ok("b"), 3, T0, T0)
    assert ledger.done_accounts(DAY, ids, "run3", reuse="final") == {"a", "b"}
    assert ledger.missing_results("run1", DAY) == 1


def test_report_chunks_rows_in_order(ledger):
    ledger.add_listed("run1", DAY, accounts("c", "a", "b") + accounts("x", status="closed"))
    ledger.record(DAY, "run1", ok("a", "12.50"), 1, T0, T0)
    ledger.record(DAY, "run1", failed("b", "HTTP 404"), 1, T0, T0)
    ledger.record(DAY, "run1", ok("c"), 2, T0, T0)
    chunks = list(ledger.report_chunks("run1", DAY, chunk_rows=2))
    assert [len(c) for c in chunks] == [2, 1]
    rows = [r for c in chunks for r in c.itertuples(index=False)]
    assert tuple(chunks[0].columns) == COLUMNS
    assert [r.account_id for r in rows] == ["a", "b", "c"]
    assert rows[0].overall_esg_score == "12.50"
    assert rows[1].processing_status == "Failed" and pd.isna(rows[1].overall_esg_score)


def test_problems_is_the_error_log(ledger):
    ledger.record(DAY, "run1", ok("a"), 1, T0, T0)
    ledger.record(DAY, "run1", failed("b", "HTTP 404"), 4, T0, T0 + dt.timedelta(seconds=3))
    problems = ledger.problems(DAY)
    assert [(p["account_id"], p["status"], p["reason"], p["attempts"]) for p in problems] == [
        ("b", "Failed", "HTTP 404", 4)
    ]


def test_active_among(ledger):
    ledger.add_listed("run1", DAY, accounts("a") + accounts("b", status="inactive"))
    assert ledger.active_among("run1", ["a", "b", "zz"]) == {"a"}
