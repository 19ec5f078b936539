"""Account Management client: every page of the account list, checked against the contract."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from include.esg_report.upstream import OAuthApi, UpstreamError

log = logging.getLogger(__name__)

ACCOUNT_STATUSES = frozenset({"active", "inactive", "closed"})


class BadListingError(UpstreamError):
    """Account Management answered something the contract does not allow."""


@dataclass(frozen=True, slots=True)
class Account:
    """One listed account."""

    account_id: str
    account_name: str
    status: str


def parse_page(body: bytes, page_number: int) -> tuple[list[Account], str | None]:
    """Validate one page of /v1/accounts into accounts and the next cursor."""
    where = f"Account Management page {page_number}"
    try:
        page = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadListingError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(page, dict) or not isinstance(page.get("data"), list) or "next_cursor" not in page:
        raise BadListingError(f"{where}: expected an object with 'data' (list) and 'next_cursor'")
    cursor = page["next_cursor"]
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise BadListingError(f"{where}: next_cursor must be a non-empty string or null")
    accounts = []
    for index, item in enumerate(page["data"]):
        if not isinstance(item, dict):
            raise BadListingError(f"{where}, item {index}: not an object")
        account_id, name, status = item.get("account_id"), item.get("account_name"), item.get("status")
        if not isinstance(account_id, str) or not 1 <= len(account_id) <= 64:
            raise BadListingError(f"{where}, item {index}: account_id must be a string of 1-64 characters")
        if not isinstance(name, str):
            raise BadListingError(f"{where}, account {account_id!r}: account_name must be a string")
        if status not in ACCOUNT_STATUSES:
            raise BadListingError(f"{where}, account {account_id!r}: unknown status {status!r}")
        accounts.append(Account(account_id, name, status))
    return accounts, cursor


class AccountsClient:
    """Lists accounts from Account Management, page by page."""

    def __init__(self, api: OAuthApi) -> None:
        self._api = api

    async def pages(self, status: str = "active") -> AsyncIterator[list[Account]]:
        """Yield each page of accounts (unfiltered: callers keep only active ones)."""
        cursor: str | None = None
        seen_cursors: set[str] = set()
        page_number = 0
        while True:
            page_number += 1
            params = {"status": status, "limit": str(self._api.settings.page_size)}
            if cursor is not None:
                params["cursor"] = cursor
            result = await self._api.get("/v1/accounts", params)
            accounts, cursor = parse_page(result.response.content, page_number)
            log.debug("page %d: %d accounts", page_number, len(accounts))
            yield accounts
            if cursor is None:
                return
            if cursor in seen_cursors:
                raise BadListingError(f"Account Management page {page_number}: cursor loop detected")
            seen_cursors.add(cursor)
