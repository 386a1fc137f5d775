"""The self-signed certificate that lets the broker serve HTTPS out of the box.

On first start without ``--tls-cert``, the broker generates an EC P-256 key
and a one-year self-signed certificate for ``localhost``, the host's name and
the loopback addresses, and keeps them in ``data_dir/tls``. Clients trust it
by pinning ``cert.pem`` (``curl --cacert``, ``ssl.create_default_context(cafile=...)``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import socket
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["ensure_self_signed"]

_VALIDITY = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(minutes=1)
# Regenerate a little before expiry rather than serve a certificate that
# clients reject mid-run.
_RENEW_BEFORE = dt.timedelta(days=7)


def ensure_self_signed(data_dir: Path, hostnames: Sequence[str] = ()) -> tuple[Path, Path]:
    """Return the broker's self-signed certificate and key, generating them if needed.

    Existing files in ``data_dir/tls`` are reused, unless the certificate
    cannot be read or expires within a week, in which case both are
    replaced. Call it at startup when TLS is on and no certificate is
    configured.

    Args:
        data_dir: The broker's data directory.
        hostnames: Extra DNS names or IP addresses to put in the certificate
            (e.g. the configured host), besides localhost, the host name,
            127.0.0.1 and ::1.

    Returns:
        ``(cert_path, key_path)``, PEM files; the key is mode 0600.
    """
    tls_dir = data_dir / "tls"
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    now = dt.datetime.now(dt.UTC)
    if key_path.exists() and _still_valid(cert_path, now):
        return cert_path, key_path
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_certificate(key, _subject_names(hostnames), now)
    # Key first: the certificate's presence is what marks the pair complete.
    _write_atomic(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def _still_valid(cert_path: Path, now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - now > _RENEW_BEFORE


def _subject_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    """The SAN entries: DNS names and IP addresses, deduplicated, in a stable order."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in ("localhost", socket.gethostname(), *hostnames, "127.0.0.1", "::1"):
        name = name.strip().lower()
        # A wildcard bind address names no host a client could dial.
        if not name or name in seen or name in {"0.0.0.0", "::"}:
            continue
        seen.add(name)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if name.isascii():
                names.append(x509.DNSName(name))
            else:
                # SAN DNS names are IDNA A-labels (RFC 5280 section 4.2.1.6).
                with contextlib.suppress(UnicodeError):
                    names.append(x509.DNSName(name.encode("idna").decode("ascii")))
    return names


def _build_certificate(
    key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName], now: dt.datetime
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wsbroker self-signed"),
        ]
    )
    public_key = key.public_key()
    # The extensions a strict verifier (Python 3.13's VERIFY_X509_STRICT)
    # requires of a certificate that is its own trust anchor.
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file with ``mode`` and move it over ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            # The umask may have removed bits we want (0644 for the certificate).
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
