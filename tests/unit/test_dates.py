"""Report dates follow America/Chicago, across DST changes."""

import datetime as dt

import pytest

from include.esg_report.dates import report_date_for

UTC = dt.UTC


@pytest.mark.parametrize(
    ("logical", "expected"),
    [
        (dt.datetime(2026, 12, 4, 11, 0, tzinfo=UTC), dt.date(2026, 12, 4)),  # 05:00 CST
        (dt.datetime(2026, 7, 4, 10, 0, tzinfo=UTC), dt.date(2026, 7, 4)),  # 05:00 CDT
        (dt.datetime(2026, 12, 4, 3, 0, tzinfo=UTC), dt.date(2026, 12, 3)),  # 21:00 the day before
    ],
)
def test_chicago_date(logical, expected):
    assert report_date_for(None, logical, logical) == expected


def test_manual_run_without_logical_date_uses_run_after():
    run_after = dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert report_date_for(None, None, run_after) == dt.date(2026, 3, 8)


def test_param_wins():
    now = dt.datetime(2026, 12, 4, 11, tzinfo=UTC)
    assert report_date_for("2026-11-30", now, now) == dt.date(2026, 11, 30)


def test_bad_param_is_named():
    now = dt.datetime(2026, 12, 4, 11, tzinfo=UTC)
    with pytest.raises(ValueError, match="report_date"):
        report_date_for("04/12/2026", now, now)
