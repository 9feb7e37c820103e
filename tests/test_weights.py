"""How the weights get into the cache: verified download, resume, retry, mirror, lock.

Every download here goes to a real HTTP server on 127.0.0.1 (``tests/http_server.py``)
serving a 3 MiB stand-in for the official file, described by a ``WeightFile`` that carries
the stand-in's MD5. Every test has its own cache (``IRV2_HOME``) and Keras home.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from http_server import Cut, Seen, Serve, Status, WeightsServer, running_server

from irv2cli.cli.main import cli
from irv2cli.errors import DownloadError, Hint
from irv2cli.spec import KERAS_BASE_URL, SPEC, WeightFile
from irv2cli.store import weights
from irv2cli.store.weights import (
    cached_weights_path,
    download,
    ensure_weights,
    install_from_file,
    keras_cache_path,
    weights_url,
)

FILENAME = "irv2_stand_in_weights.h5"
CUT_AFTER = 1_234_567  # not a multiple of the client's 1 MiB read size


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def corrupt(data: bytes) -> bytes:
    """The same length with one byte flipped in the middle."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def cache_listing(weight_file: WeightFile) -> list[str]:
    """The weights cache folder's files, ignoring the (empty, reusable) lock file."""
    folder = cached_weights_path(weight_file).parent
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def payload() -> bytes:
    """3 MiB of seeded random bytes standing in for the official .h5."""
    return random.Random(0).randbytes(3 << 20)


@pytest.fixture
def weight_file(payload: bytes) -> WeightFile:
    return WeightFile(FILENAME, md5(payload), include_top=True)


