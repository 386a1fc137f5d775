"""REST publish throughput with many keep-alive connections, beside a bare Litestar endpoint.

Run: ``python -m benchmarks.bench_http [--connections 64] [--seconds 10]``.
Needs ``wrk`` (Debian package ``wrk``); both servers run as their own
process with TLS off, the broker with its durable defaults (every 201 is a
committed message). The ratio is the broker's share of what the HTTP stack
alone can do on this machine; wrk shares the machine's cores with the server.
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
from typing import Any

import httpx

from .harness import BrokerProcess, _free_port, save

BODY = '{"content": "' + "x" * 1000 + '"}'


def _wrk(url: str, connections: int, seconds: int, token: str | None) -> dict[str, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{BODY}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        + (f"wrk.headers['Authorization'] = 'Bearer {token}'\n" if token else "")
    )
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        script.unlink()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)

    def ms(match: re.Match[str] | None) -> float:
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "requests_per_s": round(rate),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p50_ms": round(ms(p50), 2),
        "p99_ms": round(ms(p99), 2),
    }


def _bare(connections: int, seconds: int) -> dict[str, float]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_app", str(port)], stdout=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.post(f"{url}/queues/q/messages", content=BODY)
                break
            time.sleep(0.05)
        return _wrk(f"{url}/queues/q/messages", connections, seconds, None)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _broker(connections: int, seconds: int) -> dict[str, Any]:
    # A benchmark measures the broker, not its abuse limits.
    with BrokerProcess(BROKER_RATE_PUBLISH_PER_S="0") as broker:
        token = broker.token()
        headers = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{broker.url}/queues", json={"name": "bench"}, headers=headers)
        result: dict[str, Any] = _wrk(
            f"{broker.url}/queues/bench/messages", connections, seconds, token
        )
        info = httpx.get(f"{broker.url}/queues/bench", headers=headers).json()
        result["messages_stored"] = info["pending"]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_http needs wrk (apt-get install wrk)")
    bare = _bare(args.connections, args.seconds)
    broker = _broker(args.connections, args.seconds)
    ratio = broker["requests_per_s"] / bare["requests_per_s"]
    results = {
        "connections": args.connections,
        "seconds": args.seconds,
        "payload_bytes": len(BODY),
        "bare_litestar": bare,
        "broker_publish": broker,
        "broker_share_of_bare": round(ratio, 3),
    }
    print(f"{'':18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in (("bare litestar", bare), ("broker publish", broker)):
        print(f"{name:18}{row['requests_per_s']:>10}{row['p50_ms']:>10}{row['p99_ms']:>10}")
    print(f"broker / bare = {ratio:.0%}   (stored: {broker['messages_stored']})")
    print(f"saved {save('bench_http', results)}")


if __name__ == "__main__":
    main()
