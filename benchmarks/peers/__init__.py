"""The peers measured with the same workload: RabbitMQ (aio-pika) and NATS JetStream (nats-py).

Each module has the client roles its worker processes run (``produce``,
``consume``, in ``ROLES``) and the coordinator's side (`RabbitMQ`, `Nats`:
reachability, version, and the queues or streams of each run). They use the
servers already running on 127.0.0.1 and only touch the queues and streams
they name ``wsbroker-bench-...``.
"""

from __future__ import annotations

from .nats import Nats
from .rabbitmq import RabbitMQ

__all__ = ["Nats", "RabbitMQ"]
