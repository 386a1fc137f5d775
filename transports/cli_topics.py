"""``broker topics ...``: topics, bindings, test routing and publishing by key, from a shell.

Sub-commands (each takes ``--url`` and ``--insecure`` like the other client
commands, and the tokens of ``broker login``)::

    broker topics list [--json]
    broker topics create orders
    broker topics bind orders eu-orders 'orders.eu.#'
    broker topics route orders orders.eu.created
    broker topics publish orders orders.eu.created '{"id": 7}' [--header k=v] [--priority 5]
    broker topics unbind orders eu-orders 'orders.eu.#'
    broker topics delete orders
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

    from .cli_client import Subparsers

__all__ = ["add_topics"]


def add_topics(commands: Subparsers) -> None:
    """Add ``broker topics`` and its sub-commands."""
    topics = commands.add_parser("topics", help="topics: list, create, bind, route, publish")
    actions = topics.add_subparsers(dest="topic_command", required=True)

    listing = actions.add_parser("list", help="list topics and their bindings")
    add_connection_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=command(_list))

    for name, help_text, run in (
        ("create", "create a topic", _create),
        ("delete", "delete a topic and its bindings", _delete),
    ):
        one = actions.add_parser(name, help=help_text)
        add_connection_options(one)
        one.add_argument("topic")
        one.set_defaults(handler=command(run))

    for name, help_text, run in (
        ("bind", "bind a queue to a topic by a pattern ('*' one word, '#' any)", _bind),
        ("unbind", "remove a binding", _unbind),
    ):
        binding = actions.add_parser(name, help=help_text)
        add_connection_options(binding)
        binding.add_argument("topic")
        binding.add_argument("queue")
        binding.add_argument("pattern")
        binding.set_defaults(handler=command(run))

    route = actions.add_parser("route", help="show the queues a routing key would reach")
    add_connection_options(route)
    route.add_argument("topic")
    route.add_argument("routing_key")
    route.set_defaults(handler=command(_route))

    publish = actions.add_parser("publish", help="publish one message by routing key")
    add_connection_options(publish)
    publish.add_argument("topic")
    publish.add_argument("routing_key")
    publish.add_argument("message", help="the content: JSON, else taken as a string")
    publish.add_argument("--string", action="store_true", help="send the text as a JSON string")
    publish.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="a header (repeat)"
    )
    publish.add_argument("--priority", type=int, help="0-9")
    publish.add_argument("--delay-ms", type=int, help="deliver after this many milliseconds")
    publish.add_argument("--ttl-ms", type=int, help="expire if undelivered this long")
    publish.add_argument("--dedup-id", help="a deduplication id")
    publish.set_defaults(handler=command(_publish))


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        topics = await client.topics()
    for topic in topics:
        if args.json:
            print_json(topic)
            continue
        print(topic.name)
        for binding in topic.bindings:
            print(f"  {binding.pattern}  ->  {binding.queue}")
    return 0


async def _create(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        print_json(await client.create_topic(args.topic))
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        await client.delete_topic(args.topic)
    return 0


async def _bind(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        print_json(await client.bind(args.topic, args.queue, args.pattern))
    return 0


async def _unbind(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        await client.unbind(args.topic, args.queue, args.pattern)
    return 0


async def _route(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        for queue in await client.route(args.topic, args.routing_key):
            print(queue)
    return 0


async def _publish(args: argparse.Namespace) -> int:
    headers: dict[str, str] = {}
    for header in args.header:
        name, sep, value = header.partition("=")
        if not sep or not name:
            raise Usage(f"--header wants NAME=VALUE, got {header!r}")
        headers[name] = value
    options = {
        "headers": headers or None,
        "priority": args.priority,
        "delay_ms": args.delay_ms,
        "ttl_ms": args.ttl_ms,
        "dedup_id": args.dedup_id,
    }
    async with connect(args) as client:
        result = await client.publish_topic(
            args.topic,
            args.routing_key,
            parse_content(args.message, args.string),
            **{key: value for key, value in options.items() if value is not None},
        )
    print_json(result)
    return 0
