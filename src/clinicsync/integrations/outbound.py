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
from urllib.parse import urlsplit

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

    async def check_request(self, request: httpx.Request) -> None:
        """httpx request hook: every address the host resolves to must be public or allowed."""
        host = request.url.host.lower()
        if host in self.hosts:
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, request.url.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            return  # unresolvable: the connection itself fails and is reported as such
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if not self.allows(address):
                raise AddressRefused(
                    f"requests to {host} ({address}) are refused: a loopback, link-local or private "
                    "address is allowed only when listed in CLINICSYNC_OUTBOUND_ALLOWLIST"
                )
