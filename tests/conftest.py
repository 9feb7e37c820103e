"""Shared fixtures: generated weights in the official layout, and a reference Keras model.

The official weights cannot be downloaded here, so the suite writes seeded random
weights (with calibrated BatchNorm statistics) from ``keras.applications`` itself in
the legacy .h5 layout, once per test session.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# A suite started in the background (`pytest &` in a script) inherits Ctrl-C ignored, and so
# would every irv2 the tests start and then interrupt: they get the default back (a Python
# handler, unlike "ignored", is not inherited across exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

# A test that uses one of these, itself or through another fixture, builds a Keras model
# (the generated weights come from one), an engine or the runtime artifact: it is slow.
SLOW_FIXTURES = frozenset({"reference_model", "reference_notop", "top_weights", "notop_weights",
                           "weights", "cached_engines", "built_runtime", "notop_runtime",
                           "good_artifact", "builds",
                           "runtime_ready", "int8_runtime", "int8_ready", "int8_builds"})


# A test that uses one of these talks to a real server of that kind (and is slow too).
SERVER_FIXTURES = {"ray_cluster": "ray", "s3_server": "s3"}
# With several worker processes (pytest-xdist), each module runs on one of them; the
# modules that use the session's Ray cluster run on the same one, so it is started once.
SHARED_WORKER = {"test_ray_runner.py": "ray", "test_ray_attacks.py": "ray"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Unless ``--dist`` says otherwise: each test module on one worker (as ``--dist
    loadfile``), and the modules of ``SHARED_WORKER`` on one worker together. (xdist's
    own ``loadgroup`` ignores groups from pytest 9.2 on: pytest-xdist#1386.)"""
    if config.getvalue("dist") != "load":  # -n's default
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModulesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return SHARED_WORKER.get(Path(module).name, module)

    return ModulesTogether(config, log)


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(items) -> None:
    """Mark ``slow`` every test that uses a fixture of ``SLOW_FIXTURES`` or
    ``SERVER_FIXTURES``, and with the server's kind those of ``SERVER_FIXTURES``; the tests
    that are slow for another reason (a process, TensorFlow) carry the mark themselves."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & (SLOW_FIXTURES | SERVER_FIXTURES.keys()):
            item.add_marker(pytest.mark.slow)
        for fixture in fixtures & SERVER_FIXTURES.keys():
            item.add_marker(SERVER_FIXTURES[fixture])
    # The Ray modules first: they take a worker for the longest, while the other worker
    # goes through the rest (a stable sort keeps each module's order).
    items.sort(key=lambda item: item.path.name not in SHARED_WORKER)


@pytest.fixture(scope="session")
def samples() -> Path:
    """The repository's real sample photos (see samples/README.md)."""
    return SAMPLES


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch) -> SimpleNamespace:
    """Every test gets its own cache and Keras home, and no mirror from the environment."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("IRV2_HOME", str(home / "irv2"))
    monkeypatch.setenv("KERAS_HOME", str(home / "keras"))
    monkeypatch.delenv("IRV2_MIRROR", raising=False)
    return SimpleNamespace(irv2=home / "irv2", keras=home / "keras")


@pytest.fixture(scope="session")
def reference_model():
    """``keras.applications.InceptionResNetV2`` with seeded random weights, logits out."""
    import keras

    from irv2cli.network.synthetic import randomize

    model = keras.applications.InceptionResNetV2(weights=None, classifier_activation=None)
    randomize(model, seed=0)
    return model


@pytest.fixture(scope="session")
def top_weights(reference_model, tmp_path_factory) -> Path:
    """The reference model's weights, written by Keras in the official legacy .h5 layout."""
    from irv2cli.network.synthetic import write_legacy_h5

    return write_legacy_h5(reference_model, tmp_path_factory.mktemp("weights") / "top.h5")


