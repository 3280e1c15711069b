"""HMAC-SHA256 deliveries, for providers that sign: the signature, the window and the dedupe key."""

from __future__ import annotations

import pytest

from clinicsync.errors import ValidationFailed
from clinicsync.integrations.webhook_spec import WebhookSpec
from clinicsync.sync.webhooks import WebhookRefused, dedupe_key, sign, verify

SIGNED = WebhookSpec.model_validate(
    {
        "verify": {
            "scheme": "hmac_sha256",
            "header": "X-Signature",
            "prefix": "sha256=",
            "timestamp_header": "X-Timestamp",
            "tolerance_seconds": 300,
        },
        "replay_key": ["X-Event-Id"],
        "changes": {"kind": "notify", "operation": "appointment.list_changed"},
    }
)
SECRET = "whsec-per-integration"
BODY = b'{"changed": ["apt-1"]}'
NOW = 1_800_000_000


def _headers(stamp: int = NOW, body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {
        "x-signature": "sha256=" + sign(secret, stamp, body),
        "x-timestamp": str(stamp),
        "x-event-id": "ev-1",
    }


def test_a_delivery_signed_with_the_integrations_secret_passes() -> None:
    verify(SIGNED, _headers(), BODY, SECRET, now=NOW + 10)


def test_a_signature_made_with_another_secret_is_refused() -> None:
    with pytest.raises(WebhookRefused, match="X-Signature: does not match"):
        verify(SIGNED, _headers(secret="someone-else"), BODY, SECRET, now=NOW)


def test_a_body_changed_after_signing_is_refused() -> None:
    with pytest.raises(WebhookRefused, match="does not match"):
        verify(SIGNED, _headers(), b'{"changed": ["apt-2"]}', SECRET, now=NOW)


def test_an_old_timestamp_is_refused_even_with_a_good_signature() -> None:
    with pytest.raises(WebhookRefused, match="outside the 300 s window"):
        verify(SIGNED, _headers(stamp=NOW - 301), BODY, SECRET, now=NOW)


def test_a_missing_or_unreadable_timestamp_is_refused() -> None:
    headers = _headers()
    headers["x-timestamp"] = "yesterday"
    with pytest.raises(WebhookRefused, match="X-Timestamp"):
        verify(SIGNED, headers, BODY, SECRET, now=NOW)


def test_no_secret_issued_means_nothing_is_accepted() -> None:
    with pytest.raises(WebhookRefused, match="no webhook secret"):
        verify(SIGNED, _headers(), BODY, None, now=NOW)


def test_the_event_id_is_the_replay_key_and_is_required() -> None:
    assert dedupe_key(SIGNED, _headers(), BODY) == "ev-1"
    with pytest.raises(ValidationFailed, match="X-Event-Id"):
        dedupe_key(SIGNED, {"x-timestamp": "1"}, BODY)
