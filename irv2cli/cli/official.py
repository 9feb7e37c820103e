"""The official weights for a command that was given none: fetched into the cache on
first use with a progress bar, the one way every command does it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def official_weights(console: Console, quiet: bool = False) -> Path:
    """The official weights file, downloaded (its bar and notes on ``console``) unless the
    cache already holds it; ``quiet``: neither bar nor notes."""
    from ..store.weights import ensure_weights
    from .render import download_progress, status_printer

    with download_progress(console, "official weights") as progress:
        return ensure_weights(progress=None if quiet else progress,
                              notify=status_printer(console, quiet))
