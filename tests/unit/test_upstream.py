"""Retry-After parsing, status classification and the retry wait."""

import email.utils
import time

import httpx2
import pytest
from tenacity import RetryCallState

from include.esg_report.upstream import (
    MAX_RETRY_AFTER,
    PermanentError,
    TransientError,
    _WaitRetryAfterOrJitter,
    classify,
    parse_retry_after,
)


def test_retry_after_seconds():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("100000") == MAX_RETRY_AFTER


def test_retry_after_http_date():
    now = time.time()
    header = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.5 <= parse_retry_after(header, now=now) <= 10.0
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-1", "1.5x"])
def test_retry_after_garbage(value):
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(status):
    with pytest.raises(TransientError) as info:
        classify(httpx2.Response(status, headers={"Retry-After": "2"}))
    assert info.value.status == status
    assert info.value.retry_after == 2.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 418, 301])
def test_permanent_statuses(status):
    with pytest.raises(PermanentError):
        classify(httpx2.Response(status))


def test_success_passes():
    classify(httpx2.Response(200))
    classify(httpx2.Response(204))


def _state(exc, attempt):
    state = RetryCallState(None, None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_wait_honours_retry_after():
    wait = _WaitRetryAfterOrJitter(multiplier=0.5, cap=20)
    assert wait(_state(TransientError("x", 429, retry_after=7.0), 1)) == 7.0


def test_wait_full_jitter_is_bounded_and_varies():
    wait = _WaitRetryAfterOrJitter(multiplier=0.5, cap=4)
    samples = [wait(_state(TransientError("x", 503), 6)) for _ in range(200)]
    assert all(0 <= s <= 4 for s in samples)
    assert len(set(samples)) > 100
