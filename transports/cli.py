"""The ``broker`` command: ``broker serve`` starts the broker; other commands talk to one.

Settings come from ``BROKER_*`` environment variables; flags override them.
Each group of commands lives in a module of its own (``cli_queues.py``,
``cli_messages.py``, ...) whose ``add_*`` function `COMMANDS` lists: a new
group is one new module and one line there. `transports.cli_client` holds
what the client commands share (profiles, TLS trust, output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_backup import add_backup
from .cli_messages import add_consume, add_messages, add_publish
from .cli_queues import add_queues
from .cli_retries import RETRY_COMMANDS
from .cli_schedules import add_schedules
from .cli_session import add_login, add_logout, add_version, client_version
from .cli_tokens import add_tokens
from .cli_topics import add_topics
from .cli_users import add_users
from .cli_webhooks import WEBHOOK_COMMANDS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from broker_core.settings import Settings

__all__ = ["COMMANDS", "build_parser", "main", "settings_from_args"]


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="start the broker (HTTPS on 0.0.0.0:8777 by default)")
    serve.add_argument("--host", help="address to listen on (BROKER_HOST; default: 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (BROKER_PORT; default: 8777)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="where data, secrets and logs live (BROKER_DATA_DIR; default: broker-data)",
    )
    serve.add_argument(
        "--no-tls",
        dest="tls",
        action="store_const",
        const=False,
        help="serve plain HTTP (BROKER_TLS=false; default: HTTPS)",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        help="certificate file, PEM (BROKER_TLS_CERT; default: a self-signed one,"
        " made in the data dir)",
    )
    serve.add_argument(
        "--tls-key",
        type=Path,
        help="private key file, PEM (BROKER_TLS_KEY; default: the self-signed one's)",
    )
    serve.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING, ... (BROKER_LOG_LEVEL; default: INFO)"
    )
    serve.add_argument(
        "--storage",
        dest="storage_url",
        help="storage URL, postgresql://... (BROKER_STORAGE_URL; default: SQLite in the data dir)",
    )
    serve.add_argument(
        "--dev",
        action="store_const",
        const=True,
        help="development mode: GraphiQL at /graphql (BROKER_DEV; default: off)",
    )
    serve.add_argument(
        "--accept-data-loss",
        action="store_const",
        const=True,
        help="start even if the SQLite database lost committed writes"
        " (BROKER_ACCEPT_DATA_LOSS; default: refuse)",
    )
    serve.set_defaults(handler=_serve)


def settings_from_args(args: argparse.Namespace, flags: Sequence[str]) -> Settings | None:
    """``BROKER_*`` settings overridden by the ``flags`` given on the command line.

    Returns ``None`` after saying why on stderr when they are invalid (exit 2).
    """
    from broker_core.settings import Settings

    overrides = {
        name: getattr(args, name) for name in flags if getattr(args, name, None) is not None
    }
    try:
        return Settings.from_env(**overrides)
    except (ValueError, TypeError) as exc:
        print(f"broker: invalid settings: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    settings = settings_from_args(args, (
        "host", "port", "data_dir", "tls", "tls_cert", "tls_key", "log_level", "storage_url",
        "dev", "accept_data_loss",
    ))  # fmt: skip
    if settings is None:
        return 2
    from storage import StorageError

    from .startup import StartError

    try:
        serve(settings)
    except (StartError, StorageError) as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 1
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], Any]] = [
    _add_serve,
    add_backup,
    add_login,
    add_logout,
    add_version,
    add_queues,
    add_publish,
    add_consume,
    add_messages,
    add_users,
    add_tokens,
    add_topics,
    *RETRY_COMMANDS,
    add_schedules,
    *WEBHOOK_COMMANDS,
]
"""Functions that add a sub-command to the parser: one line per command group."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``broker`` command."""
    parser = argparse.ArgumentParser(
        prog="broker", description="A durable HTTP/WebSocket message broker, and its client."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s (wsbroker) {client_version()}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``broker`` console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
