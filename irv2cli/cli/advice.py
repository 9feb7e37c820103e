"""The library's hints as command-line advice: the one place that names flags in errors."""

from __future__ import annotations

from ..errors import Hint, Irv2Error
from ..version import __version__

FLAG_ADVICE = {
    Hint.RESUME_OR_OVERWRITE: "pass --resume to continue that run, or --overwrite to replace it",
    Hint.RESUME: "then run the same command with --resume",
    Hint.OVERWRITE: "pass --overwrite to replace it",
    Hint.OTHER_OUTPUT: "choose another --output",
    Hint.NAME_FORMAT: "use a known extension, or pass --format",
    Hint.SAME_TOP_K: "run with the same -k, or write to another --output",
    Hint.REPLACE: "pass --force to replace it",
    Hint.REFETCH_WEIGHTS: "run `irv2 download-weights --force` to fetch a fresh copy",
    Hint.FEATURES_ONLY: ("classify with the full weights (the default), or run `irv2 embed` "
                         "for their features"),
    Hint.INSTALL_RAY: "install it with `pip install 'irv2cli[ray]'`",
    Hint.INSTALL_SERVE: "install it with `pip install 'irv2cli[serve]'`",
    Hint.RAY_ADDRESS: ("check --ray-address (or RAY_ADDRESS) and that the cluster is up "
                       "(`ray status` on its head node)"),
    Hint.RAY_NODES: ("install this machine's irv2cli "
                     f"(`pip install 'irv2cli[ray]=={__version__}'`) on every node of the "
                     "cluster, and check that each is up (`ray status` on its head node)"),
    Hint.RAY_RESUME: ("the results written so far are complete: check the cluster (`ray "
                      "status` on its head node), then run the same command with --resume"),
    Hint.RAY_CPUS: ("pass fewer --actors or --workers, or give the cluster more CPUs "
                    "(`ray start --num-cpus N` on more nodes)"),
    Hint.MIRROR: ("if this machine cannot reach that server, set IRV2_MIRROR (or pass "
                  "`irv2 download-weights --mirror URL`) to a base URL that serves the same "
                  "file name, or fetch the file elsewhere and run "
                  "`irv2 download-weights --from-file PATH`"),
    Hint.SAME_HEAD: ("run with the same --head (or none, as that run did), or write to "
                     "another --output"),
    Hint.HEAD_WEIGHTS: ("pass the --weights the head was trained on, or train a head on "
                        "these weights with `irv2 train`"),
    Hint.HEAD_FILE: "check the path: a head is the file `irv2 train` writes",
    Hint.QUANTIZE: ("run `irv2 quantize --calibrate DIR` on a folder of a few hundred of your "
                    "own photos to build it"),
}


def user_message(error: Irv2Error) -> str:
    """``error``'s message with its hint given as command-line advice."""
    if error.hint is None:
        return error.message
    return f"{error.message}; {FLAG_ADVICE[error.hint]}."
