"""The Starlette app: token endpoint, accounts listing, ESG ratings and the sandbox admin endpoints."""

import asyncio
import base64
import binascii
import json
import logging
import re
import secrets
import time
from datetime import UTC, date, datetime
from urllib.parse import parse_qsl, unquote_plus, unquote_to_bytes

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from include.esg_sandbox.dataset import parse_as_of
from include.esg_sandbox.faults import JSON, error_response, respond
from include.esg_sandbox.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CursorCodec,
    CursorError,
    Position,
    slice_page,
)
from include.esg_sandbox.state import ALL_SCOPES, SandboxState, Token

logger = logging.getLogger(__name__)

_ESG_PREFIX = b"/v1/accounts/"
_ESG_SUFFIX = b"/esg-rating"
_LIMIT_RE = re.compile(r"[0-9]{1,7}")
_STATUSES = ("active", "inactive", "all")
_FORM = "application/x-www-form-urlencoded"
_INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="esg-sandbox"'}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Return data as a UTF-8 JSON response."""
    body = json.dumps(data, ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": error, "error_description": description}, status, headers)


def _today() -> date:
    return datetime.now(UTC).date()


class _Malformed(Exception):
    pass


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """Return (client_id, secret) of an HTTP Basic header, decoded per RFC 6749 2.3.1."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _Malformed from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _Malformed
    # RFC 6749 2.3.1: both parts are form-urlencoded before they are joined and base64-encoded.
    return unquote_plus(client_id), unquote_plus(secret)


def esg_account_id(request: Request) -> str | None:
    """Return the percent-decoded account id of an ESG path, or None if the path cannot name one."""
    raw = request.scope.get("raw_path")
    if not raw or not raw.startswith(_ESG_PREFIX) or not raw.endswith(_ESG_SUFFIX):
        return request.path_params.get("account_id")
    segment = raw[len(_ESG_PREFIX) : -len(_ESG_SUFFIX)]
    # An unencoded '/' makes a different path on a real server; only %2F may stand for it.
    if b"/" in segment:
        return None
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None


class Handlers:
    """Request handlers bound to one SandboxState."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.cursors = CursorCodec(state.dataset.seed)

    # --- Authentication System -------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        """POST /oauth2/token: client-credentials grant."""
        state = self.state
        state.stats.token_requests += 1
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != _FORM:
            return _oauth_error(400, "invalid_request", f"the body must be {_FORM}")
        try:
            pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return _oauth_error(400, "invalid_request", "the body is not UTF-8")
        form: dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                return _oauth_error(400, "invalid_request", f"parameter {key} given more than once")
            form[key] = value
        grant_type = form.get("grant_type")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        try:
            basic = _basic_credentials(request.headers.get("authorization"))
        except _Malformed:
            return _oauth_error(401, "invalid_client", "malformed Basic credentials", _BASIC_CHALLENGE)
        in_form = "client_id" in form or "client_secret" in form
        if basic and in_form:
            return _oauth_error(400, "invalid_request", "use one client authentication method, not two")
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        expected_secret = state.config.clients.get(client_id)
        if expected_secret is None or not secrets.compare_digest(secret.encode(), expected_secret.encode()):
            return _oauth_error(401, "invalid_client", "client authentication failed", _BASIC_CHALLENGE)
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
        requested = set(form.get("scope", "").split())
        if not requested <= set(ALL_SCOPES):
            unknown = " ".join(sorted(requested - set(ALL_SCOPES)))
            return _oauth_error(400, "invalid_scope", f"unknown scope: {unknown}")
        granted = tuple(s for s in ALL_SCOPES if s in requested) if requested else ALL_SCOPES
        lifetime = state.config.token_lifetime
        access_token = state.tokens.issue(client_id, frozenset(granted), lifetime, time.monotonic())
        data = {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime}
        return json_response(data | {"scope": " ".join(granted)}, headers=_NO_STORE)

    @staticmethod
    def _denied(token: Token | None, scope: str, headers: dict[str, str]) -> Response:
        """Return the 401 (no live token) or 403 (scope missing) answer."""
        if token is None:
            response = error_response(401, "invalid_token", "missing, unknown or expired token", headers)
            response.headers.update(_INVALID_TOKEN)
            return response
        response = error_response(403, "insufficient_scope", f"the token lacks {scope}", headers)
        response.headers["WWW-Authenticate"] = f'Bearer error="insufficient_scope", scope="{scope}"'
        return response

    # --- Account Management ----------------------------------------------------------------

    async def accounts(self, request: Request) -> Response:
        """GET /v1/accounts: one page of the listing."""
        stats = self.state.stats
        stats.accounts_requests += 1
        response = self._accounts_page(request)
        stats.accounts_status_counts[str(response.status_code)] += 1
        return response

    def _accounts_page(self, request: Request) -> Response:
        state = self.state
        token = state.tokens.lookup(request.headers.get("authorization"), time.monotonic())
        if token is None or "accounts:read" not in token.scopes:
            return self._denied(token, "accounts:read", {})
        params = request.query_params
        status = params.get("status", "all")
        if status not in _STATUSES:
            return error_response(400, "invalid_request", f"status must be one of {_STATUSES}", {})
        limit_text = params.get("limit", str(DEFAULT_LIMIT))
        if not _LIMIT_RE.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            return error_response(400, "invalid_request", f"limit must be an integer 1..{MAX_LIMIT}", {})
        limit = int(limit_text)
        items = state.listing(status)
        position = Position(status, 0, 0)
        cursor = params.get("cursor")
        if cursor is not None:
            try:
                position = self.cursors.decode(cursor)
            except CursorError:
                return error_response(400, "invalid_cursor", "the cursor is invalid", {})
            if position.status != status or position.offset > len(items):
                return error_response(400, "invalid_cursor", "the cursor does not fit this query", {})
        faults = state.plan.listing
        if "accounts_5xx" in faults and position.page == 1 and not state.accounts_5xx_fired:
            state.accounts_5xx_fired = True
            return error_response(503, "unavailable", "injected transient failure", {"Retry-After": "1"})
        data, next_offset = slice_page(
            items,
            position.offset,
            position.page,
            limit,
            short_pages="short_pages" in faults,
            repeat="repeat_accounts" in faults,
        )
        next_cursor = None
        if next_offset < len(items):
            next_cursor = self.cursors.encode(Position(status, next_offset, position.page + 1))
        return json_response({"data": data, "next_cursor": next_cursor})

    # --- ESG Portfolio Analysis -------------------------------------------------------------

    async def esg_rating(self, request: Request) -> Response:
        """GET /v1/accounts/{account_id}/esg-rating: one rating, rate-limited, maybe faulty."""
        state = self.state
        now = time.monotonic()
        account_id = esg_account_id(request)
        known = account_id is not None and account_id in state.dataset.by_id
        state.stats.esg_arrival(account_id, known, now, time.time())
        response = await self._esg(request, account_id if known else None, now)
        state.stats.status_counts[str(response.status_code)] += 1
        return response

    async def _esg(self, request: Request, account_id: str | None, now: float) -> Response:
        state = self.state
        limit = state.config.rate_limit
        token = state.tokens.lookup(request.headers.get("authorization"), now)
        if token is None or "esg:read" not in token.scopes:
            remaining = state.limiter.remaining(token.client_id if token else None, now, limit)
            headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
            return self._denied(token, "esg:read", headers)
        accepted, remaining, retry_after = state.limiter.acquire(token.client_id, now, limit)
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
        if not accepted:
            state.stats.rate_limited_429 += 1
            headers["Retry-After"] = str(retry_after)
            return error_response(429, "rate_limited", f"more than {limit} requests per second", headers)
        delay = state.latency_seconds()
        if delay:
            await asyncio.sleep(delay)
        as_of_text = request.query_params.get("as_of")
        try:
            as_of = parse_as_of(as_of_text) if as_of_text is not None else _today()
        except ValueError as exc:
            return error_response(400, "invalid_request", str(exc), headers)
        if account_id is None:
            return error_response(404, "not_found", "no such account", headers)
        call = state.next_fault_call(account_id)
        return await respond(state, account_id, as_of, call, headers)

    # --- Sandbox admin ------------------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        """GET /_sandbox/stats."""
        per_account = request.query_params.get("per_account", "0").lower() in ("1", "true", "yes")
        return json_response(self.state.stats.snapshot(per_account))

    async def reset(self, request: Request) -> Response:
        """POST /_sandbox/reset."""
        self.state.reset()
        logger.info("sandbox reset")
        return json_response({"reset": True})

    async def config(self, request: Request) -> Response:
        """GET or POST /_sandbox/config."""
        if request.method == "POST":
            try:
                values = json.loads(await request.body() or b"{}")
                if not isinstance(values, dict):
                    raise ValueError("the body must be a JSON object")
                self.state.config.update(values)
            except ValueError as exc:
                return error_response(400, "invalid_request", str(exc), {})
            logger.info("sandbox config changed: %s", values)
        return json_response(self.state.config.as_dict())

    async def expected(self, request: Request) -> Response:
        """GET /_sandbox/expected: the oracle of a report date."""
        as_of_text = request.query_params.get("as_of")
        try:
            as_of = parse_as_of(as_of_text) if as_of_text is not None else _today()
        except ValueError as exc:
            return error_response(400, "invalid_request", str(exc), {})
        # Large datasets take seconds to compute; keep the event loop serving meanwhile.
        return await run_in_threadpool(lambda: json_response(self.state.expected(as_of)))

    async def plan(self, request: Request) -> Response:
        """GET /_sandbox/plan: which account has which fault."""
        return json_response(self.state.plan.as_dict())

    async def healthz(self, request: Request) -> Response:
        """GET /healthz."""
        return PlainTextResponse("ok")


def create_app(state: SandboxState) -> Starlette:
    """Return the sandbox ASGI app for a state."""
    h = Handlers(state)
    routes = [
        Route("/oauth2/token", h.token, methods=["POST"]),
        Route("/v1/accounts", h.accounts, methods=["GET"]),
        Route("/v1/accounts/{account_id:path}/esg-rating", h.esg_rating, methods=["GET"]),
        Route("/_sandbox/stats", h.stats, methods=["GET"]),
        Route("/_sandbox/reset", h.reset, methods=["POST"]),
        Route("/_sandbox/config", h.config, methods=["GET", "POST"]),
        Route("/_sandbox/expected", h.expected, methods=["GET"]),
        Route("/_sandbox/plan", h.plan, methods=["GET"]),
        Route("/healthz", h.healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes)
