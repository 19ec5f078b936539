"""Run the sandbox as a child process (for tests, benchmarks and the local run)."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
# Options run_sandbox passes through as CLI flags (port and port file are managed here).
OPTIONS: frozenset[str] = frozenset(
    {
        "host",
        "accounts",
        "inactive",
        "seed",
        "rate_limit",
        "latency_ms",
        "latency_jitter_ms",
        "token_lifetime",
        "clients",
        "faults",
        "trickle_seconds",
        "log_level",
    }
)
# Loopback only: bypass any proxy configured in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def build_command(port_file: Path, **options: Any) -> list[str]:
    """Return the command line that starts a sandbox with these options."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise TypeError(f"unknown sandbox option(s) {unknown}; known: {sorted(OPTIONS)}")
    command = [sys.executable, "-m", "include.esg_sandbox", "--port", "0", "--port-file", str(port_file)]
    for key, value in options.items():
        if value is None:
            continue
        if key == "clients":
            values = [value] if isinstance(value, str) else list(value)
            for client in values:
                command += ["--client", client]
        else:
            command += ["--" + key.replace("_", "-"), str(value)]
    return command


class SandboxProcess:
    """A sandbox server running in a child process."""

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.port: int = 0
        self.url: str = ""

    @property
    def stderr_text(self) -> str:
        """Return what the server wrote to stderr so far."""
        path = self.workdir / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_ready(self, timeout: float, host: str) -> None:
        port_file = self.workdir / "port"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"esg-sandbox exited with code {self.process.returncode} before it was ready; "
                    f"stderr:\n{self.stderr_text}"
                )
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text and not self.url:
                self.port = int(text)
                self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
            if self.url and self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"esg-sandbox was not ready within {timeout:.0f} s; stderr:\n{self.stderr_text}")

    def _healthy(self) -> bool:
        try:
            with _OPENER.open(self.url + "/healthz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call an admin endpoint and return its decoded JSON."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path} answered {exc.code}: {detail}") from None

    def stats(self, per_account: bool = False) -> dict[str, Any]:
        """Return GET /_sandbox/stats."""
        return self.request("GET", "/_sandbox/stats" + ("?per_account=1" if per_account else ""))

    def expected(self, as_of: str) -> dict[str, Any]:
        """Return the oracle (GET /_sandbox/expected) of a report date."""
        return self.request("GET", f"/_sandbox/expected?as_of={as_of}")

    def plan(self) -> dict[str, Any]:
        """Return the fault plan (GET /_sandbox/plan)."""
        return self.request("GET", "/_sandbox/plan")

    def reset(self) -> None:
        """Clear statistics, call counters and rate windows (POST /_sandbox/reset)."""
        self.request("POST", "/_sandbox/reset")

    def configure(self, **settings: float) -> dict[str, Any]:
        """Change runtime settings (latency_ms, latency_jitter_ms, rate_limit, ...); return the config."""
        return self.request("POST", "/_sandbox/config", settings)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("esg-sandbox pid %s ignored SIGTERM; killing it", self.process.pid)
            self.process.kill()
            self.process.wait(timeout)

    @classmethod
    def start(cls, startup_timeout: float = STARTUP_TIMEOUT, **options: Any) -> "SandboxProcess":
        """Start a sandbox and wait until /healthz answers; the caller must stop() it."""
        workdir = Path(tempfile.mkdtemp(prefix="esg-sandbox-"))
        command = build_command(workdir / "port", **options)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        with open(workdir / "stdout.log", "wb") as stdout, open(workdir / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=stdout, stderr=stderr)
        sandbox = cls(process, workdir)
        try:
            sandbox._wait_ready(startup_timeout, options.get("host") or "127.0.0.1")
        except BaseException:
            sandbox.close()
            raise
        logger.info("esg-sandbox pid %s listening on %s", process.pid, sandbox.url)
        return sandbox

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def run_sandbox(**options: Any) -> Iterator[SandboxProcess]:
    """Run a sandbox for the duration of a with block, e.g. run_sandbox(accounts=5000, faults="none")."""
    sandbox = SandboxProcess.start(**options)
    try:
        yield sandbox
    finally:
        sandbox.close()
