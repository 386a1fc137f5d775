"""``broker publish``, ``broker consume`` and ``broker messages browse|get|retry``.

Examples::

    broker publish jobs '{"order": 7}' --header kind=order
    seq 1 1000 | broker publish jobs -
    broker consume jobs --prefetch 50 --count 10     # JSON lines, acked
    broker messages browse jobs --status failed
    broker messages get jobs 42 --json
    broker messages retry jobs 42
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .cli_client import (
    Usage,
    add_connection_options,
    add_output_options,
    command,
    connect,
    parse_content,
    print_json,
    print_record,
    print_table,
    quoted,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .cli_client import Subparsers
    from .client import Message

__all__ = ["add_consume", "add_messages", "add_publish"]

_PUBLISH_WINDOW = 500
_STATUSES = ("pending", "processing", "processed", "failed")
_COLUMNS = ("message_id", "status", "attempt", "created_at", "content", "last_error")


# -- publish ----------------------------------------------------------------------------


def add_publish(commands: Subparsers) -> None:
    """Add ``broker publish``."""
    publish = commands.add_parser(
        "publish", help="publish a message, or one per line of standard input with '-'"
    )
    add_connection_options(publish)
    publish.add_argument("queue")
    publish.add_argument(
        "message",
        nargs="?",
        default="-",
        help="the content: JSON, else taken as a string; '-' reads lines from stdin"
        " (default: %(default)s)",
    )
    publish.add_argument(
        "--string", action="store_true", help="send the text as a JSON string, even if it parses"
    )
    publish.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a message header (repeatable; default: none)",
    )
    publish.set_defaults(handler=command(_publish))


def _stdin_lines() -> Iterator[str]:
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if line:
            yield line


async def _publish(args: argparse.Namespace) -> int:
    headers: dict[str, str] = {}
    for header in args.header:
        name, sep, value = header.partition("=")
        if not sep or not name:
            raise Usage(f"--header wants NAME=VALUE, got {header!r}")
        headers[name] = value
    async with connect(args, window=_PUBLISH_WINDOW) as client:
        if args.message == "-":
            contents = (parse_content(line, args.string) for line in _stdin_lines())
            ids = await client.publish_many(args.queue, contents, headers=headers or None)
        else:
            ids = [
                await client.publish(
                    args.queue, parse_content(args.message, args.string), headers=headers or None
                )
            ]
    for message_id in ids:
        print_json({"queue": args.queue, "message_id": message_id})
    return 0


# -- consume ----------------------------------------------------------------------------


def add_consume(commands: Subparsers) -> None:
    """Add ``broker consume``."""
    consume = commands.add_parser(
        "consume", help="print pushed messages as JSON lines (acked by default)"
    )
    add_connection_options(consume)
    consume.add_argument("queue")
    consume.add_argument(
        "--prefetch",
        type=int,
        default=10,
        help="most unsettled messages at once (default: %(default)s)",
    )
    settle = consume.add_mutually_exclusive_group()
    settle.add_argument(
        "--ack", dest="settle", action="store_const", const="ack", help="ack each (default)"
    )
    settle.add_argument(
        "--nack",
        dest="settle",
        action="store_const",
        const="nack",
        help="requeue them all when done: a peek at up to --prefetch (or --count) messages",
    )
    consume.add_argument(
        "--count",
        type=int,
        help="stop after this many messages (default: never; up to --prefetch more may have"
        " been pushed: they are requeued, marked redelivered)",
    )
    consume.add_argument(
        "--timeout",
        type=float,
        help="stop when no message came for this many seconds (default: wait for ever)",
    )
    consume.set_defaults(handler=command(_consume), settle="ack")


async def _consume(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise Usage("--count must be at least 1")
    if args.prefetch < 1:
        raise Usage("--prefetch must be at least 1")
    prefetch = args.prefetch
    if args.count is not None:
        # A peek holds what it read until the end; acking needs no more credit than that.
        prefetch = args.count if args.settle == "nack" else min(prefetch, args.count)
    held: list[Message] = []
    received = 0
    # Reconnect only when tailing a queue; a bounded read fails fast instead.
    async with (
        connect(args, reconnect=args.count is None) as client,
        client.subscribe(args.queue, prefetch) as subscription,
    ):
        while args.count is None or received < args.count:
            message = await subscription.get(args.timeout)
            if message is None:
                break
            print_json(message.to_dict())
            if args.settle == "ack":
                await message.ack()
            else:
                held.append(message)
            received += 1
        for message in held:
            await message.nack(requeue=True)
    return 0


# -- messages browse / get / retry ------------------------------------------------------


def add_messages(commands: Subparsers) -> None:
    """Add ``broker messages browse|get|retry``."""
    messages = commands.add_parser(
        "messages",
        help="browse a queue's messages, show one, retry a failed one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = messages.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=help)
        add_connection_options(parser)
        add_output_options(parser)
        parser.add_argument("queue")
        return parser

    browse = action("browse", "list a queue's messages by ascending id (consume or manage)")
    browse.add_argument("--status", choices=_STATUSES, help="only these (default: all)")
    browse.add_argument(
        "--limit", type=int, default=100, help="most messages per page (default: %(default)s)"
    )
    browse.add_argument("--cursor", type=int, help="next_cursor of the last page (default: first)")
    browse.add_argument(
        "--all", action="store_true", help="follow next_cursor to the end (default: one page)"
    )
    browse.set_defaults(handler=command(_browse))
    get = action("get", "one message by id, content and all (consume or manage)")
    get.add_argument("message_id", type=int)
    get.set_defaults(handler=command(_get))
    retry = action("retry", "move a failed or dead-lettered message back to pending (manage)")
    retry.add_argument("message_id", type=int)
    retry.set_defaults(handler=command(_retry))


async def _browse(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.cursor is not None:
        params["cursor"] = args.cursor
    found: list[dict[str, Any]] = []
    async with connect(args) as client:
        while True:
            page = (
                await client.request("GET", f"/queues/{quoted(args.queue)}/messages", params=params)
            ).json()
            found.extend(page["messages"])
            if not args.all or page.get("next_cursor") is None:
                break
            params["cursor"] = page["next_cursor"]
    if args.json:
        print_json(found if args.all else page)
    else:
        print_table(found, _COLUMNS)
        if not args.all and page.get("next_cursor") is not None:
            print(f"(more: --cursor {page['next_cursor']}, or --all)", file=sys.stderr)
    return 0


async def _get(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        message = (
            await client.request("GET", f"/queues/{quoted(args.queue)}/messages/{args.message_id}")
        ).json()
    if args.json:
        print_json(message)
    else:
        print_record(message)
    return 0


async def _retry(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        message = (
            await client.request(
                "POST", f"/queues/{quoted(args.queue)}/messages/{args.message_id}/retry"
            )
        ).json()
    if args.json:
        print_json(message)
    else:
        print(f"message {message['message_id']} of {args.queue} is {message['status']} again")
    return 0
