"""Password hashes: scrypt (stdlib ``hashlib.scrypt``, RFC 7914), encoded with their parameters.

A hash is stored as ``scrypt$n$r$p$salt$hash`` so parameters can be raised
later without invalidating stored hashes (see `needs_rehash`). Hashing costs
tens of milliseconds of CPU on purpose: call it in a worker thread from
asyncio code (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = ["DUMMY_HASH", "hash_password", "needs_rehash", "verify_password"]

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Accept stored parameters up to this memory cost (128 * n * r bytes), so a
# corrupted or hostile hash can't make verification allocate without bound.
_SCRYPT_MAXMEM = 64 * 1024 * 1024

DUMMY_HASH = (
    "scrypt$16384$8$1$6oxg41XcNcVNIIy0pLeCXA==$TIgIjgvpkExfwDYEwdyFYKRERP1u5mqvxmfyfsMLnJ8="
)
"""A valid hash of a random, forgotten password.

Verify against it when the user does not exist, so that a login for an
unknown name costs as much as one for a known name and timing does not reveal
which names exist.
"""


def _encode_password(password: str) -> bytes:
    # surrogatepass: a JSON body may carry lone surrogates; hash them
    # deterministically instead of failing.
    return password.encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    """Hash a password for storage with a fresh random salt.

    Args:
        password: The password in clear.

    Returns:
        The encoded hash ``scrypt$n$r$p$salt_b64$hash_b64``.
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        _encode_password(password),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=_HASH_BYTES,
    )
    return "$".join(
        (
            "scrypt",
            str(_SCRYPT_N),
            str(_SCRYPT_R),
            str(_SCRYPT_P),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(digest).decode("ascii"),
        )
    )


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    """Split an encoded hash into its parameters, or None if it is malformed."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        return None
    if 128 * n * r > _SCRYPT_MAXMEM or not salt or not 16 <= len(digest) <= 64:
        return None
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a stored hash, in constant time for a given hash.

    Never raises: a malformed or unsupported hash simply does not match.
    For an unknown user, call it with :data:`DUMMY_HASH` and ignore the result.

    Args:
        password: The password in clear.
        encoded: A hash from :func:`hash_password`.

    Returns:
        True if the password matches.
    """
    parsed = _parse_hash(encoded)
    if parsed is None:
        return False
    n, r, p, salt, expected = parsed
    try:
        digest = hashlib.scrypt(
            _encode_password(password),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)


def needs_rehash(encoded: str) -> bool:
    """Tell whether a stored hash uses other parameters than :func:`hash_password`.

    Call it after a successful login and, when True, store a fresh hash of the
    password the user just proved.
    """
    parsed = _parse_hash(encoded)
    return parsed is None or parsed[:3] != (_SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
