"""Command line: python -m include.esg_sandbox [options] runs the sandbox server."""

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from include.esg_sandbox.app import create_app
from include.esg_sandbox.config import DEFAULT_CLIENTS, SandboxConfig, parse_client
from include.esg_sandbox.state import SandboxState

logger = logging.getLogger("include.esg_sandbox")


class _DropShutdownCancellation(logging.Filter):
    """Drop the traceback uvicorn logs for responses it cancels at shutdown."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except a CancelledError traceback."""
        # Trickle responses are still streaming when the server stops; cancelling them is expected.
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser."""
    default_client = ":".join(next(iter(DEFAULT_CLIENTS.items())))
    p = argparse.ArgumentParser(
        prog="esg-sandbox",
        description="Sandbox of the upstream systems of the ESG ratings report (see the OpenAPI contract).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    p.add_argument("--port-file", type=Path, help="write the bound port there once listening")
    p.add_argument("--accounts", type=int, default=279, help="active accounts")
    p.add_argument("--inactive", type=int, default=None, help="inactive/closed accounts (default: 10%% of N)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rate-limit", type=int, default=50, help="ESG requests per second per client")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--latency-jitter-ms", type=float, default=0.0)
    p.add_argument("--token-lifetime", type=int, default=300, help="seconds")
    p.add_argument(
        "--client",
        action="append",
        metavar="ID:SECRET",
        help=f"OAuth2 client, repeatable (default: {default_client})",
    )
    p.add_argument("--faults", default="default", help="none | default | kind=fraction,... (listing: kind=1)")
    p.add_argument("--trickle-seconds", type=float, default=30.0)
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _write_port_file(path: Path, port: int) -> None:
    # Write then rename, so a reader polling the file never sees it half-written.
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


async def _serve(server: uvicorn.Server, sock: socket.socket, url: str, port_file: Path | None) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise SystemExit(1)
        await asyncio.sleep(0.01)
    if port_file is not None:
        _write_port_file(port_file, sock.getsockname()[1])
    # The one line callers wait for.
    sys.stdout.write(f"esg-sandbox listening on {url}\n")
    sys.stdout.flush()
    logger.info("serving %s", url)
    await task


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGTERM or SIGINT."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not _is_loopback(args.host):
        parser.error(f"--host must be a loopback address (the admin endpoints have no auth): {args.host}")
    try:
        clients = dict(parse_client(text) for text in args.client) if args.client else dict(DEFAULT_CLIENTS)
        config = SandboxConfig(
            accounts=args.accounts,
            inactive=args.inactive,
            seed=args.seed,
            rate_limit=args.rate_limit,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            token_lifetime=args.token_lifetime,
            clients=clients,
            faults=args.faults,
            trickle_seconds=args.trickle_seconds,
        )
        state = SandboxState(config)
    except ValueError as exc:
        parser.error(str(exc))
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(state),
            access_log=False,
            log_level=args.log_level,
            lifespan="off",
            timeout_graceful_shutdown=1,
            # Longer than typical client pool idle times, so pooled connections rarely race a close.
            timeout_keep_alive=30,
            server_header=False,
        )
    )
    logging.getLogger("uvicorn.error").addFilter(_DropShutdownCancellation())
    # uvicorn re-raises the signal it caught once it has shut down; with these handlers in place
    # that re-raise is a no-op, so a stop by SIGTERM/SIGINT ends with exit code 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(_serve(server, sock, url, args.port_file))
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
