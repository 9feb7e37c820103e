"""What a server loads, how it decodes, batches and limits the work it accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..inputs.decoding import DecodeLimits
from ..inputs.images import Preprocessing

MiB = 1 << 20


@dataclass(frozen=True)
class ServeOptions:
    """A server's engine (``weights``, ``backend``, ``precision``), its decoding
    (``preprocessing``, ``decode_limits``, ``workers`` processes), and its limits:

    - ``max_batch`` images per engine call; an image waits at most ``max_delay`` seconds
      for company, and only while more images are on their way (being decoded);
    - ``concurrent_batches`` engine calls at once (``None``: ``calls_at_once``'s
      default);
    - ``max_queue`` images accepted and not yet answered (decoding, waiting, or in the
      engine): a request that finds it full is a 503 with ``Retry-After``;
    - ``max_body`` bytes of request body: more is a 413, before it is read in full;
    - ``client_timeout`` seconds for a client to send a whole request, and for each write
      of the answer to go out: a slower client is cut off.
    """

    weights: Path | None = None  # default: the official file, fetched if missing
    backend: str = "auto"
    precision: str = "fp32"
    top_k: int = 5
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    decode_limits: DecodeLimits = field(default_factory=DecodeLimits)
    workers: int | None = None  # default: one per core, at least 2
    max_batch: int = 8
    max_delay: float = 0.005
    concurrent_batches: int | None = None
    max_queue: int = 64
    max_body: int = 32 * MiB
    client_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_body", "top_k", "concurrent_batches"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        for name in ("max_delay", "client_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")

    @property
    def calls_at_once(self) -> int:
        """Engine calls that may run at once: ``concurrent_batches`` if given; else 2 in
        int8, whose small batches leave the second core idle part of the time (a second
        call fills it), and 1 in fp32, where a second call only competes for the cores
        (docs/benchmarks.md has the measurements)."""
        if self.concurrent_batches is not None:
            return self.concurrent_batches
        return 2 if self.precision == "int8" else 1
