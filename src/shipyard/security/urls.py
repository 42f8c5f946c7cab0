"""Outbound URLs a deployer configures (JWKS, alert webhooks, artifact stores): never cloud
metadata or link-local addresses, the classic targets of server-side request forgery.

Checked when the setting is read, on the host as written: IPv4 169.254.0.0/16, IPv6
fe80::/10, AWS's fd00:ec2::254 (also as IPv4-mapped IPv6), and the metadata host names.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from shipyard.errors import ConfigError

METADATA_NAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.com",
})
AWS_IPV6 = ipaddress.ip_address("fd00:ec2::254")


def forbidden_host(host: str) -> bool:
    """True for a cloud metadata or link-local host."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(address.is_link_local or address == AWS_IPV6)


def check_outbound(url: str, what: str) -> None:
    """ConfigError when `url` points at a metadata or link-local address."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        raise ConfigError(f"The {what} URL is not a valid URL.", hint="Check its syntax.") from None
    if host and forbidden_host(host):
        raise ConfigError(
            f"The {what} URL points at a cloud metadata or link-local address.",
            hint="Use the service's own host name; metadata endpoints are never reachable.",
        )
