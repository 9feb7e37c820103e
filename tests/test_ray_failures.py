"""How a failure of the Ray cluster itself reaches the user (``cluster.runner``): one
line that says the records written are complete and how to finish, unless --verbose."""

from __future__ import annotations

import pytest
from ray.exceptions import RayError

from irv2cli.cluster.runner import _cluster_errors
from irv2cli.errors import ClusterError, Hint

LOST = RayError("ray::MapWorker(MapBatches(Infer)).submit() (pid=1, ip=127.0.0.3)\n"
                "  File ...\n"
                "ray.exceptions.ActorUnavailableError: The actor is unavailable: "
                "Connection refused")


def test_a_node_lost_is_one_line_that_says_how_to_finish():
    with pytest.raises(ClusterError) as raised, _cluster_errors():
        raise LOST

    assert str(raised.value.message) == (
        "the Ray cluster failed the run: ray.exceptions.ActorUnavailableError: The actor is "
        "unavailable: Connection refused (the detail is in Ray's logs, "
        "/tmp/ray/session_latest/logs)")
    assert raised.value.hint is Hint.RAY_RESUME


def test_with_verbose_ray_s_own_error_comes_through():
    with pytest.raises(RayError), _cluster_errors(verbose=True):
        raise LOST


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError), _cluster_errors():
        raise KeyError("a bug of ours")
