"""The job's upstream clients against the real sandbox server, with every fault kind switched on."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from include.esg_report.accounts import AccountsClient
from include.esg_report.esg import EsgClient
from include.esg_report.fetch import fetch_ratings
from include.esg_report.ratelimit import shared_limiter
from include.esg_report.settings import ApiSettings, LedgerSettings
from include.esg_report.upstream import CredentialsError, OAuthApi
from include.esg_report.validation import ESG_FIELDS
from include.esg_sandbox.process import run_sandbox

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 12, 4)
SECRET = "esg-local-secret"
FAULTS = (
    "transient_5xx=0.04,rate_429=0.04,trickle=0.02,revoked_token=0.03,always_401=0.02,always_5xx=0.02,"
    "html=0.02,truncated=0.02,not_json_object=0.02,not_found=0.02,bad_request=0.02,forbidden=0.02,"
    "wrong_id=0.02,invalid=0.03,partial=0.06,slow=0.01,"
    "repeat_accounts=1,inactive_in_active=1,short_pages=1,accounts_5xx=1"
)


def api_settings(url: str, **overrides) -> ApiSettings:
    base = {
        "conn_id": "esg_api",
        "base_url": url,
        "token_url": f"{url}/oauth2/token",
        "client_id": "esg-local",
        "client_secret": SECRET,
        "scope": "esg:read accounts:read",
        "rate_limit_per_second": 100.0,
        "max_attempts": 4,
        "request_deadline": 3.5,
        "read_timeout": 3.0,
        "concurrency": 16,
        "page_size": 37,
    }
    return ApiSettings(**{**base, **overrides})


@pytest.fixture(scope="module")
def sandbox():
    with run_sandbox(accounts=300, faults=FAULTS, rate_limit=100, trickle_seconds=10, seed=7) as server:
        yield server


def expected_rows(sandbox) -> dict[str, list[str]]:
    oracle = sandbox.expected(DAY.isoformat())
    return {row[0]: row for row in oracle["rows"]}


async def list_all(settings: ApiSettings):
    seen = []
    async with OAuthApi(settings, backoff_multiplier=0.05, backoff_cap=0.5) as api:
        async for page in AccountsClient(api).pages():
            seen.extend(page)
    return seen


def test_listing_follows_cursors_and_survives_listing_faults(sandbox):
    listed = asyncio.run(list_all(api_settings(sandbox.url)))
    active = {a.account_id: a.account_name for a in listed if a.status == "active"}
    expected = expected_rows(sandbox)
    assert len(listed) > len({a.account_id for a in listed}), "repeat_accounts should repeat some ids"
    assert any(a.status != "active" for a in listed), "inactive_in_active should leak inactive accounts"
    assert active == {account_id: row[1] for account_id, row in expected.items()}


def test_every_rating_matches_the_oracle_and_no_429_is_self_caused(sandbox, tmp_path):
    sandbox.reset()
    expected = expected_rows(sandbox)
    settings = api_settings(sandbox.url)
    limiter = shared_limiter(
        LedgerSettings(dialect="sqlite", sqlite_path=tmp_path / "l.sqlite"), "esg_rate_test", 100.0
    )
    results = {}

    async def permit():
        await limiter.try_acquire_async("esg")

    def on_result(result, attempts, started, finished):
        results[result.account_id] = (result, attempts)

    async def run():
        async with OAuthApi(settings, before_request=permit, backoff_multiplier=0.05, backoff_cap=0.5) as api:
            return await fetch_ratings(EsgClient(api), list(expected), DAY, on_result, settings.concurrency)

    started = time.monotonic()
    counts = asyncio.run(run())
    elapsed = time.monotonic() - started
    limiter.close()
    assert set(results) == set(expected)
    mismatches = []
    for account_id, row in expected.items():
        result, _ = results[account_id]
        got = [result.values[name] or "" for name in ESG_FIELDS] + [result.status.value]
        if got != row[2:]:
            mismatches.append((account_id, got, row[2:], result.reason))
    assert mismatches == []
    assert sum(counts.values()) == len(expected)
    assert {"Successful", "Partial", "Failed"} <= set(counts)
    stats = sandbox.stats()
    assert stats["rate_limited_429"] == 0
    assert stats["max_requests_in_any_second"] <= 100
    # Trickling bodies are cut by the deadline, not waited out (10 s each at the sandbox).
    assert elapsed < 30, elapsed


# Per fault kind: the reason the job must record, and how many calls it may make (permanent: no retry).
OUTCOMES = {
    "not_found": ("permanent error: HTTP 404", 1),
    "bad_request": ("permanent error: HTTP 400", 1),
    "forbidden": ("permanent error: HTTP 403", 1),
    "always_401": ("permanent error: HTTP 401 twice", 2),
    "always_5xx": ("transient errors outlasted 4 attempts: HTTP 503", 4),
    "html": ("bad body: content type", 1),
    "truncated": ("bad body: invalid JSON", 1),
    "not_json_object": ("bad body: not a JSON object", 1),
    "wrong_id": ("account_id mismatch", 1),
    "invalid": ("no valid ESG field", 1),
    "transient_5xx": (None, 3),
    "rate_429": (None, 2),
    "trickle": (None, 2),
    "revoked_token": (None, 2),
    "slow": (None, 1),
}


def fetch_all(settings: ApiSettings, ids: list[str]):
    async def run():
        async with OAuthApi(settings, backoff_multiplier=0.05, backoff_cap=0.3) as api:
            client = EsgClient(api)
            return await asyncio.gather(*(client.rating(a, DAY) for a in ids))

    return dict(zip(ids, asyncio.run(run()), strict=True))


def test_each_fault_kind_gets_its_reason_and_no_needless_retry(sandbox):
    sandbox.reset()
    plan = sandbox.plan()["esg"]
    chosen = {kind: sorted(a for a, k in plan.items() if k == kind)[:2] for kind in OUTCOMES}
    assert all(chosen.values()), chosen
    ids = [a for accounts in chosen.values() for a in accounts]
    results = fetch_all(api_settings(sandbox.url), ids)
    calls = {a: v["calls"] for a, v in sandbox.stats(per_account=True)["per_account"].items()}
    for kind, accounts in chosen.items():
        reason, expected_calls = OUTCOMES[kind]
        for account_id in accounts:
            result, attempts = results[account_id]
            if reason is None:
                assert result.status.value == "Successful", (kind, result.reason)
            else:
                assert result.status.value == "Failed" and result.reason.startswith(reason), (kind, result.reason)
            assert calls[account_id] == expected_calls, (kind, calls[account_id])
            assert 1 <= attempts <= expected_calls
    stats = sandbox.stats()
    # One token, plus one per 401 the server answered at most: never one per request.
    assert stats["token_requests"] <= 1 + stats["status_counts"].get("401", 0)


def test_wrong_credentials_fail_clearly_without_the_secret(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    settings = api_settings(sandbox.url, client_secret="not-the-right-secret-123")
    with pytest.raises(CredentialsError) as info:
        asyncio.run(list_all(settings))
    assert "invalid_client" in str(info.value) and "esg_api" in str(info.value)
    assert "not-the-right-secret-123" not in str(info.value)
    assert "not-the-right-secret-123" not in caplog.text


def test_secrets_and_tokens_never_logged(sandbox, caplog):
    sandbox.reset()
    caplog.set_level(logging.DEBUG)
    settings = api_settings(sandbox.url)
    expected = list(expected_rows(sandbox))[:60]
    tokens = []

    async def run():
        async with OAuthApi(settings, backoff_multiplier=0.05, backoff_cap=0.3) as api:
            client = EsgClient(api)
            results = await asyncio.gather(*(client.rating(a, DAY) for a in expected))
            tokens.append(api._client.token["access_token"])
            return results

    results = asyncio.run(run())
    text = caplog.text + "".join(str(r) for r in results)
    assert SECRET not in text
    assert tokens[0] not in text


def test_short_token_lifetime_is_refreshed_before_expiry():
    with run_sandbox(accounts=40, faults="none", rate_limit=100, token_lifetime=2) as server:
        settings = api_settings(server.url, scope="esg:read")
        ids = [row[0] for row in server.expected(DAY.isoformat())["rows"]]

        async def run():
            async with OAuthApi(settings) as api:
                client = EsgClient(api)
                for account_id in ids:
                    await client.rating(account_id, DAY)
                    await asyncio.sleep(0.1)

        asyncio.run(run())
        stats = server.stats()
    assert stats["status_counts"].get("401", 0) == 0
    assert 2 <= stats["token_requests"] <= 6


WORKER = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    from pathlib import Path
    from include.esg_report.esg import EsgClient
    from include.esg_report.fetch import fetch_ratings
    from include.esg_report.ratelimit import shared_limiter
    from include.esg_report.settings import ApiSettings, LedgerSettings
    from include.esg_report.upstream import OAuthApi

    url, ledger, first, last, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    ids = sys.stdin.read().split("\\n")[first:last]
    settings = ApiSettings("esg_api", url, url + "/oauth2/token", "esg-local", "esg-local-secret", "esg:read",
                           rate, concurrency=16)
    limiter = shared_limiter(LedgerSettings("sqlite", Path(ledger)), "esg_rate_shared", rate)

    async def permit():
        await limiter.try_acquire_async("esg")

    async def main():
        async with OAuthApi(settings, before_request=permit) as api:
            await fetch_ratings(EsgClient(api), ids, dt.date(2026, 12, 4), lambda *a: None, 16)

    asyncio.run(main())
    limiter.close()
    """
)


