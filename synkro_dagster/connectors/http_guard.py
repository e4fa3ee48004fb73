"""Where an HTTP source may send a request: http/https only, never a link-local or cloud-metadata
address (after DNS resolution, on every connection, so redirects and DNS rebinding are covered).

Clients' APIs and ERPs live on public and private addresses, and local sources on loopback: all
stay allowed. What is refused is what a hostile base URL or redirect would use to read the
machine's own cloud credentials (169.254.169.254 and friends). An operator who really reads a
source on such an address lists it in SYNKRO_HTTP_ALLOW_ADDRESSES (comma-separated addresses,
networks or host names; `*` allows all).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from httpcore._backends.sync import SyncBackend

from synkro_dagster.errors import UserError

ALLOW_ENV = "SYNKRO_HTTP_ALLOW_ADDRESSES"
ALLOWED_SCHEMES = ("http", "https")

# Cloud instance-metadata endpoints. Link-local ranges cover AWS/GCP/Azure/OpenStack's
# 169.254.169.254; these are the ones outside them.
METADATA_ADDRESSES = {
    ipaddress.ip_address("fd00:ec2::254"): "the AWS instance-metadata address (IPv6)",
    ipaddress.ip_address("100.100.100.200"): "the Alibaba Cloud metadata address",
    ipaddress.ip_address("192.0.0.192"): "the Oracle Cloud metadata address",
}
METADATA_HOSTS = {
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
}
LINK_LOCAL = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)


class DestinationRefused(UserError):
    """A request would go to a scheme or address Synkro never sends source traffic to."""


def _allowed_entries() -> list[str]:
    return [e.strip().lower() for e in os.environ.get(ALLOW_ENV, "").split(",") if e.strip()]


def _operator_allows(host: str, address: Any | None = None) -> bool:
    for entry in _allowed_entries():
        if entry == "*" or entry == host.lower().rstrip("."):
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def address_refusal(address: str) -> str | None:
    """Why `address` (an IP) is refused, or None when it may be used."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return METADATA_ADDRESSES[ip]
    if any(ip in network for network in LINK_LOCAL):
        return "a link-local address (where cloud instance metadata is served)"
    return None


def check_url(url: httpx.URL | str) -> None:
    """Refuse a URL whose scheme is not http/https or whose host is a metadata host name or a
    refused address literal. Names are resolved and checked when connecting (`GuardedBackend`)."""
    parsed = httpx.URL(str(url))
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise DestinationRefused(
            f"scheme '{parsed.scheme or '(none)'}:' is not allowed; only http and https"
        )
    host = parsed.host
    if not host:
        raise DestinationRefused("the URL has no host")
    check_host(host)


def check_host(host: str, addresses: Iterable[str] = ()) -> None:
    """Refuse a metadata host name, or a host whose (resolved) addresses include a refused one."""
    name = host.lower().rstrip(".")
    if name in METADATA_HOSTS and not _operator_allows(name):
        raise DestinationRefused(
            f"host '{host}' is a cloud instance-metadata endpoint (allow it in {ALLOW_ENV})"
        )
    candidates = list(addresses)
    try:
        ipaddress.ip_address(name.strip("[]").split("%", 1)[0])
        candidates.append(name.strip("[]"))
    except ValueError:
        pass
    for address in candidates:
        reason = address_refusal(address)
        if reason and not _operator_allows(name, ipaddress.ip_address(address.split("%", 1)[0])):
            shown = host if host == address else f"{host} ({address})"
            raise DestinationRefused(f"{shown} is {reason}; allow it in {ALLOW_ENV}")


def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """getaddrinfo for TCP, each address checked; the caller connects only to these."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    check_host(host, [info[4][0] for info in infos])
    return infos


class GuardedBackend(SyncBackend):
    """httpcore's network backend, resolving the host itself and connecting only to the checked
    addresses: a name that resolves to a refused address is refused, however the URL was reached
    (base URL, next-page URL, redirect), and a second resolution cannot swap in another address."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = resolve(host, port)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        last: httpcore.ConnectError | None = None
        for *_, sockaddr in infos:
            try:
                return super().connect_tcp(
                    sockaddr[0], port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # try the next address, like create_connection
                last = exc
        assert last is not None
        raise last


def guarded_transport(**kwargs: Any) -> httpx.HTTPTransport:
    """An httpx transport whose connections go through `GuardedBackend`."""
    transport = httpx.HTTPTransport(**kwargs)
    pool = transport._pool
    # httpx offers no public hook for the network backend; the pinned httpcore names it so.
    if not hasattr(pool, "_network_backend"):  # pragma: no cover - a changed httpcore
        raise RuntimeError("httpcore changed: cannot install the address guard")
    pool._network_backend = GuardedBackend()
    return transport


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Same scheme, host and (effective) port."""
    return (a.scheme, a.host, _port(a)) == (b.scheme, b.host, _port(b))


def _port(url: httpx.URL) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme)