@pytest.fixture
def server(payload: bytes) -> Iterator[WeightsServer]:
    with running_server() as server:
        server.files[FILENAME] = payload
        yield server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff delays ``weights`` asked for, recorded instead of slept."""
    delays: list[float] = []
    monkeypatch.setattr(weights, "time", SimpleNamespace(sleep=delays.append))
    return delays


@pytest.fixture
def fake_spec(monkeypatch: pytest.MonkeyPatch, weight_file: WeightFile) -> WeightFile:
    """Make the library and the CLI expect the stand-in as the official top weights."""
    spec = dataclasses.replace(SPEC, top_weights=weight_file)
    monkeypatch.setattr("irv2cli.store.weights.SPEC", spec)
    monkeypatch.setattr("irv2cli.cli.weights.SPEC", spec)
    return weight_file


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A base URL on a port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/weights/"


# -- download ---------------------------------------------------------------------------


def test_download_streams_into_the_cache_and_leaves_no_part(server, weight_file, payload):
    reports: list[tuple[int, int | None]] = []

    path = download(weight_file, mirror=server.base_url, progress=lambda *r: reports.append(r))

    assert path == cached_weights_path(weight_file)
    assert path.read_bytes() == payload
    assert cache_listing(weight_file) == [FILENAME]
    assert server.requests == [Seen(f"/weights/{FILENAME}", None, 200)]
    assert reports[-1] == (len(payload), len(payload))


def test_cached_file_is_returned_without_network_unless_forced(server, weight_file, payload):
    download(weight_file, mirror=server.base_url)
    assert download(weight_file, mirror=server.base_url).read_bytes() == payload
    assert len(server.requests) == 1

    download(weight_file, mirror=server.base_url, force=True)
    assert len(server.requests) == 2


def test_cut_connection_is_resumed_with_a_range_request(server, weight_file, payload, sleeps):
    server.script.extend([Cut(after=CUT_AFTER), Serve()])

    path = download(weight_file, mirror=server.base_url, retry_delay=0)

    assert path.read_bytes() == payload
    assert [(r.range, r.status) for r in server.requests] == [
        (None, 200), (f"bytes={CUT_AFTER}-", 206)]
    assert server.bytes_sent == len(payload)  # nothing fetched twice
    assert sleeps == [0]


def test_server_that_ignores_range_still_yields_the_right_file(server, weight_file, payload):
    server.script.extend([Cut(after=CUT_AFTER), Serve(honour_range=False)])

    path = download(weight_file, mirror=server.base_url, retry_delay=0)

    assert path.read_bytes() == payload
    assert [(r.range, r.status) for r in server.requests] == [
        (None, 200), (f"bytes={CUT_AFTER}-", 200)]
    assert cache_listing(weight_file) == [FILENAME]


def test_part_longer_than_the_file_is_discarded_and_fetched_again(
        server, weight_file, payload):
    part = cached_weights_path(weight_file).with_name(f"{FILENAME}.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(payload + b"stale tail")

    path = download(weight_file, mirror=server.base_url, retry_delay=0)

    assert path.read_bytes() == payload
    assert [(r.range, r.status) for r in server.requests] == [
        (f"bytes={len(payload) + 10}-", 416), (None, 200)]


def test_not_found_fails_at_once_naming_the_url_and_the_remedies(server, weight_file, sleeps):
    server.files.clear()

    with pytest.raises(DownloadError) as raised:
        download(weight_file, mirror=server.base_url, retry_delay=0)

    message = str(raised.value)
    assert f"{server.base_url}{FILENAME}" in message
    assert "HTTP 404" in message
    assert raised.value.hint is Hint.MIRROR and "IRV2_MIRROR" in message
    assert "--" not in message  # the library's words; the CLI's advice names the flags
    assert len(server.requests) == 1 and sleeps == []
    assert cache_listing(weight_file) == []


@pytest.mark.parametrize("code", [500, 503, 429])
def test_transient_server_errors_are_retried(server, weight_file, payload, code):
    server.script.extend([Status(code), Status(code), Serve()])

    path = download(weight_file, mirror=server.base_url, retry_delay=0)

    assert path.read_bytes() == payload
    assert [r.status for r in server.requests] == [code, code, 200]


def test_gives_up_after_the_retries_backing_off_exponentially(server, weight_file, sleeps):
    server.script.extend([Status(503)] * 10)

    with pytest.raises(DownloadError, match=r"HTTP 503 .*\(after 4 attempts\)"):
        download(weight_file, mirror=server.base_url, retries=3, retry_delay=0.5)

    assert len(server.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_wrong_bytes_are_refused_with_both_hashes_and_nothing_kept(
        server, weight_file, payload):
    server.files[FILENAME] = corrupt(payload)

    with pytest.raises(DownloadError) as raised:
        download(weight_file, mirror=server.base_url, retry_delay=0)

    message = str(raised.value)
    assert f"expected {weight_file.md5}, got {md5(corrupt(payload))}" in message
    assert "Nothing was kept" in message
    assert cache_listing(weight_file) == []


def test_offline_gives_up_after_retries_naming_the_url_and_the_remedies(
        refused_url, weight_file, sleeps):
    with pytest.raises(DownloadError) as raised:
        download(weight_file, mirror=refused_url, retries=2, retry_delay=0)

    message = str(raised.value)
    assert message.startswith(f"Could not download {refused_url}{FILENAME}: ")
    assert "refused" in message and "(after 3 attempts)" in message
    assert raised.value.hint is Hint.MIRROR and "IRV2_MIRROR" in message
    assert sleeps == [0, 0]
    assert cache_listing(weight_file) == []


# -- mirrors ----------------------------------------------------------------------------


def test_mirror_comes_from_irv2_mirror(server, weight_file, payload, monkeypatch):
    monkeypatch.setenv("IRV2_MIRROR", server.base_url)

    assert download(weight_file).read_bytes() == payload
    assert [r.path for r in server.requests] == [f"/weights/{FILENAME}"]


@pytest.mark.parametrize(("mirror", "env", "expected"), [
    (None, None, KERAS_BASE_URL + FILENAME),
    ("http://m.example/w", None, "http://m.example/w/" + FILENAME),
    ("http://m.example/w/", None, "http://m.example/w/" + FILENAME),
    (None, "http://env.example/", "http://env.example/" + FILENAME),
    ("http://arg.example/", "http://env.example/", "http://arg.example/" + FILENAME),
], ids=["keras", "mirror", "trailing-slash", "env", "argument-beats-env"])
def test_weights_url(weight_file, monkeypatch, mirror, env, expected):
    if env:
        monkeypatch.setenv("IRV2_MIRROR", env)
    assert weights_url(weight_file, mirror) == expected


# -- concurrency ------------------------------------------------------------------------

DOWNLOADER = """\
import sys
from irv2cli.spec import WeightFile
from irv2cli.store.weights import download
weight_file = WeightFile(sys.argv[1], sys.argv[2], include_top=True)
print("ready", flush=True)
print(download(weight_file, mirror=sys.argv[3], retry_delay=0))
"""


def race_in_processes(weight_file: WeightFile, base_url: str, release: Callable[[], None],
                      ) -> list[str]:
    """Two ``python -c`` processes download at once; ``release`` runs once both started."""
    argv = [sys.executable, "-c", DOWNLOADER, weight_file.filename, weight_file.md5, base_url]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        release()
        outputs = [proc.communicate(timeout=30)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0]
    return [out.strip() for out in outputs]


def race_in_threads(weight_file: WeightFile, base_url: str, release: Callable[[], None],
                    ) -> list[str]:
    """Two threads download at once; ``release`` runs once both started."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(download, weight_file, mirror=base_url, retry_delay=0)
                   for _ in range(2)]
        release()
        return [str(future.result(timeout=30)) for future in futures]


@pytest.mark.parametrize("race", [race_in_threads,
                                  pytest.param(race_in_processes, marks=pytest.mark.slow)],
                         ids=["threads", "processes"])  # processes: starts two
