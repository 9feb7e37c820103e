"""The library's errors: each says what went wrong, and its hint says what to do next.

Messages speak the library's language. A ``Hint`` names the remedy; its value is the
advice for a Python caller, and the CLI turns it into flag advice in one place
(``irv2cli.cli.advice``), so no library message names a command-line flag.
"""

from __future__ import annotations

from enum import Enum


class Hint(Enum):
    """A remedy the caller can apply; the value is how a Python caller applies it."""

    RESUME_OR_OVERWRITE = "resume=True continues that run; overwrite=True replaces it"
    RESUME = "then resume the run (resume=True)"
    OVERWRITE = "overwrite=True replaces it"
    OTHER_OUTPUT = "choose another output path"
    NAME_FORMAT = "use a known extension, or name the format (fmt=...)"
    SAME_TOP_K = "use the same top_k, or another output path"
    REPLACE = "force=True replaces it"
    REFETCH_WEIGHTS = "fetch a fresh copy (ensure_weights(force=True))"
    FEATURES_ONLY = ("classify with the full weights, or ask these for their features "
                     "(outputs=(FEATURES,))")
    INSTALL_RAY = "install it with: pip install 'irv2cli[ray]'"
    INSTALL_SERVE = "install it with: pip install 'irv2cli[serve]'"
    RAY_ADDRESS = ("check the address (RayRunner(address=...), or RAY_ADDRESS) and that the "
                   "cluster is up (`ray status` on its head node)")
    RAY_NODES = ("install this machine's irv2cli[ray] on every node of the cluster, and "
                 "check that each is up (`ray status` on its head node)")
    RAY_RESUME = ("the records written so far are complete: check the cluster (`ray status` "
                  "on its head node), then resume the run (resume=True)")
    RAY_CPUS = ("ask for fewer actors (RayRunner(actors=...)) or decoding workers "
                "(RunOptions(workers=...)), or give the cluster more CPUs")
    MIRROR = ("if this machine cannot reach that server, set IRV2_MIRROR to a base URL that "
              "serves the same file name, or install a copy obtained elsewhere "
              "(install_from_file)")
    SAME_HEAD = "use the same head (or none, as that run did), or another output path"
    HEAD_WEIGHTS = ("classify with the weights the head was trained on (RunOptions(weights=...)), "
                    "or train a head on these weights (irv2cli.train)")
    HEAD_FILE = "check the path: a head is the file irv2cli.train writes"
    QUANTIZE = ("build the int8 runtime from a few hundred of your own photos first "
                "(irv2cli.quantize(folder))")


class Irv2Error(Exception):
    """Base class for every error irv2cli raises on purpose: ``message`` says what went
    wrong, ``hint`` (if any) what to do next."""

    def __init__(self, message: str, hint: Hint | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}; {self.hint.value}."


class ImageError(Irv2Error):
    """One input could not be read as an image; other inputs are unaffected."""


class WeightsError(Irv2Error):
    """A weights file is missing, corrupt, or does not fit the network."""


class DownloadError(Irv2Error):
    """Weights could not be fetched or did not verify."""


class OutputError(Irv2Error):
    """An output file cannot be written or resumed."""


class ExportError(Irv2Error):
    """A model cannot be exported: the output is in the way, or a converter is missing."""


class ClassLookupError(Irv2Error):
    """A class asked for by WordNet ID, index or label is unknown, or the label is ambiguous."""


class CalibrationError(Irv2Error):
    """The images given to calibrate or check the int8 runtime cannot be used."""


class EngineError(Irv2Error):
    """An engine failed: it returned no usable scores, or its runtime could not be built."""


class ClusterError(Irv2Error):
    """Ray is missing, the cluster cannot be reached, or it failed the run."""


class ServeError(Irv2Error):
    """The server could not start: its address cannot be had, or its libraries are
    missing."""


class HeadError(Irv2Error):
    """A head file (a classifier trained on the network's features) cannot be used: it is
    not a head, it is damaged, or it was trained on other network weights."""


class TrainingDataError(Irv2Error):
    """The folders given to train a head cannot be used as they are: the message says
    which folder or file, and what to change."""
