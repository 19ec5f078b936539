"""The ledger database: the listed accounts of each run, and every account's result per report date."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine

from include.esg_report.accounts import Account
from include.esg_report.report import COLUMNS
from include.esg_report.settings import LedgerSettings
from include.esg_report.validation import ESG_FIELDS, RatingResult, Status

log = logging.getLogger(__name__)

# Results that the cache serves; a Failed one is fetched again by the next run or retry.
FINAL_STATUSES: tuple[str, ...] = (Status.SUCCESSFUL.value, Status.PARTIAL.value)
REUSE_MODES: tuple[str, ...] = ("final", "run", "any")

metadata = MetaData()
# Byte order on both databases (SQLite's default BINARY, PostgreSQL's "C"): the report's order.
_ID = String(64).with_variant(String(64, collation="C"), "postgresql")

listed_accounts = Table(
    "esg_listed_accounts",
    metadata,
    Column("list_id", String(250), primary_key=True),
    Column("account_id", _ID, primary_key=True),
    Column("account_name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("report_date", String(10), nullable=False),
)

results = Table(
    "esg_results",
    metadata,
    Column("report_date", String(10), primary_key=True),
    Column("account_id", _ID, primary_key=True),
    Column("status", String(16), nullable=False),
    *(Column(name, Text) for name in ESG_FIELDS),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False),
    Column("first_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_attempt_at", DateTime(timezone=True), nullable=False),
    Column("run_id", String(250), nullable=False),
    Index("ix_esg_results_status", "report_date", "status"),
)


def ledger_url(settings: LedgerSettings) -> URL:
    """SQLAlchemy URL of the ledger (the password is hidden when the URL is printed)."""
    if settings.dialect == "sqlite":
        return URL.create("sqlite", database=str(settings.sqlite_path))
    return URL.create(
        "postgresql+psycopg",
        username=settings.login,
        password=settings.password,
        host=settings.host,
        port=settings.port,
        database=settings.database,
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets the build read while batches write; busy_timeout waits out other workers' commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def connect(settings: LedgerSettings) -> Engine:
    """Engine for the ledger, with its tables created if missing."""
    if settings.dialect == "sqlite":
        assert settings.sqlite_path is not None
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(ledger_url(settings))
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(ledger_url(settings), pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def _insert(engine: Engine, table: Table):  # type: ignore[no-untyped-def]
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(table)


@dataclass(frozen=True, slots=True)
class Batch:
    """A contiguous range of listed accounts, in account_id order."""

    index: int
    first_id: str
    last_id: str
    size: int


class Ledger:
    """Reads and writes the ledger tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def clear_list(self, list_id: str) -> None:
        """Forget a list (a retried listing starts again)."""
        with self.engine.begin() as conn:
            conn.execute(delete(listed_accounts).where(listed_accounts.c.list_id == list_id))

    def add_listed(self, list_id: str, report_date: dt.date, accounts: Iterable[Account]) -> None:
        """Store one page; an account listed again replaces its earlier row (latest wins)."""
        rows = {
            a.account_id: {
                "list_id": list_id,
                "account_id": a.account_id,
                "account_name": a.account_name,
                "status": a.status,
                "report_date": report_date.isoformat(),
            }
            for a in accounts
        }
        if not rows:
            return
        stmt = _insert(self.engine, listed_accounts)
        stmt = stmt.on_conflict_do_update(
            index_elements=[listed_accounts.c.list_id, listed_accounts.c.account_id],
            set_={"account_name": stmt.excluded.account_name, "status": stmt.excluded.status},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, list(rows.values()))

    def _active(self, list_id: str):  # type: ignore[no-untyped-def]
        return and_(listed_accounts.c.list_id == list_id, listed_accounts.c.status == "active")

    def plan_batches(self, list_id: str, batch_size: int) -> list[Batch]:
        """Cut the active accounts of a list into batches of at most batch_size, by account_id."""
        batches: list[Batch] = []
        query = select(listed_accounts.c.account_id).where(self._active(list_id)).order_by(listed_accounts.c.account_id)
        with self.engine.connect() as conn:
            first = last = None
            size = 0
            for (account_id,) in conn.execution_options(stream_results=True, yield_per=10_000).execute(query):
                if size == 0:
                    first = account_id
                last, size = account_id, size + 1
                if size == batch_size:
                    batches.append(Batch(len(batches), first, last, size))
                    size = 0
            if size:
                batches.append(Batch(len(batches), first, last, size))  # type: ignore[arg-type]
        return batches

    def batch_accounts(self, list_id: str, batch: Batch) -> list[tuple[str, str]]:
        """(account_id, account_name) of one batch."""
        query = (
            select(listed_accounts.c.account_id, listed_accounts.c.account_name)
            .where(self._active(list_id))
            .where(listed_accounts.c.account_id.between(batch.first_id, batch.last_id))
            .order_by(listed_accounts.c.account_id)
        )
        with self.engine.connect() as conn:
            return [(row.account_id, row.account_name) for row in conn.execute(query)]

    def done_accounts(self, report_date: dt.date, account_ids: list[str], run_id: str, reuse: str) -> set[str]:
        """Accounts whose result needs no new fetch for the report date, per `reuse`.

        reuse: "final" (a Successful/Partial result of any run: the cache), "run" (a Successful/Partial
        result written by this run: a retry or clear keeps its own work, even with force_refresh),
        "any" (any result at all, Failed too: rows an override run keeps as they are).
        A Failed result is never final: the next run of the date, or a retry, fetches it again.
        """
        if reuse not in REUSE_MODES:
            raise ValueError(f"reuse must be one of {REUSE_MODES}, got {reuse!r}")
        if not account_ids:
            return set()
        final = results.c.status.in_(FINAL_STATUSES)
        condition = {"final": final, "run": final & (results.c.run_id == run_id), "any": results.c.status.is_not(None)}
        done: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(account_ids), 1000):
                query = select(results.c.account_id).where(
                    results.c.report_date == report_date.isoformat(),
                    results.c.account_id.in_(account_ids[start : start + 1000]),
                    condition[reuse],
                )
                done.update(conn.execute(query).scalars())
        return done

    def active_among(self, list_id: str, account_ids: list[str]) -> set[str]:
        """Which of these ids are active accounts of the list."""
        with self.engine.connect() as conn:
            query = select(listed_accounts.c.account_id).where(
                self._active(list_id), listed_accounts.c.account_id.in_(account_ids)
            )
            return set(conn.execute(query).scalars())

    def record(
        self,
        report_date: dt.date,
        run_id: str,
        result: RatingResult,
        attempts: int,
        started: dt.datetime,
        finished: dt.datetime,
    ) -> None:
        """Store one account's result as soon as it is known (replacing an older one)."""
        row = {
            "report_date": report_date.isoformat(),
            "account_id": result.account_id,
            "status": result.status.value,
            **{name: result.values.get(name) for name in ESG_FIELDS},
            "reason": result.reason,
            "attempts": attempts,
            "first_attempt_at": started,
            "last_attempt_at": finished,
            "run_id": run_id,
        }
        stmt = _insert(self.engine, results).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[results.c.report_date, results.c.account_id],
            set_={k: v for k, v in row.items() if k not in ("report_date", "account_id")},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def missing_results(self, list_id: str, report_date: dt.date) -> int:
        """Active listed accounts without any result for the report date."""
        joined = listed_accounts.outerjoin(
            results,
            and_(
                results.c.report_date == report_date.isoformat(),
                results.c.account_id == listed_accounts.c.account_id,
            ),
        )
        query = select(func.count()).select_from(joined).where(self._active(list_id), results.c.status.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def report_chunks(self, list_id: str, report_date: dt.date, chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
        """The report's rows in account_id order, chunk by chunk, as DataFrames with the report COLUMNS."""
        joined = listed_accounts.outerjoin(
            results,
            and_(
                results.c.report_date == report_date.isoformat(),
                results.c.account_id == listed_accounts.c.account_id,
            ),
        )
        query = (
            select(
                listed_accounts.c.account_id,
                listed_accounts.c.account_name,
                *(results.c[name] for name in ESG_FIELDS),
                case((results.c.status.is_(None), Status.FAILED.value), else_=results.c.status).label(
                    "processing_status"
                ),
            )
            .select_from(joined)
            .where(self._active(list_id))
            .order_by(listed_accounts.c.account_id)
        )
        with self.engine.connect() as conn:
            stream = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
            for rows in stream.partitions(chunk_rows):
                yield pd.DataFrame.from_records(rows, columns=list(COLUMNS))

    def problems(self, report_date: dt.date) -> list[dict[str, object]]:
        """Failed and Partial results of a report date: the error log."""
        query = (
            select(
                results.c.account_id,
                results.c.status,
                results.c.reason,
                results.c.attempts,
                results.c.last_attempt_at,
                results.c.run_id,
            )
            .where(results.c.report_date == report_date.isoformat(), results.c.status != Status.SUCCESSFUL.value)
            .order_by(results.c.account_id)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]
