"""The image fetcher's address rule (routing/gateway/addresses.py): an explicit deny list from IANA's IPv4
and IPv6 special-purpose address registries, with IPv4 embedded in IPv6 (IPv4-mapped, NAT64, 6to4,
Teredo) unwrapped and checked again. `ipaddress.is_global` alone let 192.0.0.8 and every 6to4 / NAT64
address embedding a private IPv4 through."""

from __future__ import annotations

import pytest

from routing.gateway.addresses import address_allowed

DENIED = [
    # IPv4 special-purpose registry
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.1",
    "192.0.0.8",  # IPv4 dummy address: is_global said True
    "192.0.0.9",  # PCP anycast
    "192.0.0.10",  # TURN anycast
    "192.0.0.170",  # NAT64/DNS64 discovery
    "192.0.2.1",
    "192.31.196.1",  # AS112-v4
    "192.52.193.1",  # AMT
    "192.88.99.1",  # deprecated 6to4 relay anycast
    "192.168.1.1",
    "192.175.48.1",  # AS112 direct delegation
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6 special-purpose registry
    "::",
    "::1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "100::1",  # discard-only
    "100:0:0:1::1",  # dummy prefix
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (RFC 9637)
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "2001:20::1",  # ORCHIDv2
    "2001:4:112::1",  # AS112-v6
    "2620:4f:8000::1",  # AS112 direct delegation
    "5f00::1",  # segment routing SIDs
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",  # site-local (deprecated)
    "ff02::1",  # multicast
    "64:ff9b:1::a00:1",  # local-use IPv4/IPv6 translation
    # IPv4-mapped: unwrapped
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:192.0.0.8",
    # NAT64 well-known prefix embedding a private IPv4: unwrapped
    "64:ff9b::7f00:1",  # 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # 169.254.169.254
    "64:ff9b::c0a8:101",  # 192.168.1.1
    # 6to4 embedding a private IPv4: unwrapped
    "2002:7f00:1::",  # 127.0.0.1
    "2002:a00:1::1",  # 10.0.0.1
    "2002:a9fe:a9fe::1",  # 169.254.169.254
    "2002:c000:8::1",  # 192.0.0.8
    # Teredo: server 65.54.227.120, client (obfuscated) 127.0.0.1 / 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    # not an address at all
    "localhost",
    "",
    "999.1.1.1",
]

ALLOWED = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.215.14",
    "100.63.255.255",  # just below the shared address space
    "100.128.0.1",  # just above it
    "172.15.255.255",
    "172.32.0.1",
    "192.0.1.1",  # just above 192.0.0.0/24
    "198.17.255.255",
    "198.20.0.1",
    "223.255.255.254",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize("address", DENIED)
def test_special_purpose_addresses_are_denied(address):
    assert address_allowed(address) is False


@pytest.mark.parametrize("address", ALLOWED)
def test_public_unicast_addresses_are_allowed(address):
    assert address_allowed(address) is True
