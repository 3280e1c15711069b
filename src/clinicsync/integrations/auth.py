"""Authentication strategies, chosen by a definition's `auth.type`.

A strategy adds credentials to each request and, when the provider answers with one of
the re-authentication statuses, may renew what it holds (a token, a session cookie) so
the executor can send the request once more. Secret values come from the decrypted
credential and live only in memory.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from clinicsync.integrations.definitions import AuthSpec
from clinicsync.integrations.errors import IntegrationError

SecretUpdate = Callable[[dict[str, str]], Awaitable[None]]


def _required(secrets: Mapping[str, str], field: str, auth_type: str) -> str:
    value = secrets.get(field)
    if not value:
        raise IntegrationError(
            "auth_failed", f"the credential has no {field!r}, which {auth_type} authentication needs"
        )
    return value


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _provider_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        for key in ("error_description", "message", "error", "fault"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


class AuthStrategy:
    reauth_statuses: frozenset[int] = frozenset()

    def __init__(self, spec: AuthSpec, secrets: Mapping[str, str], base_url: str) -> None:
        self.spec = spec
        self.secrets = dict(secrets)
        self.base_url = base_url
        self.reauth_statuses = frozenset(spec.reauth_statuses)

    async def apply(self, request: httpx.Request, client: httpx.AsyncClient) -> None:
        return None

    async def renew(self, client: httpx.AsyncClient, rejected: httpx.Request) -> bool:
        """Renew after ``rejected`` drew a re-authentication status; True when sending again may succeed.

        Strategies compare the credential ``rejected`` carried with the current one, so that
        callers whose requests failed together share one renewal, however late they arrive.
        """
        return False

    def absolute(self, url: str) -> str:
        return url if url.startswith(("http://", "https://")) else self.base_url + "/" + url.lstrip("/")


class NoAuth(AuthStrategy):
    pass


class ApiKeyAuth(AuthStrategy):
    async def apply(self, request: httpx.Request, client: httpx.AsyncClient) -> None:
        key = _required(self.secrets, self.spec.key_field, "api_key")
        if self.spec.location == "query":
            request.url = request.url.copy_merge_params({self.spec.name: key})
        else:
            request.headers[self.spec.name] = f"{self.spec.prefix}{key}"


class BearerAuth(AuthStrategy):
    async def apply(self, request: httpx.Request, client: httpx.AsyncClient) -> None:
        request.headers["Authorization"] = "Bearer " + _required(
            self.secrets, self.spec.token_field, "bearer"
        )


class BasicAuth(AuthStrategy):
    async def apply(self, request: httpx.Request, client: httpx.AsyncClient) -> None:
        username = _required(self.secrets, self.spec.username_field, "basic")
        # Cliniko-style keys are the username with an empty password.
        password = self.secrets.get(self.spec.password_field, "") if self.spec.password_field else ""
        request.headers["Authorization"] = _basic_header(username, password or "")


class OpenDentalAuth(AuthStrategy):
    """OpenDental's single header: `Authorization: ODFHIR {DeveloperKey}/{CustomerKey}`."""

    async def apply(self, request: httpx.Request, client: httpx.AsyncClient) -> None:
        developer = _required(self.secrets, self.spec.developer_key_field, "odfhir")
        customer = _required(self.secrets, self.spec.customer_key_field, "odfhir")
        request.headers["Authorization"] = f"ODFHIR {developer}/{customer}"


@dataclass
class TokenGrant:
    """What a token endpoint answered: an access token, its lifetime, maybe a new refresh token."""

    access_token: str
    expires_in: float
    refresh_token: str | None = None


class SharedTokens(Protocol):
    """Where processes share one access token and take turns refreshing it (see tokens.py)."""

    async def obtain(
        self, stale: str | None, grant: Callable[[str], Awaitable[TokenGrant]]
    ) -> tuple[str, float]: ...


