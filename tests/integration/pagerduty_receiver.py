"""A local HTTPS receiver implementing PagerDuty's Events API v2 `POST /v2/enqueue`, for tests.

It validates events as PagerDuty documents them (routing_key, event_action, payload.summary /
severity / source, dedup_key) and answers 202 like the real service, or 400 with the errors. Its
certificate is self-signed for 127.0.0.1 and localhost; clients trust it through `ca_file`
(SSL_CERT_FILE / REQUESTS_CA_BUNDLE), never by turning verification off.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ACTIONS = frozenset({"trigger", "acknowledge", "resolve"})
SEVERITIES = frozenset({"critical", "error", "warning", "info"})


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate (SANs 127.0.0.1, localhost) and its key; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pagerduty-receiver.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "receiver-cert.pem", folder / "receiver-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def validate(event: Any, routing_key: str) -> list[str]:
    """The problems PagerDuty would report for this Events API v2 event (empty: valid)."""
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    errors = []
    if event.get("routing_key") != routing_key:
        errors.append("invalid routing_key")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append(f"event_action must be one of {sorted(ACTIONS)}")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not dedup or len(dedup) > 255):
        errors.append("dedup_key must be a non-empty string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append(f"dedup_key is required for {action}")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "payload is required for trigger"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            errors.append("payload.summary must be a non-empty string of at most 1024 characters")
        if payload.get("severity") not in SEVERITIES:
            errors.append(f"payload.severity must be one of {sorted(SEVERITIES)}")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("payload.source is required")
    return errors


class PagerDutyReceiver:
    """The receiver: `url` for the connection's host, `events` the accepted events, `rejected` the others."""

    def __init__(self, folder: Path, routing_key: str) -> None:
        self.routing_key = routing_key
        self.cert_file, key_file = self_signed_certificate(folder)
        self.events: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v2/enqueue":
                    self._answer(404, {"status": "not found", "message": self.path})
                    return
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    self._answer(400, {"status": "invalid event", "message": "not JSON", "errors": ["not JSON"]})
                    return
                if receiver.fail_with is not None:
                    self._answer(receiver.fail_with, {"status": "error", "message": "induced failure"})
                    return
                errors = validate(event, receiver.routing_key)
                with receiver._lock:
                    (receiver.rejected if errors else receiver.events).append(event)
                if errors:
                    self._answer(
                        400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
                    )
                    return
                dedup = event.get("dedup_key") or uuid.uuid4().hex
                self._answer(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> PagerDutyReceiver:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[dict[str, Any]]:
        """The accepted events so far."""
        with self._lock:
            return list(self.events)

    def wait_for(self, count: int, timeout: float, **match: Any) -> list[dict[str, Any]]:
        """Wait until at least `count` accepted events match (top-level keys); return those matching."""
        end = time.monotonic() + timeout
        while True:
            found = [e for e in self.snapshot() if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count or time.monotonic() > end:
                return found
            time.sleep(0.2)


@contextmanager
def run_pagerduty_receiver(folder: Path, routing_key: str) -> Iterator[PagerDutyReceiver]:
    """A receiver for the duration of a with block."""
    receiver = PagerDutyReceiver(folder, routing_key).start()
    try:
        yield receiver
    finally:
        receiver.stop()
