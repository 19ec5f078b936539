"""Settings validation: every bad setting is refused with a message naming it."""

import pytest

from include.esg_report.settings import ConfigError, api_settings_from_fields, is_loopback, require_secure_url


def fields(**overrides):
    base = {
        "host": "https://esg.example.internal/gw",
        "schema": None,
        "port": None,
        "login": "client",
        "password": "s3cret-value",
        "extra": {"token_url": "https://auth.example.internal/oauth2/token"},
        "default_scope": "esg:read",
        "default_rate": 50.0,
    }
    return {**base, **overrides}


def test_defaults_and_path_base_url():
    s = api_settings_from_fields("esg_api", **fields())
    assert s.base_url == "https://esg.example.internal/gw"
    assert s.scope == "esg:read"
    assert s.rate_limit_per_second == 50.0
    assert "s3cret-value" not in repr(s)


def test_extra_overrides():
    extra = {
        "token_url": "https://a.example/t",
        "scope": "esg:read x",
        "rate_limit_per_second": "100",
        "page_size": 5000,
    }
    s = api_settings_from_fields("esg_api", **fields(extra=extra))
    assert (s.scope, s.rate_limit_per_second, s.page_size) == ("esg:read x", 100.0, 1000)


def test_host_without_scheme_uses_schema_and_port():
    s = api_settings_from_fields("esg_api", **fields(host="127.0.0.1", schema="http", port=8080))
    assert s.base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": None}, "host"),
        ({"login": None}, "login and password"),
        ({"extra": {}}, "extra.token_url"),
        ({"host": "http://esg.example.internal"}, "plain http is refused"),
        ({"host": "ftp://esg.example.internal"}, "expected an https"),
        ({"extra": {"token_url": "http://auth.example.internal/t"}}, "extra.token_url"),
        ({"extra": {"token_url": "https://a/t", "rate_limit_per_second": "fast"}}, "rate_limit_per_second"),
        ({"extra": {"token_url": "https://a/t", "rate_limit_per_second": 0}}, "must be positive"),
    ],
)
def test_bad_settings_name_the_setting(change, message):
    with pytest.raises(ConfigError, match=message) as info:
        api_settings_from_fields("esg_api", **fields(**change))
    assert "esg_api" in str(info.value)
    assert "s3cret-value" not in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "localhost", "::1", "[::1]"])
def test_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "", None, "127.0.0.1.example.com"])
def test_not_loopback(host):
    assert not is_loopback(host)


def test_http_loopback_allowed():
    assert require_secure_url("http://[::1]:8080/", "x") == "http://[::1]:8080"
