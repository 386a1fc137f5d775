"""What the ``broker`` command remembers per profile: the server, its TLS choice, the tokens.

A profile (``--profile``, ``BROKER_PROFILE``, default ``default``) names one
broker. ``broker login`` records in it the URL, how its certificate is
trusted and the token pair; later commands read it, so ``broker queues``
after ``broker login --url https://host:9000 --insecure`` talks to that
broker the same way. Profiles live in ``profiles.json`` (mode 0600, in a
0700 directory) under ``$BROKER_CONFIG_DIR`` or ``~/.config/wsbroker``.

Trust is one of three choices (`Trust`):

* ``verify``: the system's certificate authorities (a real certificate).
* ``insecure``: any certificate (``--insecure``; remembered, as asked).
* ``pinned``: exactly the certificate seen at the first login (trust on
  first use, as ssh does with host keys). The broker's self-signed
  certificate is signed by no authority: the first ``broker login`` shows
  its SHA-256 fingerprint and pins it; a later connection that presents
  another certificate is refused (`CertificateChanged`) until the user
  logs in again with ``--repin``.
"""

from __future__ import annotations

import enum
import hashlib
import os
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "CertificateChanged",
    "Profile",
    "Trust",
    "config_dir",
    "fingerprint",
    "load_profile",
    "pinned_context",
    "presented_certificate",
    "save_profile",
]

_PROFILES_FILE = "profiles.json"


class Trust(enum.StrEnum):
    """How a profile trusts its broker's TLS certificate."""

    VERIFY = "verify"
    INSECURE = "insecure"
    PINNED = "pinned"


class Profile(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One remembered broker: where it is, how it is trusted, and the login's tokens."""

    url: str
    trust: Trust = Trust.VERIFY
    certificate: str | None = None
    """The pinned certificate (PEM) when ``trust`` is ``pinned``."""
    username: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None


_profiles_decoder = msgspec.json.Decoder(dict[str, Profile])
_encoder = msgspec.json.Encoder()


class CertificateChanged(Exception):
    """The broker presented a certificate other than the pinned one."""

    def __init__(self, url: str, pinned: str, presented: str | None) -> None:
        self.url, self.pinned, self.presented = url, pinned, presented
        super().__init__(
            f"the certificate of {url} is not the one pinned at the first login: "
            f"pinned SHA256 {pinned}, presented {presented or 'unknown'}"
        )


def config_dir() -> Path:
    """Where the CLI keeps its profiles: ``$BROKER_CONFIG_DIR`` or ``~/.config/wsbroker``."""
    configured = os.environ.get("BROKER_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "wsbroker"


def _load_all() -> dict[str, Profile]:
    try:
        return _profiles_decoder.decode((config_dir() / _PROFILES_FILE).read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, msgspec.DecodeError) as exc:
        raise OSError(f"cannot read {config_dir() / _PROFILES_FILE}: {exc}") from None


def load_profile(name: str) -> Profile | None:
    """The profile called ``name``, if one was saved."""
    return _load_all().get(name)


def save_profile(name: str, profile: Profile | None) -> Path:
    """Store (or with ``None`` remove) the profile ``name``; return the file (mode 0600)."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    profiles = _load_all()
    if profile is None:
        profiles.pop(name, None)
    else:
        profiles[name] = profile
    path = directory / _PROFILES_FILE
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(_encoder.encode(profiles))
    os.chmod(temporary, 0o600)  # O_CREAT's mode doesn't apply to an existing file
    os.replace(temporary, path)
    return path


def fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as ``AB:CD:...`` (openssl's form)."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def pinned_context(pem: str) -> ssl.SSLContext:
    """A TLS context that trusts the certificate ``pem`` and nothing else.

    The host name is not checked: as with an ssh host key, the pin is bound to
    the profile's URL, and the broker's self-signed certificate names only
    the hosts it knew when it was made.
    """
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False
    return context


def presented_certificate(url: str, timeout: float = 10.0) -> str:
    """The certificate (PEM) the server at ``url`` presents, read without verifying it.

    Raises:
        OSError: the server can't be reached or speaks no TLS.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise OSError(f"{url} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)
