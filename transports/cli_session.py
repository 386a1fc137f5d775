"""``broker login``, ``broker logout`` and ``broker version``.

``broker login`` remembers in the profile the broker's URL, how its
certificate is trusted and the token pair (`transports.cli_profiles`). On a
broker whose certificate no authority signed (its self-signed one), the first
login shows the certificate's SHA-256 fingerprint and pins it; pass
``--fingerprint`` to require the one read on the broker's host instead
(``openssl x509 -in DATA_DIR/tls/cert.pem -noout -fingerprint -sha256``).

Examples::

    broker login --url https://broker.internal:8777 --username ops
    broker login --url https://127.0.0.1:8777 --insecure --password-stdin < pw
    broker version
"""

from __future__ import annotations

import getpass
import os
import socket
import ssl
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .cli_client import (
    Usage,
    add_connection_options,
    add_output_options,
    command,
    connect,
    print_json,
)
from .cli_profiles import (
    Trust,
    fingerprint,
    load_profile,
    presented_certificate,
    save_profile,
)

if TYPE_CHECKING:
    import argparse

    from .cli_client import Subparsers, Target

__all__ = ["add_login", "add_logout", "add_version", "client_version"]


def client_version() -> str:
    """This package's version (its installed metadata; the source's when run from a checkout)."""
    from importlib import metadata

    try:
        return metadata.version("wsbroker")
    except metadata.PackageNotFoundError:
        from .app import VERSION

        return VERSION


# -- login ------------------------------------------------------------------------------


def add_login(commands: Subparsers) -> None:
    """Add ``broker login``."""
    login = commands.add_parser(
        "login",
        help="log in, and remember the broker, its certificate and the tokens in the profile",
        description=__doc__,
    )
    add_connection_options(login)
    login.add_argument(
        "--username",
        default=os.environ.get("BROKER_USERNAME", "admin"),
        help="who to log in as (BROKER_USERNAME; default: %(default)s)",
    )
    login.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (default: BROKER_PASSWORD, else a prompt)",
    )
    login.add_argument(
        "--fingerprint",
        help="the SHA-256 fingerprint the broker's certificate must have to be pinned"
        " (default: pin the one presented, and show it)",
    )
    login.add_argument(
        "--repin",
        action="store_true",
        help="forget the pinned certificate and pin the one the broker presents now",
    )
    login.set_defaults(handler=command(_login))


def _verifies(url: str) -> bool:
    """Whether the server at ``url`` has a certificate this machine's authorities vouch for."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    context = ssl.create_default_context()
    try:
        with (
            socket.create_connection((host, port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return False


def _choose_trust(args: argparse.Namespace, target: Target) -> None:
    """Settle how ``target`` is trusted before logging in: verify, insecure or pin (TOFU)."""
    if not target.url.startswith("https://") or target.trust is Trust.INSECURE:
        return
    if target.trust is Trust.PINNED and not args.repin:
        return
    if _verifies(target.url):
        target.trust, target.certificate = Trust.VERIFY, None
        return
    pem = presented_certificate(target.url)
    seen = fingerprint(pem)
    wanted = (args.fingerprint or "").replace(":", "").upper()
    if wanted and wanted.removeprefix("SHA256=") != seen.replace(":", ""):
        raise Usage(
            f"the certificate of {target.url} has fingerprint SHA256 {seen},"
            f" not the {args.fingerprint} given: nothing was sent or pinned"
        )
    target.trust, target.certificate = Trust.PINNED, pem
    print(
        f"broker: the certificate of {target.url} is signed by no authority this machine"
        " trusts (the broker's self-signed one?).\n"
        f"  SHA256 fingerprint: {seen}\n"
        f"  {'Matches --fingerprint; ' if wanted else ''}pinned in profile {args.profile!r}:"
        " later commands accept this certificate only.\n"
        "  Compare on the broker's host: openssl x509 -in DATA_DIR/tls/cert.pem -noout"
        " -fingerprint -sha256",
        file=sys.stderr,
    )


async def _login(args: argparse.Namespace) -> int:
    from .client import RestClient

    target: Target = args.target
    if args.repin and target.trust is Trust.PINNED:
        target.trust = Trust.VERIFY
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = os.environ.get("BROKER_PASSWORD") or getpass.getpass(
            f"password for {args.username} at {target.url}: "
        )
    _choose_trust(args, target)
    # A pinned certificate that no longer verifies is reported by `command`.
    async with RestClient(
        target.url, insecure=target.trust is Trust.INSECURE, tls=target.tls
    ) as client:
        pair = await client.login(args.username, password)
    target.keep(pair, args.username)
    trust = {
        Trust.VERIFY: "",
        Trust.INSECURE: ", any certificate accepted (--insecure)",
        Trust.PINNED: ", certificate pinned",
    }[target.trust if target.url.startswith("https://") else Trust.VERIFY]
    print(
        f"logged in to {target.url} as {args.username} (profile {args.profile!r}{trust})",
        file=sys.stderr,
    )
    return 0


# -- logout -----------------------------------------------------------------------------


def add_logout(commands: Subparsers) -> None:
    """Add ``broker logout``."""
    logout = commands.add_parser(
        "logout", help="revoke the profile's refresh token and forget its tokens"
    )
    add_connection_options(logout)
    logout.set_defaults(handler=command(_logout))


async def _logout(args: argparse.Namespace) -> int:
    target: Target = args.target
    profile = load_profile(args.profile)
    if profile is None or profile.refresh_token is None:
        print(f"broker: profile {args.profile!r} holds no login", file=sys.stderr)
        return 0
    async with connect(args) as client:
        await client.request("POST", "/auth/logout", json={"refresh_token": profile.refresh_token})
    profile.access_token = profile.refresh_token = None
    save_profile(args.profile, profile)
    print(f"logged out of {target.url} (profile {args.profile!r})", file=sys.stderr)
    return 0


# -- version ----------------------------------------------------------------------------


def add_version(commands: Subparsers) -> None:
    """Add ``broker version``."""
    version = commands.add_parser(
        "version", help="this client's version, and the broker's when logged in"
    )
    add_connection_options(version)
    add_output_options(version)
    version.set_defaults(handler=command(_version))


async def _version(args: argparse.Namespace) -> int:
    target: Target = args.target
    server: str | None = None
    if target.logged_in or os.environ.get("BROKER_PASSWORD"):
        async with connect(args) as client:
            server = str((await client.stats())["broker_specific"]["version"])
    if args.json:
        print_json({"client": client_version(), "server": server, "url": target.url})
        return 0
    print(f"client {client_version()}")
    print(f"server {server} at {target.url}" if server else "server unknown: not logged in")
    return 0
