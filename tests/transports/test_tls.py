"""Tests of the generated self-signed certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from transports.tls import ensure_self_signed

if TYPE_CHECKING:
    from pathlib import Path


def _san(cert_path: Path) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_generates_cert_and_key_in_tls_dir(tmp_path: Path) -> None:
    """On first call, cert.pem and key.pem appear under data_dir/tls."""
    cert, key = ensure_self_signed(tmp_path)
    assert (cert, key) == (tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_key_is_ec_p256(tmp_path: Path) -> None:
    """The certificate's key is an EC P-256 key."""
    cert_path, _ = ensure_self_signed(tmp_path)
    public_key = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)


def test_san_names_local_host_and_given_names(tmp_path: Path) -> None:
    """SAN lists localhost, the host name, extra names and the loopback addresses."""
    cert_path, _ = ensure_self_signed(tmp_path, ["broker.example", "10.1.2.3", "0.0.0.0"])
    san = _san(cert_path)
    dns = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert {"localhost", socket.gethostname().lower(), "broker.example"} <= set(dns)
    assert set(ips) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    }


def test_validity_is_one_year_from_a_minute_ago(tmp_path: Path) -> None:
    """The certificate is valid from a minute back for a year."""
    before = dt.datetime.now(dt.UTC)
    cert_path, _ = ensure_self_signed(tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.not_valid_before_utc <= before - dt.timedelta(seconds=59)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=365, minutes=1)


def test_key_file_is_private(tmp_path: Path) -> None:
    """key.pem has mode 0600."""
    _, key = ensure_self_signed(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_second_call_reuses_files(tmp_path: Path) -> None:
    """Existing cert and key are returned unchanged."""
    cert, key = ensure_self_signed(tmp_path)
    cert_bytes, key_bytes = cert.read_bytes(), key.read_bytes()
    assert ensure_self_signed(tmp_path) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == (cert_bytes, key_bytes)


def test_unreadable_cert_is_regenerated(tmp_path: Path) -> None:
    """A corrupt certificate is replaced with a fresh pair."""
    cert, _ = ensure_self_signed(tmp_path)
    cert.write_text("not a certificate")
    ensure_self_signed(tmp_path)
    x509.load_pem_x509_certificate(cert.read_bytes())


def test_client_pinning_the_cert_completes_a_strict_handshake(tmp_path: Path) -> None:
    """A client trusting cert.pem verifies localhost, even with X.509 strict checks."""
    cert, key = ensure_self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(10)
    client_sock.settimeout(10)

    def serve() -> None:
        with server_context.wrap_socket(server_sock, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(client_sock, server_hostname="localhost") as tls:
            tls.sendall(b"x")
            assert tls.version() is not None
    finally:
        thread.join(10)
