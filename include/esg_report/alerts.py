"""Alerts of the ESG report: a missed deadline, a failed run and poor data quality, by email and PagerDuty.

Every component of Airflow imports this module (the plugin registers ReportDeadline with the scheduler
and the API server; the triggerer runs deadline_missed; the dag-processor runs the run callbacks), so
importing it reads no Connection, Variable or file: everything is read when an alert is due.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import html
import json
import logging
import re
import urllib.parse
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import pagerduty
from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook, prepare_event_data
from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseDeadlineReference

from include.esg_report import settings as cfg
from include.esg_report.dates import REPORT_TIMEZONE, report_date_for

log = logging.getLogger(__name__)

DAG_ID = "esg_ratings_report"
FETCH_TASK = "fetch_batch"
SMTP_CONN_ID = "smtp_default"
PAGERDUTY_CONN_ID = "pagerduty_events_default"
DEADLINE_VARIABLE = "esg_report_deadline"
DEFAULT_DEADLINE = "07:00"
FAILED_SHARE_VARIABLE = "esg_failed_share_alert"
DEFAULT_FAILED_SHARE = "0.05"
EMAILS_VARIABLE = "esg_alert_emails"
# The last error of a failed try, kept by record_task_error for the run's failure alert.
ERROR_XCOM_KEY = "esg_alert_error"
TOP_REASONS = 5
# PagerDuty refuses summaries over 1024 characters.
SUMMARY_LIMIT = 1024
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


# --- settings and report dates --------------------------------------------------------------------


def parse_deadline(raw: str) -> dt.time:
    """The local deadline time of the Variable esg_report_deadline: HH:MM (or HH:MM:SS)."""
    match = _TIME.match(raw.strip())
    if not match:
        raise cfg.ConfigError(f"variable {DEADLINE_VARIABLE!r} must be HH:MM (America/Chicago), got {raw!r}")
    hour, minute, second = (int(part or 0) for part in match.groups())
    return dt.time(hour, minute, second)


def deadline_for(report_date: dt.date, at: dt.time) -> dt.datetime:
    """The moment (UTC) by which the report of a date must be published: `at` Chicago time that day."""
    return dt.datetime.combine(report_date, at, tzinfo=REPORT_TIMEZONE).astimezone(dt.UTC)


def failed_share_threshold() -> float:
    """The Variable esg_failed_share_alert: the share of Failed accounts above which to warn."""
    raw = cfg.variable(FAILED_SHARE_VARIABLE, DEFAULT_FAILED_SHARE)
    try:
        share = float(raw)
    except ValueError:
        raise cfg.ConfigError(f"variable {FAILED_SHARE_VARIABLE!r} must be a number, got {raw!r}") from None
    if not 0 <= share <= 1:
        raise cfg.ConfigError(f"variable {FAILED_SHARE_VARIABLE!r} must be between 0 and 1, got {raw!r}")
    return share


def recipients() -> list[str]:
    """The alert email recipients (Variable esg_alert_emails, comma-separated; empty: no emails)."""
    raw = cfg.variable(EMAILS_VARIABLE, "")
    return [address.strip() for address in re.split(r"[,;\s]+", raw) if address.strip()]


def dedup_key(dag_id: str, report_date: dt.date | str, topic: str | None = None) -> str:
    """One PagerDuty incident per DAG and report date (and per topic, e.g. data quality)."""
    day = report_date.isoformat() if isinstance(report_date, dt.date) else report_date
    return f"{dag_id}/{day}" + (f"/{topic}" if topic else "")


def _moment(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def run_report_date(conf: Mapping[str, Any] | None, logical_date: Any, run_after: Any) -> dt.date:
    """The report date of a run from its conf and dates (as the DAG's list_accounts computes it)."""
    run_after_at = _moment(run_after) or dt.datetime.now(dt.UTC)
    return report_date_for((conf or {}).get("report_date"), _moment(logical_date), run_after_at)


def run_link(dag_id: str, run_id: str) -> str:
    """The URL of a run in the Airflow UI."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or "http://localhost:8080"
    return f"{base.rstrip('/')}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}"


# --- the deadline ---------------------------------------------------------------------------------


class ReportDeadline(BaseDeadlineReference):
    """Deadline of a run: esg_report_deadline (Chicago) on its report date, computed when the run is created.

    The scheduler (or the API server, for a triggered run) evaluates it, never the DAG parser; the
    plugin in plugins/ registers the class with them.
    """

    required_kwargs = frozenset({"dag_id", "run_id"})

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> dt.datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        query = select(DagRun.conf, DagRun.logical_date, DagRun.run_after, DagRun.run_type).where(
            DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
        )
        row = session.execute(query).one_or_none()
        if row is None:
            return None
        try:
            report_date = run_report_date(row.conf, row.logical_date, row.run_after)
        except ValueError:
            log.warning("run %s: bad report_date param, no deadline", kwargs["run_id"])
            return None
        raw = _deadline_setting(session) or DEFAULT_DEADLINE
        try:
            at = parse_deadline(str(raw))
        except cfg.ConfigError as exc:
            # Creating the run must not fail over a typo: keep the documented default and say so.
            log.error("%s; using %s", exc, DEFAULT_DEADLINE)
            at = parse_deadline(DEFAULT_DEADLINE)
        deadline = deadline_for(report_date, at)
        if str(row.run_type) != "scheduled" and deadline <= dt.datetime.now(dt.UTC):
            # A manual rerun of a date whose deadline has passed is the on-call's remedy, not a new miss:
            # the miss of that date was alerted when it happened.
            log.info("run %s: report %s was due %s, already past: no deadline", kwargs["run_id"], report_date, deadline)
            return None
        return deadline


def _deadline_setting(session: Any) -> str | None:
    """The Variable esg_report_deadline, read through the secrets backends in their order.

    The metastore is read in the scheduler's own session: Variable.get would open and commit one of
    its own inside the scheduler's locked transaction, which the scheduler refuses (and dies of).
    """
    from airflow.configuration import ensure_secrets_loaded
    from airflow.secrets.metastore import MetastoreBackend

    for backend in ensure_secrets_loaded():
        try:
            if isinstance(backend, MetastoreBackend):
                value = backend.get_variable(DEADLINE_VARIABLE, session=session)
            else:
                value = backend.get_variable(DEADLINE_VARIABLE)
        except Exception as exc:
            log.warning("%s: could not read %r: %s", type(backend).__name__, DEADLINE_VARIABLE, _first_line(exc))
            continue
        if value is not None and str(value).strip():
            return str(value)
    return None


# --- the channels ---------------------------------------------------------------------------------


class ReportEventsHook(PagerdutyEventsHook):
    """The provider's Events API v2 hook, with the API base URL taken from the connection's host.

    The provider always talks to https://events.pagerduty.com; an account in PagerDuty's EU service
    region needs https://events.eu.pagerduty.com, and tests need a local receiver. Empty host: the default.
    """

    def __init__(self, pagerduty_events_conn_id: str = PAGERDUTY_CONN_ID) -> None:
        super().__init__(pagerduty_events_conn_id=pagerduty_events_conn_id)
        host = (self.get_connection(pagerduty_events_conn_id).host or "").strip()
        self.events_url: str | None = None
        if host:
            self.events_url = (host if "://" in host else f"https://{host}").rstrip("/")

    def send_event(self, **kwargs: Any) -> str:  # type: ignore[override]
        """Send one event as the provider does, to the configured Events API."""
        client = pagerduty.EventsApiV2Client(self.integration_key, base_url=self.events_url)
        return client.send_event(**prepare_event_data(**kwargs))


class ReportPagerdutyNotifier(PagerdutyNotifier):
    """The provider's PagerDuty notifier, sending through ReportEventsHook."""

    @cached_property
    def hook(self) -> PagerdutyEventsHook:
        """The Events API hook of the connection."""
        return ReportEventsHook(self.pagerduty_events_conn_id or PAGERDUTY_CONN_ID)


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert: an email to esg_alert_emails and a PagerDuty event with the same content."""

    subject: str
    severity: str
    dedup_key: str
    lines: list[str]
    details: dict[str, Any]
    link: str | None = None
    action: str = "trigger"


def email_html(alert: Alert) -> str:
    """The email body: the alert's lines, escaped, and the link to the run."""
    body = "".join(f"<p>{html.escape(line)}</p>" for line in alert.lines)
    if alert.link:
        body += f'<p><a href="{html.escape(alert.link)}">Open the run in Airflow</a>: {html.escape(alert.link)}</p>'
    return f"<html><body>{body}</body></html>"


def _send_email(alert: Alert) -> bool:
    to = recipients()
    if not to:
        log.info("no alert email sent: variable %r is empty", EMAILS_VARIABLE)
        return False
    notifier = SmtpNotifier(to=to, subject=alert.subject, html_content=email_html(alert), smtp_conn_id=SMTP_CONN_ID)
    # notify(), not notifier(context): the text is ours and final, and an error message must never be
    # rendered as a Jinja template.
    notifier.notify({})  # type: ignore[arg-type]
    log.info("alert email %r sent to %d recipient(s)", alert.subject, len(to))
    return True


def _send_page(alert: Alert) -> bool:
    links = [{"href": alert.link, "text": "Airflow run"}] if alert.link else None
    notifier = ReportPagerdutyNotifier(
        summary=alert.subject[:SUMMARY_LIMIT],
        severity=alert.severity,
        source=f"airflow/{DAG_ID}",
        action=alert.action,
        dedup_key=alert.dedup_key,
        custom_details={**alert.details, "message": "\n".join(alert.lines)},
        component=DAG_ID,
        group="esg",
        links=links,
        pagerduty_events_conn_id=PAGERDUTY_CONN_ID,
    )
    notifier.notify({})  # type: ignore[arg-type]
    log.info("PagerDuty %s %s sent (dedup_key %s)", alert.severity, alert.action, alert.dedup_key)
    return True


def send(alert: Alert, email: bool = True) -> dict[str, bool]:
    """Page and (unless email=False) email; a broken channel is logged, never raised."""
    sent: dict[str, bool] = {}
    channels = [("page", _send_page)] + ([("email", _send_email)] if email else [])
    for name, channel in channels:
        try:
            sent[name] = channel(alert)
        except Exception as exc:
            # Type and message only: no traceback locals, so no secret reaches the log.
            log.error("alert %s not sent (%r): %s: %s", name, alert.subject, type(exc).__name__, _first_line(exc))
            sent[name] = False
    return sent


# --- what the alerts say --------------------------------------------------------------------------


def _first_line(error: BaseException | str | None) -> str:
    text = str(error or "").strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, BaseException):
        first = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return first[:500]


