"""Topic publish throughput with 10 and 10,000 bindings, beside a plain queue publish.

Run: ``python -m benchmarks.topics [--messages 5000] [--runs 3] [--window 256]``.

One broker process (`harness.BrokerProcess`: TLS off, a fresh data dir,
durable defaults, no rate limits). Two topics: ``small`` with 10 bindings and
``large`` with 10,000. In each, one binding (``bench.*.created`` on queue
``hit``) matches every key published; the others are spread over ten other
queues and never match, but share the keys' shape so the trie's wildcard
branches (``*`` and ``#`` words at every level) are really walked:
``n<i>.*.created``, ``*.n<i>.#`` and ``#.n<i>``. Every publish therefore
commits one message to one queue, in all three variants, and what differs is
routing:

* ``queue``: WebSocket ``publish {queue: "hit"}`` (the baseline, no topic);
* ``topic_10``: ``publish {topic: "small", routing_key}``;
* ``topic_10000``: ``publish {topic: "large", routing_key}``.

The variants alternate run by run (``--runs`` rounds), each publishing
``--messages`` 1 KiB bodies over one WebSocket with ``--window`` publishes in
flight (each confirmed after its commit); the table shows medians with
min-max. The client shares the machine with the broker, so compare the rows
of one run. A queue publish over WebSocket is pipelined in the queue's actor
(many per commit future); a topic publish is one task per publish through
`Broker.publish_fanout`, so the ``queue`` row is also the ceiling of that
difference, not only of matching.

It also times the matcher in-process (no HTTP): microseconds per key for the
trie (`broker_core.topics.BindingTrie`) against a scan of every binding with
the reference matcher of the tests, at both sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect

from broker_core.topics import BindingTrie

from .harness import BrokerProcess, positive_int, save, say

__all__ = ["main"]

SIZES = (10, 10_000)
_BODY = {"content": {"pad": "x" * 1000}}


def bindings(count: int) -> list[tuple[str, str]]:
    """``(queue, pattern)``: one that matches every key, then ``count - 1`` that never do."""
    out = [("hit", "bench.*.created")]
    for i in range(1, count):
        shape = (f"n{i}.*.created", f"*.n{i}.#", f"#.n{i}")[i % 3]
        out.append((f"noise-{i % 10}", shape))
    return out


def key(seq: int) -> str:
    """The routing key of the ``seq``-th publish (100 distinct keys, all matched by ``hit``)."""
    return f"bench.k{seq % 100}.created"


def _setup(broker: BrokerProcess) -> None:
    with broker.http() as http:
        for queue in ["hit", *(f"noise-{i}" for i in range(10))]:
            http.post("/queues", json={"name": queue}).raise_for_status()
    asyncio.run(_bind_all(broker))


async def _bind_all(broker: BrokerProcess) -> None:
    headers = {"Authorization": f"Bearer {broker.token()}"}
    async with httpx.AsyncClient(base_url=broker.url, headers=headers, timeout=60) as http:
        for size, topic in zip(SIZES, ("small", "large"), strict=True):
            (await http.post("/topics", json={"name": topic})).raise_for_status()
            todo = bindings(size)
            started = time.monotonic()

            async def bind(part: list[tuple[str, str]], topic: str = topic) -> None:
                for queue, pattern in part:
                    response = await http.post(
                        f"/topics/{topic}/bindings", json={"queue": queue, "pattern": pattern}
                    )
                    response.raise_for_status()

            await asyncio.gather(*(bind(todo[i::16]) for i in range(16)))
            say(f"  {size} bindings made in {time.monotonic() - started:.1f} s")


async def _publish(
    broker: BrokerProcess, target: dict[str, str], messages: int, window: int
) -> float:
    """Publish ``messages`` over one WebSocket, ``window`` in flight; messages per second.

    ``target`` is ``{"queue": name}`` or ``{"topic": name}`` (then each frame
    gets its routing key); every confirm must name one message (or one routed copy).
    """
    headers = {"Authorization": f"Bearer {broker.token()}"}
    url = broker.url.replace("http://", "ws://") + "/ws"
    topic = "topic" in target
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        room = asyncio.Semaphore(window)
        done = asyncio.Event()
        confirmed = 0

        async def reader() -> None:
            nonlocal confirmed
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("op") != "confirm":
                    raise RuntimeError(f"refused: {frame}")
                if topic and len(frame["routed"]) != 1:
                    raise RuntimeError(f"routed: {frame}")
                confirmed += 1
                room.release()
                if confirmed == messages:
                    done.set()
                    return

        started = time.perf_counter()
        reading = asyncio.create_task(reader())
        for seq in range(messages):
            await room.acquire()
            frame: dict[str, Any] = {"op": "publish", "ref": seq, **target, **_BODY}
            if topic:
                frame["routing_key"] = key(seq)
            await ws.send(json.dumps(frame))
        await asyncio.wait_for(asyncio.shield(reading), 600)
        elapsed = time.perf_counter() - started
        await reading
        return messages / elapsed


def naive_match(pattern: list[str], words: list[str]) -> bool:
    """AMQP matching by its definition (the tests' reference): the per-binding scan."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(naive_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and naive_match(rest, words[1:])


def matcher_figures(keys: int = 20_000) -> dict[str, dict[str, float]]:
    """Microseconds per key: the trie against a scan of every binding, per size."""
    out: dict[str, dict[str, float]] = {}
    for size in SIZES:
        made = bindings(size)
        trie = BindingTrie()
        for queue, pattern in made:
            trie.add(queue, pattern)
        started = time.perf_counter()
        for seq in range(keys):
            assert trie.match(key(seq)) == {"hit"}, "one queue matches"
        trie_us = (time.perf_counter() - started) / keys * 1e6
        split = [(queue, pattern.split(".")) for queue, pattern in made]
        scanned = max(1, keys // size)
        started = time.perf_counter()
        for seq in range(scanned):
            words = key(seq).split(".")
            assert {q for q, p in split if naive_match(p, words)} == {"hit"}, "one queue matches"
        scan_us = (time.perf_counter() - started) / scanned * 1e6
        out[str(size)] = {"trie_us_per_key": trie_us, "scan_us_per_key": scan_us}
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    """Run the benchmark; print a table and save ``results/topics.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=positive_int, default=5000)
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--window", type=positive_int, default=256)
    args = parser.parse_args()

    variants = {
        "queue": {"queue": "hit"},
        "topic_10": {"topic": "small"},
        "topic_10000": {"topic": "large"},
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with BrokerProcess(BROKER_RATE_ADMIN_PER_S="0") as broker:
        say("setting up queues and bindings")
        _setup(broker)
        asyncio.run(_publish(broker, variants["queue"], 500, args.window))  # warm-up
        for run in range(args.runs):
            for name, target in variants.items():
                rate = asyncio.run(_publish(broker, target, args.messages, args.window))
                rates[name].append(rate)
                say(f"  run {run + 1} {name}: {rate:,.0f} msg/s")
        rss = broker.rss()
    matcher = matcher_figures()
    results: dict[str, Any] = {
        "messages": args.messages,
        "runs": args.runs,
        "window": args.window,
        "publish_per_s": {name: _summary(values) for name, values in rates.items()},
        "runs_per_s": rates,
        "matcher": matcher,
        "broker_rss_bytes_after": rss,
    }
    path = save("topics", results)
    print(
        f"publish throughput, msg/s (median of {args.runs}, min-max), 1 KiB bodies, "
        f"one WebSocket, {args.window} in flight"
    )
    for name, values in rates.items():
        s = _summary(values)
        print(f"  {name:<12} {s['median']:>9,.0f}  ({s['min']:,.0f}-{s['max']:,.0f})")
    print("matching one key in-process, microseconds")
    for size, figures in matcher.items():
        print(
            f"  {size:>6} bindings: trie {figures['trie_us_per_key']:8.1f}"
            f"   scan of every binding {figures['scan_us_per_key']:10.1f}"
        )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
