"""The ``broker webhooks`` commands: list, create, pause, resume and delete a queue's webhooks.

Examples::

    broker webhooks list jobs
    broker webhooks create jobs https://hooks.example.com/jobs --concurrency 8 \\
        --header "authorization=Bearer abc"        # prints the secret, once
    broker webhooks pause jobs wh_3f2a...
    broker webhooks resume jobs wh_3f2a...       # also re-enables after a 410
    broker webhooks delete jobs wh_3f2a...

They take ``--url`` and ``--insecure`` and the stored login as the other
client commands (`transports.cli_client`), and print JSON lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cli_client import Usage, add_connection_options, command, connect, print_json

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from .cli_client import Subparsers

__all__ = ["WEBHOOK_COMMANDS"]


def _add_webhooks(commands: Subparsers) -> None:
    webhooks = commands.add_parser(
        "webhooks", help="HTTP endpoints a queue's messages are pushed to"
    )
    actions = webhooks.add_subparsers(dest="webhook_action", required=True)
    listing = actions.add_parser("list", help="a queue's webhooks, their state and counters")
    add_connection_options(listing)
    listing.add_argument("queue")
    listing.set_defaults(handler=command(_list))
    create = actions.add_parser("create", help="push a queue's messages to a URL")
    add_connection_options(create)
    create.add_argument("queue")
    create.add_argument("endpoint", metavar="URL", help="the endpoint (its host must be allowed)")
    create.add_argument("--secret", help="a whsec_ secret (default: generated, printed once)")
    create.add_argument("--concurrency", type=int, default=1, help="requests in flight (1)")
    create.add_argument("--timeout-ms", type=int, default=10_000, help="per request (10000)")
    create.add_argument(
        "--header", action="append", default=[], help="NAME=VALUE, an extra request header"
    )
    create.set_defaults(handler=command(_create))
    for name, help in (
        ("pause", "stop posting (held messages go back to the queue)"),
        ("resume", "post again (also after a 410 disabled it)"),
        ("delete", "delete a webhook"),
    ):
        action = actions.add_parser(name, help=help)
        add_connection_options(action)
        action.add_argument("queue")
        action.add_argument("id")
        action.set_defaults(handler=command(_ACTIONS[name]))


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        for view in await client.list_webhooks(args.queue):
            print_json(view)
    return 0


async def _create(args: argparse.Namespace) -> int:
    headers = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise Usage(f"--header takes NAME=VALUE, got {item!r}")
        headers[name] = value
    async with connect(args) as client:
        view = await client.create_webhook(
            args.queue,
            args.endpoint,
            secret=args.secret,
            concurrency=args.concurrency,
            timeout_ms=args.timeout_ms,
            headers=headers or None,
        )
    print_json(view)
    return 0


async def _pause(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        print_json(await client.pause_webhook(args.queue, args.id, True))
    return 0


async def _resume(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        print_json(await client.pause_webhook(args.queue, args.id, False))
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        await client.delete_webhook(args.queue, args.id)
    print_json({"id": args.id, "deleted": True})
    return 0


_ACTIONS = {"pause": _pause, "resume": _resume, "delete": _delete}

WEBHOOK_COMMANDS: list[Callable[[Subparsers], None]] = [_add_webhooks]
"""The sub-commands this module adds to ``broker`` (see `transports.cli.COMMANDS`)."""
