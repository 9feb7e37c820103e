"""The server's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
                   1.5, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Requests by route and status, their latency, the queue, batches and decoding."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("irv2_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=registry)
        self.latency = Histogram("irv2_request_duration_seconds",
                                 "Seconds from a request's arrival to its answer, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_depth = Gauge("irv2_queue_depth", "Images accepted and not yet answered "
                                 "(decoding, waiting for the engine, or in it)",
                                 registry=registry)
        self.batch_size = Histogram("irv2_batch_size", "Images per engine call",
                                    buckets=tuple(range(1, max_batch + 1)), registry=registry)
        self.inference = Histogram("irv2_inference_duration_seconds",
                                   "Seconds per engine call", buckets=LATENCY_BUCKETS,
                                   registry=registry)
        self.decode_failures = Counter("irv2_decode_failures",
                                       "Uploaded images that could not be decoded",
                                       registry=registry)
        self.rejected = Counter("irv2_rejected", "Requests refused before any work, by reason",
                                ["reason"], registry=registry)
        self.ready = Gauge("irv2_ready", "1 when the engine is warm and the server takes work",
                           registry=registry)
        self.engine = Info("irv2_engine", "The engine and weights being served",
                           registry=registry)

    def batch(self, size: int, seconds: float) -> None:
        """An engine call of ``size`` images took ``seconds``."""
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def exposition(self) -> bytes:
        """Every metric in Prometheus's text format."""
        return generate_latest(self.registry)