@pytest.fixture(scope="session")
def reference_notop(reference_model):
    """The same weights in Keras's feature extractor (no top, average pooling)."""
    import keras

    model = keras.applications.InceptionResNetV2(weights=None, include_top=False,
                                                 pooling="avg")
    model.set_weights(reference_model.get_weights()[:-2])
    return model


@pytest.fixture(scope="session")
def notop_weights(reference_notop, tmp_path_factory) -> Path:
    from irv2cli.network.synthetic import write_legacy_h5

    return write_legacy_h5(reference_notop, tmp_path_factory.mktemp("weights") / "notop.h5")


@pytest.fixture(scope="session")
def shared_engines():
    """Real engines, one per (weights file, backend), for the whole session."""
    return {}


@pytest.fixture
def cached_engines(shared_engines, session_homes, monkeypatch):
    """Make ``irv2cli.engines.base.load_engine`` reuse real engines across tests: building one
    takes seconds (Keras) or half a minute (the ONNX artifact). A real load runs in the
    session's home for those weights, so an artifact is built at most once a session."""
    from irv2cli.engines import base as engines

    real = engines.load_engine

    def engine_for(weights, backend="auto", notify=lambda message: None, precision="fp32"):
        key = (str(Path(weights).resolve()), backend, precision)
        if key not in shared_engines:
            with irv2_home(session_homes(weights)):
                shared_engines[key] = real(weights, backend, notify, precision)
        return shared_engines[key]

    monkeypatch.setattr(engines, "load_engine", engine_for)
    return shared_engines


@pytest.fixture
def weights(request) -> Path:
    """The generated weights, with engines shared across the tests of the session; in a
    module marked ``in_memory_engine``, whose subject is files, folders, resume and faults
    rather than the network, the in-memory engine's (``pixel_weights``)."""
    if request.node.get_closest_marker("in_memory_engine"):
        return request.getfixturevalue("pixel_weights")
    request.getfixturevalue("cached_engines")
    return request.getfixturevalue("top_weights")


@pytest.fixture
def pixel_weights(tmp_path_factory, monkeypatch) -> Path:
    """A weights file (its bytes are never read) whose engine, however loaded, is a
    ``pixel_engine.PixelEngine``: for tests whose subject is files, folders, resume and
    faults, not the network. A module of such tests makes it its ``weights``."""
    from pixel_engine import PixelEngine

    from irv2cli.engines import base as engines

    engine = PixelEngine()
    monkeypatch.setattr(engines, "load_engine", lambda *args, **kwargs: engine)
    path = tmp_path_factory.mktemp("pixel-engine") / "weights.h5"
    path.write_bytes(b"the pixel engine's weights are never read")
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder holding copies of the real sample photos."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for sample in sorted(SAMPLES.glob("*.jpg")):
        shutil.copy(sample, folder / sample.name)
    return folder


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Two real photos and one file that is not an image, in sorted order."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(SAMPLES / name, folder / name)
    (folder / "notes.jpg").write_text("not an image")
    return folder


