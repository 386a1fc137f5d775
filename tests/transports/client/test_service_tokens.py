"""The client library manages service tokens and speaks for a machine with one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import ADMIN_PASSWORD, MS
from transports.client import AuthError, Client

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


async def test_create_list_and_revoke(server: BrokerServer) -> None:
    """create_service_token shows the token once; service_tokens lists it; revoke removes it."""
    async with Client(server.url, username="admin", password=ADMIN_PASSWORD) as admin:
        created = await admin.create_service_token("prometheus", ["metrics:read"])
        assert created.token.startswith("wsb_") and created.scopes == ["metrics:read"]
        assert [t.id for t in await admin.service_tokens()] == [created.id]
        await admin.revoke_service_token(created.id)
        assert await admin.service_tokens() == []


async def test_a_client_speaks_for_a_machine_with_a_service_token(server: BrokerServer) -> None:
    """A Client given a service token as access_token publishes and consumes over /ws."""
    async with Client(server.url, username="admin", password=ADMIN_PASSWORD) as admin:
        await admin.create_queue("jobs")
        created = await admin.create_service_token("worker", ["publish:jobs", "consume:jobs"])
        async with Client(
            server.url, access_token=created.token, connect_timeout=5000 * MS
        ) as machine:
            message_id = await machine.publish("jobs", {"n": 1})
            async with machine.subscribe("jobs", prefetch=1) as jobs:
                async for message in jobs:
                    assert message.message_id == message_id
                    await message.ack()
                    break
        await admin.revoke_service_token(created.id)
        async with Client(server.url, access_token=created.token) as revoked:
            with pytest.raises(AuthError):
                await revoked.queues()
