"""One ESG request budget shared by every batch on every worker: pyrate-limiter on the ledger's database."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

from pyrate_limiter import Duration, Limiter, PostgresBucket, Rate, RateItem, SQLiteBucket

from include.esg_report.settings import LedgerSettings

log = logging.getLogger(__name__)

# The server counts arrivals, we count departures: a window a little longer than one second
# absorbs the spread in network and scheduling delay, so our sends never bunch into a 429.
WINDOW_MARGIN_MS = 60
# A second, short window spreads requests evenly: waiters woken together would otherwise
# leave in one burst, and a burst arrives with a wider spread than evenly paced requests.
SLICES_PER_SECOND = 10
LIMITER_BUFFER_MS = 5


def limiter_rates(per_second: float) -> list[Rate]:
    """The rates that keep requests within per_second in any sliding second, with a safety margin."""
    if per_second < 1:
        return [Rate(1, math.ceil(1000 / per_second) + WINDOW_MARGIN_MS)]
    limit = math.floor(per_second)
    rates = [Rate(limit, Duration.SECOND + WINDOW_MARGIN_MS)]
    if limit >= 2 * SLICES_PER_SECOND:
        slice_ms = 1000 // SLICES_PER_SECOND
        rates.insert(0, Rate(math.ceil(limit / SLICES_PER_SECOND), slice_ms))
    return rates


class _StampUnderLockBucket(SQLiteBucket):
    """SQLiteBucket that timestamps an item after taking the cross-process lock.

    The stock bucket stamps before: FileLock polls every 50 ms, so under contention a request
    would leave up to ~100 ms after the time recorded for it, and bunch up at the server.
    """

    def put(self, item: RateItem) -> bool:
        with self.lock:
            item.timestamp = self.now()
            return super().put(item)


def bucket_table(base_url: str, client_id: str) -> str:
    """One bucket per upstream and client: the upstream limits each client separately."""
    return "esg_rate_" + hashlib.sha256(f"{base_url}\0{client_id}".encode()).hexdigest()[:16]


def shared_limiter(ledger: LedgerSettings, table: str, per_second: float) -> Limiter:
    """A limiter whose state lives where every worker reaches it: beside or inside the ledger."""
    rates = limiter_rates(per_second)
    if ledger.dialect == "sqlite":
        assert ledger.sqlite_path is not None
        path = Path(f"{ledger.sqlite_path}.ratelimit")
        path.parent.mkdir(parents=True, exist_ok=True)
        bucket = _StampUnderLockBucket.init_from_file(rates, table=table, db_path=str(path), use_file_lock=True)
    else:
        from psycopg_pool import ConnectionPool

        from include.esg_report.ledger import ledger_url

        conninfo = ledger_url(ledger).set(drivername="postgresql").render_as_string(hide_password=False)
        pool = ConnectionPool(conninfo, min_size=1, max_size=2, open=True)
        bucket = PostgresBucket(pool, table, rates)
    log.info("rate limit: %s requests/s shared through %s (%s)", per_second, table, ledger.dialect)
    # The default 50 ms wake-up buffer would cost half of each 100 ms slice.
    return Limiter(bucket, buffer_ms=LIMITER_BUFFER_MS)
