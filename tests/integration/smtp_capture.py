"""A real SMTP server (aiosmtpd) on loopback that keeps every message it receives, for tests."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import free_port


@dataclass(frozen=True)
class Received:
    """One delivered message: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        """The Subject header."""
        return str(self.message["Subject"])

    @property
    def html(self) -> str:
        """The HTML body."""
        part = self.message.get_body(preferencelist=("html", "plain"))
        return part.get_content() if part is not None else ""


class SmtpCapture:
    """An SMTP server that requires LOGIN with the given credentials and records every message."""

    def __init__(self, login: str, password: str) -> None:
        self.login, self.password = login, password
        self.messages: list[Received] = []
        self.failed_logins = 0
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_required=True,
            # Loopback test server: no TLS to offer, so allow AUTH in clear (never do this on a network).
            auth_require_tls=False,
        )

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            self.login,
            self.password,
        )
        if not ok:
            self.failed_logins += 1
        return AuthResult(success=ok)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message (aiosmtpd handler hook)."""
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[Received]:
        """The messages so far."""
        with self._lock:
            return list(self.messages)

    def wait_for(self, count: int, timeout: float, subject_contains: str = "") -> list[Received]:
        """Wait until at least `count` messages whose subject contains the text arrived; return them."""
        end = time.monotonic() + timeout
        while True:
            found = [m for m in self.snapshot() if subject_contains in m.subject]
            if len(found) >= count or time.monotonic() > end:
                return found
            time.sleep(0.2)

    def connection(self, from_email: str = "esg-alerts@example.test") -> dict[str, Any]:
        """The smtp_default connection (as AIRFLOW_CONN_ JSON fields) that reaches this server."""
        return {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": self.port,
            "login": self.login,
            "password": self.password,
            "extra": {
                "from_email": from_email,
                "disable_ssl": True,
                "disable_tls": True,
                "timeout": 10,
                "retry_limit": 0,
            },
        }


@contextmanager
def run_smtp_capture(login: str = "alerts", password: str = "smtp-test-secret") -> Iterator[SmtpCapture]:
    """An SMTP server for the duration of a with block."""
    capture = SmtpCapture(login, password)
    capture.controller.start()
    try:
        yield capture
    finally:
        capture.controller.stop()
