"""Benchmark: N accounts at contracted rate R against the sandbox, through the job's own task functions.

Lists the accounts into a fresh SQLite ledger, then runs the fetch batches in P parallel processes
(as P pool slots would), all sharing one rate limit. Prints wall time, achieved rate / R, the 429s
the job caused and the most requests the sandbox saw in any one second.

    .venv/bin/python benchmarks/fetch_rate.py --accounts 5000 --rate 100 --parallel 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.esg_sandbox.process import run_sandbox

REPORT_DATE = dt.date(2026, 12, 4)


def configure(url: str, rate: float, ledger: Path, batch_size: int) -> None:
    """Point the job's connections at the sandbox, as Airflow would through AIRFLOW_CONN_*."""
    for conn_id, scope in (("ACCOUNT_MANAGEMENT", "accounts:read"), ("ESG_API", "esg:read")):
        extra = {"token_url": f"{url}/oauth2/token", "scope": scope, "rate_limit_per_second": rate}
        os.environ[f"AIRFLOW_CONN_{conn_id}"] = json.dumps(
            {"conn_type": "http", "host": url, "login": "esg-local", "password": "esg-local-secret", "extra": extra}
        )
    os.environ["AIRFLOW_CONN_ESG_LEDGER"] = json.dumps({"conn_type": "sqlite", "host": str(ledger)})
    os.environ["AIRFLOW_VAR_ESG_BATCH_SIZE"] = str(batch_size)


def fetch(batch: dict) -> dict:
    """One mapped fetch instance."""
    from include.esg_report import pipeline

    return pipeline.fetch_batch(batch, "benchmark", force_refresh=True)


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=4, help="batches running at once (pool slots)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--jitter-ms", type=int, default=10)
    args = parser.parse_args()

    from include.esg_report import pipeline

    with (
        tempfile.TemporaryDirectory() as tmp,
        run_sandbox(
            accounts=args.accounts,
            rate_limit=args.rate,
            faults="none",
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.jitter_ms,
        ) as sandbox,
    ):
        configure(sandbox.url, args.rate, Path(tmp) / "ledger.sqlite", args.batch_size)
        started = time.monotonic()
        batches = pipeline.list_accounts("benchmark", REPORT_DATE)
        listed = time.monotonic() - started
        sandbox.reset()
        started = time.monotonic()
        with ProcessPoolExecutor(args.parallel) as pool:
            summaries = list(pool.map(fetch, batches))
        wall = time.monotonic() - started
        stats = sandbox.stats()

    fetched = sum(s["fetched"] for s in summaries)
    span = max(stats["last_request_at"] - stats["first_request_at"], 1e-9)
    achieved = stats["esg_requests"] / span
    print(
        f"accounts            {args.accounts} in {len(batches)} batches of {args.batch_size}, {args.parallel} at once"
    )
    print(f"listing             {listed:.2f} s")
    print(f"fetch wall time     {wall:.2f} s (ideal at R: {fetched / args.rate:.2f} s)")
    print(f"ESG requests        {stats['esg_requests']} for {fetched} accounts")
    print(f"achieved rate       {achieved:.1f}/s = {achieved / args.rate:.3f} of R={args.rate:g}")
    print(f"end-to-end rate     {fetched / wall:.1f}/s = {fetched / wall / args.rate:.3f} of R")
    print(f"429s job caused     {stats['rate_limited_429']}")
    print(f"max in any 1 s      {stats['max_requests_in_any_second']} (limit {args.rate:g})")
    return 0 if stats["rate_limited_429"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
