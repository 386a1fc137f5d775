"""Every ``broker`` client command, run as a subprocess against a real server."""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer
    from tests.transports.cli.cli_helpers import Cli


async def test_login_remembers_the_server_in_a_private_file(cli: Cli, server: BrokerServer) -> None:
    """``login --url`` stores the URL and tokens 0600; later commands need no ``--url``."""
    run = await cli.login("--url", server.url)
    assert f"logged in to {server.url} as admin" in run.err
    path = cli.config_dir / "profiles.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_dir.stat().st_mode) == 0o700
    profile = json.loads(path.read_text())["default"]
    assert profile["url"] == server.url and profile["refresh_token"]
    assert (await cli.ok("queues", "--json")).json() == []


async def test_not_logged_in_names_the_server_and_the_command(
    cli: Cli, server: BrokerServer
) -> None:
    """Without a login the error names the URL asked for and the login command for it."""
    run = await cli("queues", "--url", server.url)
    assert run.code == 1
    assert f"not logged in to {server.url}" in run.err
    assert f"broker login --url {server.url}" in run.err
    run = await cli("queues", "--profile", "staging")
    assert "not logged in to https://127.0.0.1:8777 (profile 'staging')" in run.err
    assert "broker login --profile staging" in run.err


async def test_logout_revokes_and_forgets_the_tokens(logged_in: Cli, server: BrokerServer) -> None:
    """``logout`` revokes the refresh token; the next command says it is not logged in."""
    refresh = json.loads((logged_in.config_dir / "profiles.json").read_text())["default"][
        "refresh_token"
    ]
    await logged_in.ok("logout")
    run = await logged_in("queues")
    assert run.code == 1 and "not logged in" in run.err
    import httpx

    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/auth/refresh", json={"refresh_token": refresh})
    assert response.status_code == 401


