"""Where clinicsync may send a request: never to loopback, link-local or private addresses
unless the operator allows them, and a credential's secrets only to the host they were entered for.

An admin who could point an integration at an internal address (or at a server of their own)
could otherwise read internal services or receive the stored secret in an Authorization header.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from clinicsync.errors import ClinicSyncError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}


class AddressRefused(ClinicSyncError):
    status_code = 422
    code = "address_refused"


class CredentialHostMismatch(ClinicSyncError):
    status_code = 409
    code = "credential_host_mismatch"


def origin(url: str) -> str:
    """scheme://host:port of a URL, lower-cased with the port spelled out."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "https").lower()
    host = (parts.hostname or "").lower()
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class OutboundPolicy:
    """Allowed non-public destinations: networks (``127.0.0.0/8``) and host names (``localhost``)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> OutboundPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(entry.strip().lower())
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, address: IPAddress) -> bool:
        return address.is_global or any(address in network for network in self.networks)

    def check_literal(self, url: str, field: str = "base_url") -> None:
        """Refuses, when saving, a URL whose host is a non-public address or a local name."""
        host = (urlsplit(url).hostname or "").lower()
        if not host or "{" in url.split("//", 1)[-1].split("/", 1)[0] or host in self.hosts:
            return
        if host == "localhost" or host.endswith(".localhost"):
            if any(ipaddress.ip_address("127.0.0.1") in network for network in self.networks):
                return
            raise AddressRefused(f"{field}: {host} is a loopback address, which is not allowed")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: checked against what it resolves to when a request is sent
        if not self.allows(address):
            raise AddressRefused(
                f"{field}: {address} is a loopback, link-local or private address, which is not allowed",
                details=[{"field": field, "reason": "non-public address"}],
            )

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: every address it resolves to must be public or
        allowed (a name with one bad address is refused whole), and the caller connects to the
        address checked here, so a second lookup cannot swap in another (DNS rebinding)."""
        if host.lower() in self.hosts:
            return host
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        addresses = [str(info[4][0]).split("%", 1)[0] for info in infos]
        for text in addresses:
            address = ipaddress.ip_address(text)
            if not self.allows(address):
                raise AddressRefused(
                    f"requests to {host} ({address}) are refused: a loopback, link-local or private "
                    "address is allowed only when listed in CLINICSYNC_OUTBOUND_ALLOWLIST"
                )
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        return addresses[0]

    async def check_request(self, request: httpx.Request) -> None:
        """Refuses a request whose host resolves to an address the policy does not allow."""
        await self.resolve(request.url.host, request.url.port or DEFAULT_PORTS.get(request.url.scheme, 443))

    def transport(self) -> httpx.AsyncHTTPTransport:
        """An httpx transport whose connections open only to addresses this policy checked."""
        return _PinnedTransport(self)


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host when the connection opens, then connects to that very
    address. TLS still names the host (SNI and certificate check use the URL's host, as httpcore
    takes them from the request's origin), and so does the Host header."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self._policy.resolve(host, port)
        return await self._inner.connect_tcp(
            address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not a PMS address")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: OutboundPolicy) -> None:
        # No proxies from the environment: a proxy would make the connection, not us.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's defaults
        super().__init__(trust_env=False, limits=limits)
        # httpx builds its pool without a way to pass a network backend; the pool is rebuilt
        # with the same settings and the checking backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedBackend(policy),
        )
