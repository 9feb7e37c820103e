"""The library's errors: each message says what went wrong and what to do next."""

from __future__ import annotations


class Irv2Error(Exception):
    """Base class for every error irv2cli raises on purpose."""


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


class EngineError(Irv2Error):
    """An engine failed: it returned no usable scores, or its runtime could not be built."""
