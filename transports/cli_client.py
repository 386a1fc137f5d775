"""What every ``broker`` command that talks to a running broker shares.

A command module (``cli_queues.py``, ``cli_messages.py``, ...) adds its
sub-commands with `add_connection_options` and `add_output_options`, runs
its coroutine through `command`, gets a logged-in `transports.client.Client`
from `connect`, and prints with `print_table` (people) or `print_json`
(``--json``, scripts). `transports.cli.COMMANDS` lists the modules' ``add_*``
functions: a new module adds one line there.

Which broker, and how it is trusted, comes from the profile
(`transports.cli_profiles`): flags, then ``BROKER_*`` variables, then what
``broker login`` remembered. With ``BROKER_USERNAME`` and ``BROKER_PASSWORD``
set, the commands log in by themselves instead of using stored tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import ssl
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .cli_profiles import (
    CertificateChanged,
    Profile,
    Trust,
    fingerprint,
    load_profile,
    pinned_context,
    presented_certificate,
    save_profile,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from typing import TypeAlias

    from broker_core.auth import TokenPair

    from .client import Client

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "DEFAULT_URL",
    "Target",
    "Usage",
    "add_connection_options",
    "add_output_options",
    "command",
    "confirm",
    "connect",
    "print_json",
    "print_record",
    "print_table",
    "quoted",
    "target_of",
]

DEFAULT_URL = "https://127.0.0.1:8777"
_encoder = msgspec.json.Encoder()


class Usage(Exception):
    """A mistake of the user's, reported in one line without a traceback (exit 1)."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def add_connection_options(parser: argparse.ArgumentParser, *, again: bool = False) -> None:
    """``--profile``, ``--url`` and ``--insecure``, which every client command takes.

    ``again``: the options are repeated on an action of a group
    (``broker queues list``); there they default to "not given", so that
    ``broker queues --json list`` keeps what came before the action.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if again else value

    parser.add_argument(
        "--profile",
        default=default(os.environ.get("BROKER_PROFILE", "default")),
        help="the remembered broker to use (BROKER_PROFILE; default: default)",
    )
    parser.add_argument(
        "--url",
        default=default(os.environ.get("BROKER_URL")),
        help="the broker's URL (BROKER_URL; default: the profile's, else " + DEFAULT_URL + ")",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=default(_env_flag("BROKER_INSECURE")),
        help="accept any TLS certificate (BROKER_INSECURE=1; `broker login --insecure` "
        "remembers it for the profile; default: verify, or the certificate pinned at login)",
    )


def add_output_options(parser: argparse.ArgumentParser, *, again: bool = False) -> None:
    """``--json``: machine-readable output instead of a table (``again``: as above)."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if again else False,
        help="print JSON for scripts (default: a table)",
    )


def command_group(
    commands: Subparsers,
    name: str,
    help: str,
    description: str | None,
    default: Callable[[argparse.Namespace], Coroutine[Any, Any, int | None]],
) -> Callable[[str, str], argparse.ArgumentParser]:
    """Add ``broker NAME`` (running ``default`` when no action is given).

    Returns the function that adds one of its actions, with the connection
    and output options every action takes.
    """
    group = commands.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(group)
    add_output_options(group)
    group.set_defaults(handler=command(default))
    actions = group.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=help)
        add_connection_options(parser, again=True)
        add_output_options(parser, again=True)
        return parser

    return action


