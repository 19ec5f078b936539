"""Opaque signed cursors and page slicing of the accounts listing (pure)."""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
# How many accounts of the previous page the repeat_accounts fault serves again.
REPEATED_PER_PAGE = 3


class CursorError(ValueError):
    """The cursor was not issued by this server or does not fit the request."""


@dataclass(frozen=True)
class Position:
    """Where the next page starts in a filtered listing."""

    status: str
    offset: int
    page: int


class CursorCodec:
    """Encodes positions as urlsafe base64 JSON plus an HMAC, so tampering is detected."""

    def __init__(self, seed: int) -> None:
        self._key = hashlib.sha256(f"esg-sandbox-cursor|{seed}".encode()).digest()

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()[:16]

    def encode(self, position: Position) -> str:
        """Return the opaque cursor of a position."""
        data = {"s": position.status, "o": position.offset, "p": position.page}
        payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=")
        return f"{payload.decode()}.{self._sign(payload)}"

    def decode(self, cursor: str) -> Position:
        """Return the position of a cursor; raise CursorError if it is invalid or tampered with."""
        payload_text, sep, signature = cursor.partition(".")
        try:
            payload = payload_text.encode("ascii")
        except UnicodeEncodeError:
            raise CursorError("invalid cursor") from None
        if not sep or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise CursorError("invalid cursor")
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
            position = Position(str(data["s"]), int(data["o"]), int(data["p"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise CursorError("invalid cursor") from None
        if position.offset < 1 or position.page < 1:
            raise CursorError("invalid cursor")
        return position


def page_size(limit: int, page: int, short_pages: bool) -> int:
    """Return how many items a page holds; short pages hold 40-69 % of limit (at least 1)."""
    if not short_pages or limit <= 1:
        return limit
    return max(1, min(limit - 1, limit * (40 + (page * 37) % 30) // 100))


def slice_page(items: list, offset: int, page: int, limit: int, *, short_pages: bool, repeat: bool) -> tuple[list, int]:
    """Return (page items, next offset) for a page starting at offset."""
    size = page_size(limit, page, short_pages)
    repeated = min(REPEATED_PER_PAGE, offset, size - 1) if repeat and page > 0 else 0
    fresh = items[offset : offset + size - repeated]
    return items[offset - repeated : offset] + fresh, offset + len(fresh)
