"""The load generator of ``irv2 bench --serve``: HTTP clients in a process of their own.

Each client is a thread with one kept-alive connection (the standard library's
``http.client``) that posts one image at a time and waits for its answer; the images
are cycled. What it measured is printed on stdout as one JSON object.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path


def post_images(url: str, images: list[str], clients: int, requests: int,
                seconds: float) -> None:
    """``requests`` posts of ``images`` (cycled) to ``url`` by ``clients`` concurrent
    clients, stopping early after ``seconds``; prints ``{"latencies": [...], "elapsed":
    s, "statuses": {...}}`` (latencies of 200 answers, in seconds; a request that found
    no server counts under its error's name)."""
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.rsplit(":", 1)
    bodies = [Path(image).read_bytes() for image in images]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    sent = iter(range(requests))
    deadline = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for n in sent:  # shared by the threads: next() on a range iterator is atomic
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                try:
                    connection.request("POST", f"/{path}", bodies[n % len(bodies)],
                                       {"Content-Type": "image/jpeg"})
                    response = connection.getresponse()
                    response.read()
                    status = str(response.status)
                except (OSError, http.client.HTTPException) as exc:
                    status = type(exc).__name__  # counted; the next request reconnects
                    connection.close()
                took = time.perf_counter() - started
                with lock:
                    statuses[status] += 1
                    if status == "200":
                        latencies.append(took)
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump({"latencies": latencies, "elapsed": time.perf_counter() - started,
               "statuses": dict(statuses)}, sys.stdout)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]