@pytest.fixture(scope="session")
def s3_server() -> Iterator[int]:
    """A real S3-compatible server (moto's) on 127.0.0.1, started once a session: its port."""
    from s3_server import start_server

    server = start_server()
    yield server.get_host_and_port()[1]
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server with a fresh bucket of this test's own, and fake credentials in the
    environment, as a real client finds them: an ``s3_server.S3Server``."""
    from s3_server import S3Server, fake_credentials

    fake_credentials(monkeypatch)
    return S3Server(s3_server).in_bucket(f"test-{next(_buckets):04d}")


_buckets = itertools.count()


@pytest.fixture(scope="session")
def ray_cluster(built_runtime, notop_runtime, tmp_path_factory) -> Iterator[str]:
    """One real Ray cluster for the session, on loopback: a head on 127.0.0.2 and a second
    node on 127.0.0.3, one CPU each, whose nodes' cache holds the artifacts of the top
    and notop weights, whose decoders can load the misbehaving test decoder
    (tests/hostile), and whose workers hold the fake S3 credentials: the head's address."""
    from ray_cluster import ray_environment, two_node_cluster
    from s3_server import FAKE_CREDENTIALS
    from support import hostile_pythonpath

    home = tmp_path_factory.mktemp("cluster") / "irv2"
    (home / "runtime").mkdir(parents=True)
    for artifact in (*built_runtime.iterdir(), *notop_runtime.iterdir()):
        if not artifact.name.endswith(".lock"):  # artifacts are never changed in place
            os.link(artifact, home / "runtime" / artifact.name)

    env = ray_environment(IRV2_HOME=str(home), PYTHONPATH=hostile_pythonpath(),
                          AWS_CONFIG_FILE="/nonexistent",
                          AWS_SHARED_CREDENTIALS_FILE="/nonexistent", **FAKE_CREDENTIALS)
    with two_node_cluster(env) as address:
        yield address


@dataclass(frozen=True)
class HttpDirectory:
    root: Path
    url: str


