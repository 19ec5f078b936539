"""What each task of the DAG does; tasks pass these small descriptors, the data stays in the ledger."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
from collections import Counter
from typing import Any

from include.esg_report import settings as cfg
from include.esg_report.accounts import AccountsClient
from include.esg_report.esg import EsgClient
from include.esg_report.fetch import fetch_ratings
from include.esg_report.ledger import Batch, Ledger, connect
from include.esg_report.publish import manifest, publish, stage_report
from include.esg_report.ratelimit import bucket_table, shared_limiter
from include.esg_report.report import ReportSummary
from include.esg_report.settings import LedgerSettings
from include.esg_report.upstream import OAuthApi

log = logging.getLogger(__name__)

# Airflow's default max_map_length is 1024; stay below it however many accounts there are.
MAX_BATCHES = 1000


class EmptyListingError(RuntimeError):
    """Account Management listed no active account: publishing an empty report would hide a fault."""


def _ledger() -> Ledger:
    return Ledger(connect(cfg.load_ledger_settings()))


async def _list_into(ledger: Ledger, list_id: str, report_date: dt.date) -> int:
    settings = cfg.load_api_settings(cfg.ACCOUNTS_CONN_ID)
    listed = 0
    async with OAuthApi(settings) as api:
        async for page in AccountsClient(api).pages(status="active"):
            ledger.add_listed(list_id, report_date, page)
            listed += len(page)
    return listed


def list_accounts(run_id: str, report_date: dt.date, override_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """List every account into the ledger and cut the active ones into batches (small descriptors)."""
    ledger = _ledger()
    list_id = run_id
    ledger.clear_list(list_id)
    listed = asyncio.run(_list_into(ledger, list_id, report_date))
    wanted = cfg.load_batch_size()
    batches = ledger.plan_batches(list_id, wanted)
    active = sum(b.size for b in batches)
    if active == 0:
        raise EmptyListingError(f"Account Management listed {listed} accounts, none of them active")
    if len(batches) > MAX_BATCHES:
        batches = ledger.plan_batches(list_id, math.ceil(active / MAX_BATCHES))
    log.info("report %s: %d listed rows, %d active accounts, %d batches", report_date, listed, active, len(batches))
    override = _override(ledger, list_id, override_ids)
    common = {"list_id": list_id, "report_date": report_date.isoformat(), "batches": len(batches)}
    descriptors = [{**common, **dataclasses.asdict(b)} for b in batches]
    if override is not None:
        # build_report reads the first descriptor; the others stay small.
        descriptors[0]["override"] = override
    return descriptors


def _override(ledger: Ledger, list_id: str, override_ids: list[str] | None) -> dict[str, list[str]] | None:
    """The manual override of a run: the ids asked for, and those that are not active accounts."""
    if not override_ids:
        return None
    asked = sorted(set(override_ids))
    not_active = sorted(set(asked) - ledger.active_among(list_id, asked))
    if not_active:
        log.warning(
            "override: %d of %d account_ids are not active accounts and were not fetched: %s",
            len(not_active),
            len(asked),
            ", ".join(map(repr, not_active)),
        )
    log.info(
        "override: re-fetching %d active account(s), keeping the other rows of the date", len(asked) - len(not_active)
    )
    return {"account_ids": asked, "not_active": not_active}


def batch_label(batch: dict[str, Any]) -> str:
    """How a mapped fetch instance is named in the UI."""
    return f"batch {batch['index'] + 1}/{batch['batches']}: {batch['first_id']} … {batch['last_id']} ({batch['size']})"


async def _fetch(
    ledger: Ledger, ledger_settings: LedgerSettings, todo: list[str], report_date: dt.date, run_id: str
) -> Counter[str]:
    settings = cfg.load_api_settings(cfg.ESG_CONN_ID)
    limiter = shared_limiter(
        ledger_settings,
        bucket_table(settings.base_url, settings.client_id),
        settings.rate_limit_per_second or 50.0,
    )

    async def take_permit() -> None:
        await limiter.try_acquire_async("esg")

    def on_result(result, attempts, started, finished) -> None:  # type: ignore[no-untyped-def]
        ledger.record(report_date, run_id, result, attempts, started, finished)

    try:
        async with OAuthApi(settings, before_request=take_permit) as api:
            return await fetch_ratings(EsgClient(api), todo, report_date, on_result, settings.concurrency)
    finally:
        limiter.close()


def fetch_batch(
    batch: dict[str, Any], run_id: str, force_refresh: bool, override_ids: list[str] | None = None
) -> dict[str, Any]:
    """Fetch one batch's ratings, skipping accounts the ledger already holds for the date.

    With override ids, those are fetched (cache bypassed) and every other row of the date is kept.
    """
    # The limiter shares the ledger's database: one read of its connection serves both.
    ledger_settings = cfg.load_ledger_settings()
    ledger = Ledger(connect(ledger_settings))
    report_date = dt.date.fromisoformat(batch["report_date"])
    fields = {f.name for f in dataclasses.fields(Batch)}
    accounts = ledger.batch_accounts(batch["list_id"], Batch(**{k: batch[k] for k in fields}))
    ids = [account_id for account_id, _ in accounts]
    done = _done_accounts(ledger, report_date, ids, run_id, force_refresh, override_ids)
    todo = [account_id for account_id in ids if account_id not in done]
    log.info(
        "%s: %d accounts, %d already in the ledger, %d to fetch",
        batch_label(batch),
        len(ids),
        len(done),
        len(todo),
    )
    counts = asyncio.run(_fetch(ledger, ledger_settings, todo, report_date, run_id)) if todo else Counter()
    return {
        "index": batch["index"],
        "accounts": len(ids),
        "fetched": len(todo),
        "reused": len(done),
        "status_counts": dict(counts),
    }


def _done_accounts(
    ledger: Ledger,
    report_date: dt.date,
    ids: list[str],
    run_id: str,
    force_refresh: bool,
    override_ids: list[str] | None,
) -> set[str]:
    """The accounts of a batch that need no fetch in this run (the cache and resume rules)."""
    if not override_ids:
        # The cache: any final result of the date; with force_refresh only this run's own, so that a
        # retry or clear of a force_refresh batch does not fetch again what it already fetched.
        return ledger.done_accounts(report_date, ids, run_id, reuse="run" if force_refresh else "final")
    # Override: the named accounts are fetched again (this run's own final results excepted, for the
    # same reason); every other row of the date is kept as it is, Failed included, and an account
    # with no row at all yet is fetched so that the republished report is complete.
    wanted = set(override_ids)
    named = [account_id for account_id in ids if account_id in wanted]
    others = [account_id for account_id in ids if account_id not in wanted]
    return ledger.done_accounts(report_date, named, run_id, reuse="run") | ledger.done_accounts(
        report_date, others, run_id, reuse="any"
    )


def build_report(listing: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Stage the CSV of the report date from the ledger (one row per listed active account).

    `listing` is any batch descriptor of the run: they all carry list_id and report_date.
    """
    ledger = _ledger()
    report_date = dt.date.fromisoformat(listing["report_date"])
    missing = ledger.missing_results(listing["list_id"], report_date)
    if missing:
        raise RuntimeError(f"{missing} listed accounts have no result for {report_date}: refusing to publish")
    base = cfg.variable("esg_report_base", cfg.DEFAULT_REPORT_BASE)
    staged, summary = stage_report(ledger.report_chunks(listing["list_id"], report_date), base, report_date, run_id)
    return {
        "report_date": report_date.isoformat(),
        "base": base,
        "staged": staged,
        "summary": dataclasses.asdict(summary),
        "override": listing.get("override"),
    }


def publish_report(built: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Publish the staged report and its manifest; return where it is and its status counts."""
    report_date = dt.date.fromisoformat(built["report_date"])
    summary = ReportSummary(**built["summary"])
    override = built.get("override")
    content = manifest(summary, report_date, run_id, {"override": override} if override else {})
    url = publish(built["staged"], content, built["base"], report_date)
    log.info("report %s: %s rows %s", report_date, summary.row_count, summary.status_counts)
    if override and override["not_active"]:
        log.warning("override: not active, not in the report: %s", ", ".join(map(repr, override["not_active"])))
    return {
        "report": url,
        "row_count": summary.row_count,
        "status_counts": summary.status_counts,
        "sha256": summary.sha256,
        **({"override": override} if override else {}),
    }
