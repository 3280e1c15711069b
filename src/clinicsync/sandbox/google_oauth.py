"""Google's OAuth 2.0 endpoints for the Google Calendar sandbox: consent, token, revoke.

What a connecting client meets, after Google's "OAuth 2.0 for web server applications" guide:

- ``GET /o/oauth2/v2/auth`` (accounts.google.com): the consent page. The sandbox answers for the
  person at once, by setting ``oauth_consent``: ``approve`` redirects to ``redirect_uri`` with
  ``code`` and ``state``; ``deny`` with ``error=access_denied``. An unknown ``client_id``, a
  ``response_type`` other than ``code`` or a PKCE method other than ``S256``/``plain`` answers 400.
- ``POST /token`` (oauth2.googleapis.com), form-encoded, client id and secret in the body or as
  Basic auth (unknown client: 401 ``invalid_client``):

  - ``authorization_code``: the code once, within ten minutes, with the same ``redirect_uri``
    (else 400 ``redirect_uri_mismatch``) and the ``code_verifier`` whose S256 digest is the
    challenge (else 400 ``invalid_grant``). Returns an access token, ``expires_in`` and, when
    the consent asked for ``access_type=offline``, a refresh token.
  - ``refresh_token``: a new access token. With setting ``oauth_rotate_refresh_tokens`` the answer
    carries a new refresh token and the old one stops working at once (strict rotation; Google
    itself rarely rotates, other providers do). A revoked or unknown token: 400 ``invalid_grant``
    "Token has been expired or revoked."
- ``POST /revoke?token=``: revokes the grant the token belongs to, and its access tokens.

Access tokens it issues are accepted by the calendar routes beside the static ``access_tokens``,
until they expire (``token_ttl_seconds`` fault, else an hour), until ``POST /_sandbox/tokens/expire``,
or until their grant is revoked (also the front-desk action ``revoke_access``: the person removes
the app in their Google account). The state file keeps the grants (refresh tokens, revoked or not)
and the access tokens with what is left of their lifetime, so a sandbox restarted from its file
still honours the connection a clinic made; pending consent codes (ten minutes, one use) are not
kept.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

CODE_LIFETIME_SECONDS = 600.0
DEFAULT_ACCESS_TTL_SECONDS = 3600.0


class OAuthHost(Protocol):
    """What the calendar sandbox lends its OAuth endpoints."""

    token_epoch: int

    def oauth_clients(self) -> dict[str, str]: ...

    def oauth_consent(self) -> str: ...

    def oauth_rotates(self) -> bool: ...

    def token_ttl(self, default_seconds: float) -> float: ...


@dataclass
class Grant:
    id: str
    client_id: str
    scope: str
    refresh_token: str | None
    revoked: bool = False


@dataclass
class PendingCode:
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str
    scope: str
    offline: bool
    expires_at: float
    used: bool = False


@dataclass
class IssuedToken:
    grant_id: str
    expires_at: float
    epoch: int


@dataclass
class GoogleOAuth:
    host: OAuthHost
    grants: dict[str, Grant] = field(default_factory=dict)
    by_refresh_token: dict[str, str] = field(default_factory=dict)
    codes: dict[str, PendingCode] = field(default_factory=dict)
    access: dict[str, IssuedToken] = field(default_factory=dict)
    refresh_requests: int = 0
    code_exchanges: int = 0

    def accepts(self, token: str) -> bool:
        issued = self.access.get(token)
        if issued is None or issued.epoch != self.host.token_epoch or time.monotonic() >= issued.expires_at:
            return False
        grant = self.grants.get(issued.grant_id)
        return grant is not None and not grant.revoked

    def revoke(self, grant: Grant) -> None:
        grant.revoked = True
        if grant.refresh_token is not None:
            self.by_refresh_token.pop(grant.refresh_token, None)
        for token in [t for t, issued in self.access.items() if issued.grant_id == grant.id]:
            del self.access[token]

    def revoke_all(self) -> int:
        live = [grant for grant in self.grants.values() if not grant.revoked]
        for grant in live:
            self.revoke(grant)
        return len(live)

    def summary(self) -> dict[str, Any]:
        return {
            "grants": len([g for g in self.grants.values() if not g.revoked]),
            "revoked_grants": len([g for g in self.grants.values() if g.revoked]),
            "code_exchanges": self.code_exchanges,
            "refresh_requests": self.refresh_requests,
        }

    def dump(self) -> dict[str, Any] | None:
        """What the state file keeps; None before any consent, so older files stay as they were."""
        if not self.grants:
            return None
        now_monotonic, now_wall = time.monotonic(), time.time()
        return {
            "grants": [
                {
                    "id": grant.id,
                    "client_id": grant.client_id,
                    "scope": grant.scope,
                    "refresh_token": grant.refresh_token,
                    "revoked": grant.revoked,
                }
                for grant in self.grants.values()
            ],
            # Wall-clock expiry: the monotonic clock starts again with the next process.
            "access_tokens": [
                {
                    "token": token,
                    "grant_id": issued.grant_id,
                    "expires_at": now_wall + issued.expires_at - now_monotonic,
                }
                for token, issued in self.access.items()
                if issued.epoch == self.host.token_epoch and issued.expires_at > now_monotonic
            ],
            "code_exchanges": self.code_exchanges,
            "refresh_requests": self.refresh_requests,
        }

    def load(self, saved: dict[str, Any] | None) -> None:
        self.grants, self.by_refresh_token, self.codes, self.access = {}, {}, {}, {}
        self.code_exchanges = self.refresh_requests = 0
        if not saved:
            return
        for row in saved["grants"]:
            grant = Grant(
                row["id"], row["client_id"], row["scope"], row["refresh_token"], bool(row["revoked"])
            )
            self.grants[grant.id] = grant
            if grant.refresh_token is not None and not grant.revoked:
                self.by_refresh_token[grant.refresh_token] = grant.id
        now_monotonic, now_wall = time.monotonic(), time.time()
        for row in saved["access_tokens"]:
            left = float(row["expires_at"]) - now_wall
            if left > 0 and row["grant_id"] in self.grants:
                self.access[row["token"]] = IssuedToken(
                    row["grant_id"], now_monotonic + left, self.host.token_epoch
                )
        self.code_exchanges = int(saved["code_exchanges"])
        self.refresh_requests = int(saved["refresh_requests"])

    def current_refresh_tokens(self) -> list[str]:
        return [g.refresh_token for g in self.grants.values() if not g.revoked and g.refresh_token]

    # ---- routes ---------------------------------------------------------------------

    def add_routes(self, router: APIRouter) -> None:
        @router.get("/o/oauth2/v2/auth")
        async def consent(request: Request) -> Response:
            return self._consent(dict(request.query_params))

        @router.post("/token")
        async def token(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            return self._token(form, request.headers.get("authorization", ""))

        @router.post("/revoke")
        async def revoke(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            token = request.query_params.get("token") or form.get("token", "")
            grant_id = self.by_refresh_token.get(token) or (
                self.access[token].grant_id if token in self.access else None
            )
            if grant_id is None:
                return _error(400, "invalid_token", "Token expired or revoked")
            self.revoke(self.grants[grant_id])
            return JSONResponse({})

    def _consent(self, query: dict[str, str]) -> Response:
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if client_id not in self.host.oauth_clients():
            return _error(400, "invalid_client", "The OAuth client was not found.")
        if not redirect_uri.startswith(("http://", "https://")):
            return _error(400, "invalid_request", "Missing or invalid redirect_uri.")
        if query.get("response_type") != "code":
            return _error(400, "unsupported_response_type", "response_type must be code.")
        method = query.get("code_challenge_method", "plain" if query.get("code_challenge") else "")
        if method not in ("", "S256", "plain"):
            return _error(400, "invalid_request", "Invalid code_challenge_method.")
        state = query.get("state")
        if self.host.oauth_consent() == "deny":
            return _redirect(redirect_uri, {"error": "access_denied", **({"state": state} if state else {})})
        code = "4/" + secrets.token_urlsafe(24)
        scope = query.get("scope", "")
        self.codes[code] = PendingCode(
            client_id=client_id,
            redirect_uri=redirect_uri,
            challenge=query.get("code_challenge"),
            method=method or "plain",
            scope=scope,
            offline=query.get("access_type") == "offline",
            expires_at=time.monotonic() + CODE_LIFETIME_SECONDS,
        )
        return _redirect(redirect_uri, {"code": code, "scope": scope, **({"state": state} if state else {})})

    def _client(self, form: dict[str, str], authorization: str) -> str | None:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic" and value:
            decoded = base64.b64decode(value).decode(errors="replace")
            client_id, _, client_secret = decoded.partition(":")
        known = self.host.oauth_clients()
        if client_id is None or known.get(client_id) != client_secret:
            return None
        return client_id

    def _token(self, form: dict[str, str], authorization: str) -> Response:
        client_id = self._client(form, authorization)
        if client_id is None:
            return _error(401, "invalid_client", "Unauthorized")
        match form.get("grant_type"):
            case "authorization_code":
                return self._exchange(client_id, form)
            case "refresh_token":
                return self._refresh(client_id, form)
        return _error(400, "unsupported_grant_type", "Invalid grant_type.")

    def _exchange(self, client_id: str, form: dict[str, str]) -> Response:
        code = self.codes.get(form.get("code", ""))
        if code is None or code.used or code.client_id != client_id or time.monotonic() > code.expires_at:
            return _error(400, "invalid_grant", "Malformed auth code.")
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            return _error(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                return _error(400, "invalid_grant", "Missing code verifier.")
            expected = _s256(verifier) if code.method == "S256" else verifier
            if expected != code.challenge:
                return _error(400, "invalid_grant", "Invalid code verifier.")
        self.code_exchanges += 1
        grant = Grant(
            id=secrets.token_hex(8),
            client_id=client_id,
            scope=code.scope,
            refresh_token="1//" + secrets.token_urlsafe(32) if code.offline else None,
        )
        self.grants[grant.id] = grant
        if grant.refresh_token is not None:
            self.by_refresh_token[grant.refresh_token] = grant.id
        body = self._access(grant)
        if grant.refresh_token is not None:
            body["refresh_token"] = grant.refresh_token
        return JSONResponse(body)

    def _refresh(self, client_id: str, form: dict[str, str]) -> Response:
        self.refresh_requests += 1
        grant_id = self.by_refresh_token.get(form.get("refresh_token", ""))
        grant = self.grants.get(grant_id) if grant_id else None
        if grant is None or grant.revoked:
            return _error(400, "invalid_grant", "Token has been expired or revoked.")
        if grant.client_id != client_id:
            return _error(400, "unauthorized_client", "Unauthorized")
        body = self._access(grant)
        if self.host.oauth_rotates():
            assert grant.refresh_token is not None
            self.by_refresh_token.pop(grant.refresh_token, None)
            grant.refresh_token = "1//" + secrets.token_urlsafe(32)
            self.by_refresh_token[grant.refresh_token] = grant.id
            body["refresh_token"] = grant.refresh_token
        return JSONResponse(body)

    def _access(self, grant: Grant) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(32)
        ttl = self.host.token_ttl(DEFAULT_ACCESS_TTL_SECONDS)
        self.access[token] = IssuedToken(grant.id, time.monotonic() + ttl, self.host.token_epoch)
        return {"access_token": token, "expires_in": int(ttl), "scope": grant.scope, "token_type": "Bearer"}


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status)


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    return RedirectResponse(f"{uri}{'&' if '?' in uri else '?'}{urlencode(params)}", status_code=302)
