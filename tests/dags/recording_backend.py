"""A secrets backend that writes every connection and variable lookup to $ESG_LOOKUP_LOG."""

import os

from airflow.secrets import BaseSecretsBackend


class RecordingBackend(BaseSecretsBackend):
    """Records lookups and finds nothing, so the normal chain continues."""

    def _record(self, kind: str, key: str) -> None:
        with open(os.environ["ESG_LOOKUP_LOG"], "a") as log:
            log.write(f"{kind}:{key}\n")

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> None:
        self._record("connection", conn_id)

    def get_variable(self, key: str, team_name: str | None = None) -> None:
        self._record("variable", key)

    def get_config(self, key: str) -> None:
        return None
