"""``broker users``: list, create, show, update and delete users (admins).

A permission is ``PATTERN=ACTIONS``: a glob over queue names and a comma
list of ``publish``, ``consume`` and ``manage``.

Examples::

    broker users
    broker users create billing --permission 'billing.*=publish,consume' --password-stdin
    broker users update billing --disable
    broker users delete billing --yes
"""

from __future__ import annotations

import getpass
import os
import sys
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

__all__ = ["add_users"]

_ACTIONS = ("publish", "consume", "manage")


def add_users(commands: Subparsers) -> None:
    """Add ``broker users`` and its sub-commands (``list`` when none is given)."""
    action = command_group(
        commands, "users", "list, create, show, update and delete users (admins)", __doc__, _list
    )

    action("list", "every user").set_defaults(handler=command(_list))
    create = action("create", "create a user (409 if the name is taken)")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="an admin (default: not)")
    _user_flags(create)
    create.set_defaults(handler=command(_create))
    show = action("show", "one user and its permissions")
    show.add_argument("username")
    show.set_defaults(handler=command(_show))
    update = action(
        "update", "change a user (only what is given; a new password revokes its tokens)"
    )
    update.add_argument("username")
    admin = update.add_mutually_exclusive_group()
    admin.add_argument("--admin", dest="admin", action="store_const", const=True)
    admin.add_argument("--no-admin", dest="admin", action="store_const", const=False)
    disabled = update.add_mutually_exclusive_group()
    disabled.add_argument(
        "--disable", dest="disabled", action="store_const", const=True, help="refuse its logins"
    )
    disabled.add_argument("--enable", dest="disabled", action="store_const", const=False)
    _user_flags(update)
    update.set_defaults(handler=command(_update))
    delete = action("delete", "delete a user and revoke its tokens")
    delete.add_argument("username")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=command(_delete))


def _user_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--permission",
        action="append",
        metavar="PATTERN=ACTIONS",
        help="e.g. 'orders.*=publish,consume' (repeatable; replaces all; default: none)",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (default: BROKER_NEW_PASSWORD, else a"
        " prompt when creating)",
    )


def _permissions(items: list[str] | None) -> list[dict[str, Any]] | None:
    if items is None:
        return None
    permissions = []
    for item in items:
        pattern, sep, actions = item.partition("=")
        names = [name.strip() for name in actions.split(",") if name.strip()]
        if not sep or not pattern or not names or any(n not in _ACTIONS for n in names):
            raise Usage(f"--permission wants PATTERN=ACTIONS ({', '.join(_ACTIONS)}), got {item!r}")
        permissions.append({"pattern": pattern, "actions": names})
    return permissions


def _password(args: argparse.Namespace, required: bool) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = os.environ.get("BROKER_NEW_PASSWORD")
    if password or not required:
        return password
    return getpass.getpass(f"password for the new user {args.username}: ")


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        users = (await client.request("GET", "/users")).json()
    output(args, users, ("username", "admin", "disabled", "permissions", "created_at"))
    return 0


async def _create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "username": args.username,
        "password": _password(args, required=True),
        "admin": args.admin,
        "permissions": _permissions(args.permission) or [],
    }
    async with connect(args) as client:
        user = (await client.request("POST", "/users", json=body)).json()
    output(args, user)
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        user = (await client.request("GET", f"/users/{quoted(args.username)}")).json()
    output(args, user)
    return 0


async def _update(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    password = _password(args, required=False)
    if password is not None:
        body["password"] = password
    if args.admin is not None:
        body["admin"] = args.admin
    if args.disabled is not None:
        body["disabled"] = args.disabled
    permissions = _permissions(args.permission)
    if permissions is not None:
        body["permissions"] = permissions
    if not body:
        raise Usage("nothing to change: give at least one flag (see --help)")
    async with connect(args) as client:
        user = (await client.request("PATCH", f"/users/{quoted(args.username)}", json=body)).json()
    output(args, user)
    return 0


async def _delete(args: argparse.Namespace) -> int:
    confirm(args, f"delete user {args.username!r}")
    async with connect(args) as client:
        await client.request("DELETE", f"/users/{quoted(args.username)}")
    output(args, {"deleted": args.username}, f"deleted user {args.username}")
    return 0
