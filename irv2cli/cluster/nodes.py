"""The cluster's live nodes: the CPUs each has, and whether each can run irv2's stages
(a node without ``irv2cli[ray]``, or with another version of it, would fail every actor
placed there, over and over)."""

from __future__ import annotations

from ..errors import ClusterError, Hint
from ..version import __version__

ANSWER_TIMEOUT = 30.0  # seconds each node has to say it can run the stages


def node_cpus(ray) -> list[float]:
    """The CPUs of each live node."""
    return [node.get("Resources", {}).get("CPU", 0.0) for node in _live(ray)]


def check_nodes(ray) -> None:
    """A ``ClusterError`` naming the first live node that cannot import irv2's stages and
    Ray Data, or has another irv2cli version than this machine, or does not answer."""
    from ray.exceptions import NodeDiedError, TaskUnschedulableError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(stages_version)
    asked = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(): node["NodeManagerAddress"]
        for node in _live(ray)}
    answered, silent = ray.wait(list(asked), num_returns=len(asked),
                                timeout=ANSWER_TIMEOUT)
    for ref in silent:
        raise ClusterError(f"the Ray node at {asked[ref]} did not answer within "
                           f"{ANSWER_TIMEOUT:g} s", hint=Hint.RAY_NODES)
    for ref in answered:
        try:
            version = ray.get(ref)
        except (NodeDiedError, TaskUnschedulableError):
            raise ClusterError(f"the Ray node at {asked[ref]} went away while the run "
                               "started", hint=Hint.RAY_ADDRESS) from None
        except Exception as exc:  # whatever the node raised, in Ray's wrapping
            raise ClusterError(f"the Ray node at {asked[ref]} cannot run irv2's stages: "
                               f"{last_line(exc)}", hint=Hint.RAY_NODES) from None
        if version != __version__:
            raise ClusterError(f"the Ray node at {asked[ref]} has irv2cli {version}, and "
                               f"this machine {__version__}", hint=Hint.RAY_NODES)


def stages_version() -> str:
    """On a node: the irv2cli version there, once its stages and Ray Data import."""
    import ray.data  # noqa: F401 - the extra's other half

    from . import stages  # noqa: F401

    return __version__


def _live(ray) -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


def last_line(exc: BaseException) -> str:
    """The last line of Ray's text of a remote error: the error itself."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
