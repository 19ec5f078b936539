"""airflow_settings.yaml (Astro schema) as environment variables, for runs without the Astro CLI."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from include.esg_report.settings import PROJECT_ROOT

SETTINGS_FILE = PROJECT_ROOT / "airflow_settings.yaml"
SANDBOX_URL = "http://127.0.0.1:8793"


def load(path: Path = SETTINGS_FILE) -> dict[str, Any]:
    """The `airflow` section of an Astro settings file."""
    return (yaml.safe_load(path.read_text()) or {}).get("airflow", {})


def connection_env(settings: dict[str, Any], sandbox_url: str = SANDBOX_URL) -> dict[str, str]:
    """AIRFLOW_CONN_<ID> variables (JSON form), with the sandbox URL replaced by sandbox_url."""
    env = {}
    for conn in settings.get("connections", []):
        value = {
            "conn_type": conn["conn_type"],
            "host": conn.get("conn_host"),
            "login": conn.get("conn_login"),
            "password": conn.get("conn_password"),
            "schema": conn.get("conn_schema"),
            "port": conn.get("conn_port"),
            "extra": conn.get("conn_extra") or {},
        }
        text = json.dumps({k: v for k, v in value.items() if v not in (None, "")})
        env[f"AIRFLOW_CONN_{conn['conn_id'].upper()}"] = text.replace(SANDBOX_URL, sandbox_url.rstrip("/"))
    return env


def variable_env(settings: dict[str, Any]) -> dict[str, str]:
    """AIRFLOW_VAR_<NAME> variables for the non-empty variables."""
    return {
        f"AIRFLOW_VAR_{v['variable_name'].upper()}": str(v["variable_value"])
        for v in settings.get("variables", [])
        if str(v.get("variable_value") or "") != ""
    }


def pool_commands(settings: dict[str, Any], airflow: str = "airflow") -> list[list[str]]:
    """`airflow pools set` commands for the pools."""
    return [
        [airflow, "pools", "set", p["pool_name"], str(p["pool_slot"]), p.get("pool_description") or ""]
        for p in settings.get("pools", [])
    ]


def main(argv: list[str]) -> int:
    """Print shell `export` lines for the connections and variables (argv[0]: the sandbox URL)."""
    settings = load()
    env = {**connection_env(settings, argv[0] if argv else SANDBOX_URL), **variable_env(settings)}
    for name, value in env.items():
        sys.stdout.write(f"export {name}={shlex.quote(value)}\n")
    for command in pool_commands(settings):
        sys.stdout.write(shlex.join(command) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
