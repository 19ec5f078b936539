"""The shared limiter on both ledger databases: never more than the rate in any sliding second."""

import asyncio
import bisect
import time

from include.esg_report.ratelimit import bucket_table, limiter_rates, shared_limiter


def max_in_any_second(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    return max(bisect.bisect_right(stamps, t + 1.0) - i for i, t in enumerate(stamps))


def test_rates_keep_a_margin_and_smooth():
    rates = limiter_rates(100)
    assert [(r.limit, r.interval) for r in rates] == [(10, 100), (100, 1060)]
    assert [(r.limit, r.interval) for r in limiter_rates(5)] == [(5, 1060)]
    assert [(r.limit, r.interval) for r in limiter_rates(0.5)] == [(1, 2060)]


def test_bucket_per_upstream_and_client():
    assert bucket_table("https://a", "x") != bucket_table("https://a", "y")
    assert bucket_table("https://a", "x") == bucket_table("https://a", "x")


def test_limiter_paces_on_each_backend(ledger_settings):
    rate = 20
    limiter = shared_limiter(ledger_settings, "esg_rate_test", rate)
    stamps: list[float] = []

    async def take():
        await limiter.try_acquire_async("esg")
        stamps.append(time.monotonic())

    async def main():
        await asyncio.gather(*(take() for _ in range(3 * rate)))

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    limiter.close()
    assert len(stamps) == 3 * rate
    assert max_in_any_second(stamps) <= rate
    # 60 permits at 20/s: the first 20 at once, the rest paced over at least two more seconds.
    assert 2.0 <= elapsed <= 6.0, elapsed
