"""The `webhooks:` section of a provider definition: how the provider proves a delivery is its
own, what makes a delivery unique (replay protection), and how a delivery names what changed.

Three proofs, as providers actually send them:

* ``hmac_sha256``: the provider signs ``{timestamp}.{body}`` with a secret clinicsync issues per
  integration; the signature and the timestamp ride in headers, and a delivery older than
  ``tolerance_seconds`` is refused;
* ``shared_key``: the provider repeats a credential it already holds (OpenDental API Events send
  the customer key in ``Authorization``), compared with the integration's stored credential;
* ``channel_token``: the provider echoes the token clinicsync gave it when opening a channel
  (Google's ``X-Goog-Channel-Token``), and says when the channel expires.

What changed:

* ``rows``: the body is a list of the provider's rows; a header names the table, and each table
  names the canonical get operation and the row's id field (the current record is read, so an
  out-of-order or repeated delivery applies the newest state);
* ``notify``: the delivery carries no data; the changes since the last applied one are listed
  with the canonical ``list_changed`` operation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clinicsync.integrations.sync_spec import SyncOperation


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookVerifySpec(_Strict):
    scheme: Literal["hmac_sha256", "shared_key", "channel_token"]
    header: str = Field(description="the header holding the signature, key or token")
    prefix: str = Field(default="", description="text before the value, e.g. 'sha256='")
    timestamp_header: str | None = Field(default=None, description="hmac_sha256: the signed Unix time")
    tolerance_seconds: int = Field(default=300, ge=1, le=86_400)
    secret: str | None = Field(default=None, description="shared_key: the credential's secret name")
    expires_header: str | None = Field(
        default=None,
        description="channel_token: when the channel ends (RFC 1123); later deliveries are refused",
    )


class WebhookTableSpec(_Strict):
    operation: SyncOperation
    id_field: str


class WebhookChangesSpec(_Strict):
    kind: Literal["rows", "notify"]
    type_header: str | None = Field(default=None, description="rows: the header naming the table")
    tables: dict[str, WebhookTableSpec] = Field(default_factory=dict)
    operation: SyncOperation | None = Field(default=None, description="notify: the list_changed operation")


class WebhookIgnoreSpec(_Strict):
    header: str
    values: list[str]


class WebhookSubscribeCall(_Strict):
    """One call of the definition that opens the provider's side (a subscription, a watch channel).

    String params may name ``{url}`` (where the provider posts), ``{token}`` (a channel token
    clinicsync issues for the call) and ``{channel_id}`` (a new id for the channel)."""

    function: str
    params: dict[str, str | int | bool] = Field(default_factory=dict)


class WebhookSpec(_Strict):
    verify: WebhookVerifySpec
    replay_key: list[str] = Field(
        default_factory=list,
        description="headers that together identify one delivery; empty: the body's SHA-256",
    )
    ignore: WebhookIgnoreSpec | None = Field(
        default=None, description="deliveries to acknowledge and drop (a channel's hello message)"
    )
    changes: WebhookChangesSpec
    subscribe: list[WebhookSubscribeCall] = Field(
        default_factory=list, description="calls that open deliveries to clinicsync, in order"
    )