def test_concurrent_downloads_fetch_the_file_once(server, weight_file, payload, race):
    server.gate.clear()  # hold the first request until the other downloader has started

    def release() -> None:
        try:
            wait_for(lambda: len(server.requests) >= 1)
            time.sleep(0.3)  # without the lock, the second request would arrive meanwhile
        finally:
            server.gate.set()

    paths = race(weight_file, server.base_url, release)

    target = cached_weights_path(weight_file)
    assert paths == [str(target), str(target)]
    assert target.read_bytes() == payload
    assert len(server.requests) == 1 and server.full_serves == 1
    assert cache_listing(weight_file) == [FILENAME]


# -- install from a file ----------------------------------------------------------------


def test_install_from_file_copies_a_verified_file(tmp_path, weight_file, payload):
    source = tmp_path / "elsewhere.h5"
    source.write_bytes(payload)

    path = install_from_file(source, weight_file)

    assert path == cached_weights_path(weight_file)
    assert path.read_bytes() == payload
    assert source.read_bytes() == payload  # copied, not moved
    assert cache_listing(weight_file) == [FILENAME]


def test_install_from_file_refuses_a_wrong_file_and_keeps_nothing(
        tmp_path, weight_file, payload):
    source = tmp_path / "elsewhere.h5"
    source.write_bytes(corrupt(payload))

    with pytest.raises(DownloadError) as raised:
        install_from_file(source, weight_file)

    assert f"expected {weight_file.md5}, got {md5(corrupt(payload))}" in str(raised.value)
    assert str(source) in str(raised.value)
    assert cache_listing(weight_file) == []


def test_install_from_a_missing_file_says_so(tmp_path, weight_file):
    with pytest.raises(DownloadError, match="no such file"):
        install_from_file(tmp_path / "nowhere.h5", weight_file)


# -- ensure_weights ---------------------------------------------------------------------


def test_ensure_weights_reuses_a_verified_keras_copy_without_network(
        server, fake_spec, payload):
    keras_copy = keras_cache_path(fake_spec)
    keras_copy.parent.mkdir(parents=True)
    keras_copy.write_bytes(payload)

    path = ensure_weights(include_top=True, mirror=server.base_url)

    assert path == cached_weights_path(fake_spec)
    assert path.read_bytes() == payload
    assert server.requests == []


def test_ensure_weights_downloads_when_the_keras_copy_is_corrupt(server, fake_spec, payload):
    keras_copy = keras_cache_path(fake_spec)
    keras_copy.parent.mkdir(parents=True)
    keras_copy.write_bytes(corrupt(payload))

    path = ensure_weights(include_top=True, mirror=server.base_url)

    assert path.read_bytes() == payload
    assert len(server.requests) == 1
    assert keras_copy.read_bytes() == corrupt(payload)  # Keras's cache is not ours to fix


# -- irv2 download-weights --------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli, ["download-weights", *args], catch_exceptions=False)


def test_cli_from_file_installs_and_prints_the_path(tmp_path, fake_spec, payload):
    source = tmp_path / "elsewhere.h5"
    source.write_bytes(payload)

    result = invoke("--from-file", str(source))

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{cached_weights_path(fake_spec)}\n"
    assert cached_weights_path(fake_spec).read_bytes() == payload


def test_cli_from_file_refuses_a_wrong_file_in_one_line(tmp_path, fake_spec, payload):
    source = tmp_path / "elsewhere.h5"
    source.write_bytes(corrupt(payload))

    result = invoke("--from-file", str(source))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1
    assert f"expected {fake_spec.md5}, got {md5(corrupt(payload))}" in result.stderr
    assert "Traceback" not in result.output
    assert cache_listing(fake_spec) == []


def test_cli_from_file_that_does_not_exist_is_a_usage_error(tmp_path, fake_spec):
    result = invoke("--from-file", str(tmp_path / "nowhere.h5"))

    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_cli_mirror_downloads_from_the_given_base_url(server, fake_spec, payload):
    result = invoke("--mirror", server.base_url)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{cached_weights_path(fake_spec)}\n"  # progress went to stderr
    assert cached_weights_path(fake_spec).read_bytes() == payload
    assert [r.path for r in server.requests] == [f"/weights/{FILENAME}"]


def test_cli_offline_explains_what_to_do(refused_url, fake_spec, sleeps):
    result = invoke("--mirror", refused_url)

    assert result.exit_code == 1
    assert result.stdout == ""
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"Error: Could not download {refused_url}{FILENAME}: ")
    assert "--mirror" in error and "--from-file" in error
    assert "Traceback" not in result.output
    assert len(sleeps) == 3  # the default three retries, not slept here


def test_cli_advice_names_the_flags_that_fix_an_unreachable_server(server, fake_spec, sleeps):
    server.files.clear()

    result = invoke("--mirror", server.base_url)

    assert result.exit_code == 1
    assert "HTTP 404" in result.stderr
    assert "--mirror URL" in result.stderr and "--from-file PATH" in result.stderr
    assert "install_from_file" not in result.stderr
