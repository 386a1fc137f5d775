"""`RateSampler`: message rates over the last minute, from a real broker's actor counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from broker_core.broker import Broker
from broker_core.messages import CreateQueueRequest, PublishRequest
from storage import SQLiteStorage
from transports.observability.rates import WINDOW_S, RateSampler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A broker on a fresh SQLite file."""
    async with Broker(SQLiteStorage(tmp_path / "broker.db")) as running:
        yield running


async def publish(broker: Broker, queue: str, count: int) -> None:
    await broker.publish(queue, [PublishRequest(content=msgspec.Raw(b'"x"'))] * count)


async def test_rates_are_zero_before_the_first_sample(broker: Broker) -> None:
    """With no sample yet there is no window, and every rate is 0."""
    await broker.create_queue(CreateQueueRequest(name="jobs"))
    await publish(broker, "jobs", 3)
    rates = RateSampler(broker).rates(10.0)
    assert (rates.publish_per_s, rates.window_s) == (0, 0)


async def test_publish_rate_is_messages_over_the_window(broker: Broker) -> None:
    """Six publishes three seconds after the oldest sample are 2 per second."""
    await broker.create_queue(CreateQueueRequest(name="jobs"))
    sampler = RateSampler(broker)
    sampler.sample(100.0)
    await publish(broker, "jobs", 6)
    rates = sampler.rates(103.0)
    assert (rates.publish_per_s, rates.window_s) == (2.0, 3.0)


async def test_deliveries_and_acks_have_their_own_rates(broker: Broker) -> None:
    """Deliver and ack rates count leases and acks, not publishes."""
    await broker.create_queue(CreateQueueRequest(name="jobs"))
    await publish(broker, "jobs", 4)
    sampler = RateSampler(broker)
    sampler.sample(0.0)
    leased = await broker.pull("jobs", 2, 0, None)
    await broker.ack([message.message_id for message in leased[:1]])
    rates = sampler.rates(1.0)
    assert (rates.publish_per_s, rates.deliver_per_s, rates.ack_per_s) == (0, 2, 1)


async def test_deleting_a_queue_never_makes_a_rate_negative(broker: Broker) -> None:
    """A deleted queue's counts stay in the sums instead of pulling them down."""
    await broker.create_queue(CreateQueueRequest(name="jobs"))
    await publish(broker, "jobs", 5)
    sampler = RateSampler(broker)
    sampler.sample(0.0)
    await broker.delete_queue("jobs")
    assert sampler.rates(1.0).publish_per_s == 0


async def test_a_recreated_queue_counts_from_zero(broker: Broker) -> None:
    """A queue deleted and created again adds only its new publishes."""
    await broker.create_queue(CreateQueueRequest(name="jobs"))
    await publish(broker, "jobs", 3)
    sampler = RateSampler(broker)
    sampler.sample(0.0)
    await broker.delete_queue("jobs")
    await broker.create_queue(CreateQueueRequest(name="jobs"))
    await publish(broker, "jobs", 2)
    assert sampler.rates(1.0).publish_per_s == 2


async def test_samples_older_than_the_window_are_forgotten(broker: Broker) -> None:
    """Publishes before the last minute's samples no longer count."""
    await broker.create_queue(CreateQueueRequest(name="jobs"))
    sampler = RateSampler(broker)
    sampler.sample(0.0)
    await publish(broker, "jobs", 10)
    for second in range(1, WINDOW_S + 2):
        sampler.sample(float(second))
    rates = sampler.rates(float(WINDOW_S + 1))
    assert (rates.publish_per_s, rates.window_s) == (0, WINDOW_S)
