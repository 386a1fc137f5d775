"""The ``broker`` commands for retries: pause and resume a queue, cancel or reschedule a message.

Examples::

    broker pause jobs                       # until resumed
    broker pause jobs --until 2026-12-06T12:00:00Z
    broker resume jobs
    broker cancel jobs 812                  # a pending, delayed or backing-off message
    broker reschedule jobs 812 --delay-ms 0 --priority 9

They take ``--url`` and ``--insecure`` and the stored login as the other
client commands (`transports.cli_client`), and print the queue or message
as one JSON line.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from .cli_client import Usage, add_connection_options, command, connect, print_json

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from .cli_client import Subparsers

__all__ = ["RETRY_COMMANDS"]


def _instant(text: str) -> datetime:
    """An ISO 8601 instant with its offset (``Z`` or ``+02:00``)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Usage(f"not an ISO 8601 instant: {text!r}") from None
    if value.tzinfo is None:
        raise Usage(f"give the instant's offset (Z or +hh:mm): {text!r}")
    return value


def _add_pause(commands: Subparsers) -> None:
    pause = commands.add_parser(
        "pause", help="hold a queue's deliveries (publishes are still accepted)"
    )
    add_connection_options(pause)
    pause.add_argument("queue")
    pause.add_argument("--until", help="resume by itself at this ISO 8601 instant")
    pause.set_defaults(handler=command(_pause))
    resume = commands.add_parser("resume", help="deliver again from a paused queue")
    add_connection_options(resume)
    resume.add_argument("queue")
    resume.set_defaults(handler=command(_resume))


async def _pause(args: argparse.Namespace) -> int:
    until = _instant(args.until) if args.until else None
    async with connect(args) as client:
        print_json(await client.pause_queue(args.queue, until))
    return 0


async def _resume(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        print_json(await client.resume_queue(args.queue))
    return 0


def _add_messages(commands: Subparsers) -> None:
    cancel = commands.add_parser(
        "cancel", help="cancel a pending, delayed or backing-off message (not a processing one)"
    )
    add_connection_options(cancel)
    cancel.add_argument("queue")
    cancel.add_argument("message_id", type=int)
    cancel.set_defaults(handler=command(_cancel))
    reschedule = commands.add_parser(
        "reschedule", help="change when a pending message is delivered, or its priority"
    )
    add_connection_options(reschedule)
    reschedule.add_argument("queue")
    reschedule.add_argument("message_id", type=int)
    when = reschedule.add_mutually_exclusive_group()
    when.add_argument("--delay-ms", type=int, help="due this many ms from now (0: now)")
    when.add_argument("--deliver-at", help="due at this ISO 8601 instant")
    reschedule.add_argument("--priority", type=int, help="its new priority (0-9)")
    reschedule.set_defaults(handler=command(_reschedule))


async def _cancel(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        await client.cancel_message(args.queue, args.message_id)
    print_json({"message_id": args.message_id, "cancelled": True})
    return 0


async def _reschedule(args: argparse.Namespace) -> int:
    deliver_at = _instant(args.deliver_at) if args.deliver_at else None
    async with connect(args) as client:
        view = await client.reschedule_message(
            args.queue,
            args.message_id,
            delay_ms=args.delay_ms,
            deliver_at=deliver_at,
            priority=args.priority,
        )
    print_json(view)
    return 0


RETRY_COMMANDS: list[Callable[[Subparsers], None]] = [_add_pause, _add_messages]
"""The sub-commands this module adds to ``broker`` (see `transports.cli.COMMANDS`)."""
