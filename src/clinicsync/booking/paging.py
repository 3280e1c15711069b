"""Opaque cursors for keyset paging: the sort key of the last row a page returned."""

from __future__ import annotations

import base64
import json
from typing import Any

from clinicsync.errors import ValidationFailed


def encode_cursor(*key: Any) -> str:
    raw = json.dumps([str(part) for part in key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> list[str]:
    """The key a cursor carries; anything this API did not hand out is a 422 naming `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("cursor", "is not a cursor this list returned") from None
    if not isinstance(key, list) or len(key) != parts or not all(isinstance(part, str) for part in key):
        raise ValidationFailed("cursor", "is not a cursor this list returned")
    return key