def _task_key(task_id: str, map_index: int) -> str:
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def task_states(dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
    """The state of every task instance of a run, keyed by (task_id, map_index)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    found: dict[tuple[str, int], str | None] = {}
    for key, state in states.items():
        # The API names mapped instances "<task_id>_<map_index>"; only fetch_batch is mapped.
        task_id, _, index = key.rpartition("_")
        if task_id == FETCH_TASK and index.isdigit():
            found[(task_id, int(index))] = state
        else:
            found[(key, -1)] = state
    return found


def progress(states: Mapping[tuple[str, int], str | None]) -> str:
    """How far a run got, e.g. '3/10 batches fetched; build_report: none'."""
    batches = [state for (task_id, index), state in states.items() if task_id == FETCH_TASK and index >= 0]
    listing = states.get(("list_accounts", -1))
    if not batches:
        head = f"accounts not listed yet (list_accounts: {listing or 'not started'})"
    else:
        done = sum(state == "success" for state in batches)
        head = f"{done}/{len(batches)} batches fetched"
    tail = [f"{task}: {states.get((task, -1)) or 'not started'}" for task in ("build_report", "publish_report")]
    return "; ".join([head, *tail])


def _published(report_date: dt.date) -> dict[str, Any] | None:
    """The manifest of the report of a date if one is published, else None (unknown counts as None)."""
    try:
        from include.esg_report.publish import MANIFEST_NAME, report_dir

        path = report_dir(cfg.variable("esg_report_base", cfg.DEFAULT_REPORT_BASE), report_date) / MANIFEST_NAME
        return json.loads(path.read_text()) if path.exists() else None
    except Exception as exc:
        log.warning("could not check for a published report of %s: %s", report_date, _first_line(exc))
        return None


def deadline_alert(dag_run: Mapping[str, Any], deadline_at: Any) -> Alert | None:
    """The alert of a missed deadline, or None when the report of the date is published after all."""
    dag_id, run_id = dag_run["dag_id"], dag_run["dag_run_id"]
    report_date = run_report_date(dag_run.get("conf"), dag_run.get("logical_date"), dag_run.get("run_after"))
    manifest = _published(report_date)
    if manifest is not None:
        log.info("report %s is published (run %s): no deadline alert", report_date, manifest.get("run_id"))
        return None
    due = _moment(deadline_at)
    due_local = due.astimezone(REPORT_TIMEZONE).strftime("%Y-%m-%d %H:%M:%S %Z") if due else "the deadline"
    how_far = progress(task_states(dag_id, run_id))
    link = run_link(dag_id, run_id)
    return Alert(
        subject=f"[ESG report] {report_date}: deadline {due_local} missed ({dag_id})",
        severity="critical",
        dedup_key=dedup_key(dag_id, report_date),
        lines=[
            f"The ESG ratings report of {report_date} was not published by its deadline ({due_local}).",
            f"DAG: {dag_id}",
            f"Report date: {report_date}",
            f"Run: {run_id} (state: {dag_run.get('state')})",
            f"Progress: {how_far}",
            "Runbook: docs/runbook.md, 'Deadline missed'.",
        ],
        details={"dag_id": dag_id, "report_date": str(report_date), "run_id": run_id, "progress": how_far},
        link=link,
    )


def _failed_tasks(dag_id: str, run_id: str) -> list[tuple[str, str]]:
    """(task, first line of its last error) for every failed task instance of a run."""
    from airflow.sdk.execution_time.xcom import XCom

    failed = []
    for (task_id, index), state in sorted(task_states(dag_id, run_id).items()):
        if state != "failed":
            continue
        try:
            error = XCom.get_one(key=ERROR_XCOM_KEY, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=index)
        except Exception as exc:
            log.warning("could not read the error of %s: %s", _task_key(task_id, index), _first_line(exc))
            error = None
        failed.append((_task_key(task_id, index), str(error or "no error recorded (see the task log)")))
    return failed


def failure_alert(dag_id: str, run_id: str, report_date: dt.date, reason: str | None) -> Alert:
    """The alert of a failed run: the failed tasks and the first line of each one's error."""
    failed = _failed_tasks(dag_id, run_id)
    names = ", ".join(task for task, _ in failed) or "no failed task found"
    first = f": {failed[0][1]}" if failed else ""
    return Alert(
        subject=f"[ESG report] {report_date}: run failed in {names}{first}"[:SUMMARY_LIMIT],
        severity="critical",
        dedup_key=dedup_key(dag_id, report_date),
        lines=[
            f"The ESG ratings report run of {report_date} failed; the report of that date is not (re)published.",
            f"DAG: {dag_id}",
            f"Report date: {report_date}",
            f"Run: {run_id} ({reason or 'failed'})",
            *(f"Failed task {task}: {error}" for task, error in failed),
            "Runbook: docs/runbook.md, 'Run failed'.",
        ],
        details={
            "dag_id": dag_id,
            "report_date": str(report_date),
            "run_id": run_id,
            "failed_tasks": {task: error for task, error in failed},
        },
        link=run_link(dag_id, run_id),
    )


def failure_reasons(report_date: dt.date, limit: int = TOP_REASONS) -> list[tuple[str, int, str]]:
    """The most frequent reasons of the date's Failed accounts: (kind, count, an example reason)."""
    from sqlalchemy import func, select

    from include.esg_report.ledger import connect, results

    query = (
        select(results.c.reason, func.count().label("n"))
        .where(results.c.report_date == report_date.isoformat(), results.c.status == "Failed")
        .group_by(results.c.reason)
    )
    engine = connect(cfg.load_ledger_settings())
    try:
        with engine.connect() as conn:
            rows = [(str(reason or "no reason recorded"), int(n)) for reason, n in conn.execute(query)]
    finally:
        engine.dispose()
    # Reasons name accounts and URLs; group them by their kind (the text before the first colon).
    kinds: dict[str, list[Any]] = {}
    for reason, n in sorted(rows, key=lambda row: -row[1]):
        kind = reason.split(":", 1)[0].strip()
        entry = kinds.setdefault(kind, [0, reason])
        entry[0] += n
    ranked = sorted(kinds.items(), key=lambda item: (-item[1][0], item[0]))
    return [(kind, count, example) for kind, (count, example) in ranked[:limit]]


def quality_alert(
    dag_id: str, run_id: str, report_date: dt.date, published: Mapping[str, Any], threshold: float
) -> Alert | None:
    """The data-quality warning when the share of Failed accounts exceeds the threshold, else None."""
    rows = int(published.get("row_count") or 0)
    failed = int((published.get("status_counts") or {}).get("Failed", 0))
    share = failed / rows if rows else 0.0
    if share <= threshold:
        return None
    try:
        reasons = failure_reasons(report_date)
        why = ["Top failure reasons:", *(f"{count} × {kind} (e.g. {example})" for kind, count, example in reasons)]
    except Exception as exc:
        # The reasons are a courtesy: the warning must go out without them.
        log.error("could not read the failure reasons of %s: %s", report_date, _first_line(exc))
        reasons, why = [], [f"Top failure reasons: could not be read ({_first_line(exc)})"]
    return Alert(
        subject=f"[ESG report] {report_date}: {failed} of {rows} accounts Failed ({share:.1%} > {threshold:.1%})",
        severity="warning",
        dedup_key=dedup_key(dag_id, report_date, "data-quality"),
        lines=[
            f"The ESG ratings report of {report_date} is published, but {failed} of {rows} accounts "
            f"({share:.1%}) are Failed, above the alert threshold of {threshold:.1%} "
            f"(variable {FAILED_SHARE_VARIABLE}).",
            f"DAG: {dag_id}",
            f"Report date: {report_date}",
            f"Run: {run_id}",
            f"Report: {published.get('report')}",
            *why,
            f"Error log: python -m include.esg_report.cli errors --date {report_date}",
            "Runbook: docs/runbook.md, 'Data quality'.",
        ],
        details={
            "dag_id": dag_id,
            "report_date": str(report_date),
            "run_id": run_id,
            "failed": failed,
            "rows": rows,
            "failed_share": round(share, 4),
            "threshold": threshold,
            "top_reasons": {kind: count for kind, count, _ in reasons},
        },
        link=run_link(dag_id, run_id),
    )


# --- the callbacks and the data-quality step ------------------------------------------------------


def _deadline_missed(context: Mapping[str, Any]) -> str:
    alert = deadline_alert(context["dag_run"], (context.get("deadline") or {}).get("deadline_time"))
    if alert is None:
        return "no alert: the report is published"
    sent = send(alert)
    return ", ".join(f"{channel} {'sent' if ok else 'not sent'}" for channel, ok in sent.items())


async def deadline_missed(context: dict[str, Any], **_: Any) -> str:
    """Deadline callback (runs in the triggerer): email and page that the report is late; returns what was sent."""
    try:
        # The notifiers and SDK lookups are blocking: keep them off the triggerer's event loop.
        # The result is stored as the callback's (text) output.
        return await asyncio.to_thread(_deadline_missed, context)
    except Exception as exc:
        log.error("deadline alert failed: %s", _first_line(exc))
        return f"deadline alert failed: {type(exc).__name__}"


def _run_identity(context: Mapping[str, Any]) -> tuple[str, str, dt.date]:
    run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(run, "dag_id", None) or DAG_ID
    run_id = str(context.get("run_id") or getattr(run, "run_id", ""))
    if run is not None:
        report_date = run_report_date(run.conf, run.logical_date, run.run_after)
    else:
        # Minimal callback context (no task ran): the run id carries the run's moment.
        stamp = re.search(r"\d{4}-\d\d-\d\dT[\d:.]+(?:[+-]\d\d:\d\d|Z)?", run_id)
        moment = _moment(stamp.group(0)) if stamp else None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        report_date = run_report_date(None, moment, None)
    return dag_id, run_id, report_date


def on_run_failure(context: Mapping[str, Any]) -> None:
    """DAG on_failure_callback (runs in the dag-processor): page and email the failed tasks."""
    try:
        dag_id, run_id, report_date = _run_identity(context)
        send(failure_alert(dag_id, run_id, report_date, context.get("reason")))
    except Exception as exc:
        log.error("failure alert failed: %s", _first_line(exc))


def on_run_success(context: Mapping[str, Any]) -> None:
    """DAG on_success_callback: resolve the PagerDuty incident of the report date, if any is open."""
    try:
        dag_id, run_id, report_date = _run_identity(context)
        resolve = Alert(
            subject=f"[ESG report] {report_date}: published by run {run_id}",
            severity="info",
            dedup_key=dedup_key(dag_id, report_date),
            lines=[f"The ESG ratings report of {report_date} is published (run {run_id})."],
            details={"dag_id": dag_id, "report_date": str(report_date), "run_id": run_id},
            link=run_link(dag_id, run_id),
            action="resolve",
        )
        send(resolve, email=False)
    except Exception as exc:
        log.error("resolve event failed: %s", _first_line(exc))


def record_task_error(context: Mapping[str, Any]) -> None:
    """Task on_failure/on_retry callback (runs in the worker): keep the error's first line for the run alert."""
    error = context.get("exception")
    try:
        context["ti"].xcom_push(key=ERROR_XCOM_KEY, value=_first_line(error) or "failed without an exception")
    except Exception as exc:
        log.warning("could not record the task error: %s", _first_line(exc))


def check_data_quality(published: Mapping[str, Any], report_date: dt.date, dag_id: str, run_id: str) -> dict[str, Any]:
    """Warn (page and email) when too many accounts Failed, else resolve that warning; never fails the run."""
    threshold = failed_share_threshold()
    rows = int(published.get("row_count") or 0)
    failed = int((published.get("status_counts") or {}).get("Failed", 0))
    summary: dict[str, Any] = {"report_date": str(report_date), "failed": failed, "rows": rows, "threshold": threshold}
    alert = quality_alert(dag_id, run_id, report_date, published, threshold)
    if alert is None:
        log.info("report %s: %d of %d Failed, within the threshold %.1f%%", report_date, failed, rows, threshold * 100)
        # A rerun that brought the share back under the threshold closes the warning of that date.
        ok = Alert(
            subject=f"[ESG report] {report_date}: {failed} of {rows} accounts Failed, within the threshold",
            severity="info",
            dedup_key=dedup_key(dag_id, report_date, "data-quality"),
            lines=[],
            details={**summary, "dag_id": dag_id, "run_id": run_id},
            action="resolve",
        )
        return {**summary, "alerted": False, "sent": send(ok, email=False)}
    log.warning("report %s: %s", report_date, alert.subject)
    return {**summary, "alerted": True, "sent": send(alert)}
