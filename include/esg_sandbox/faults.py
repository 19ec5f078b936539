"""HTTP behaviour of each ESG fault kind: what the n-th served call of a faulty account answers."""

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import date
from email.utils import formatdate

from starlette.responses import Response, StreamingResponse

from include.esg_sandbox.dataset import seeded_rng
from include.esg_sandbox.state import SandboxState

logger = logging.getLogger(__name__)

JSON = "application/json"
SLOW_EXTRA_SECONDS = 2.0
_TRICKLE_CHUNK_BYTES = 4
_INVALID_TOKEN = 'Bearer error="invalid_token", error_description="The access token was revoked"'
_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The upstream ESG engine did not answer. "
    b"Please try again later.</p><hr><address>gateway/1.0</address></body></html>\n"
)


def error_response(status: int, error: str, description: str, headers: dict[str, str]) -> Response:
    """Return a small JSON error body."""
    body = json.dumps({"error": error, "error_description": description}).encode()
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _http_date_in(seconds: int) -> str:
    # Whole seconds on the wire: round up so the date never lies in the past.
    return formatdate(math.ceil(time.time()) + seconds, usegmt=True)


async def respond(state: SandboxState, account_id: str, as_of: date, call: int, headers: dict[str, str]) -> Response:
    """Answer the call-th served ESG request of an account, applying its planned fault."""
    kind = state.plan.kind_of(account_id)
    variant = state.plan.variant.get(account_id, 0)
    if kind is None or kind in ("partial", "invalid"):
        return _rating(state, account_id, as_of, headers, usable=kind != "invalid")
    if kind == "transient_5xx" and call <= 2:
        first_500 = variant % 2 == 0
        if (call == 1) == first_500:
            return error_response(500, "internal_error", "injected transient failure", headers)
        return error_response(503, "unavailable", "injected transient failure", headers | {"Retry-After": "1"})
    if kind == "rate_429" and call == 1:
        state.stats.injected_429 += 1
        retry_after = "1" if variant % 2 == 0 else _http_date_in(1)
        return error_response(429, "rate_limited", "injected throttling", headers | {"Retry-After": retry_after})
    if kind == "trickle" and call == 1:
        return _trickle(state, account_id, as_of, headers)
    if (kind == "revoked_token" and call == 1) or kind == "always_401":
        return error_response(
            401, "invalid_token", "The access token was revoked", headers | {"WWW-Authenticate": _INVALID_TOKEN}
        )
    if kind == "always_5xx":
        return error_response(503, "unavailable", "injected permanent outage", headers)
    if kind == "html":
        return Response(_HTML_PAGE, media_type="text/html; charset=utf-8", headers=headers)
    if kind == "truncated":
        body = state.rating(account_id, as_of).body()
        cut = int(len(body) * seeded_rng(state.dataset.seed, "cut", account_id).uniform(0.3, 0.8))
        return Response(body[:cut], media_type=JSON, headers=headers)
    if kind == "not_json_object":
        body = state.rating(account_id, as_of).body()
        text = b"[" + body + b"]" if variant % 2 == 0 else b'"rating temporarily unavailable"'
        return Response(text, media_type=JSON, headers=headers)
    if kind == "not_found":
        return error_response(404, "not_found", "no portfolio for this account", headers)
    if kind == "bad_request":
        return error_response(400, "bad_request", "the portfolio cannot be analysed", headers)
    if kind == "forbidden":
        return error_response(403, "forbidden", "this client may not read this account", headers)
    if kind == "wrong_id":
        body = state.rating(_other_account(state, account_id), as_of).body()
        return Response(body, media_type=JSON, headers=headers)
    if kind == "slow":
        await asyncio.sleep(SLOW_EXTRA_SECONDS)
    return _rating(state, account_id, as_of, headers, usable=True)


def _rating(state: SandboxState, account_id: str, as_of: date, headers: dict[str, str], *, usable: bool) -> Response:
    if usable:
        state.stats.esg_ok(account_id)
    return Response(state.rating(account_id, as_of).body(), media_type=JSON, headers=headers)


def _other_account(state: SandboxState, account_id: str) -> str:
    """Return the next active account id after this one (wrapping), never the id itself."""
    ids = state.dataset.active_ids
    for offset in (1, 2):
        candidate = ids[(ids.index(account_id) + offset) % len(ids)]
        if candidate != account_id:
            return candidate
    return account_id + "-OTHER"


def _trickle(state: SandboxState, account_id: str, as_of: date, headers: dict[str, str]) -> Response:
    """Send a normal rating a few bytes at a time over trickle_seconds."""
    body = state.rating(account_id, as_of).body()
    chunks = [body[i : i + _TRICKLE_CHUNK_BYTES] for i in range(0, len(body), _TRICKLE_CHUNK_BYTES)]
    pause = state.config.trickle_seconds / max(1, len(chunks) - 1)
    stats = state.stats

    async def stream() -> AsyncIterator[bytes]:
        for index, chunk in enumerate(chunks):
            if index:
                await asyncio.sleep(pause)
            yield chunk
        # A client that gave up cancels this generator, so only complete bodies count as ok.
        stats.esg_ok(account_id)
        logger.debug("trickle to the end for %s", account_id)

    return StreamingResponse(stream(), media_type=JSON, headers=headers | {"Content-Length": str(len(body))})
