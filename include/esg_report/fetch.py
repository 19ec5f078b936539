"""Fetch the ratings of one batch concurrently, recording each result the moment it is known."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable

from include.esg_report.esg import EsgClient
from include.esg_report.validation import RatingResult

log = logging.getLogger(__name__)

OnResult = Callable[[RatingResult, int, dt.datetime, dt.datetime], None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def fetch_ratings(
    client: EsgClient,
    account_ids: Iterable[str],
    report_date: dt.date,
    on_result: OnResult,
    concurrency: int,
) -> Counter[str]:
    """Fetch every account with at most `concurrency` requests in flight; return status counts."""
    pending = iter(account_ids)
    counts: Counter[str] = Counter()

    async def worker() -> None:
        # Workers share one iterator, so memory holds `concurrency` accounts, not the whole batch.
        for account_id in pending:
            started = _now()
            result, attempts = await client.rating(account_id, report_date)
            # A ledger commit may wait on another worker's; waiting off the loop keeps the pacing steady.
            await asyncio.to_thread(on_result, result, attempts, started, _now())
            counts[result.status.value] += 1
            if result.reason:
                log.info("%s %s after %d attempt(s): %s", account_id, result.status, attempts, result.reason)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, concurrency)):
            group.create_task(worker())
    return counts
