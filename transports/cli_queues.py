"""``broker queues``: list, create, show, update, delete, purge and redrive queues.

Examples::

    broker queues                                   # a table of every queue
    broker queues create orders.dlq
    broker queues create orders --max-attempts 5 --dead-letter-queue orders.dlq
    broker queues show orders --json
    broker queues update orders --lease 60 --option message_ttl_ms=null
    broker queues purge orders --yes
    broker queues redrive orders
    broker queues delete orders --yes
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

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

__all__ = ["add_queues", "queue_options"]

_COLUMNS = ("name", "pending", "processing", "processed", "failed", "consumers")
_decoder = msgspec.json.Decoder()


def add_queues(commands: Subparsers) -> None:
    """Add ``broker queues`` and its sub-commands (``list`` when none is given)."""
    action = command_group(
        commands,
        "queues",
        "list, create, show, update, delete, purge and redrive queues",
        __doc__,
        _list,
    )

    action("list", "every queue you may see, with its counts").set_defaults(handler=command(_list))
    create = action("create", "create a queue (409 if it exists)")
    create.add_argument("name")
    _option_flags(create, creating=True)
    create.set_defaults(handler=command(_create))
    show = action("show", "one queue's counts and options")
    show.add_argument("name")
    show.set_defaults(handler=command(_show))
    update = action("update", "change a queue's options (only those given)")
    update.add_argument("name")
    _option_flags(update, creating=False)
    update.set_defaults(handler=command(_update))
    for name, help, handler in (
        ("delete", "delete a queue and all its messages", _delete),
        ("purge", "delete a queue's pending messages", _purge),
    ):
        parser = action(name, help)
        parser.add_argument("name")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.set_defaults(handler=command(handler))
    redrive = action("redrive", "move failed and dead-lettered messages back to pending")
    redrive.add_argument("name")
    redrive.set_defaults(handler=command(_redrive))


def _option_flags(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    unset = "default: none" if creating else "default: unchanged"
    parser.add_argument(
        "--max-attempts", type=int, help=f"deliveries before dead-lettering ({unset})"
    )
    parser.add_argument(
        "--dead-letter-queue", help=f"where exhausted or rejected messages go ({unset})"
    )
    parser.add_argument(
        "--message-ttl-ms", type=int, help=f"expire messages not delivered in time ({unset})"
    )
    parser.add_argument("--max-length", type=int, help=f"most pending messages ({unset})")
    parser.add_argument("--max-bytes", type=int, help=f"most pending content bytes ({unset})")
    parser.add_argument(
        "--overflow",
        choices=("reject_publish", "drop_head"),
        help="at the limit: refuse publishes or drop the oldest"
        + (" (default: reject_publish)" if creating else " (default: unchanged)"),
    )
    parser.add_argument(
        "--lease",
        type=float,
        help="seconds a delivered message stays leased"
        + (" (default: the broker's, 30)" if creating else " (default: unchanged)"),
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="any other option, its value as JSON (null clears it); repeatable",
    )


def queue_options(args: argparse.Namespace) -> dict[str, Any]:
    """The queue options the flags set, ``--option NAME=JSON`` included."""
    options: dict[str, Any] = {}
    for name in (
        "max_attempts",
        "dead_letter_queue",
        "message_ttl_ms",
        "max_length",
        "max_bytes",
        "overflow",
        "lease",
    ):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    for item in args.option:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise Usage(f"--option wants NAME=JSON, got {item!r}")
        try:
            options[name] = _decoder.decode(text)
        except msgspec.DecodeError:
            options[name] = text
    return options


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        queues = (await client.request("GET", "/queues")).json()
    output(args, queues, _COLUMNS)
    return 0


async def _create(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        response = await client.request(
            "POST", "/queues", json={"name": args.name, **queue_options(args)}
        )
    output(args, response.json())
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        response = await client.request("GET", f"/queues/{quoted(args.name)}")
    output(args, response.json())
    return 0


async def _update(args: argparse.Namespace) -> int:
    options = queue_options(args)
    if not options:
        raise Usage("nothing to change: give at least one option (see --help)")
    async with connect(args) as client:
        response = await client.request("PATCH", f"/queues/{quoted(args.name)}", json=options)
    output(args, response.json())
    return 0


async def _delete(args: argparse.Namespace) -> int:
    confirm(args, f"delete queue {args.name!r} and all its messages")
    async with connect(args) as client:
        await client.request("DELETE", f"/queues/{quoted(args.name)}")
    output(args, {"deleted": args.name}, f"deleted queue {args.name}")
    return 0


async def _purge(args: argparse.Namespace) -> int:
    confirm(args, f"delete the pending messages of queue {args.name!r}")
    async with connect(args) as client:
        result = (await client.request("POST", f"/queues/{quoted(args.name)}/purge")).json()
    output(args, result, f"purged {result['purged']} pending messages from {args.name}")
    return 0


async def _redrive(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        result = (await client.request("POST", f"/queues/{quoted(args.name)}/redrive")).json()
    output(args, result, f"moved {result['moved']} messages of {args.name} back to pending")
    return 0