class OAuth2Auth(AuthStrategy):
    """Client-credentials or refresh-token grants with a cached access token.

    The token is renewed `refresh_margin_seconds` before it expires, and once more when
    the provider rejects it. A lock makes concurrent callers share one renewal. With
    `shared_tokens` (a database-backed store), the access token and the refresh are shared
    by every process too, and a rotated refresh token is stored in the same step as the new
    access token; without it, a rotated refresh token is handed to `on_secret_update` so it
    is stored (encrypted) before the old one stops working.
    """

    def __init__(
        self,
        spec: AuthSpec,
        secrets: Mapping[str, str],
        base_url: str,
        on_secret_update: SecretUpdate | None = None,
        shared_tokens: SharedTokens | None = None,
    ) -> None:
        super().__init__(spec, secrets, base_url)
        self.on_secret_update = on_secret_update
        self.shared_tokens = shared_tokens
        self.access_token: str | None = None
        self.expires_at = 0.0
        self.token_requests = 0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return (
            self.access_token is not None
            and time.monotonic() < self.expires_at - self.spec.refresh_margin_seconds
        )

    async def apply(self, request: httpx.Request, client: httpx.AsyncClient) -> None:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._renew(client, stale=None)
        request.headers["Authorization"] = f"Bearer {self.access_token}"

    async def renew(self, client: httpx.AsyncClient, rejected: httpx.Request) -> bool:
        async with self._lock:
            if rejected.headers.get("Authorization") == f"Bearer {self.access_token}":
                await self._renew(client, stale=self.access_token)
        return True

    async def _renew(self, client: httpx.AsyncClient, stale: str | None) -> None:
        if self.shared_tokens is not None and self.spec.type == "oauth2_refresh_token":
            token, expires_at = await self.shared_tokens.obtain(
                stale, lambda refresh: self.grant(client, refresh)
            )
            self.access_token = token
            self.expires_at = time.monotonic() + (expires_at - time.time())
            return
        refresh = (
            _required(self.secrets, self.spec.refresh_token_field, self.spec.type)
            if self.spec.type == "oauth2_refresh_token"
            else None
        )
        grant = await self.grant(client, refresh)
        self.access_token = grant.access_token
        self.expires_at = time.monotonic() + grant.expires_in
        field = self.spec.refresh_token_field
        if grant.refresh_token and grant.refresh_token != self.secrets.get(field):
            self.secrets[field] = grant.refresh_token
            if self.on_secret_update is not None:
                await self.on_secret_update({field: grant.refresh_token})

    async def grant(self, client: httpx.AsyncClient, refresh_token: str | None) -> TokenGrant:
        """Ask the token endpoint: the refresh-token grant with `refresh_token`, else client credentials."""
        form: dict[str, str] = {}
        if refresh_token is not None:
            form["grant_type"] = "refresh_token"
            form["refresh_token"] = refresh_token
        else:
            form["grant_type"] = "client_credentials"
        if self.spec.scope:
            form["scope"] = self.spec.scope
        return await token_request(
            client, self.spec, self.secrets, self.absolute(self.spec.token_url or ""), form, self
        )


async def token_request(
    client: httpx.AsyncClient,
    spec: AuthSpec,
    secrets: Mapping[str, str],
    url: str,
    form: dict[str, str],
    counter: OAuth2Auth | None = None,
) -> TokenGrant:
    """POST a grant to the token endpoint with the client's credentials; errors are classified.

    A refused grant is `auth_failed` with `details.oauth_error` (``invalid_grant`` when the
    person's consent was revoked or the refresh token is no longer valid).
    """
    client_id = _required(secrets, spec.client_id_field, spec.type)
    client_secret = _required(secrets, spec.client_secret_field, spec.type)
    headers = {"Accept": "application/json"}
    form = dict(form)
    if spec.client_auth == "basic":
        headers["Authorization"] = _basic_header(client_id, client_secret)
    else:
        form["client_id"] = client_id
        form["client_secret"] = client_secret
    if counter is not None:
        counter.token_requests += 1
    try:
        if spec.token_params_in == "query":
            response = await client.post(url, params=form, headers=headers)
        else:
            response = await client.post(url, data=form, headers=headers)
    except httpx.TimeoutException:
        # The API request itself was never sent, so the call may be made again.
        raise IntegrationError(
            "timeout", "the token endpoint did not answer in time", request_not_sent=True
        ) from None
    except httpx.TransportError as exc:
        raise IntegrationError(
            "unavailable", f"cannot reach the token endpoint: {type(exc).__name__}", request_not_sent=True
        ) from None
    if response.status_code >= 500:
        raise IntegrationError(
            "unavailable",
            "the token endpoint failed",
            provider_status=response.status_code,
            request_not_sent=True,
        )
    if response.status_code >= 400:
        message = _provider_message(response)
        raise IntegrationError(
            "auth_failed",
            f"the provider refused the credential: {message}",
            provider_status=response.status_code,
            provider_message=message,
            details={"oauth_error": _oauth_error(response)},
        )
    try:
        body = response.json()
        token = str(body["access_token"])
    except (ValueError, KeyError, TypeError):
        raise IntegrationError("auth_failed", "the token endpoint returned no access_token") from None
    rotated = body.get("refresh_token")
    return TokenGrant(token, float(body.get("expires_in") or 3600), str(rotated) if rotated else None)


