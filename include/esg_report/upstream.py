"""OAuth2 client-credentials access to one upstream system, with retries, timeouts and deadlines."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote_plus

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from include.esg_report.settings import ApiSettings

log = logging.getLogger(__name__)
# httpx2 logs every request at INFO: thousands of lines per batch that say nothing new.
logging.getLogger("httpx2").setLevel(logging.WARNING)

TRANSIENT_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
MAX_RETRY_AFTER = 60.0
# Renew a token this long before it expires, but at most a fifth of its lifetime: tokens may
# live only 30 s (or less), and authlib's fixed default of 60 s would refetch on every call.
TOKEN_LEEWAY_SECONDS = 5
TOKEN_LEEWAY_SHARE = 0.2


# The running request's deadline, armed only once its rate permit is granted (in the request hook).
_deadline: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar("deadline", default=None)


class UpstreamError(Exception):
    """A call to an upstream failed; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = 1


class TransientError(UpstreamError):
    """Worth retrying: 5xx, 408, 429, connection errors, timeouts."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class PermanentError(UpstreamError):
    """Not worth retrying for this request: 400, 403, 404, a second 401, other statuses."""


class CredentialsError(Exception):
    """The token endpoint refused the client: wrong credentials or scope, a configuration error."""


RFC6749_BASIC = "client_secret_basic_rfc6749"


def rfc6749_basic(client: Any, method: str, uri: str, headers: dict[str, str], body: str) -> tuple:
    """HTTP Basic client authentication with form-encoded id and secret (RFC 6749 section 2.3.1).

    authlib's own client_secret_basic sends them raw, which a compliant server misreads as soon as
    a secret holds `%`, `+` or `:`, and cannot send at all beyond Latin-1.
    """
    pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return uri, headers, body


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header in delay-seconds or HTTP-date form."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def classify(response: httpx2.Response) -> None:
    """Raise TransientError or PermanentError for a non-2xx response."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in TRANSIENT_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise TransientError(f"HTTP {status}", status, retry_after)
    raise PermanentError(f"HTTP {status}", status)


class _WaitRetryAfterOrJitter:
    """Honour the server's Retry-After; otherwise exponential backoff with full jitter."""

    def __init__(self, multiplier: float, cap: float) -> None:
        self._jitter = wait_random_exponential(multiplier=multiplier, max=cap)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return exc.retry_after
        return self._jitter(state)


@dataclass(slots=True)
class CallResult:
    """A successful (2xx) response and how many attempts it took."""

    response: httpx2.Response
    attempts: int


class OAuthApi:
    """One upstream system behind OAuth2 client credentials (authlib), used as an async context manager."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        before_request: Callable[[], Awaitable[Any]] | None = None,
        backoff_multiplier: float = 0.5,
        backoff_cap: float = 20.0,
    ) -> None:
        self.settings = settings
        self._before_request = before_request
        self._backoff = (backoff_multiplier, backoff_cap)
        self._client = AsyncOAuth2Client(
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            scope=settings.scope,
            token_endpoint=settings.token_url,
            token_endpoint_auth_method=RFC6749_BASIC,
            grant_type="client_credentials",
            leeway=TOKEN_LEEWAY_SECONDS,
            timeout=httpx2.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            limits=httpx2.Limits(max_connections=settings.concurrency + 4),
            follow_redirects=False,
            update_token=self._token_renewed,
            # The permit is taken in the hook, right before the bytes leave: any delay between
            # permit and send would let requests bunch at the server beyond the rate.
            event_hooks={"request": [self._take_permit]},
        )
        self._client.register_client_auth_method((RFC6749_BASIC, rfc6749_basic))
        self._token_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def _take_permit(self, request: httpx2.Request) -> None:
        if self._before_request is not None and str(request.url) != self.settings.token_url:
            await self._before_request()
        if (timeout := _deadline.get()) is not None:
            timeout.reschedule(asyncio.get_running_loop().time() + self.settings.request_deadline)

    def _fit_leeway(self) -> None:
        lifetime = float((self._client.token or {}).get("expires_in") or 0)
        self._client.leeway = min(TOKEN_LEEWAY_SECONDS, lifetime * TOKEN_LEEWAY_SHARE)

    async def _token_renewed(self, token: dict[str, Any], **_: Any) -> None:
        """authlib's callback after it renewed an expiring token by itself."""
        self._fit_leeway()

    async def _new_token(self, stale: str | None) -> None:
        """Fetch a token unless another coroutine already replaced `stale`."""
        async with self._token_lock:
            current = (self._client.token or {}).get("access_token")
            if current is not None and current != stale:
                return
            try:
                await asyncio.wait_for(
                    self._client.fetch_token(self.settings.token_url, grant_type="client_credentials"),
                    self.settings.request_deadline,
                )
            except OAuthError as exc:
                # The error code is safe to show; the request carried the secret, the answer does not.
                raise CredentialsError(
                    f"connection {self.settings.conn_id!r}: token endpoint refused the client ({exc.error})"
                ) from None
            except (httpx2.TimeoutException, TimeoutError) as exc:
                raise TransientError(f"token endpoint timed out ({type(exc).__name__})") from None
            except httpx2.TransportError as exc:
                raise TransientError(f"token endpoint unreachable ({type(exc).__name__})") from None
            except (ValueError, KeyError) as exc:
                raise TransientError(f"token endpoint answered badly ({type(exc).__name__})") from None
            self._fit_leeway()

    def _token(self) -> str | None:
        return (self._client.token or {}).get("access_token")

    async def _send_once(self, url: str, params: dict[str, str] | None) -> httpx2.Response:
        if self._token() is None:
            await self._new_token(None)
        try:
            async with asyncio.timeout(None) as timeout:
                armed = _deadline.set(timeout)
                try:
                    # authlib refreshes the token itself shortly before it expires (leeway).
                    return await self._client.get(url, params=params)
                finally:
                    _deadline.reset(armed)
        except TimeoutError:
            raise TransientError(f"no complete answer within {self.settings.request_deadline:g} s") from None
        except httpx2.TimeoutException as exc:
            raise TransientError(f"timeout ({type(exc).__name__})") from None
        except httpx2.TransportError as exc:
            raise TransientError(f"connection error ({type(exc).__name__})") from None

    async def _send_authorized(self, url: str, params: dict[str, str] | None) -> httpx2.Response:
        used = self._token()
        response = await self._send_once(url, params)
        if response.status_code != 401:
            return response
        # A 401 means expired or revoked: one new token, one repeat; a second 401 is final.
        await self._new_token(used)
        response = await self._send_once(url, params)
        if response.status_code == 401:
            raise PermanentError("HTTP 401 twice: the token was refused after a refresh", 401)
        return response

    async def get(self, path: str, params: dict[str, str] | None = None) -> CallResult:
        """GET base_url + path; retry transient failures; return the 2xx response or raise."""
        url = self.settings.base_url + path
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts)
            | stop_after_delay(self.settings.request_deadline * self.settings.max_attempts),
            wait=_WaitRetryAfterOrJitter(*self._backoff),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
            before_sleep=self._log_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await self._send_authorized(url, params)
                    classify(response)
                    return CallResult(response, attempts)
        except UpstreamError as exc:
            exc.attempts = attempts
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.debug("attempt %d failed (%s); retrying in %.2f s", state.attempt_number, exc, wait)
