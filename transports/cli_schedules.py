"""``broker schedules ...``: list, create, pause, resume and delete a queue's recurring schedules.

Registered in ``transports.cli.COMMANDS``; uses the login and client set-up of
`transports.cli_client`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .cli_client import (
    Usage,
    add_connection_options,
    command,
    connect,
    parse_content,
    print_json,
)

if TYPE_CHECKING:
    import argparse

    from broker_core.schedules import ScheduleView

    from .cli_client import Subparsers

__all__ = ["add_schedules"]


def add_schedules(commands: Subparsers) -> None:
    """Add ``broker schedules {list,create,pause,resume,delete}``."""
    schedules = commands.add_parser("schedules", help="a queue's recurring schedules")
    actions = schedules.add_subparsers(dest="schedules_command", required=True)

    listing = actions.add_parser("list", help="a queue's schedules, next and last fire")
    add_connection_options(listing)
    listing.add_argument("queue")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=command(_list))

    create = actions.add_parser("create", help="create a schedule (--cron or --every-ms)")
    add_connection_options(create)
    create.add_argument("queue")
    create.add_argument("name")
    create.add_argument("content", help="the content of each message: JSON, else a string")
    timing = create.add_mutually_exclusive_group(required=True)
    timing.add_argument("--cron", help="five fields: minute hour day month weekday")
    timing.add_argument("--every-ms", type=int, help="the period in milliseconds (at least 1000)")
    create.add_argument("--timezone", default="UTC", help="IANA zone of --cron (default UTC)")
    create.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    create.add_argument("--priority", type=int, help="0-9")
    create.add_argument("--ttl-ms", type=int, help="each message's time to live")
    create.add_argument("--start-at", type=datetime.fromisoformat, help="ISO 8601 with a zone")
    create.add_argument("--end-at", type=datetime.fromisoformat, help="ISO 8601 with a zone")
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.add_argument("--string", action="store_true", help="send the content as a string")
    create.set_defaults(handler=command(_create))

    for action, text in (
        ("pause", "pause a schedule"),
        ("resume", "resume a schedule (no catch-up of the pause)"),
        ("delete", "delete a schedule"),
    ):
        sub = actions.add_parser(action, help=text)
        add_connection_options(sub)
        sub.add_argument("queue")
        sub.add_argument("name")
        sub.set_defaults(handler=command(_change), action=action)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat().replace("+00:00", "Z")


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        schedules = await client.schedules(args.queue)
    if args.json:
        for schedule in schedules:
            print_json(schedule)
        return 0
    rows = [
        [
            s.name,
            s.cron if s.cron is not None else f"every {s.every_ms} ms",
            s.timezone,
            _when(s.next_fire_at),
            "yes" if s.paused else "no",
            _when(s.last_fired_at),
        ]
        for s in schedules
    ]
    table = [["NAME", "EXPRESSION", "TIMEZONE", "NEXT FIRE", "PAUSED", "LAST FIRE"], *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


async def _create(args: argparse.Namespace) -> int:
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep:
            raise Usage(f"a header is NAME=VALUE, not {item!r}")
        headers[name] = value
    options: dict[str, Any] = {
        "cron": args.cron,
        "every_ms": args.every_ms,
        "timezone": args.timezone,
        "headers": headers or None,
        "priority": args.priority,
        "ttl_ms": args.ttl_ms,
        "start_at": args.start_at,
        "end_at": args.end_at,
        "paused": args.paused,
    }
    async with connect(args) as client:
        created: ScheduleView = await client.create_schedule(
            args.queue, args.name, parse_content(args.content, args.string), **options
        )
    print_json(created)
    return 0


async def _change(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        if args.action == "delete":
            await client.delete_schedule(args.queue, args.name)
            return 0
        if args.action == "pause":
            changed = await client.pause_schedule(args.queue, args.name)
        else:
            changed = await client.resume_schedule(args.queue, args.name)
    print_json(changed)
    return 0
