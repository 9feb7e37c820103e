"""How a run's stages fit a Ray cluster: how many engines and decoders it starts, and
the CPUs each reserves, from the CPUs of the cluster's live nodes and what the user
asked for (``--actors``, ``--workers``).

Ray places an actor or task only on a node where its CPU reservation fits, and Ray Data
waits for ever for one that fits nowhere. The reservations are bookkeeping, not limits
(ONNX Runtime uses its node's cores whatever it reserved), so they are small fractions,
and a plan is made only where every stage fits at once; otherwise the run fails before
it starts, saying what would fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ClusterError, Hint

ENGINE_CPUS = 0.5  # each engine actor (one per node by default)
DECODER_CPUS = 0.25  # each decoding actor
LISTING_CPUS = 0.25  # each listing's read task (which also cuts its paths into blocks)


@dataclass(frozen=True)
class StagePlan:
    """``engines`` actors running the network, up to ``decoders`` decoding actors, on
    nodes of ``nodes`` CPUs; ``placement`` is one way they fit, node by node."""

    engines: int
    decoders: int
    nodes: tuple[float, ...]
    placement: tuple[tuple[int, int, int], ...]  # per node: engines, decoders, listings

    def lines(self) -> list[str]:
        """The plan in words, for ``--verbose``."""
        lines = [f"Ray plan: {_count(self.engines, 'engine actor')} ({ENGINE_CPUS:g} CPU "
                 f"each), up to {_count(self.decoders, 'decoding actor')} "
                 f"({DECODER_CPUS:g} CPU each) and the listing ({LISTING_CPUS:g} CPU) on "
                 f"{_nodes_text(self.nodes)}; one way they fit:"]
        for number, (cpus, (engines, decoders, listings)) in enumerate(
                zip(self.nodes, self.placement, strict=True), 1):
            held = engines * ENGINE_CPUS + decoders * DECODER_CPUS + listings * LISTING_CPUS
            stages = [_count(engines, "engine"), _count(decoders, "decoder")]
            stages += ["the listing"] * listings
            lines.append(f"  node {number} ({_count(cpus, 'CPU')}): {', '.join(stages)} "
                         f"({held:g} CPU reserved)")
        return lines


def plan_stages(nodes: Sequence[float], actors: int | None = None,
                workers: int | None = None) -> StagePlan:
    """The plan for a cluster whose live nodes have ``nodes`` CPUs: ``actors`` engines
    (default: one per node that can hold one), up to ``workers`` decoders (default: one
    per CPU the engines leave, at least one, as many as fit); a ``ClusterError`` saying
    what fits where the asked-for plan does not."""
    nodes = tuple(sorted(nodes, reverse=True))
    total = sum(nodes)
    if total < ENGINE_CPUS + DECODER_CPUS + LISTING_CPUS:
        raise ClusterError(f"the Ray cluster has {total:g} CPUs, and a run needs at "
                           f"least {ENGINE_CPUS + DECODER_CPUS + LISTING_CPUS:g}",
                           hint=Hint.RAY_CPUS)
    engines = actors or max(1, sum(cpus >= ENGINE_CPUS for cpus in nodes))
    while actors is None and engines > 1 and _placement(nodes, engines, 1) is None:
        engines -= 1
    if _placement(nodes, engines, 1) is None:
        most = _most(lambda n: _placement(nodes, n, 1))
        raise ClusterError(f"{_count(engines, 'engine actor')} {_do(engines)} not fit the "
                           f"Ray cluster's {_nodes_text(nodes)}: each reserves "
                           f"{ENGINE_CPUS:g} CPU, and with a decoder and the listing at "
                           f"most {most} fit", hint=Hint.RAY_CPUS)
    if workers is None:
        decoders = max(1, int(total) - engines)
        while _placement(nodes, engines, decoders) is None:
            decoders -= 1
    else:
        decoders = workers
        if _placement(nodes, engines, decoders) is None:
            most = _most(lambda n: _placement(nodes, engines, n))
            raise ClusterError(f"{_count(workers, 'decoding actor')} {_do(workers)} not "
                               f"fit the Ray cluster's {_nodes_text(nodes)}: each reserves "
                               f"{DECODER_CPUS:g} CPU, and beside "
                               f"{_count(engines, 'engine actor')} and the listing at most "
                               f"{most} fit", hint=Hint.RAY_CPUS)
    return StagePlan(engines, decoders, nodes, _placement(nodes, engines, decoders))


def _placement(nodes: tuple[float, ...], engines: int, decoders: int
               ) -> tuple[tuple[int, int, int], ...] | None:
    """The engines, the listing and the decoders, each spread over the nodes as Ray
    spreads them (room counted in quarters of a CPU, so the arithmetic is exact); None
    where one fits nowhere."""
    room = [int(cpus * 4) for cpus in nodes]
    placed = [[0, 0, 0] for _ in nodes]
    for stage, quarters, count in ((0, int(ENGINE_CPUS * 4), engines),
                                   (2, int(LISTING_CPUS * 4), 1),
                                   (1, int(DECODER_CPUS * 4), decoders)):
        for _ in range(count):
            fits = [i for i in range(len(nodes)) if room[i] >= quarters]
            if not fits:
                return None
            node = min(fits, key=lambda i: (placed[i][stage], -room[i]))
            room[node] -= quarters
            placed[node][stage] += 1
    return tuple(tuple(counts) for counts in placed)


def _most(fits) -> int:
    """The largest n >= 0 for which ``fits(n)`` is not None (fits is monotone)."""
    n = 0
    while fits(n + 1) is not None:
        n += 1
    return n


def _nodes_text(nodes: tuple[float, ...]) -> str:
    """"2 nodes of 1 CPU", "3 nodes of 16, 1 and 1 CPUs"."""
    if len(set(nodes)) == 1:
        return f"{_count(len(nodes), 'node')} of {_count(nodes[0], 'CPU')}"
    sizes = [f"{cpus:g}" for cpus in nodes]
    return f"{len(nodes)} nodes of {', '.join(sizes[:-1])} and {sizes[-1]} CPUs"


def _count(number: float, noun: str) -> str:
    return f"{number:g} {noun}{'' if number == 1 else 's'}"


def _do(number: int) -> str:
    return "does" if number == 1 else "do"