@pytest.fixture
def http_directory(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a fresh folder (``root``) at ``url``."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HttpDirectory(root, f"http://127.0.0.1:{server.server_port}/")
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def irv2_home(home: Path) -> Iterator[Path]:
    """``IRV2_HOME`` is ``home`` meanwhile."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IRV2_HOME", str(home))
        yield home


def shared_folder(tmp_path_factory) -> Path:
    """A folder of the session that its worker processes (pytest-xdist) share: what is
    made there once serves them all (the generated weights are the same bytes in each)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def session_homes(tmp_path_factory) -> Callable[[Path], Path]:
    """``session_homes(weights)``: an ``IRV2_HOME`` shared by the whole session (and by its
    worker processes), one per weights content (copies share one), so that the
    fast-runtime artifact for those weights is built there at most once a session. (No
    weights are installed there, so even a copy of an official file is keyed by its
    bytes, as the home's artifact is.)"""
    from irv2cli.store.artifacts import file_checksum

    shared = shared_folder(tmp_path_factory)  # artifacts are built under the cache's lock

    def home_for(weights: Path) -> Path:
        return shared / f"built-{file_checksum(Path(weights))}" / "irv2"

    return home_for


def prebuilt(weights: Path, session_homes: Callable[[Path], Path]) -> Path:
    """The session's runtime folder holding the artifact for ``weights``, built if need be."""
    from irv2cli.engines.onnx_runtime import load_onnx_engine

    with irv2_home(session_homes(weights)) as home:
        load_onnx_engine(weights)
    return home / "runtime"


@pytest.fixture(scope="session")
def built_runtime(top_weights, session_homes) -> Path:
    """A runtime folder holding the fast-runtime artifact for ``top_weights``, built once."""
    return prebuilt(top_weights, session_homes)


@pytest.fixture(scope="session")
def notop_runtime(notop_weights, session_homes) -> Path:
    """A runtime folder holding the artifact for ``notop_weights``, built once."""
    return prebuilt(notop_weights, session_homes)


@pytest.fixture
def runtime_ready(built_runtime, cache) -> Path:
    """This test's cache already holds the artifact for ``top_weights`` (a copy, so a test may
    damage it), so a ``predict`` subprocess starts in a second instead of building it."""
    target = cache.irv2 / "runtime"
    shutil.copytree(built_runtime, target, ignore=shutil.ignore_patterns("*.lock"))
    return target


@pytest.fixture
def good_artifact(built_runtime, top_weights) -> Path:
    """The session's sound artifact for ``top_weights`` (never damaged by a test)."""
    from irv2cli.store.artifacts import artifact_path

    return built_runtime / artifact_path(top_weights).name


@pytest.fixture
def builds(monkeypatch, good_artifact) -> list[Path]:
    """The weights of every build started; a build copies ``good_artifact``."""
    started = []

    from irv2cli.store.artifacts import data_path

    def copy_of_the_good_build(weights: Path, built: Path, notify, calibration=None) -> Path:
        started.append(weights)
        shutil.copy(data_path(good_artifact), data_path(built))
        return Path(shutil.copy(good_artifact, built))

    from irv2cli.engines import builds as building

    monkeypatch.setattr(building, "run_build_child", copy_of_the_good_build)
    return started


def sample_variants(folder: Path, variants: dict[str, Callable]) -> Path:
    """``folder``, made, holding each sample photo changed by each of ``variants`` (a name
    suffix -> a function of a Pillow image): distinct images, as a user's photos are."""
    from PIL import Image

    folder.mkdir(parents=True)
    for sample in sorted(SAMPLES.glob("*.jpg")):
        with Image.open(sample) as image:
            rgb = image.convert("RGB")
        for suffix, change in variants.items():
            change(rgb).save(folder / f"{sample.stem}-{suffix}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def calibration_images(tmp_path_factory) -> Path:
    """Eight photos to calibrate on: the samples, and their mirror images."""
    from PIL import ImageOps

    return sample_variants(tmp_path_factory.mktemp("calibration") / "photos",
                           {"plain": lambda image: image, "mirror": ImageOps.mirror})


@pytest.fixture(scope="session")
def check_images(tmp_path_factory) -> Path:
    """Eight other photos to check on: the samples upside down, and turned a quarter."""
    from PIL import ImageOps

    return sample_variants(tmp_path_factory.mktemp("check") / "photos",
                           {"flip": ImageOps.flip,
                            "turned": lambda image: image.rotate(90, expand=True)})


@pytest.fixture(scope="session")
def int8_runtime(top_weights, built_runtime, calibration_images, check_images,
                 tmp_path_factory) -> Path:
    """A runtime folder holding the int8 artifact for ``top_weights``, built once from
    ``calibration_images`` and checked on ``check_images`` (and the fp32 one it was checked
    against, copied from ``built_runtime``)."""
    from filelock import FileLock

    from irv2cli.engines.int8 import int8_artifact_path
    from irv2cli.pipeline.quantize import quantize

    shared = shared_folder(tmp_path_factory)
    home = shared / "int8" / "irv2"
    with FileLock(shared / "int8.lock"), irv2_home(home):  # one worker builds it
        if not int8_artifact_path(top_weights).exists():
            shutil.copytree(built_runtime, home / "runtime",
                            ignore=shutil.ignore_patterns("*.lock"))
            quantize(calibration_images, check_images, top_weights)
    return home / "runtime"


@pytest.fixture
def int8_ready(int8_runtime, cache) -> Path:
    """This test's cache holds a copy of the int8 artifact (its data, checksum and report too) for
    ``top_weights``, and not the fp32 one."""
    target = cache.irv2 / "runtime"
    target.mkdir(parents=True)
    for path in int8_runtime.glob("*-int8.onnx*"):
        if not path.name.endswith(".lock"):
            shutil.copy(path, target / path.name)
    return target


@pytest.fixture
def int8_builds(monkeypatch, int8_runtime, top_weights) -> list[int]:
    """The number of calibration images of every int8 build started; a build copies the
    session's int8 artifact instead of quantizing."""
    import numpy as np

    from irv2cli.engines import builds
    from irv2cli.engines.int8 import int8_artifact_path
    from irv2cli.store.artifacts import data_path

    good = int8_runtime / int8_artifact_path(top_weights).name
    started = []

    def copy_of_the_good_build(weights, built, notify, calibration=None):
        assert calibration is not None  # quantize never builds the fp32 one itself
        started.append(len(np.load(calibration, mmap_mode="r")))
        shutil.copy(data_path(good), data_path(built))
        return Path(shutil.copy(good, built))

    monkeypatch.setattr(builds, "run_build_child", copy_of_the_good_build)
    return started
