"""Report dates: the calendar date in America/Chicago of a run."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

REPORT_TIMEZONE = ZoneInfo("America/Chicago")


def report_date_for(param: str | None, logical_date: dt.datetime | None, run_after: dt.datetime) -> dt.date:
    """The run's report date: the report_date param if given, else the Chicago date of the run."""
    if param:
        try:
            return dt.date.fromisoformat(str(param).strip())
        except ValueError:
            raise ValueError(f"param 'report_date' must be YYYY-MM-DD, got {param!r}") from None
    moment = logical_date or run_after
    return moment.astimezone(REPORT_TIMEZONE).date()
