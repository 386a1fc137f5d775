"""Serving the app with uvicorn: TLS by default (self-signed on first start), graceful stop.

`serve` locks the data dir, then binds the port, and only then checks the
storage, makes TLS files and opens the broker (`transports.startup`): a
second broker on the data dir, or a port that is taken, stops the start
before anything is read or written.

uvicorn stops on SIGTERM/SIGINT by finishing the lifespan, which flushes the
write-behind buffer before the process exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import uvicorn

from storage import check_storage, sqlite_database

from . import allocator
from .app import create_app
from .logging import configure_logging
from .protocols import http_protocol
from .secrets import ensure_data_dir
from .startup import bind_socket, lock_data_dir
from .tls import ensure_self_signed
from .ws.direct import BrokerWebSocketProtocol

if TYPE_CHECKING:
    from broker_core.settings import Settings

__all__ = ["build_server", "serve"]


def build_server(settings: Settings) -> uvicorn.Server:
    """A uvicorn server for the broker's app, with TLS files made if needed."""
    ensure_data_dir(settings.data_dir)
    configure_logging(settings)
    ssl: dict[str, str] = {}
    if settings.tls:
        if settings.tls_cert is not None and settings.tls_key is not None:
            cert, key = settings.tls_cert, settings.tls_key
        else:
            cert, key = ensure_self_signed(settings.data_dir)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    config = uvicorn.Config(
        create_app(settings, freeze_startup=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="auto",
        http=http_protocol(settings),
        ws=BrokerWebSocketProtocol,
        ws_max_size=settings.ws_max_frame_bytes,
        # Protocol-level heartbeat: a peer that misses a pong is disconnected,
        # and its consumers' messages are requeued.
        ws_ping_interval=settings.ws_heartbeat_s,
        ws_ping_timeout=settings.ws_heartbeat_timeout_s,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        server_header=False,
        # No proxy is trusted by default: a client can't pick its own address
        # (rate limits go by it) with X-Forwarded-For.
        proxy_headers=False,
        **ssl,  # type: ignore[arg-type]
    )
    return uvicorn.Server(config)


def serve(settings: Settings) -> None:
    """Run the broker until it is told to stop.

    Raises:
        transports.startup.StartError: the data dir is in use, or the port
            can't be bound (nothing else was done).
        storage.StorageError: the storage can't be opened.
    """
    # Before uvicorn, storage or any thread allocates: arenas are per thread.
    allocator.tune()
    data_dir = ensure_data_dir(settings.data_dir)
    locks = [lock_data_dir(data_dir)]
    try:
        database = sqlite_database(settings)
        if database is not None:
            folder = database.expanduser().absolute().parent
            if folder != data_dir and folder.is_dir():
                # A database outside the data dir is what two brokers must not share.
                locks.append(lock_data_dir(folder, f"{database.name}.lock"))
        sock = bind_socket(settings.host, settings.port)
        try:
            check_storage(settings)
            server = build_server(settings)
            scheme = "https" if settings.tls else "http"
            print(f"broker listening on {scheme}://{settings.host}:{settings.port}", flush=True)
            server.run(sockets=[sock])
        finally:
            sock.close()
    finally:
        for lock in reversed(locks):
            lock.release()
