"""ESG Portfolio Analysis client: one validated rating per account."""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import quote

from include.esg_report.upstream import OAuthApi, TransientError, UpstreamError
from include.esg_report.validation import RatingResult, failed, parse_rating

log = logging.getLogger(__name__)


class EsgClient:
    """Fetches ESG ratings; every outcome, good or bad, becomes a RatingResult."""

    def __init__(self, api: OAuthApi) -> None:
        self._api = api

    async def rating(self, account_id: str, report_date: dt.date) -> tuple[RatingResult, int]:
        """The account's rating as of the report date, and the number of HTTP attempts it took."""
        path = f"/v1/accounts/{quote(account_id, safe='')}/esg-rating"
        try:
            result = await self._api.get(path, {"as_of": report_date.isoformat()})
        except TransientError as exc:
            return failed(account_id, f"transient errors outlasted {exc.attempts} attempts: {exc}"), exc.attempts
        except UpstreamError as exc:
            return failed(account_id, f"permanent error: {exc}"), exc.attempts
        response = result.response
        rating = parse_rating(response.content, response.headers.get("content-type"), account_id, report_date)
        return rating, result.attempts
