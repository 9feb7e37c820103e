"""Inputs named by URI (``s3://bucket/photos/``, ``gs://...``, ``hdfs://...``,
``file:///data/photos``): any filesystem pyarrow opens, listed lazily and read whole.

A URI is taken apart here, not by pyarrow, so a key may hold any character: the path is
percent-decoded (``%20`` is a space, ``%3F`` a ``?``) and the URIs made for the files of a
folder escape only ``%``, ``?`` and ``#``. The query (``?endpoint_override=HOST:PORT&
scheme=http`` for an S3-compatible server) is pyarrow's filesystem options and rides along
on every URI made from it, so a decoding worker can open each one on its own; credentials
come from the usual environment (``AWS_ACCESS_KEY_ID`` ...), never from the URI.

A ``file://`` URI names a local path, which is walked and opened as one (symlink loops, the
output file and FIFOs are handled as for any local path). pyarrow is imported only when a
URI of another filesystem is listed or read, so a local run never pays for it.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyarrow.fs import FileInfo, FileSystem

    from .paths import InputSelection

# A scheme of two or more characters (RFC 3986), then "://": ``C://x`` stays a Windows path
# and ``photos:2024/a.jpg`` a local one.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
_ESCAPES = {"%": "%25", "?": "%3F", "#": "%23"}
LOCAL_SCHEMES = ("file",)


def is_uri(text: str) -> bool:
    """Whether ``text`` names an input by URI (``s3://...``) rather than a local path."""
    return _URI.match(text) is not None


@dataclass(frozen=True)
class Uri:
    """A URI taken apart: ``path`` is decoded and has no leading ``/``."""

    scheme: str
    netloc: str
    path: str
    query: str

    @classmethod
    def parse(cls, text: str) -> Uri:
        from urllib.parse import unquote

        scheme, rest = text.split("://", 1)
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        return cls(scheme.lower(), netloc, unquote(path, errors="surrogateescape"), query)

    def child(self, relative: str) -> Uri:
        """The URI of ``relative`` (a decoded path) under this one."""
        return Uri(self.scheme, self.netloc, posixpath.join(self.path, relative), self.query)

    def __str__(self) -> str:
        path = "".join(_ESCAPES.get(c, c) for c in self.path)
        return f"{self.scheme}://{self.netloc}/{path}" + (f"?{self.query}" if self.query else "")


def local_path(uri: str) -> str | None:
    """The local path a ``file://`` URI names; ``None`` for any other URI."""
    parsed = Uri.parse(uri)
    if parsed.scheme in LOCAL_SCHEMES and parsed.netloc in ("", "localhost"):
        return "/" + parsed.path
    return None


def local_uri(path: str, like: str) -> str:
    """The ``file://`` URI of local ``path``, spelt with the scheme of ``like``."""
    return str(Uri(Uri.parse(like).scheme, "", path.lstrip("/"), ""))


def filesystem(uri: str) -> tuple[FileSystem, str]:
    """pyarrow's filesystem for ``uri`` and the path within it (``bucket/key`` for S3).

    One filesystem is made per scheme, host (or bucket) and options, and reused for every
    file under it: making an S3 one may ask the server for the bucket's region."""
    parsed = Uri.parse(uri)
    fs, root = _filesystem(parsed.scheme, parsed.netloc, parsed.query)
    return fs, posixpath.join(root, parsed.path) if parsed.path else root


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, netloc: str, query: str) -> tuple[FileSystem, str]:
    from pyarrow.fs import FileSystem

    return FileSystem.from_uri(f"{scheme}://{netloc}/" + (f"?{query}" if query else ""))


def read_uri(uri: str) -> bytes:
    """The whole content of the file ``uri`` names, read in one go (a decoder reading an
    object store in small pieces would pay a request for each). ``FileNotFoundError`` if
    there is none; other failures are pyarrow's ``OSError`` (the store, the network) or
    ``ValueError`` (a URI pyarrow cannot open)."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def walk_uri(uri: str, selection: InputSelection) -> Iterator[str]:
    """The files under folder ``uri`` per ``selection``, as URIs, in the order a local
    folder is walked (sorted by name, depth first); ``uri`` itself if it names a file,
    nothing, or a filesystem that cannot be opened (its record then says why).

    One folder is listed at a time, when the walk reaches it, so no more than one folder's
    entries are ever held. On an object store a folder is a prefix with objects under it
    (or an empty "folder" object): a prefix with nothing under it does not exist."""
    try:
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
    except (OSError, ValueError):
        yield uri
        return
    from pyarrow.fs import FileType

    if info.type != FileType.Directory:
        yield uri
        return
    yield from _walk(fs, path.rstrip("/") or path, Uri.parse(uri), "", selection)


def _walk(fs: FileSystem, root: str, base: Uri, folder: str, selection: InputSelection
          ) -> Iterator[str]:
    """The files under ``folder`` (relative to ``root``, whose URI is ``base``)."""
    try:
        entries = _listing(fs, posixpath.join(root, folder))
    except (OSError, ValueError):
        yield str(base.child(folder))  # unreadable folder: reported as an error for it
        return
    from pyarrow.fs import FileType

    for entry in entries:
        name = entry.base_name
        if name.startswith(".") and not selection.include_hidden:
            continue
        relative = posixpath.join(folder, name)
        if entry.type == FileType.Directory:
            if selection.recursive:
                yield from _walk(fs, root, base, relative, selection)
        elif selection.wants(relative):
            yield str(base.child(relative))


def _listing(fs: FileSystem, folder: str) -> list[FileInfo]:
    """``folder``'s entries (files and folders, not below), sorted by name."""
    from pyarrow.fs import FileSelector

    return sorted(fs.get_file_info(FileSelector(folder, recursive=False)),
                  key=lambda entry: entry.base_name)
