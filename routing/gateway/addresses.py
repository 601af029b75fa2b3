"""Which IP addresses a server-side fetch may connect to: an explicit deny list, not `is_global`.

`ipaddress.is_global` follows whatever table the running Python ships (3.11's let 192.0.0.8, the AS112
and AMT blocks, and every 6to4 address through, whatever IPv4 it embeds), so the rule here is written
out: every block of IANA's IPv4 and IPv6 special-purpose address registries, plus multicast, the
reserved class E space and everything outside IPv6's global unicast 2000::/3. An IPv6 address that
carries an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) is
unwrapped and the IPv4 address checked again: `64:ff9b::7f00:1` is 127.0.0.1 to a NAT64 gateway.

Sources: https://www.iana.org/assignments/iana-ipv4-special-registry and
https://www.iana.org/assignments/iana-ipv6-special-registry (every entry is denied, including the few
marked globally reachable, such as anycast relays: an image is never served from one).
"""

from __future__ import annotations

import ipaddress

IPV4_DENIED = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network" (RFC 791)
        "10.0.0.0/8",  # private use (RFC 1918)
        "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link local (cloud metadata services live here)
        "172.16.0.0/12",  # private use
        "192.0.0.0/24",  # IETF protocol assignments: DS-Lite, 192.0.0.8 dummy, PCP/TURN anycast, NAT64 discovery
        "192.0.2.0/24",  # documentation TEST-NET-1
        "192.31.196.0/24",  # AS112-v4
        "192.52.193.0/24",  # AMT
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private use
        "192.175.48.0/24",  # direct delegation AS112 service
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation TEST-NET-2
        "203.0.113.0/24",  # documentation TEST-NET-3
        "224.0.0.0/4",  # multicast (IANA multicast registry)
        "240.0.0.0/4",  # reserved (class E), includes 255.255.255.255 limited broadcast
    )
)

IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
IPV6_DENIED = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        # Outside 2000::/3 anyway; listed so the rule reads as the registry does.
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
        "100::/64",  # discard-only
        "100:0:0:1::/64",  # dummy IPv6 prefix (RFC 9780)
        "fc00::/7",  # unique local
        "fe80::/10",  # link local
        "fec0::/10",  # site local (deprecated)
        "ff00::/8",  # multicast
        # Inside 2000::/3.
        "2001::/23",  # IETF protocol assignments: benchmarking, AMT, AS112-v6, ORCHID(v2), drone DETs, anycast
        "2001:db8::/32",  # documentation
        "2620:4f:8000::/48",  # direct delegation AS112 service
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment routing SIDs
    )
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")


def _ipv4_allowed(ip: ipaddress.IPv4Address) -> bool:
    return not any(ip in net for net in IPV4_DENIED)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address hands traffic to, or None when it embeds none."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip in SIX_TO_FOUR:
        return [ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)]
    if ip in TEREDO:
        teredo = ip.teredo
        assert teredo is not None
        return list(teredo)  # the relay server and the (de-obfuscated) client
    return None


def address_allowed(address: str) -> bool:
    """True for an address a server-side fetch may connect to: not in any special-purpose block, and
    (for IPv6 carrying IPv4) neither is the IPv4 address it carries."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_allowed(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        if not all(_ipv4_allowed(v4) for v4 in embedded):
            return False
        if ip not in TEREDO:  # (Teredo is in 2001::/23, denied below whatever it carries)
            return True
    if ip not in IPV6_GLOBAL_UNICAST:
        return False
    return not any(ip in net for net in IPV6_DENIED)
