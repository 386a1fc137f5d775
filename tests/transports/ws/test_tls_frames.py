"""The ``/ws`` data path over TLS, as ``broker serve`` runs it by default (HTTPS, uvloop).

The session writes its frames straight to the transport (`transports.ws.direct`);
over TLS that transport is the SSL one. Messages of each frame-header size
(under 126 bytes, up to 64 KiB, past it) go both ways, batched and one by one.
"""

from __future__ import annotations

import json
import ssl
from typing import TYPE_CHECKING, Any

import httpx
from websockets.asyncio.client import connect

from tests.conftest import ADMIN_PASSWORD

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import ServerProcess


async def test_frames_of_every_size_cross_tls_both_ways(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    """Publishes in one write and one by one, deliveries and acks, of 1 B to 70 KB, over wss."""
    server = server_process_factory(BROKER_TLS="true")
    await server.start()
    https = server.url
    context = ssl.create_default_context(cafile=server.data_dir / "tls" / "cert.pem")
    async with httpx.AsyncClient(base_url=https, verify=context) as http:
        login = await http.post(
            "/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert (await http.post("/queues", json={"name": "big"}, headers=headers)).is_success
    contents = ["s", "m" * 1000, "l" * 70_000, "x" * 10]
    ws_url = server.ws_url + "/ws"
    async with connect(
        ws_url,
        ssl=context,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        max_size=1 << 20,
    ) as ws:
        for n, content in enumerate(contents):
            ws.protocol.send_text(
                json.dumps({"op": "publish", "queue": "big", "content": content, "ref": n}).encode()
            )
        ws.send_data()
        confirms = [json.loads(await ws.recv()) for _ in contents]
        assert [c["op"] for c in confirms] == ["confirm"] * 4
        await ws.send(json.dumps({"op": "subscribe", "queue": "big", "prefetch": 10, "ref": "s"}))
        assert json.loads(await ws.recv())["op"] == "subscribed"
        got: list[dict[str, Any]] = []
        while len(got) < len(contents):
            frame = json.loads(await ws.recv())
            if frame["op"] == "deliver":
                got.append(frame)
        assert [m["content"] for m in got] == contents
        for m in got:
            await ws.send(json.dumps({"op": "ack", "tags": [m["tag"]], "ref": m["tag"]}))
    server.terminate()
