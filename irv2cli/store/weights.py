"""Where the official weights live, and how they get there verified.

Downloads stream into ``NAME.part`` while hashing, resume an interrupted part with
an HTTP Range request, retry transient failures, and are renamed into place only
after the MD5 matches. A lock file serialises processes that fetch the same file.
The HTTP machinery is imported only when a download runs: every run asks where the
weights live, few download them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from platformdirs import user_cache_dir

from ..errors import DownloadError, Hint
from ..spec import SPEC, WeightFile
from .atomic import place
from .locks import Notify, cache_lock

Progress = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_done, bytes_total_or_None)`` while a file is fetched."""

CHUNK = 1 << 20
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


def cache_dir() -> Path:
    """The cache root: ``$IRV2_HOME``, else the platform's user cache directory."""
    return Path(os.environ.get("IRV2_HOME") or user_cache_dir("irv2cli"))


def cached_weights_path(weight_file: WeightFile) -> Path:
    """Where ``weight_file`` lives once installed (it may not exist yet)."""
    return cache_dir() / "weights" / weight_file.filename


def keras_cache_path(weight_file: WeightFile) -> Path:
    """Where Keras's own ``get_file`` keeps the same file."""
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return keras_home / "models" / weight_file.filename


def official_file(path: Path) -> WeightFile | None:
    """The official weight file that ``path`` is the installed copy of, if it is one."""
    for weight_file in (SPEC.top_weights, SPEC.notop_weights):
        installed = cached_weights_path(weight_file)
        if installed.exists() and installed.samefile(path):
            return weight_file
    return None


def _download_lock(target: Path, notify: Notify):
    """The lock that makes processes installing ``target`` take turns."""
    return cache_lock(Path(f"{target}.lock"), f"another irv2 process installing {target.name}",
                      notify)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_and_place(part: Path, target: Path, expected_md5: str, source: str) -> Path:
    """Rename ``part`` to ``target`` if its MD5 matches; otherwise delete it and raise."""
    got = file_md5(part)
    if got != expected_md5:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{source}: MD5 mismatch for {target.name}: expected {expected_md5}, got {got}. "
            "Nothing was kept; the file is corrupt or not the official one."
        )
    place(part, target)
    return target


def install_from_file(source: str | os.PathLike, weight_file: WeightFile,
                      force: bool = False, notify: Notify = lambda message: None) -> Path:
    """Copy a file obtained elsewhere into the cache, after checking its MD5."""
    source = Path(source)
    if not source.is_file():
        raise DownloadError(f"{source}: no such file to install.")
    target = cached_weights_path(weight_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _download_lock(target, notify):
        if target.exists() and not force:
            return target
        part = target.with_name(f"{target.name}.part")
        shutil.copyfile(source, part)
        return _verify_and_place(part, target, weight_file.md5, str(source))


def weights_url(weight_file: WeightFile, mirror: str | None = None) -> str:
    """The file's URL under the base URL ``mirror`` (default ``$IRV2_MIRROR``), else Keras's."""
    mirror = mirror or os.environ.get("IRV2_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + weight_file.filename
    return weight_file.url


def _fetch_into(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, resuming with a Range request if it exists."""
    import urllib.error
    import urllib.request
    from http.client import HTTPException

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "irv2cli"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # the part is no prefix of this file: start over
            part.unlink()
        raise
    with response:
        if offset and response.status != 206:  # server ignored the Range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out:
            done = offset
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if total is not None and done < total:
            raise HTTPException(f"connection closed after {done} of {total} bytes")


def _unreachable(url: str, reason: object) -> DownloadError:
    return DownloadError(
        f"Could not download {url}: {reason}", Hint.MIRROR)


def download(weight_file: WeightFile, mirror: str | None = None, force: bool = False,
             progress: Progress | None = None, retries: int = 3,
             retry_delay: float = 1.0, timeout: float = 30.0,
             notify: Notify = lambda message: None) -> Path:
    """Fetch ``weight_file`` into the cache and return its path.

    Transient failures (connection errors, timeouts, cut connections, HTTP 5xx/429) are
    retried ``retries`` times with exponential backoff, resuming from the ``.part`` file.
    ``notify`` hears when another process holds the download lock.
    """
    import urllib.error
    from http.client import HTTPException

    url = weights_url(weight_file, mirror)
    target = cached_weights_path(weight_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.part")
    with _download_lock(target, notify):
        if target.exists() and not force:
            return target
        for attempt in range(retries + 1):
            try:
                _fetch_into(url, part, progress, timeout)
                break
            except urllib.error.HTTPError as exc:
                if exc.code not in TRANSIENT_HTTP and exc.code != 416:
                    raise _unreachable(url, f"HTTP {exc.code} {exc.reason}") from None
                failure = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, HTTPException, OSError) as exc:
                failure = getattr(exc, "reason", exc)
            if attempt == retries:
                raise _unreachable(url, f"{failure} (after {retries + 1} attempts)")
            time.sleep(retry_delay * 2**attempt)
        return _verify_and_place(part, target, weight_file.md5, url)


def ensure_weights(include_top: bool = True, mirror: str | None = None,
                   progress: Progress | None = None, force: bool = False,
                   notify: Notify = lambda message: None) -> Path:
    """The installed official weights: from our cache, else Keras's cache, else downloaded.

    ``force`` skips both caches and downloads afresh; ``notify`` hears about lock waits.
    """
    weight_file = SPEC.weights(include_top)
    target = cached_weights_path(weight_file)
    if target.exists() and not force:
        return target
    keras_copy = keras_cache_path(weight_file)
    if keras_copy.is_file() and not force:
        try:
            return install_from_file(keras_copy, weight_file, notify=notify)
        except DownloadError:
            pass  # not the official file after all: download it
    return download(weight_file, mirror=mirror, force=force, progress=progress, notify=notify)
