"""How a run's stages are fitted to a Ray cluster's nodes (``cluster.plan``): every cluster
with a CPU runs, and a plan asked for that cannot fit is refused before it starts."""

from __future__ import annotations

import pytest

from irv2cli.cluster.plan import DECODER_CPUS, ENGINE_CPUS, LISTING_CPUS, plan_stages
from irv2cli.errors import ClusterError, Hint


def reserved_per_node(plan) -> list[float]:
    return [engines * ENGINE_CPUS + decoders * DECODER_CPUS + listings * LISTING_CPUS
            for engines, decoders, listings in plan.placement]


@pytest.mark.parametrize("nodes", [[1], [1, 1], [2, 2], [4], [1, 1, 1, 1], [16, 1], [1.5]])
def test_every_stage_fits_on_every_node_by_default(nodes):
    plan = plan_stages(nodes)

    assert plan.engines >= 1 and plan.decoders >= 1
    assert sum(listings for _, _, listings in plan.placement) == 1
    assert all(held <= cpus for held, cpus in zip(reserved_per_node(plan), plan.nodes,
                                                  strict=True))


def test_one_engine_per_node_and_the_cpus_they_leave_to_decoders():
    assert (plan_stages([2, 2]).engines, plan_stages([2, 2]).decoders) == (2, 2)
    assert (plan_stages([1, 1]).engines, plan_stages([1, 1]).decoders) == (2, 1)
    assert (plan_stages([8]).engines, plan_stages([8]).decoders) == (1, 7)


def test_the_small_cluster_that_waited_for_ever_runs():
    """Two nodes of one CPU: the stages once reserved 2.25 CPUs there."""
    plan = plan_stages([1, 1])

    assert sum(reserved_per_node(plan)) <= 2
    assert "2 engine actors" in plan.lines()[0]
    assert len(plan.lines()) == 3  # a line per node


def test_actors_and_workers_asked_for_are_given_where_they_fit():
    plan = plan_stages([2, 2], actors=3, workers=3)

    assert (plan.engines, plan.decoders) == (3, 3)


@pytest.mark.parametrize("nodes, actors, workers, says", [
    ([1, 1], 4, None, "4 engine actors do not fit the Ray cluster's 2 nodes of 1 CPU"),
    ([1, 1], 4, None, "at most 3 fit"),
    ([4, 1], 10, None, "2 nodes of 4 and 1 CPUs"),
    ([1, 1], None, 5, "5 decoding actors do not fit"),
    ([1, 1], None, 5, "at most 3 fit"),
    ([0.5], None, None, "the Ray cluster has 0.5 CPUs, and a run needs at least 1"),
    ([0.25] * 4, None, None, "1 engine actor does not fit the Ray cluster's 4 nodes of "
                             "0.25 CPUs: each reserves 0.5 CPU"),
    ([1], None, 3, "3 decoding actors do not fit the Ray cluster's 1 node of 1 CPU"),
    ([], None, None, "the Ray cluster has 0 CPUs"),
])
def test_a_plan_that_cannot_fit_says_what_would(nodes, actors, workers, says):
    with pytest.raises(ClusterError) as raised:
        plan_stages(nodes, actors, workers)

    assert says in str(raised.value)
    assert raised.value.hint is Hint.RAY_CPUS
