"""The Python client of the broker: asyncio, WebSocket push and pipelined publishes, REST.

Example::

    import asyncio
    from transports.client import Client

    async def main() -> None:
        async with Client("https://127.0.0.1:8777", username="admin",
                          password="...", insecure=True) as client:
            await client.create_queue("jobs")
            ids = await client.publish_many("jobs", ({"n": n} for n in range(1000)))
            async with client.subscribe("jobs", prefetch=50) as jobs:
                async for message in jobs:
                    print(message.message_id, message.content)
                    await message.ack()

    asyncio.run(main())

The library is silent: it logs through loguru under the ``transports.client``
namespace, disabled at import as loguru advises for libraries. Turn it on
with ``from loguru import logger; logger.enable("transports.client")``.
"""

from __future__ import annotations

from loguru import logger

from .client import Client
from .connection import BrokerConnection
from .errors import AuthError, ClientError, ClosedError, RequestError
from .messages import Message
from .rest import DEFAULT_URL, RestClient
from .subscription import ClientSubscription

# A library must not write to its user's stderr unless asked (loguru's
# "Library" guidance): its records stay off until `logger.enable`.
logger.disable(__name__)

__all__ = [
    "DEFAULT_URL",
    "AuthError",
    "BrokerConnection",
    "Client",
    "ClientError",
    "ClientSubscription",
    "ClosedError",
    "Message",
    "RequestError",
    "RestClient",
]