async def test_queue_lifecycle(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """create, show, update, list (table and JSON), purge, redrive, delete."""
    created = (
        await logged_in.ok("queues", "create", "jobs", "--max-attempts", "2", "--json")
    ).json()
    assert (created["name"], created["max_attempts"]) == ("jobs", 2)
    again = await logged_in("queues", "create", "jobs")
    assert again.code == 1 and "exists" in again.err
    shown = (await logged_in.ok("queues", "show", "jobs")).out
    assert "max_attempts" in shown and "jobs" in shown
    updated = await logged_in.ok(
        "queues", "update", "jobs", "--lease", "45", "--option", "max_attempts=null", "--json"
    )
    assert (updated.json()["lease"], updated.json()["max_attempts"]) == (45, None)
    await client.post("/queues/jobs/messages", json={"content": 1})
    header, row = (await logged_in.ok("queues")).out.splitlines()
    assert header.split() == ["NAME", "PENDING", "PROCESSING", "PROCESSED", "FAILED", "CONSUMERS"]
    assert row.split() == ["jobs", "1", "0", "0", "0", "0"]
    assert [q["name"] for q in (await logged_in.ok("queues", "list", "--json")).json()] == ["jobs"]
    refused = await logged_in("queues", "purge", "jobs")
    assert refused.code == 1 and "--yes" in refused.err
    assert (await logged_in.ok("queues", "purge", "jobs", "--yes", "--json")).json() == {
        "purged": 1
    }
    assert "moved 0" in (await logged_in.ok("queues", "redrive", "jobs")).out
    await logged_in.ok("queues", "delete", "jobs", "--yes")
    assert (await client.get("/queues/jobs")).status_code == 404


async def test_publish_then_consume_prints_json_lines(
    logged_in: Cli, client: httpx.AsyncClient
) -> None:
    """``publish`` prints the ids (one, or a line of stdin each); ``consume --count`` acks."""
    await logged_in.ok("queues", "create", "jobs")
    [one] = (await logged_in.ok("publish", "jobs", '{"order": 7}', "--header", "k=v")).lines()
    assert len((await logged_in.ok("publish", "jobs", "-", stdin="1\nhello world\n")).lines()) == 2
    [consumed] = (await logged_in.ok("consume", "jobs", "--count", "1")).lines()
    assert consumed["message_id"] == one["message_id"]
    assert (consumed["content"], consumed["headers"]) == ({"order": 7}, {"k": "v"})
    peek = (await logged_in.ok("consume", "jobs", "--nack", "--count", "2")).lines()
    assert [m["content"] for m in peek] == [1, "hello world"]
    info = (await client.get("/queues/jobs")).json()
    assert (info["pending"], info["processed"]) == (2, 1)
    idle = await logged_in.ok("consume", "jobs", "--timeout", "0.2", "--count", "5")
    assert len(idle.lines()) == 2


async def test_messages_browse_get_retry(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """browse by status (one page or --all), get one message, retry a failed one."""
    await client.post("/queues", json={"name": "jobs"})
    await client.post(
        "/queues/jobs/messages/batch", json={"messages": [{"content": n} for n in range(3)]}
    )
    leased = (await client.get("/queues/jobs/messages/consume")).json()["messages"][0]
    failed_id = leased["message_id"]
    await client.post(f"/messages/{failed_id}/nack", params={"requeue": "false"})
    table = (await logged_in.ok("messages", "browse", "jobs", "--status", "failed")).out
    assert table.splitlines()[0].split()[:3] == ["MESSAGE_ID", "STATUS", "ATTEMPT"]
    assert [line.split()[:2] for line in table.splitlines()[1:]] == [[str(failed_id), "failed"]]
    page = (await logged_in.ok("messages", "browse", "jobs", "--limit", "1", "--json")).json()
    assert len(page["messages"]) == 1 and page["next_cursor"] is not None
    everything = (
        await logged_in.ok("messages", "browse", "jobs", "--limit", "1", "--all", "--json")
    ).json()
    assert len(everything) == 3
    got = (await logged_in.ok("messages", "get", "jobs", str(failed_id), "--json")).json()
    assert (got["status"], got["content"]) == ("failed", 0)
    assert "pending again" in (await logged_in.ok("messages", "retry", "jobs", str(failed_id))).out
    assert (await client.get(f"/queues/jobs/messages/{failed_id}")).json()["status"] == "pending"
    missing = await logged_in("messages", "get", "jobs", "999")
    assert missing.code == 1 and "not" in missing.err


async def test_users_lifecycle(logged_in: Cli, server: BrokerServer) -> None:
    """create (password on stdin), list, show, update (disable), delete."""
    created = await logged_in.ok(
        "users", "create", "billing", "--permission", "billing.*=publish,consume",
        "--password-stdin", "--json", stdin="billing-password\n",
    )  # fmt: skip
    assert created.json()["permissions"] == [
        {"pattern": "billing.*", "actions": ["publish", "consume"]}
    ]
    listed = (await logged_in.ok("users")).out.splitlines()
    assert listed[0].split()[:3] == ["USERNAME", "ADMIN", "DISABLED"]
    assert sorted(line.split()[0] for line in listed[1:]) == ["admin", "billing"]
    assert "billing.*" in (await logged_in.ok("users", "show", "billing")).out
    disabled = await logged_in.ok("users", "update", "billing", "--disable", "--json")
    assert disabled.json()["disabled"] is True
    bad = await logged_in("users", "create", "x", "--permission", "q=fly", "--password-stdin")
    assert bad.code == 1 and "PATTERN=ACTIONS" in bad.err
    await logged_in.ok("users", "delete", "billing", "--yes")
    assert "billing" not in (await logged_in.ok("users", "list", "--json")).out


async def test_version_prints_client_and_server(logged_in: Cli, server: BrokerServer) -> None:
    """``broker version`` names both versions; ``broker --version`` the client's alone."""
    from transports import VERSION

    run = (await logged_in.ok("version", "--json")).json()
    assert run == {"client": VERSION, "server": VERSION, "url": server.url}
    assert (await logged_in.ok("--version")).out.strip() == f"broker (wsbroker) {VERSION}"


async def test_help_shows_the_defaults(cli: Cli) -> None:
    """Options with a default say it in ``--help``."""
    consume = (await cli.ok("consume", "--help")).out
    assert "(default: 10)" in consume and "default: wait for ever" in consume
    browse = (await cli.ok("messages", "browse", "--help")).out
    assert "(default: 100)" in browse
    assert "default: 8777" in (await cli.ok("serve", "--help")).out


async def test_options_before_the_action_are_kept(logged_in: Cli, server: BrokerServer) -> None:
    """``broker queues --json list`` is ``broker queues list --json``: the action's
    defaults do not undo what was given before it."""
    await logged_in.ok("queues", "create", "early")
    listed = await logged_in.ok("queues", "--json", "list")
    assert [q["name"] for q in listed.json()] == ["early"]
    run = await logged_in("queues", "--profile", "nowhere", "list")
    assert run.code == 1 and "profile 'nowhere'" in run.err


async def test_a_reader_that_stops_early_is_not_an_error(
    logged_in: Cli, client: httpx.AsyncClient
) -> None:
    """``broker messages browse q | head -1``: no error on stderr, the exit of a
    process whose pipe closed (141, as a shell reports SIGPIPE)."""
    import asyncio
    import sys

    await logged_in.ok("queues", "create", "long")
    body = {"messages": [{"content": "x" * 200} for _ in range(500)]}
    (await client.post("/queues/long/messages/batch", json=body)).raise_for_status()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "transports", "messages", "browse", "long", "--limit", "500",
        cwd=logged_in.cwd, env=logged_in.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert (await process.stdout.readline()).startswith(b"MESSAGE_ID")
    process._transport.get_pipe_transport(1).close()  # type: ignore[attr-defined]
    err = await asyncio.wait_for(process.stderr.read(), 60)
    assert await process.wait() == 141
    assert err.decode().strip() == ""
