"""The ceiling of our HTTP stack: a bare Litestar endpoint that decodes the same publish body.

Served like the broker (uvicorn, httptools, uvloop, no TLS): what the broker
adds on top of this is its own overhead (auth, limits, actor, group commit).
Run by `benchmarks.bench_http`; ``python -m benchmarks.bare_app PORT`` serves it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, Request, post

from broker_core.messages import PublishRequest, PublishResult

_decoder = msgspec.json.Decoder(PublishRequest)
_next = 0


@post("/queues/{name:str}/messages", status_code=201)
async def publish(request: Request[Any, Any, Any], name: str) -> PublishResult:
    """Decode the body as the broker does and answer a PublishResult."""
    global _next
    _decoder.decode(await request.body())
    _next += 1
    return PublishResult(message_id=_next, queue=name, created_at=datetime.now(UTC))


app = Litestar([publish], logging_config=None, openapi_config=None)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False)
