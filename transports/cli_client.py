"""The ``broker`` commands that talk to a running broker: login, queues, publish, consume.

They use the client library (`transports.client`). Every command takes
``--url`` (``BROKER_URL``, default ``https://127.0.0.1:8777``) and
``--insecure`` (``BROKER_INSECURE=1``: accept the self-signed certificate).
``broker login`` keeps the tokens, per broker URL, in ``tokens.json`` (mode
0600) under ``$BROKER_CONFIG_DIR`` or ``~/.config/wsbroker``; later commands
refresh them there. With ``BROKER_USERNAME`` and ``BROKER_PASSWORD`` set, the
commands log in by themselves instead.

Examples::

    broker login --username admin
    broker queues
    broker publish jobs '{"order": 7}'
    seq 1 1000 | broker publish jobs -
    broker consume jobs --prefetch 50 --count 10
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from typing import TypeAlias

    from broker_core.auth import TokenPair

    from .client import Client, Message

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["CLIENT_COMMANDS", "config_dir", "load_tokens", "save_tokens"]

_TOKENS_FILE = "tokens.json"
_PUBLISH_WINDOW = 500
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def config_dir() -> Path:
    """Where the CLI keeps its tokens: ``$BROKER_CONFIG_DIR`` or ``~/.config/wsbroker``."""
    configured = os.environ.get("BROKER_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "wsbroker"


def load_tokens(url: str) -> dict[str, str] | None:
    """The tokens stored for the broker at ``url``, if any."""
    path = config_dir() / _TOKENS_FILE
    try:
        stored = _decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    entry = stored.get(url.rstrip("/")) if isinstance(stored, dict) else None
    return entry if isinstance(entry, dict) else None


def save_tokens(url: str, pair: TokenPair, username: str | None = None) -> Path:
    """Store a token pair for ``url`` (file mode 0600, directory 0700); return the file."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / _TOKENS_FILE
    try:
        stored = _decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        stored = {}
    if not isinstance(stored, dict):
        stored = {}
    key = url.rstrip("/")
    entry = {"access_token": pair.access_token, "refresh_token": pair.refresh_token}
    previous = stored.get(key)
    username = username or (previous.get("username") if isinstance(previous, dict) else None)
    if username:
        entry["username"] = username
    stored[key] = entry
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(_encoder.encode(stored))
    os.chmod(temporary, 0o600)  # O_CREAT's mode doesn't apply to an existing file
    os.replace(temporary, path)
    return path


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("BROKER_URL", "https://127.0.0.1:8777"),
        help="the broker's URL (BROKER_URL; default https://127.0.0.1:8777)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=os.environ.get("BROKER_INSECURE", "").lower() in ("1", "true", "yes", "on"),
        help="accept any TLS certificate, such as the broker's self-signed one",
    )


def _client(args: argparse.Namespace, **options: Any) -> Client:
    """A client of the broker named by the flags, with the stored or environment credentials."""
    from .client import Client

    url: str = args.url
    username = os.environ.get("BROKER_USERNAME")
    password = os.environ.get("BROKER_PASSWORD")
    stored = load_tokens(url) if password is None else None
    if stored is None and password is None:
        raise _Usage("not logged in: run `broker login` first (or set BROKER_PASSWORD)")
    stored = stored or {}

    def keep(pair: TokenPair) -> None:
        save_tokens(url, pair)

    return Client(
        url,
        username=username or stored.get("username"),
        password=password,
        access_token=stored.get("access_token"),
        refresh_token=stored.get("refresh_token"),
        insecure=args.insecure,
        on_tokens=keep if password is None else None,
        **{"reconnect": False, **options},
    )


class _Usage(Exception):
    """A mistake of the user's, reported without a traceback."""


