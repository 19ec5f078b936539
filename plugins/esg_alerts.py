"""Registers the ESG report's deadline reference with the scheduler and the API server, which compute it."""

from airflow.plugins_manager import AirflowPlugin

from include.esg_report.alerts import ReportDeadline


class EsgAlertsPlugin(AirflowPlugin):
    """Makes ReportDeadline (esg_report_deadline on the report date) known to every Airflow component."""

    name = "esg_alerts"
    deadline_references = [ReportDeadline]  # noqa: RUF012 (the AirflowPlugin interface is a class attribute)
