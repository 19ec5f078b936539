"""Typed settings of the job, read from Airflow Connections and Variables at task run time."""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ACCOUNTS_CONN_ID = "account_management"
ESG_CONN_ID = "esg_api"
LEDGER_CONN_ID = "esg_ledger"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPORT_BASE = (PROJECT_ROOT / "reports").as_uri()
DEFAULT_BATCH_SIZE = 500


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting."""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """One OAuth2-protected upstream system, as configured by its Airflow connection."""

    conn_id: str
    base_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str
    rate_limit_per_second: float | None = None
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    request_deadline: float = 30.0
    concurrency: int = 32
    page_size: int = 500


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """Where the ledger lives: a SQLite file or a PostgreSQL database."""

    dialect: str
    sqlite_path: Path | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback IP addresses, where plain http is acceptable."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str, setting: str) -> str:
    """Return url without a trailing slash if it is https, or http on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return url.rstrip("/")
    if parts.scheme == "http":
        raise ConfigError(f"{setting}: plain http is refused for non-loopback host {parts.hostname!r}")
    raise ConfigError(f"{setting}: expected an https:// URL, got {url!r}")


def _base_url(conn_id: str, host: str | None, schema: str | None, port: int | None) -> str:
    if not host:
        raise ConfigError(f"connection {conn_id!r}: host (the base URL) is required")
    url = host if "://" in host else f"{schema or 'https'}://{host}{f':{port}' if port else ''}"
    return require_secure_url(url, f"connection {conn_id!r}: host")


def _number(conn_id: str, extra: dict[str, Any], key: str, default: float, kind: type = float) -> Any:
    value = extra.get(key, default)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"connection {conn_id!r}: extra.{key} must be a number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"connection {conn_id!r}: extra.{key} must be positive, got {value!r}")
    return number


def api_settings_from_fields(
    conn_id: str,
    *,
    host: str | None,
    schema: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    extra: dict[str, Any],
    default_scope: str,
    default_rate: float | None,
) -> ApiSettings:
    """Validate the fields of an upstream connection into ApiSettings."""
    if not login or not password:
        raise ConfigError(f"connection {conn_id!r}: login and password (OAuth2 client id/secret) are required")
    token_url = extra.get("token_url")
    if not token_url:
        raise ConfigError(f"connection {conn_id!r}: extra.token_url is required")
    rate = _number(conn_id, extra, "rate_limit_per_second", default_rate) if default_rate else None
    return ApiSettings(
        conn_id=conn_id,
        base_url=_base_url(conn_id, host, schema, port),
        token_url=require_secure_url(token_url, f"connection {conn_id!r}: extra.token_url"),
        client_id=login,
        client_secret=password,
        scope=str(extra.get("scope") or default_scope),
        rate_limit_per_second=rate,
        max_attempts=_number(conn_id, extra, "max_attempts", 5, int),
        connect_timeout=_number(conn_id, extra, "connect_timeout", 5.0),
        read_timeout=_number(conn_id, extra, "read_timeout", 15.0),
        request_deadline=_number(conn_id, extra, "request_deadline", 30.0),
        concurrency=_number(conn_id, extra, "concurrency", 32, int),
        page_size=min(1000, _number(conn_id, extra, "page_size", 500, int)),
    )


def _extra(conn: Any) -> dict[str, Any]:
    raw = conn.extra
    if not raw:
        return {}
    try:
        extra = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"connection {conn.conn_id!r}: extra is not valid JSON") from None
    if not isinstance(extra, dict):
        raise ConfigError(f"connection {conn.conn_id!r}: extra must be a JSON object")
    return extra


def _connection(conn_id: str) -> Any:
    from airflow.sdk import Connection

    try:
        return Connection.get(conn_id)
    except Exception as exc:
        raise ConfigError(f"connection {conn_id!r} is not defined ({type(exc).__name__})") from None


def load_api_settings(conn_id: str) -> ApiSettings:
    """Read the Account Management or ESG API connection."""
    conn = _connection(conn_id)
    is_esg = conn_id == ESG_CONN_ID
    return api_settings_from_fields(
        conn_id,
        host=conn.host,
        schema=conn.schema,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        extra=_extra(conn),
        default_scope="esg:read" if is_esg else "accounts:read",
        default_rate=50.0 if is_esg else None,
    )


def load_ledger_settings(conn_id: str = LEDGER_CONN_ID) -> LedgerSettings:
    """Read the ledger connection (sqlite: host is the file path; postgres: the usual fields)."""
    conn = _connection(conn_id)
    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        if not conn.host:
            raise ConfigError(f"connection {conn_id!r}: host must be the SQLite file path")
        # A relative path is taken from the project folder, so the same setting works anywhere.
        return LedgerSettings(dialect="sqlite", sqlite_path=PROJECT_ROOT / conn.host)
    if kind in ("postgres", "postgresql"):
        return LedgerSettings(
            dialect="postgresql",
            host=conn.host or "127.0.0.1",
            port=conn.port or 5432,
            database=conn.schema or "postgres",
            login=conn.login,
            password=conn.password,
        )
    raise ConfigError(f"connection {conn_id!r}: type must be sqlite or postgres, got {conn.conn_type!r}")


def variable(name: str, default: str) -> str:
    """Read an Airflow Variable at run time, with the embedded default."""
    from airflow.sdk import Variable

    value = Variable.get(name, default=default)
    return default if value is None or str(value).strip() == "" else str(value).strip()


def load_batch_size() -> int:
    """Accounts per mapped fetch task (Variable esg_batch_size)."""
    raw = variable("esg_batch_size", str(DEFAULT_BATCH_SIZE))
    try:
        size = int(raw)
    except ValueError:
        raise ConfigError(f"variable 'esg_batch_size' must be an integer, got {raw!r}") from None
    if size < 1:
        raise ConfigError(f"variable 'esg_batch_size' must be at least 1, got {size}")
    return size
