"""REST publish throughput with many keep-alive connections, beside a bare Litestar endpoint.

Run: ``python -m benchmarks.bench_http [--connections 64] [--seconds 10]``
(the suite's ``rest`` phase runs the same functions three times each).
Needs ``wrk`` (Debian package ``wrk``); both servers run as their own
process with TLS off, the broker with its durable defaults (every 201 is a
committed message) and its publish rate limit off. The body is the suite's
1 KiB content. The ratio is the broker's share of what the HTTP stack alone
can do on this machine; wrk (one thread) shares the machine's cores with
the server.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .harness import BrokerProcess, free_port, save
from .workload import rest_body

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["BODY", "bare_endpoint", "broker_publish", "have_wrk", "wrk"]

BODY = rest_body().decode()
"""One publish: ``{"content": <the 1 KiB JSON document>}``."""


def have_wrk() -> bool:
    """Whether ``wrk`` is installed."""
    return shutil.which("wrk") is not None


def _ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, seconds: int, token: str | None) -> dict[str, float]:
    """POST `BODY` to ``url`` for ``seconds`` over ``connections`` keep-alive connections."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{BODY}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        + (f"wrk.headers['Authorization'] = 'Bearer {token}'\n" if token else "")
    )
    try:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
        out = subprocess.run(
            [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30
        ).stdout
    finally:
        script.unlink()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(rate.group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p50_ms": round(_ms(re.search(r"50%\s+([\d.]+)(\w+)", out)), 2),
        "p99_ms": round(_ms(re.search(r"99%\s+([\d.]+)(\w+)", out)), 2),
    }


@contextlib.contextmanager
def bare_endpoint() -> Iterator[str]:
    """Serve `benchmarks.bare_app` in its own process; yield its publish URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_app", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/queues/q/messages"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.post(url, content=BODY)
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise TimeoutError("the bare Litestar app did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def broker_publish(
    broker: BrokerProcess, queue: str, connections: int, seconds: int
) -> dict[str, Any]:
    """One wrk run publishing to a fresh ``queue``; counts what was stored, then deletes it."""
    with broker.http() as http:
        http.post("/queues", json={"name": queue}).raise_for_status()
        try:
            result: dict[str, Any] = wrk(
                f"{broker.url}/queues/{queue}/messages", connections, seconds, broker.token()
            )
            result["messages_stored"] = http.get(f"/queues/{queue}").json()["pending"]
        finally:
            http.delete(f"/queues/{queue}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not have_wrk():
        sys.exit("bench_http needs wrk (apt-get install wrk)")
    with bare_endpoint() as url:
        bare = wrk(url, args.connections, args.seconds, None)
    with BrokerProcess() as broker:
        broker_ = broker_publish(broker, "bench", args.connections, args.seconds)
    ratio = broker_["requests_per_s"] / bare["requests_per_s"]
    results = {
        "connections": args.connections,
        "seconds": args.seconds,
        "payload_bytes": len(BODY),
        "bare_litestar": bare,
        "broker_publish": broker_,
        "broker_share_of_bare": round(ratio, 3),
    }
    print(f"{'':18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in (("bare litestar", bare), ("broker publish", broker_)):
        print(f"{name:18}{row['requests_per_s']:>10.0f}{row['p50_ms']:>10}{row['p99_ms']:>10}")
    print(f"broker / bare = {ratio:.0%}   (stored: {broker_['messages_stored']})")
    print(f"saved {save('bench_http', results)}")


if __name__ == "__main__":
    main()