def _run(main: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Run an async command; report errors in one line (exit 1), Ctrl-C as 130."""

    def handler(args: argparse.Namespace) -> int:
        from loguru import logger

        from .client import ClientError

        # The library's debug records are noise on a terminal; errors are printed below.
        logger.disable("transports.client")
        try:
            result: int = asyncio.run(main(args)) or 0
        except KeyboardInterrupt:
            return 130
        except (_Usage, ClientError, OSError) as exc:
            print(f"broker: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            import httpx

            if isinstance(exc, httpx.HTTPError):
                hint = (
                    " (--insecure accepts a self-signed one)" if "CERTIFICATE" in str(exc) else ""
                )
                print(f"broker: cannot reach the broker: {exc}{hint}", file=sys.stderr)
                return 1
            raise
        finally:
            logger.enable("transports.client")
        return result

    return handler


def _print_json(value: Any) -> None:
    sys.stdout.write(_encoder.encode(value).decode() + "\n")
    sys.stdout.flush()


# -- login ------------------------------------------------------------------------------


def _add_login(commands: Subparsers) -> None:
    login = commands.add_parser("login", help="log in and keep the tokens for later commands")
    _common(login)
    login.add_argument(
        "--username", default=os.environ.get("BROKER_USERNAME", "admin"), help="default admin"
    )
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    login.set_defaults(handler=_run(_login))


async def _login(args: argparse.Namespace) -> int:
    from .client import RestClient

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = os.environ.get("BROKER_PASSWORD") or getpass.getpass(
            f"password for {args.username}: "
        )
    async with RestClient(args.url, insecure=args.insecure) as client:
        pair = await client.login(args.username, password)
    path = save_tokens(args.url, pair, args.username)
    print(f"logged in to {args.url} as {args.username}; tokens kept in {path}", file=sys.stderr)
    return 0


# -- queues -----------------------------------------------------------------------------


def _add_queues(commands: Subparsers) -> None:
    queues = commands.add_parser("queues", help="list the queues and their counts")
    _common(queues)
    queues.add_argument("--json", action="store_true", help="one JSON object per line")
    queues.set_defaults(handler=_run(_queues))


async def _queues(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        queues = await client.queues()
    if args.json:
        for queue in queues:
            _print_json(queue)
        return 0
    columns = ("name", "pending", "processing", "processed", "failed", "consumers")
    rows = [[str(getattr(queue, column)) for column in columns] for queue in queues]
    table = [[column.upper() for column in columns], *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        cells = [cell.rjust(width) for cell, width in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        print("  ".join(cells).rstrip())
    return 0


# -- publish ----------------------------------------------------------------------------


def _add_publish(commands: Subparsers) -> None:
    publish = commands.add_parser(
        "publish", help="publish a message, or one per line of standard input with '-'"
    )
    _common(publish)
    publish.add_argument("queue")
    publish.add_argument(
        "message",
        nargs="?",
        default="-",
        help="the content: JSON, else taken as a string; '-' (default) reads lines from stdin",
    )
    publish.add_argument(
        "--string", action="store_true", help="send the text as a JSON string, even if it parses"
    )
    publish.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a message header (repeatable)",
    )
    publish.set_defaults(handler=_run(_publish))


def _content(text: str, as_string: bool) -> Any:
    if as_string:
        return text
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError:
        return text


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
            raise _Usage(f"--header wants NAME=VALUE, got {header!r}")
        headers[name] = value
    async with _client(args, window=_PUBLISH_WINDOW) as client:
        if args.message == "-":
            contents = (_content(line, args.string) for line in _stdin_lines())
            ids = await client.publish_many(args.queue, contents, headers=headers or None)
        else:
            ids = [
                await client.publish(
                    args.queue, _content(args.message, args.string), headers=headers or None
                )
            ]
    for message_id in ids:
        _print_json({"queue": args.queue, "message_id": message_id})
    return 0


# -- consume ----------------------------------------------------------------------------


def _add_consume(commands: Subparsers) -> None:
    consume = commands.add_parser(
        "consume", help="print pushed messages as JSON lines (acked by default)"
    )
    _common(consume)
    consume.add_argument("queue")
    consume.add_argument(
        "--prefetch", type=int, default=10, help="most unsettled messages at once (default 10)"
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
        help="stop after this many messages (up to --prefetch more may have been pushed:"
        " they are requeued, marked redelivered)",
    )
    consume.add_argument(
        "--timeout", type=float, help="stop when no message came for this many seconds"
    )
    consume.set_defaults(handler=_run(_consume), settle="ack")


async def _consume(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise _Usage("--count must be at least 1")
    if args.prefetch < 1:
        raise _Usage("--prefetch must be at least 1")
    prefetch = args.prefetch
    if args.count is not None:
        # A peek holds what it read until the end; acking needs no more credit than that.
        prefetch = args.count if args.settle == "nack" else min(prefetch, args.count)
    held: list[Message] = []
    received = 0
    # Reconnect only when tailing a queue; a bounded read fails fast instead.
    async with (
        _client(args, reconnect=args.count is None) as client,
        client.subscribe(args.queue, prefetch) as subscription,
    ):
        while args.count is None or received < args.count:
            message = await subscription.get(args.timeout)
            if message is None:
                break
            _print_json(message.to_dict())
            if args.settle == "ack":
                await message.ack()
            else:
                held.append(message)
            received += 1
        for message in held:
            await message.nack(requeue=True)
    return 0


CLIENT_COMMANDS: list[Callable[[Subparsers], None]] = [
    _add_login,
    _add_queues,
    _add_publish,
    _add_consume,
]
"""The sub-commands this module adds to ``broker`` (see `transports.cli.COMMANDS`)."""