@dataclass
class Target:
    """The broker a command talks to, how its certificate is trusted, and the stored login."""

    name: str
    url: str
    trust: Trust
    certificate: str | None
    profile: Profile | None

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The TLS context for this broker (``None``: the client's default)."""
        if self.trust is Trust.PINNED and self.certificate is not None:
            return pinned_context(self.certificate)
        return None

    @property
    def logged_in(self) -> bool:
        """Whether the profile holds tokens for this URL."""
        return (
            self.profile is not None
            and self.profile.url == self.url
            and self.profile.refresh_token is not None
        )

    def keep(self, pair: TokenPair, username: str | None = None) -> None:
        """Store a new token pair (and the trust it was got with) in the profile."""
        current = load_profile(self.name)
        if current is not None and current.url == self.url:
            username = username or current.username
        save_profile(
            self.name,
            Profile(
                url=self.url,
                trust=self.trust,
                certificate=self.certificate,
                username=username,
                access_token=pair.access_token,
                refresh_token=pair.refresh_token,
            ),
        )


def target_of(args: argparse.Namespace) -> Target:
    """The broker named by the flags, the environment and the profile, in that order."""
    profile = load_profile(args.profile)
    url = (args.url or (profile.url if profile else None) or DEFAULT_URL).rstrip("/")
    same = profile is not None and profile.url == url
    if args.insecure:
        trust, certificate = Trust.INSECURE, None
    elif same and profile is not None:
        trust, certificate = profile.trust, profile.certificate
    else:
        trust, certificate = Trust.VERIFY, None
    return Target(args.profile, url, trust, certificate, profile if same else None)


def connect(args: argparse.Namespace, **options: Any) -> Client:
    """A client of the command's broker, with the stored or the environment's credentials.

    Raises:
        Usage: not logged in to that broker and no ``BROKER_PASSWORD``.
    """
    from .client import Client

    target: Target = args.target
    username = os.environ.get("BROKER_USERNAME")
    password = os.environ.get("BROKER_PASSWORD")
    profile = target.profile
    if password is None and not target.logged_in:
        hint = "broker login" if target.url == DEFAULT_URL else f"broker login --url {target.url}"
        if args.profile != "default":
            hint += f" --profile {args.profile}"
        raise Usage(
            f"not logged in to {target.url} (profile {args.profile!r}): run `{hint}` first"
            " (or set BROKER_PASSWORD)"
        )
    stored = profile if password is None and profile is not None else Profile(url=target.url)
    return Client(
        target.url,
        # `broker login`'s default user, so BROKER_PASSWORD alone works as it does there.
        username=username or stored.username or "admin",
        password=password,
        access_token=stored.access_token,
        refresh_token=stored.refresh_token,
        insecure=target.trust is Trust.INSECURE,
        tls=target.tls,
        on_tokens=target.keep if password is None else None,
        **{"reconnect": False, **options},
    )


def _certificate_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failed certificate verification."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def changed_certificate(target: Target) -> CertificateChanged:
    """The error for a pinned broker whose certificate no longer verifies."""
    assert target.certificate is not None, "only a pinned target has a certificate"
    try:
        presented: str | None = fingerprint(presented_certificate(target.url))
    except (OSError, ValueError):
        presented = None
    return CertificateChanged(target.url, fingerprint(target.certificate), presented)


def report_changed(exc: CertificateChanged, profile: str) -> None:
    """Say loudly that a pinned certificate changed, and what to do about it."""
    print(
        "broker: @@@ THE BROKER'S CERTIFICATE HAS CHANGED @@@\n"
        f"  {exc.url} presented a certificate other than the one pinned in profile"
        f" {profile!r} at the first login:\n"
        f"    pinned:    SHA256 {exc.pinned}\n"
        f"    presented: SHA256 {exc.presented or '(could not be read)'}\n"
        "  Someone may be intercepting the connection, or the broker made a new certificate\n"
        "  (a new data dir, or its certificate expired). Nothing was sent. If you know why it\n"
        f"  changed, check the new fingerprint on the broker's host and run:\n"
        f"    broker login --url {exc.url} --repin",
        file=sys.stderr,
    )


def command(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, int | None]],
) -> Callable[[argparse.Namespace], int]:
    """Wrap an async command: errors in one line (exit 1), Ctrl-C as 130."""

    @functools.wraps(main)
    def handler(args: argparse.Namespace) -> int:
        from .client import ClientError

        try:
            args.target = target_of(args)
            result: int = asyncio.run(main(args)) or 0
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            return _reader_gone()
        except CertificateChanged as exc:
            report_changed(exc, args.profile)
            return 1
        except (Usage, ClientError, OSError) as exc:
            return _failed(args, exc)
        except Exception as exc:
            import httpx

            if isinstance(exc, httpx.HTTPError):
                return _failed(args, exc, "cannot reach the broker: ")
            raise
        return result

    return handler


def _reader_gone() -> int:
    """Whoever read our output stopped (``broker ... | head``): end quietly, as a
    shell command killed by SIGPIPE would (Python ignores the signal)."""
    # Python flushes stdout at exit: point it at /dev/null so that this flush
    # does not fail again and print a traceback.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13


def _failed(args: argparse.Namespace, exc: Exception, prefix: str = "") -> int:
    target: Target | None = getattr(args, "target", None)
    if target is not None and _certificate_failure(exc):
        if target.trust is Trust.PINNED:
            report_changed(changed_certificate(target), args.profile)
            return 1
        hint = (
            f" (a self-signed broker: `broker login --url {target.url}` pins its certificate,"
            " or --insecure accepts any)"
        )
        print(f"broker: {prefix}{exc}{hint}", file=sys.stderr)
        return 1
    print(f"broker: {prefix}{exc}", file=sys.stderr)
    return 1


def parse_content(text: str, as_string: bool) -> Any:
    """A message's content from the command line: JSON when it parses, else the text."""
    if as_string:
        return text
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def output(args: argparse.Namespace, value: Any, people: Sequence[str] | str | None = None) -> None:
    """``value`` as JSON with ``--json``; else for people: a table of the ``people`` columns
    (a list of rows), the ``people`` line (a string), or a record (``None``)."""
    if args.json:
        print_json(value)
    elif isinstance(people, str):
        print(people)
    elif people is not None:
        print_table(value, people)
    else:
        print_record(value)


def print_json(value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    sys.stdout.write(_encoder.encode(value).decode() + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, dict)):
        return _encoder.encode(value).decode()
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` as aligned columns under an upper-case header (numbers right-aligned)."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    table = [[column.upper() for column in columns], *cells]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    numeric = [
        bool(rows) and all(isinstance(row.get(c), int | float) for row in rows) for c in columns
    ]
    for line in table:
        out = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        ]
        print("  ".join(out).rstrip())


def print_record(record: dict[str, Any]) -> None:
    """Print one object as ``field: value`` lines."""
    width = max((len(key) for key in record), default=0)
    for key, value in record.items():
        print(f"{key.ljust(width)}  {_cell(value)}")


def confirm(args: argparse.Namespace, what: str) -> None:
    """Ask before ``what`` unless ``--yes``; refuse without a terminal to ask on.

    Raises:
        Usage: not confirmed.
    """
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise Usage(f"{what}: pass --yes to confirm (standard input is not a terminal)")
    if input(f"{what}? [y/N] ").strip().lower() not in ("y", "yes"):
        raise Usage("cancelled")


def quoted(name: str) -> str:
    """``name`` as one path segment of a URL (a queue or user name)."""
    from urllib.parse import quote

    return quote(name, safe="")


# Names the first version of this module had; commands written against it keep working.
_Usage = Usage
_common = add_connection_options
_run = command
_client = connect
_print_json = print_json