def test_rate_limit_is_shared_by_concurrent_processes(tmp_path):
    rate = 40
    with run_sandbox(accounts=240, faults="none", rate_limit=rate, latency_ms=5) as server:
        ids = "\n".join(row[0] for row in server.expected(DAY.isoformat())["rows"])
        started = time.monotonic()
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    server.url,
                    str(tmp_path / "l.sqlite"),
                    str(i * 80),
                    str(i * 80 + 80),
                    str(rate),
                ],
                stdin=subprocess.PIPE,
                cwd=ROOT,
                text=True,
            )
            for i in range(3)
        ]
        for worker in workers:
            worker.communicate(ids, timeout=60)
            assert worker.returncode == 0
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert stats["esg_requests"] == 240
    assert stats["rate_limited_429"] == 0
    assert stats["max_requests_in_any_second"] <= rate
    # Three processes sharing one budget of 40/s need about 240/40 = 6 s; separate budgets would take 2 s.
    assert elapsed >= 5.0


def test_credentials_with_reserved_and_non_latin_characters():
    # RFC 6749 2.3.1: id and secret are form-encoded before Basic; the sandbox decodes them so.
    client_id, secret = "esg job+1", "p%ss:wörd/ü+=&"
    with run_sandbox(accounts=20, faults="none", clients=[f"{client_id}:{secret}"]) as server:
        settings = api_settings(server.url, client_id=client_id, client_secret=secret, page_size=100)
        listed = asyncio.run(list_all(settings))
    assert len({a.account_id for a in listed if a.status == "active"}) == 20
