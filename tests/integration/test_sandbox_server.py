"""Integration tests of the upstream sandbox, run as a real server process."""

import base64
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from include.esg_sandbox.dataset import ESG_FIELDS, HARD_ACTIVE_IDS, Dataset, normal_rating, partial_rating
from include.esg_sandbox.dataset import invalid_rating as make_invalid_rating
from include.esg_sandbox.faultplan import ESG_FAULT_KINDS, FaultSpec, build_plan, expected_status
from include.esg_sandbox.oracle import expected_report
from include.esg_sandbox.process import PROJECT_ROOT, SandboxProcess, run_sandbox

AS_OF = "2026-12-04"
CLIENT = ("esg-local", "esg-local-secret")
# A client whose id and secret need form-urlencoding inside HTTP Basic (RFC 6749 2.3.1).
ODD_CLIENT = ("svc user", "p@ss w:rd%+")
MAIN_OPTIONS: dict = {
    "accounts": 60,
    "inactive": 8,
    "seed": 11,
    "rate_limit": 1000,
    "trickle_seconds": 1.5,
    "faults": ",".join(f"{kind}=0.02" for kind in ESG_FAULT_KINDS) + ",transient_5xx=0.04,rate_429=0.04",
    "clients": [":".join(CLIENT), ":".join(ODD_CLIENT)],
}
LISTING_OPTIONS: dict = {
    "accounts": 40,
    "inactive": 12,
    "seed": 5,
    "rate_limit": 3,
    "token_lifetime": 1,
    "faults": "repeat_accounts=1,inactive_in_active=1,short_pages=1,accounts_5xx=1",
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    """The main server: every ESG fault kind, no listing faults, a generous rate limit."""
    with run_sandbox(**MAIN_OPTIONS) as sb:
        yield sb


@pytest.fixture(scope="module")
def listing_sandbox() -> Iterator[SandboxProcess]:
    """A server with every listing fault, 1 s tokens and a rate limit of 3 per second."""
    with run_sandbox(**LISTING_OPTIONS) as sb:
        yield sb


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    """The main server's dataset, rebuilt in-process (it is deterministic)."""
    return Dataset(MAIN_OPTIONS["accounts"], MAIN_OPTIONS["inactive"], MAIN_OPTIONS["seed"])


@pytest.fixture(scope="module")
def plan(dataset: Dataset) -> dict[str, str]:
    """The main server's fault plan: account_id -> kind."""
    return build_plan(FaultSpec.parse(MAIN_OPTIONS["faults"]), dataset).esg


@pytest.fixture
def client(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the main server."""
    with httpx.Client(base_url=sandbox.url, trust_env=False, timeout=30) as c:
        yield c


def rfc_basic(client_id: str, secret: str) -> dict[str, str]:
    """Return an HTTP Basic header built as RFC 6749 2.3.1 says: form-urlencode, join, base64."""
    joined = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return {"Authorization": "Basic " + base64.b64encode(joined.encode()).decode()}


def get_token(client: httpx.Client, scope: str | None = None, auth: tuple[str, str] = CLIENT) -> str:
    """Fetch a token with HTTP Basic client authentication."""
    data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
    response = client.post("/oauth2/token", data=data, headers=rfc_basic(*auth))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def esg_path(account_id: str, as_of: str | None = AS_OF) -> str:
    """Return the ESG path of an account, the id percent-encoded as the contract requires."""
    path = f"/v1/accounts/{quote(account_id, safe='')}/esg-rating"
    return path + (f"?as_of={as_of}" if as_of else "")


def only(plan: dict[str, str], kind: str) -> list[str]:
    """Return the accounts with a fault kind, sorted."""
    accounts = sorted(a for a, k in plan.items() if k == kind)
    assert accounts, kind
    return accounts


def healthy_accounts(dataset: Dataset, plan: dict[str, str]) -> list[str]:
    """Return plain active accounts without a fault."""
    return [a for a in dataset.active_ids if a not in plan and a.startswith("AC0")]


# --- process and CLI ------------------------------------------------------------------------


def test_listening_line_and_healthz(sandbox: SandboxProcess, client: httpx.Client) -> None:
    """The server prints exactly one listening line and answers /healthz."""
    lines = (sandbox.workdir / "stdout.log").read_text().splitlines()
    assert lines == [f"esg-sandbox listening on http://127.0.0.1:{sandbox.port}"]
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_bin_wrapper_runs_from_any_directory_and_stops_cleanly(tmp_path: Path) -> None:
    """bin/esg-sandbox works from another directory and exits 0 on SIGTERM."""
    port_file = tmp_path / "port"
    wrapper = PROJECT_ROOT / "bin" / "esg-sandbox"
    process = subprocess.Popen(
        [str(wrapper), "--accounts", "5", "--port-file", str(port_file)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == f"esg-sandbox listening on http://127.0.0.1:{port_file.read_text().strip()}"
        assert httpx.get(line.rsplit(" ", 1)[1] + "/healthz", trust_env=False).text == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_start_failure_reports_stderr() -> None:
    """A server that cannot start raises with its stderr; unknown options raise."""
    with pytest.raises(RuntimeError, match="unknown fault kind 'bogus'"):
        SandboxProcess.start(faults="bogus=0.1")
    with pytest.raises(TypeError, match="unknown sandbox option"):
        SandboxProcess.start(colour="blue")


# --- token endpoint -------------------------------------------------------------------------


def test_token_with_basic_auth(client: httpx.Client) -> None:
    """Basic client authentication issues a Bearer token with both scopes."""
    response = client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=CLIENT)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "accounts:read esg:read"
    assert len(body["access_token"]) >= 20
    assert response.headers["cache-control"] == "no-store"
    assert get_token(client) != body["access_token"]


def test_basic_credentials_are_form_urlencoded(client: httpx.Client) -> None:
    """Basic credentials are form-urlencoded before base64 (RFC 6749 2.3.1)."""
    form = {"grant_type": "client_credentials"}
    response = client.post("/oauth2/token", data=form, headers=rfc_basic(*ODD_CLIENT))
    assert response.status_code == 200, response.text
    # Without the encoding '+' reads as a space and '%+' is no valid escape: the secret does not match.
    assert client.post("/oauth2/token", data=form, auth=ODD_CLIENT).status_code == 401


def test_token_with_form_credentials_and_scope(client: httpx.Client) -> None:
    """Form-field client authentication and a narrower scope work."""
    data = {
        "grant_type": "client_credentials",
        "client_id": ODD_CLIENT[0],
        "client_secret": ODD_CLIENT[1],
        "scope": "esg:read",
    }
    response = client.post("/oauth2/token", data=data)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "esg:read"


@pytest.mark.parametrize(
    "auth", [("esg-local", "wrong"), ("nobody", "esg-local-secret"), None], ids=["secret", "client", "none"]
)
def test_token_wrong_credentials(client: httpx.Client, auth: tuple[str, str] | None) -> None:
    """Wrong or missing client credentials get 401 invalid_client."""
    response = client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": ""}, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "esg:read esg:write"}, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "admin"}, "invalid_scope"),
        ({"grant_type": "client_credentials", "client_id": CLIENT[0]}, "invalid_request"),
    ],
)
def test_token_bad_requests(client: httpx.Client, data: dict[str, str], error: str) -> None:
    """Bad grant types, missing grant_type, bad scopes and two auth methods get 400."""
    response = client.post("/oauth2/token", data=data, auth=CLIENT)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_token_requires_a_form_body(client: httpx.Client) -> None:
    """A JSON body is not a token request."""
    response = client.post("/oauth2/token", json={"grant_type": "client_credentials"}, auth=CLIENT)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic ZXNnOmVzZw=="}],
    ids=["missing", "unknown", "basic"],
)
def test_api_rejects_missing_or_unknown_tokens(client: httpx.Client, dataset: Dataset, headers: dict[str, str]) -> None:
    """Missing or unknown bearer tokens get 401 with a Bearer challenge."""
    for path in ("/v1/accounts", esg_path(dataset.active_ids[0])):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert "x-ratelimit-limit" in response.headers and "x-ratelimit-remaining" in response.headers


def test_scope_mismatch_is_403(client: httpx.Client, dataset: Dataset) -> None:
    """A token without the endpoint's scope gets 403."""
    response = client.get("/v1/accounts", headers=bearer(get_token(client, "esg:read")))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    response = client.get(esg_path(dataset.active_ids[0]), headers=bearer(get_token(client, "accounts:read")))
    assert response.status_code == 403
    assert response.headers["x-ratelimit-limit"] == "1000"


# --- accounts listing -----------------------------------------------------------------------


def walk(client: httpx.Client, token: str, status: str | None, limit: int) -> list[list[dict]]:
    """Follow next_cursor to the end and return the pages (retrying 503 once)."""
    pages: list[list[dict]] = []
    params: dict[str, str | int] = {"limit": limit} | ({"status": status} if status else {})
    while True:
        response = client.get("/v1/accounts", params=params, headers=bearer(token))
        if response.status_code == 503:
            response = client.get("/v1/accounts", params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "next_cursor"}
        pages.append(body["data"])
        if body["next_cursor"] is None:
            return pages
        params["cursor"] = body["next_cursor"]


def test_pagination_and_status_filter(client: httpx.Client, dataset: Dataset) -> None:
    """Cursor pagination returns the shuffled listing; the status filter holds."""
    token = get_token(client, "accounts:read")
    everything = [a for page in walk(client, token, None, 7) for a in page]
    assert [a["account_id"] for a in everything] == [a.account_id for a in dataset.accounts]
    assert everything[0] == dataset.accounts[0].as_dict()
    ids = [a["account_id"] for a in everything]
    assert ids != sorted(ids), "the listing order is shuffled, the client must sort"
    pages = walk(client, token, "active", 7)
    assert all(len(page) == 7 for page in pages[:-1])
    active = [a for page in pages for a in page]
    assert sorted(a["account_id"] for a in active) == dataset.active_ids
    assert {a["status"] for a in active} == {"active"}
    inactive = [a for page in walk(client, token, "inactive", 1000) for a in page]
    assert len(inactive) == 8 and {a["status"] for a in inactive} <= {"inactive", "closed"}
    assert len(walk(client, token, None, 1000)) == 1


def test_default_limit_is_500() -> None:
    """Without limit a page holds 500 accounts."""
    with (
        run_sandbox(accounts=520, inactive=0, faults="none") as big,
        httpx.Client(base_url=big.url, trust_env=False) as c,
    ):
        token = get_token(c)
        first = c.get("/v1/accounts", headers=bearer(token)).json()
        assert len(first["data"]) == 500 and first["next_cursor"]
        second = c.get("/v1/accounts", params={"cursor": first["next_cursor"]}, headers=bearer(token)).json()
        assert len(second["data"]) == 20 and second["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "abc"},
        {"limit": "5.0"},
        {"limit": "-1"},
        {"limit": ""},
        {"status": "closed"},
        {"status": "ACTIVE"},
        {"cursor": "garbage"},
        {"cursor": ""},
    ],
)
def test_listing_rejects_bad_parameters(client: httpx.Client, params: dict[str, str]) -> None:
    """Bad limit, status or cursor values get 400."""
    response = client.get("/v1/accounts", params=params, headers=bearer(get_token(client)))
    assert response.status_code == 400, params


def test_listing_rejects_tampered_or_foreign_cursors(client: httpx.Client) -> None:
    """Forged, cut or mismatched cursors get 400."""
    token = get_token(client)
    cursor = client.get("/v1/accounts", params={"limit": 5}, headers=bearer(token)).json()["next_cursor"]
    payload, _, signature = cursor.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["o"] = 0
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=") + "." + signature
    for params in ({"cursor": forged}, {"cursor": cursor[:-2]}, {"cursor": cursor, "status": "active"}):
        assert client.get("/v1/accounts", params=params, headers=bearer(token)).status_code == 400
    assert client.get("/v1/accounts", params={"cursor": cursor}, headers=bearer(token)).status_code == 200


# --- ESG ratings ----------------------------------------------------------------------------


def test_hard_ids_round_trip(client: httpx.Client, dataset: Dataset) -> None:
    """Every hard id works when percent-encoded."""
    token = get_token(client, "esg:read")
    for account_id in HARD_ACTIVE_IDS:
        response = client.get(esg_path(account_id), headers=bearer(token))
        assert response.status_code == 200, account_id
        assert response.json()["account_id"] == account_id
        assert response.content == normal_rating(11, account_id, date.fromisoformat(AS_OF)).body()


def test_esg_not_found_bad_as_of_and_unencoded_slash(client: httpx.Client, dataset: Dataset) -> None:
    """Unknown ids and unencoded slashes get 404; bad as_of gets 400."""
    token = get_token(client, "esg:read")
    assert client.get(esg_path("AC999999999"), headers=bearer(token)).status_code == 404
    assert client.get("/v1/accounts/AC/2024/000017/esg-rating", headers=bearer(token)).status_code == 404
    account_id = healthy_accounts(dataset, {})[0]
    for bad in ("2026-02-30", "20261204", "yesterday"):
        assert client.get(esg_path(account_id, bad), headers=bearer(token)).status_code == 400


def test_as_of_defaults_to_today_utc(client: httpx.Client, dataset: Dataset, plan: dict[str, str]) -> None:
    """Without as_of the rating is as of today (UTC)."""
    account_id = healthy_accounts(dataset, plan)[0]
    response = client.get(esg_path(account_id, None), headers=bearer(get_token(client)))
    today = datetime.now(UTC).date()
    assert response.content == normal_rating(11, account_id, today).body()


def test_served_ratings_and_oracle_agree_with_the_generator(
    sandbox: SandboxProcess, client: httpx.Client, dataset: Dataset, plan: dict[str, str]
) -> None:
    """Served bodies, plan and oracle match the in-process generator."""
    token = get_token(client)
    as_of = date.fromisoformat(AS_OF)
    for account_id in healthy_accounts(dataset, plan)[:10]:
        response = client.get(esg_path(account_id), headers=bearer(token))
        assert response.headers["content-type"] == "application/json"
        assert response.content == normal_rating(11, account_id, as_of).body()
    oracle = sandbox.expected(AS_OF)
    full_plan = build_plan(FaultSpec.parse(MAIN_OPTIONS["faults"]), dataset)
    assert oracle == expected_report(dataset, full_plan, as_of)
    assert sandbox.plan()["esg"] == dict(sorted(plan.items()))
    for row in oracle["rows"]:
        assert row[-1] == expected_status(plan.get(row[0]))


def fetch(client: httpx.Client, account_id: str, token: str, calls: int) -> list[httpx.Response]:
    """Call the ESG endpoint of an account a number of times."""
    return [client.get(esg_path(account_id), headers=bearer(token)) for _ in range(calls)]


def test_transient_5xx_then_success(sandbox: SandboxProcess, client: httpx.Client, plan: dict[str, str]) -> None:
    """transient_5xx: a 500 and a 503 (Retry-After: 1), then the rating; reset re-arms."""
    sandbox.reset()
    token = get_token(client)
    for account_id in only(plan, "transient_5xx"):
        first, second, third = fetch(client, account_id, token, 3)
        assert {first.status_code, second.status_code} == {500, 503}
        unavailable = first if first.status_code == 503 else second
        assert unavailable.headers["retry-after"] == "1"
        assert third.status_code == 200 and third.json()["account_id"] == account_id
    sandbox.reset()
    assert fetch(client, only(plan, "transient_5xx")[0], token, 1)[0].status_code in (500, 503)


def test_injected_429_uses_both_retry_after_forms(
    sandbox: SandboxProcess, client: httpx.Client, plan: dict[str, str]
) -> None:
    """rate_429: one 429 with delay-seconds or HTTP-date, counted as injected."""
    sandbox.reset()
    token = get_token(client)
    forms = set()
    for account_id in only(plan, "rate_429"):
        first, second = fetch(client, account_id, token, 2)
        assert first.status_code == 429 and second.status_code == 200
        retry_after = first.headers["retry-after"]
        if retry_after.isdigit():
            forms.add("seconds")
            assert retry_after == "1"
        else:
            forms.add("date")
            delay = (parsedate_to_datetime(retry_after) - datetime.now(UTC)).total_seconds()
            assert 0 <= delay <= 3
    assert forms == {"seconds", "date"}
    stats = sandbox.stats()
    assert (stats["injected_429"], stats["rate_limited_429"]) == (2, 0)
    assert stats["status_counts"] == {"200": 2, "429": 2}


def test_trickle_sends_the_body_slowly_once(
    sandbox: SandboxProcess, client: httpx.Client, plan: dict[str, str]
) -> None:
    """trickle: the first body arrives over trickle_seconds, later ones at once."""
    sandbox.reset()
    token = get_token(client)
    account_id = only(plan, "trickle")[0]
    started = time.monotonic()
    with client.stream("GET", esg_path(account_id), headers=bearer(token)) as response:
        headers_after = time.monotonic() - started
        body = response.read()
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert headers_after < 1.0 and 1.3 <= elapsed < 5
    assert body == normal_rating(11, account_id, date.fromisoformat(AS_OF)).body()
    started = time.monotonic()
    assert fetch(client, account_id, token, 1)[0].content == body
    assert time.monotonic() - started < 0.5
    assert sandbox.stats(per_account=True)["per_account"][account_id] == {"calls": 2, "ok": 2}


def test_revoked_token_once_then_success(sandbox: SandboxProcess, client: httpx.Client, plan: dict[str, str]) -> None:
    """revoked_token: one 401, then the same token works."""
    sandbox.reset()
    token = get_token(client)
    account_id = only(plan, "revoked_token")[0]
    first, second = fetch(client, account_id, token, 2)
    assert first.status_code == 401 and 'error="invalid_token"' in first.headers["www-authenticate"]
    assert second.status_code == 200


def test_permanent_faults(sandbox: SandboxProcess, client: httpx.Client, plan: dict[str, str]) -> None:
    """always_401, always_5xx, not_found, bad_request and forbidden never recover."""
    sandbox.reset()
    token = get_token(client)
    for kind, status in (
        ("always_401", 401),
        ("always_5xx", 503),
        ("not_found", 404),
        ("bad_request", 400),
        ("forbidden", 403),
    ):
        account_id = only(plan, kind)[0]
        responses = fetch(client, account_id, token, 2) + fetch(client, account_id, get_token(client), 1)
        assert [r.status_code for r in responses] == [status] * 3, kind
        assert all("x-ratelimit-remaining" in r.headers for r in responses)
    per_account = sandbox.stats(per_account=True)["per_account"]
    assert per_account[only(plan, "always_5xx")[0]] == {"calls": 3, "ok": 0}


def test_unusable_200_bodies(client: httpx.Client, dataset: Dataset, plan: dict[str, str]) -> None:
    """html, truncated, not_json_object and wrong_id answer 200 with unusable bodies."""
    token = get_token(client)
    as_of = date.fromisoformat(AS_OF)

    html = fetch(client, only(plan, "html")[0], token, 1)[0]
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")

    account_id = only(plan, "truncated")[0]
    truncated = fetch(client, account_id, token, 1)[0]
    assert truncated.status_code == 200 and truncated.headers["content-type"] == "application/json"
    assert int(truncated.headers["content-length"]) == len(truncated.content)
    assert normal_rating(11, account_id, as_of).body().startswith(truncated.content)
    with pytest.raises(ValueError):
        json.loads(truncated.content)

    shaped = fetch(client, only(plan, "not_json_object")[0], token, 1)[0]
    assert shaped.status_code == 200 and isinstance(shaped.json(), list | str)

    account_id = only(plan, "wrong_id")[0]
    wrong = fetch(client, account_id, token, 1)[0].json()
    assert wrong["account_id"] != account_id and wrong["account_id"] in dataset.active_ids


def test_invalid_and_partial_bodies(sandbox: SandboxProcess, client: httpx.Client, plan: dict[str, str]) -> None:
    """invalid and partial serve the generator's broken bodies."""
    token = get_token(client)
    as_of = date.fromisoformat(AS_OF)
    account_id = only(plan, "invalid")[0]
    invalid = fetch(client, account_id, token, 1)[0]
    assert invalid.content == make_invalid_rating(11, account_id, as_of).body()
    assert set(json.loads(invalid.content, parse_constant=str)) == {"account_id", *ESG_FIELDS}
    account_id = only(plan, "partial")[0]
    partial = fetch(client, account_id, token, 1)[0]
    assert partial.content == partial_rating(11, account_id, as_of).body()
    row = next(r for r in sandbox.expected(AS_OF)["rows"] if r[0] == account_id)
    assert row[-1] == "Partial" and 1 <= row[2:9].count("") <= 4


def test_slow_answers_after_two_seconds(client: httpx.Client, plan: dict[str, str]) -> None:
    """slow: the rating comes after an extra 2 s."""
    token = get_token(client)
    started = time.monotonic()
    response = fetch(client, only(plan, "slow")[0], token, 1)[0]
    assert response.status_code == 200 and 2.0 <= time.monotonic() - started < 4


# --- rate limit, stats, reset, runtime config -----------------------------------------------


def test_sliding_window_rate_limit(
    sandbox: SandboxProcess, client: httpx.Client, dataset: Dataset, plan: dict[str, str]
) -> None:
    """Exceeding the limit gets 429 with Retry-After and X-RateLimit-* headers."""
    account_id = healthy_accounts(dataset, plan)[0]
    token, other = get_token(client), get_token(client, auth=ODD_CLIENT)
    sandbox.configure(rate_limit=5)
    sandbox.reset()
    try:
        started = time.monotonic()
        responses = fetch(client, account_id, token, 6)
        assert time.monotonic() - started < 0.9, "the test needs the six calls inside one second"
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["4", "3", "2", "1", "0", "0"]
        assert {r.headers["x-ratelimit-limit"] for r in responses} == {"5"}
        assert responses[-1].headers["retry-after"] == "1"
        assert fetch(client, account_id, other, 1)[0].status_code == 200, "windows are per client"
        time.sleep(max(0.0, started + 1.05 - time.monotonic()))
        assert fetch(client, account_id, token, 1)[0].status_code == 200
        stats = sandbox.stats(per_account=True)
        assert (stats["rate_limited_429"], stats["injected_429"]) == (1, 0)
        assert stats["esg_requests"] == 8 and stats["status_counts"] == {"200": 7, "429": 1}
        assert stats["max_requests_in_any_second"] == 7
        assert stats["per_account"] == {account_id: {"calls": 8, "ok": 7}}
    finally:
        sandbox.configure(rate_limit=1000)


def test_rate_check_happens_before_the_latency_sleep(
    sandbox: SandboxProcess, dataset: Dataset, plan: dict[str, str]
) -> None:
    """The rate check happens on arrival, before the latency sleep."""
    account_id = healthy_accounts(dataset, plan)[1]
    sandbox.configure(rate_limit=2, latency_ms=800, latency_jitter_ms=0)
    sandbox.reset()

    def timed_call(token: str) -> tuple[int, float]:
        with httpx.Client(base_url=sandbox.url, trust_env=False) as c:
            started = time.monotonic()
            status = c.get(esg_path(account_id), headers=bearer(token)).status_code
            return status, time.monotonic() - started

    try:
        with httpx.Client(base_url=sandbox.url, trust_env=False) as c:
            token = get_token(c)
        with ThreadPoolExecutor(3) as pool:
            results = sorted(pool.map(timed_call, [token] * 3))
        assert [status for status, _ in results] == [200, 200, 429]
        assert all(elapsed >= 0.8 for _, elapsed in results[:2])
        assert results[2][1] < 0.6
    finally:
        config = sandbox.configure(rate_limit=1000, latency_ms=0)
    assert (config["rate_limit"], config["latency_ms"]) == (1000, 0)


def test_stats_and_reset(sandbox: SandboxProcess, client: httpx.Client, dataset: Dataset) -> None:
    """Stats count requests by endpoint and status; reset clears them."""
    sandbox.reset()
    before = time.time()
    token = get_token(client)
    client.get("/v1/accounts", headers=bearer(token))
    fetch(client, "AC999999999", token, 1)
    stats = sandbox.stats()
    assert stats["token_requests"] == 1 and stats["accounts_requests"] == 1
    assert stats["esg_requests"] == 1 and stats["status_counts"] == {"404": 1}
    assert before - 1 <= stats["first_request_at"] <= stats["last_request_at"] <= time.time() + 1
    assert "per_account" not in stats
    sandbox.reset()
    cleared = sandbox.stats(per_account=True)
    assert cleared["esg_requests"] == 0 and cleared["first_request_at"] is None
    assert cleared["per_account"] == {} and cleared["max_requests_in_any_second"] == 0


def test_runtime_config(sandbox: SandboxProcess, client: httpx.Client) -> None:
    """POST /_sandbox/config validates and applies latency and rate settings."""
    config = client.get("/_sandbox/config").json()
    assert config["accounts"] == 60 and config["seed"] == 11 and "esg-local" in config["clients"]
    assert "esg-local-secret" not in json.dumps(config)
    for bad in ({"rate_limit": 0}, {"latency_ms": "fast"}, {"accounts": 5}):
        assert client.post("/_sandbox/config", json=bad).status_code == 400
    updated = sandbox.configure(latency_ms=250, latency_jitter_ms=0)
    try:
        assert updated["latency_ms"] == 250
        started = time.monotonic()
        fetch(client, "AC999999999", get_token(client), 1)
        assert time.monotonic() - started >= 0.25
    finally:
        sandbox.configure(latency_ms=0)


# --- listing faults and token expiry (second server) -----------------------------------------


def test_expired_token_is_rejected(listing_sandbox: SandboxProcess) -> None:
    """A token past its lifetime gets 401 invalid_token."""
    with httpx.Client(base_url=listing_sandbox.url, trust_env=False) as c:
        response = c.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=CLIENT)
        assert response.json()["expires_in"] == 1
        token = response.json()["access_token"]
        assert c.get("/v1/accounts", params={"limit": 1}, headers=bearer(token)).status_code == 200
        time.sleep(1.1)
        expired = c.get("/v1/accounts", params={"limit": 1}, headers=bearer(token))
        assert expired.status_code == 401
        assert expired.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_listing_faults(listing_sandbox: SandboxProcess) -> None:
    """Listing faults: one 503, short pages, repeats and strays; filtering recovers the active set."""
    listing_sandbox.reset()
    data = Dataset(LISTING_OPTIONS["accounts"], LISTING_OPTIONS["inactive"], LISTING_OPTIONS["seed"])
    with httpx.Client(base_url=listing_sandbox.url, trust_env=False) as c:
        token = get_token(c)
        first = c.get("/v1/accounts", params={"status": "active", "limit": 10}, headers=bearer(token)).json()
        params = {"status": "active", "limit": 10, "cursor": first["next_cursor"]}
        failed = c.get("/v1/accounts", params=params, headers=bearer(token))
        assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
        assert c.get("/v1/accounts", params=params, headers=bearer(token)).status_code == 200
        pages = walk(c, token, "active", 10)
        assert listing_sandbox.stats()["accounts_status_counts"] == {"200": 2 + len(pages), "503": 1}
        rating = c.get(esg_path(data.active_ids[0]), headers=bearer(token))
        assert rating.headers["x-ratelimit-limit"] == "3"
    assert all(len(page) < 10 for page in pages), "short pages"
    listed = [a for page in pages for a in page]
    ids = [a["account_id"] for a in listed]
    assert len(ids) > len(set(ids)), "repeated accounts"
    assert {a["status"] for a in listed} - {"active"}, "inactive/closed accounts in the active listing"
    for account in listed:
        assert account["status"] == data.by_id[account["account_id"]].status
    active = {a["account_id"] for a in listed if a["status"] == "active"}
    assert sorted(active) == data.active_ids
    assert [r[0] for r in listing_sandbox.expected(AS_OF)["rows"]] == data.active_ids
