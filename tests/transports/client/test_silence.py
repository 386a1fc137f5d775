"""The client library is silent by default: a session writes nothing to its user's stderr."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from tests.conftest import ADMIN_PASSWORD, MS, REPO

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer

# A whole session, with paths that log: a refused publish (a missing queue)
# and the connection closed by the client (a DEBUG record).
_SESSION = """
import asyncio, sys
from transports.client import Client, ClientError
if sys.argv[3] == "enable":
    from loguru import logger
    logger.enable("transports.client")

async def main() -> None:
    async with Client(sys.argv[1], username="admin", password=sys.argv[2]) as client:
        await client.publish("jobs", {"n": 1})
        async with client.subscribe("jobs", prefetch=1) as jobs:
            async for message in jobs:
                await message.ack()
                break
        try:
            await client.publish("no-such-queue", {"n": 2})
        except ClientError:
            pass
    print("done")

asyncio.run(main())
"""


async def _session(server: BrokerServer, mode: str) -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SESSION,
        server.url,
        ADMIN_PASSWORD,
        mode,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30_000 * MS)
    assert process.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def test_a_client_session_writes_nothing_to_stderr(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Publish, subscribe, ack and a refused publish leave the user's stderr empty."""
    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    out, err = await _session(server, "default")
    assert out.strip() == "done"
    assert err == ""


async def test_enabling_the_namespace_brings_the_records_back(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """`logger.enable("transports.client")` shows the library's records (the same session)."""
    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    _, err = await _session(server, "enable")
    assert "broker connection closed" in err, err
