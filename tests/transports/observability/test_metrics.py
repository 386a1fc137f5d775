"""``GET /metrics``: Prometheus text that prometheus_client parses, with counts that follow use."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import login, make_user

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from tests.conftest import BrokerServer, ServerProcess


async def scrape(client: httpx.AsyncClient) -> dict[str, Metric]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {family.name: family for family in text_string_to_metric_families(response.text)}


LATENCY = "broker_http_request_duration_seconds"
"""The request latency histogram (a metric name, not a timing assertion)."""


def value(family: Metric, sample_name: str, **labels: str) -> float:
    """The value of the one sample of ``family`` with that name and exactly these labels."""
    (found,) = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    return float(found)


async def make_queue(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/queues", json={"name": name})
    assert response.status_code == 201, response.text


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    """/metrics is served as text format 0.0.4 and parses into typed families."""
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert families["broker_http_requests"] == "counter"
    assert families[LATENCY] == "histogram"
    assert families["broker_queue_messages"] == "gauge"
    assert families["broker_storage_commit_seconds"] == "summary"
    assert families["process_resident_memory_bytes"] == "gauge"


async def test_metrics_need_a_token(server: BrokerServer) -> None:
    """/metrics without a bearer token is 401."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401


async def test_request_counter_follows_requests_by_route(client: httpx.AsyncClient) -> None:
    """broker_http_requests_total counts by route template, method and status."""
    await make_queue(client, "jobs")
    for _ in range(3):
        await client.get("/queues/jobs")
    await client.get("/queues/missing")
    requests = (await scrape(client))["broker_http_requests"]
    name = "broker_http_requests_total"
    assert value(requests, name, route="/queues/{name}", method="GET", status="200") == 3
    assert value(requests, name, route="/queues/{name}", method="GET", status="404") == 1


async def test_latency_histogram_is_cumulative_and_complete(client: httpx.AsyncClient) -> None:
    """The latency histogram of a route has rising buckets ending in +Inf == count."""
    await make_queue(client, "jobs")
    for _ in range(4):
        await client.get("/queues/jobs")
    family = (await scrape(client))["broker_http_request_duration_seconds"]
    labels = {"route": "/queues/{name}", "method": "GET"}
    buckets = [
        s.value
        for s in family.samples
        if s.name.endswith("_bucket") and {k: s.labels[k] for k in labels} == labels
    ]
    assert buckets == sorted(buckets)
    assert buckets[-1] == 4
    assert value(family, f"{LATENCY}_count", **labels) == 4
    assert value(family, f"{LATENCY}_sum", **labels) > 0


async def test_message_counters_and_depths_follow_messages(client: httpx.AsyncClient) -> None:
    """Per-queue counters and depths follow publish, consume, ack and nack."""
    await make_queue(client, "jobs")
    for index in range(3):
        await client.post("/queues/jobs/messages", json={"content": str(index)})
    consumed = await client.get("/queues/jobs/messages/consume", params={"max": 2})
    first, second = (m["message_id"] for m in consumed.json()["messages"])
    await client.post(f"/messages/{first}/ack")
    await client.post(f"/messages/{second}/nack", params={"requeue": "false"})
    families = await scrape(client)
    for metric, expected in (("published", 3), ("delivered", 2), ("acked", 1), ("nacked", 1)):
        family = families[f"broker_messages_{metric}"]
        assert value(family, f"broker_messages_{metric}_total", queue="jobs") == expected
    depths = families["broker_queue_messages"]
    for status, expected in (("pending", 1), ("processing", 0), ("processed", 1), ("failed", 1)):
        assert value(depths, "broker_queue_messages", queue="jobs", status=status) == expected
    assert value(families["broker_queue_consumers"], "broker_queue_consumers", queue="jobs") == 0
    assert value(families["broker_queues"], "broker_queues") == 1


async def test_storage_commits_are_measured(client: httpx.AsyncClient) -> None:
    """Group commits show as summaries of commit time and operations per batch."""
    await make_queue(client, "jobs")
    await client.post("/queues/jobs/messages", json={"content": "x"})
    families = await scrape(client)
    commits = families["broker_storage_commit_seconds"]
    assert value(commits, "broker_storage_commit_seconds_count") >= 1
    ops = families["broker_storage_batch_ops"]
    batches = value(ops, "broker_storage_batch_ops_count")
    assert value(ops, "broker_storage_batch_ops_sum") >= batches
    assert value(families["broker_storage_degraded"], "broker_storage_degraded") == 0


async def test_process_metrics_are_exposed(client: httpx.AsyncClient) -> None:
    """The process's CPU time, memory, threads and start time are exposed."""
    families = await scrape(client)
    assert value(families["process_resident_memory_bytes"], "process_resident_memory_bytes") > 0
    assert value(families["process_cpu_seconds"], "process_cpu_seconds_total") > 0
    assert value(families["process_threads"], "process_threads") >= 1
    assert value(families["process_start_time_seconds"], "process_start_time_seconds") > 0


async def test_queues_a_user_cannot_see_have_no_series(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A non-admin scrape has per-queue series only for the queues it may see."""
    await make_queue(client, "alpha")
    await make_queue(client, "beta")
    token = await make_user(client, server, "carol", [{"pattern": "alpha", "actions": ["publish"]}])
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as carol:
        families = await scrape(carol)
    queues: set[Any] = {s.labels["queue"] for s in families["broker_queue_messages"].samples}
    assert queues == {"alpha"}


async def test_collector_passes_are_counted_and_timed(client: httpx.AsyncClient) -> None:
    """Each garbage collector pass is counted per generation and its time added up."""
    families = await scrape(client)
    passes = value(families["python_gc_collections"], "python_gc_collections_total", generation="2")
    gc.collect()
    families = await scrape(client)
    after = value(families["python_gc_collections"], "python_gc_collections_total", generation="2")
    assert after >= passes + 1
    paused = families["broker_gc_pause_seconds"]
    assert value(paused, "broker_gc_pause_seconds_total", generation="2") > 0
    longest = families["broker_gc_longest_pause_seconds"]
    assert value(longest, "broker_gc_longest_pause_seconds") > 0
    # Only the serving process freezes its startup objects (see the next test).
    assert "broker_gc_frozen_objects" in families


async def test_the_serving_process_freezes_its_startup_objects(
    server_process_factory: Any,
) -> None:
    """``broker serve`` moves what startup built out of the collector's passes."""
    process: ServerProcess = server_process_factory()
    await process.start()
    token = (await login(process.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=process.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        families = await scrape(http)
    frozen = value(families["broker_gc_frozen_objects"], "broker_gc_frozen_objects")
    # Litestar, Strawberry and uvicorn alone are tens of thousands of objects.
    assert frozen > 10_000


async def test_openmetrics_is_served_when_asked_for(client: httpx.AsyncClient) -> None:
    """Accept: application/openmetrics-text gets OpenMetrics 1.0, ending in # EOF, that parses."""
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    await make_queue(client, "jobs")
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    parsed = openmetrics_families(response.text)  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parsed}
    assert families["broker_http_requests"].type == "counter"
    latency = families["broker_http_request_duration_seconds"]
    assert latency.type == "histogram"
    assert (
        value(
            families["broker_queue_messages"],
            "broker_queue_messages",
            queue="jobs",
            status="pending",
        )
        == 0
    )


async def test_the_text_format_is_the_default(client: httpx.AsyncClient) -> None:
    """Without an OpenMetrics Accept header (a browser's included) the 0.0.4 text is served."""
    response = await client.get("/metrics", headers={"Accept": "text/html,*/*"})
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in response.text
