"""Mutable server state: tokens, the rate-limit window, call counters and statistics."""

import math
import random
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import date

from include.esg_sandbox.config import SandboxConfig
from include.esg_sandbox.dataset import ACTIVE, Account, Dataset, Rating, seeded_rng
from include.esg_sandbox.faultplan import FaultPlan, FaultSpec, build_plan
from include.esg_sandbox.oracle import expected_report, served_rating

ALL_SCOPES: tuple[str, ...] = ("accounts:read", "esg:read")
_TOKEN_PURGE_THRESHOLD = 10_000
# Enough for retries in flight; a rating costs ~25 us to rebuild and ~1 KB to keep.
_RATING_CACHE_SIZE = 20_000
# Unknown ids are tracked too (they reveal encoding bugs), but a flood of them must not eat memory.
_MAX_UNKNOWN_TRACKED = 10_000


@dataclass(slots=True)
class Token:
    """An issued access token."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float


class TokenStore:
    """Issued bearer tokens and their expiry (monotonic clock)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}

    def issue(self, client_id: str, scopes: frozenset[str], lifetime: int, now: float) -> str:
        """Issue a new random token."""
        if len(self._tokens) > _TOKEN_PURGE_THRESHOLD:
            self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
        value = secrets.token_urlsafe(32)
        self._tokens[value] = Token(client_id, scopes, now + lifetime)
        return value

    def lookup(self, authorization: str | None, now: float) -> Token | None:
        """Return the live token of an Authorization header, or None if missing, unknown or expired."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = self._tokens.get(value.strip())
        if token is None or token.expires_at <= now:
            return None
        return token


class SlidingWindowLimiter:
    """Per-client limit over accepted requests in the sliding window (now - 1 s, now]."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}

    def _window(self, client_id: str, now: float) -> deque[float]:
        window = self._windows.setdefault(client_id, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        return window

    def acquire(self, client_id: str, now: float, limit: int) -> tuple[bool, int, int]:
        """Try to accept a request: return (accepted, remaining, retry_after_seconds)."""
        window = self._window(client_id, now)
        if len(window) >= limit:
            # The slot frees when the oldest request that keeps the count at the limit leaves the window.
            frees_at = window[len(window) - limit] + 1.0
            return False, 0, max(1, math.ceil(frees_at - now))
        window.append(now)
        return True, limit - len(window), 0

    def remaining(self, client_id: str | None, now: float, limit: int) -> int:
        """Return how many requests a client may still send in the current window."""
        if client_id is None:
            return limit
        return max(0, limit - len(self._window(client_id, now)))

    def reset(self) -> None:
        """Forget all windows."""
        self._windows.clear()


class Stats:
    """Counters served by GET /_sandbox/stats."""

    def __init__(self) -> None:
        self.esg_requests = 0
        self.status_counts: Counter[str] = Counter()
        self.accounts_status_counts: Counter[str] = Counter()
        self.rate_limited_429 = 0
        self.injected_429 = 0
        self.token_requests = 0
        self.accounts_requests = 0
        self.first_request_at: float | None = None
        self.last_request_at: float | None = None
        self.max_requests_in_any_second = 0
        self._arrivals: deque[float] = deque()
        self.per_account: dict[str, list[int]] = {}
        self._unknown_tracked = 0

    def esg_arrival(self, account_id: str | None, known: bool, now: float, wall: float) -> None:
        """Record an ESG request on arrival."""
        self.esg_requests += 1
        if self.first_request_at is None:
            self.first_request_at = wall
        self.last_request_at = wall
        arrivals = self._arrivals
        # Every window's maximum is reached by a window ending at an arrival, so this is exact.
        while arrivals and arrivals[0] <= now - 1.0:
            arrivals.popleft()
        arrivals.append(now)
        if len(arrivals) > self.max_requests_in_any_second:
            self.max_requests_in_any_second = len(arrivals)
        if account_id is None:
            return
        entry = self.per_account.get(account_id)
        if entry is None:
            if not known:
                if self._unknown_tracked >= _MAX_UNKNOWN_TRACKED:
                    return
                self._unknown_tracked += 1
            entry = self.per_account[account_id] = [0, 0]
        entry[0] += 1

    def esg_ok(self, account_id: str) -> None:
        """Record that a usable rating was served to the end."""
        entry = self.per_account.setdefault(account_id, [0, 0])
        entry[1] += 1

    def snapshot(self, per_account: bool) -> dict[str, object]:
        """Return the counters as JSON-ready data."""
        data: dict[str, object] = {
            "esg_requests": self.esg_requests,
            "status_counts": dict(sorted(self.status_counts.items())),
            "rate_limited_429": self.rate_limited_429,
            "injected_429": self.injected_429,
            "max_requests_in_any_second": self.max_requests_in_any_second,
            "first_request_at": self.first_request_at,
            "last_request_at": self.last_request_at,
            "token_requests": self.token_requests,
            "accounts_requests": self.accounts_requests,
            "accounts_status_counts": dict(sorted(self.accounts_status_counts.items())),
        }
        if per_account:
            data["per_account"] = {
                account_id: {"calls": calls, "ok": ok} for account_id, (calls, ok) in sorted(self.per_account.items())
            }
        return data


class SandboxState:
    """Everything the request handlers share."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.dataset = Dataset(config.accounts, config.inactive or 0, config.seed)
        self.spec = FaultSpec.parse(config.faults)
        self.plan: FaultPlan = build_plan(self.spec, self.dataset)
        self.tokens = TokenStore()
        self.limiter = SlidingWindowLimiter()
        self.stats = Stats()
        self.fault_calls: dict[str, int] = {}
        self.accounts_5xx_fired = False
        self._latency_rng = random.Random(config.seed)
        self._listings = {status: self._build_listing(status) for status in ("active", "inactive", "all")}
        self._ratings: dict[tuple[str, date], Rating] = {}
        self._oracle_cache: dict[date, dict[str, list]] = {}

    def _build_listing(self, status: str) -> list[dict[str, str]]:
        accounts = self.dataset.listing(status)
        if status == ACTIVE and "inactive_in_active" in self.plan.listing:
            accounts = self._with_strays(accounts)
        return [account.as_dict() for account in accounts]

    def _with_strays(self, active: list[Account]) -> list[Account]:
        """Slip some inactive/closed accounts into the active listing at seeded positions."""
        others = self.dataset.listing("inactive")
        if not others or not active:
            return active
        rng = seeded_rng(self.dataset.seed, "strays")
        strays = rng.sample(others, min(len(others), max(3, len(others) // 4)))
        merged = list(active)
        for stray in strays:
            merged.insert(rng.randint(0, len(merged)), stray)
        return merged

    def listing(self, status: str) -> list[dict[str, str]]:
        """Return the listing of a status filter, listing faults applied."""
        return self._listings[status]

    def rating(self, account_id: str, as_of: date) -> Rating:
        """Return the (cached) rating body the account serves once its transient faults are past."""
        key = (account_id, as_of)
        rating = self._ratings.get(key)
        if rating is None:
            if len(self._ratings) >= _RATING_CACHE_SIZE:
                self._ratings.clear()
            rating = self._ratings[key] = served_rating(self.dataset, self.plan, account_id, as_of)
        return rating

    def expected(self, as_of: date) -> dict[str, list]:
        """Return the (cached) oracle of a report date."""
        report = self._oracle_cache.get(as_of)
        if report is None:
            if len(self._oracle_cache) >= 4:
                self._oracle_cache.clear()
            report = self._oracle_cache[as_of] = expected_report(self.dataset, self.plan, as_of)
        return report

    def latency_seconds(self) -> float:
        """Return this request's latency: latency_ms +- uniform jitter, never negative."""
        base, jitter = self.config.latency_ms, self.config.latency_jitter_ms
        if jitter:
            base += self._latency_rng.uniform(-jitter, jitter)
        return max(0.0, base) / 1000.0

    def next_fault_call(self, account_id: str) -> int:
        """Count a served call of an account and return its number since start/reset (1-based)."""
        calls = self.fault_calls.get(account_id, 0) + 1
        self.fault_calls[account_id] = calls
        return calls

    def reset(self) -> None:
        """Clear statistics, per-account call counters (faults fire again) and rate windows."""
        self.stats = Stats()
        self.fault_calls.clear()
        self.limiter.reset()
        self.accounts_5xx_fired = False

    def now(self) -> float:
        """Return the monotonic clock used for tokens and windows."""
        return time.monotonic()
