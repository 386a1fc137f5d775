"""``broker tokens``: list, create and revoke service tokens (admins).

A service token is a long-lived bearer credential for a machine (a
Prometheus scraper, a deploy job), limited to its scopes: ``metrics:read``,
``stats:read``, ``publish:PATTERN``, ``consume:PATTERN``, ``manage:PATTERN``.
The token is printed once, when it is created; the broker keeps only its hash.

Examples::

    broker tokens
    broker tokens create prometheus --scope metrics:read
    broker tokens create deployer --scope 'manage:orders.*' --expires-at 2027-06-30T00:00:00Z
    broker tokens revoke 3f1c0a7e --yes
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .cli_client import (
    Usage,
    command,
    command_group,
    confirm,
    connect,
    output,
    quoted,
)

if TYPE_CHECKING:
    import argparse

    from .cli_client import Subparsers

__all__ = ["add_tokens"]

_COLUMNS = ("id", "name", "scopes", "created_by", "created_at", "expires_at")


def add_tokens(commands: Subparsers) -> None:
    """Add ``broker tokens`` and its sub-commands (``list`` when none is given)."""
    action = command_group(
        commands, "tokens", "list, create and revoke service tokens (admins)", __doc__, _list
    )

    action("list", "every service token (never its secret)").set_defaults(handler=command(_list))
    create = action("create", "create a service token; it is printed this once")
    create.add_argument("name")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        help="metrics:read, stats:read, publish:PATTERN, consume:PATTERN or manage:PATTERN"
        " (repeatable; at least one)",
    )
    create.add_argument("--expires-at", help="an ISO 8601 instant with its offset (default: never)")
    create.set_defaults(handler=command(_create))
    revoke = action("revoke", "revoke a service token at once")
    revoke.add_argument("id")
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    revoke.set_defaults(handler=command(_revoke))


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        tokens = (await client.request("GET", "/tokens")).json()
    output(args, tokens, _COLUMNS)
    return 0


async def _create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "scopes": args.scope}
    if args.expires_at is not None:
        try:
            instant = datetime.fromisoformat(args.expires_at)
        except ValueError:
            raise Usage(
                f"--expires-at wants an ISO 8601 instant, got {args.expires_at!r}"
            ) from None
        if instant.tzinfo is None:
            raise Usage("--expires-at needs an offset (Z or +02:00)")
        body["expires_at"] = instant.isoformat()
    async with connect(args) as client:
        created = (await client.request("POST", "/tokens", json=body)).json()
    output(args, created)
    return 0


async def _revoke(args: argparse.Namespace) -> int:
    confirm(args, f"revoke service token {args.id!r}")
    async with connect(args) as client:
        await client.request("DELETE", f"/tokens/{quoted(args.id)}")
    output(args, {"revoked": args.id}, f"revoked service token {args.id}")
    return 0