def _oauth_error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body["error"]) if isinstance(body, dict) and isinstance(body.get("error"), str) else None


class CookieLoginAuth(AuthStrategy):
    """Log in through a form once, then send the session cookies; log in again when the session ends."""

    def __init__(self, spec: AuthSpec, secrets: Mapping[str, str], base_url: str) -> None:
        super().__init__(spec, secrets, base_url)
        self.cookies: dict[str, str] | None = None
        self.logins = 0
        self._lock = asyncio.Lock()

    async def apply(self, request: httpx.Request, client: httpx.AsyncClient) -> None:
        if self.cookies is None:
            async with self._lock:
                if self.cookies is None:
                    await self._login(client)
        assert self.cookies is not None
        request.headers["Cookie"] = self._cookie_header()

    async def renew(self, client: httpx.AsyncClient, rejected: httpx.Request) -> bool:
        async with self._lock:
            if self.cookies is None or rejected.headers.get("Cookie") == self._cookie_header():
                await self._login(client)
        return True

    def _cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in (self.cookies or {}).items())

    async def _login(self, client: httpx.AsyncClient) -> None:
        fields = {
            form_field: _required(self.secrets, credential_field, "cookie_login")
            for form_field, credential_field in self.spec.login_fields.items()
        }
        url = self.absolute(self.spec.login_url or "")
        self.logins += 1
        try:
            if self.spec.login_method == "GET":
                response = await client.get(url, params=fields)
            elif self.spec.login_encoding == "json":
                response = await client.post(url, json=fields)
            else:
                response = await client.post(url, data=fields)
        except httpx.TimeoutException:
            raise IntegrationError(
                "timeout", "the login page did not answer in time", request_not_sent=True
            ) from None
        except httpx.TransportError as exc:
            raise IntegrationError(
                "unavailable", f"cannot reach the login page: {type(exc).__name__}", request_not_sent=True
            ) from None
        if response.status_code >= 500:
            raise IntegrationError(
                "unavailable",
                "the login page failed",
                provider_status=response.status_code,
                request_not_sent=True,
            )
        cookies = {cookie.name: cookie.value or "" for cookie in response.cookies.jar}
        if response.status_code >= 400 or not cookies:
            message = _provider_message(response) or "no session cookie was set"
            raise IntegrationError(
                "auth_failed",
                f"login refused: {message}",
                provider_status=response.status_code,
                provider_message=message,
            )
        self.cookies = cookies


def build_auth(
    spec: AuthSpec,
    secrets: Mapping[str, str],
    base_url: str,
    on_secret_update: SecretUpdate | None = None,
    shared_tokens: SharedTokens | None = None,
) -> AuthStrategy:
    strategies: dict[str, Any] = {
        "none": NoAuth,
        "api_key": ApiKeyAuth,
        "bearer": BearerAuth,
        "basic": BasicAuth,
        "odfhir": OpenDentalAuth,
        "cookie_login": CookieLoginAuth,
    }
    if spec.type in ("oauth2_client_credentials", "oauth2_refresh_token"):
        return OAuth2Auth(spec, secrets, base_url, on_secret_update, shared_tokens)
    strategy: AuthStrategy = strategies[spec.type](spec, secrets, base_url)
    return strategy
