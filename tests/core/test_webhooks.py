"""The pure parts of webhooks: the Standard Webhooks signature, secrets, URL and address rules."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from broker_core.webhooks import (
    address_allowed,
    check_headers,
    generate_secret,
    host_allowed,
    secret_key,
    sign,
    target_host,
)

# The test vector the Standard Webhooks libraries publish.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_published_vector() -> None:
    assert sign(secret_key(VECTOR_SECRET), *VECTOR) == VECTOR_SIGNATURE


def test_signature_depends_on_every_part() -> None:
    key = secret_key(VECTOR_SECRET)
    msg_id, timestamp, body = VECTOR
    assert sign(key, msg_id + "x", timestamp, body) != VECTOR_SIGNATURE
    assert sign(key, msg_id, timestamp + 1, body) != VECTOR_SIGNATURE
    assert sign(key, msg_id, timestamp, body + b" ") != VECTOR_SIGNATURE
    assert sign(secret_key(generate_secret()), *VECTOR) != VECTOR_SIGNATURE


def test_generated_secrets_are_whsec_32_bytes_and_distinct() -> None:
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(secret_key(s)) == 32 for s in secrets)


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_AAAA",
        "whsec_not base64!",
        "whsec_" + "A" * 100,
    ],
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        secret_key(secret)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://Example.COM/x", "example.com"),
        ("https://127.0.0.1:8443/", "127.0.0.1"),
        ("http://[::1]:9/x", "::1"),
    ],
)
def test_target_host(url: str, host: str) -> None:
    assert target_host(url) == host


@pytest.mark.parametrize(
    "url", ["ftp://a.example/", "http://user:pw@a.example/", "http:///x", "http://a:99999/"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        target_host(url)


def test_host_patterns() -> None:
    patterns = ("hooks.example.com", "*.internal.example.com")
    assert host_allowed("hooks.example.com", patterns)
    assert host_allowed("a.b.internal.example.com", patterns)
    assert not host_allowed("internal.example.com", patterns)
    assert not host_allowed("evil.com", patterns)
    assert not host_allowed("hooks.example.com", ())


def test_headers_the_broker_sets_are_refused() -> None:
    check_headers({"authorization": "Bearer x", "x-team": "blue"})
    for bad in ({"Webhook-Signature": "x"}, {"host": "x"}, {"a b": "x"}, {"x": "a\r\nb: c"}):
        with pytest.raises(ValueError):
            check_headers(bad)


PRIVATE_V4 = st.sampled_from(
    [
        ipaddress.ip_network(n)
        for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16")
    ]
).flatmap(
    lambda net: st.integers(0, net.num_addresses - 1).map(lambda i: str(net.network_address + i))
)


@given(PRIVATE_V4)
def test_a_private_address_needs_allowing_itself(address: str) -> None:
    """A name allowed by pattern may not lead inside; the address itself may be allowed."""
    assert not address_allowed(address, "hooks.example.com", ("hooks.example.com",))
    assert address_allowed(address, "hooks.example.com", (address,))
    mapped = f"::ffff:{address}"
    assert not address_allowed(mapped, "hooks.example.com", ("hooks.example.com",))


@given(st.ip_addresses(v=4))
def test_public_addresses_pass_once_the_name_is_allowed(ip: ipaddress.IPv4Address) -> None:
    allowed = address_allowed(str(ip), "h.example", ("h.example",))
    assert allowed == (ip.is_global and not ip.is_multicast)


def test_ipv6_loopback_and_unique_local_are_refused() -> None:
    for address in ("::1", "fd00::1", "fe80::1%eth0"):
        assert not address_allowed(address, "h.example", ("h.example",))
    assert address_allowed("2606:4700:4700::1111", "h.example", ("h.example",))
