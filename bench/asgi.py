"""``python -m bench --asgi``: the direct API under uvicorn, sync vs async.

One uvicorn process serves ``bench.asgi_app``; this process plays 50
concurrent HTTP/1.1 keep-alive clients (asyncio streams) against each of its
four endpoints in turn, for ``duration`` seconds after a warm-up, repeated
``reps`` times in a rotated order so that drift spreads over all of them.
Client and server share the machine's cores.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENDPOINTS = ("sync-direct", "sync-to-async", "async", "psycopg")
CLIENTS = 50


async def _client(
    port: int, path: str, until: float, measure_from: float
) -> list[float]:
    """Requests on one keep-alive connection; latencies of those in the window."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    latencies = []
    try:
        while (started := time.monotonic()) < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if status != b"200":
                raise RuntimeError(f"/{path} answered {status.decode()}")
            ended = time.monotonic()
            if started >= measure_from and ended <= until:
                latencies.append(ended - started)
    finally:
        writer.close()
    return latencies


async def _measure(
    port: int, path: str, warmup: float, duration: float
) -> dict[str, Any]:
    now = time.monotonic()
    measure_from, until = now + warmup, now + warmup + duration
    results = await asyncio.gather(
        *(_client(port, path, until, measure_from) for _ in range(CLIENTS))
    )
    latencies = sorted(lat for client in results for lat in client)
    return {
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "clients_served": sum(1 for client in results if client),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"uvicorn exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("uvicorn did not start within 60 s")


def run(
    url: str, root: Path, reps: int, warmup: float, duration: float, query_ms: int
) -> dict[str, Any]:
    """Serve the app, measure every endpoint ``reps`` times, stop the server."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BENCH_QUERY_MS": str(query_ms),
        # /sync-direct measures the blocking mistake itself.
        "DJANGO_ALLOW_ASYNC_UNSAFE": "1",
        "PYTHONPATH": str(root),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.asgi_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--lifespan",
            "on",
        ],
        cwd=root,
        env=env,
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ENDPOINTS}
    try:
        _wait_until_serving(port, server)
        for rep in range(reps):
            order = ENDPOINTS[rep % 4 :] + ENDPOINTS[: rep % 4]
            for name in order:
                result = asyncio.run(_measure(port, name, warmup, duration))
                runs[name].append(result)
                print(
                    f"  rep {rep + 1}/{reps} /{name}: {result['requests']} requests, "
                    f"p50 {result['p50_ms']} ms",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(30)
    return runs


def summary(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Median requests and p50 per endpoint, and the ratio to /sync-direct."""
    rows = []
    base = statistics.median(r["requests"] for r in runs["sync-direct"])
    for name, results in runs.items():
        requests = statistics.median(r["requests"] for r in results)
        p50 = statistics.median(r["p50_ms"] for r in results)
        rows.append(
            {
                "endpoint": name,
                "requests": requests,
                "min_max": [
                    min(r["requests"] for r in results),
                    max(r["requests"] for r in results),
                ],
                "p50_ms": p50,
                "vs_sync_direct": round(requests / base, 2) if base else None,
            }
        )
    return rows


def table(rows: list[dict[str, Any]], duration: float) -> str:
    lines = [
        f"{'endpoint':<15} {'requests in ' + format(duration, 'g') + ' s':>18} "
        f"{'(min-max)':>13} {'p50 ms':>8} {'vs sync-direct':>15}"
    ]
    for row in rows:
        low, high = row["min_max"]
        lines.append(
            f"{row['endpoint']:<15} {row['requests']:>18g} {f'({low}-{high})':>13} "
            f"{row['p50_ms']:>8g} {row['vs_sync_direct']:>14}x"
        )
    return "\n".join(lines)
