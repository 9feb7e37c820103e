"""Runs on a Ray cluster with Ray Data: the inputs are listed in read tasks, decoded by
an actor pool of isolated decoders, and classified by an actor pool of engines; batches
go from stage to stage through the object store, never through the driver.

The driver either streams the records into a local results file (``RayRunner.records``,
used by ``pipeline.run``) or has the cluster write a folder of Parquet shards
(``RayRunner.write_shards``). Actors that die are restarted and their batches retried
(a bounded number of times), so a lost process costs time, not images; a lost node can
fail the run, whose records so far are kept for a resume (docs/ray.md, Faults).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ClusterError, Hint, Irv2Error
from ..inputs.paths import path_key
from ..pipeline.job import Job, Notify
from ..pipeline.run import RunOptions, RunSummary
from ..results.records import Record
from ..results.shards import ShardFolder, new_run
from .nodes import check_nodes, last_line, node_cpus
from .plan import DECODER_CPUS, ENGINE_CPUS, LISTING_CPUS, plan_stages
from .rows import column_records
from .stall import StallWatch

DECODE_BATCH = 16  # files per decoding call: enough to keep a decoder busy between calls
# The listing's blocks of paths are cut into this many pieces each (by the read task
# itself: a stage of its own for it would take a whole CPU), so that every decoder gets
# its share of a folder; and blocks between stages are at most 8 MiB (about 30 decoded
# images), so that every stage, and the output, keeps moving while a run goes.
LISTING_PIECES = 32
BLOCK_BYTES = 8 << 20
SHARD_ROWS = 4096  # rows per shard at least (the last shard of a run may have fewer)
# A dead actor is restarted, and the batches it held are retried, a few times: never
# forever, so a batch that kills every actor it meets fails the run instead.
RETRIED = {"max_restarts": 4, "max_task_retries": 4}
# Where Ray Data logs the exception that fails a run, stack trace and all (Ray 2.60)
RAY_DATA_ERROR_LOGGERS = ("ray.data.exceptions",
                          "ray.data._internal.execution.streaming_executor_state")
CONNECT_TIMEOUT = 10.0  # seconds a cluster's address has to answer


def import_ray():
    """Ray, or an error saying how to install it."""
    try:
        import ray
        import ray.data  # the extra's other half
    except ImportError:
        raise ClusterError("the Ray runner needs Ray Data, which is not installed",
                           hint=Hint.INSTALL_RAY) from None
    return ray


@dataclass(frozen=True)
class RayRunner:
    """A run's runner on a Ray cluster: ``address`` of a running cluster (default: the
    ``RAY_ADDRESS`` variable, else a Ray instance started on this machine for the run),
    ``actors`` running the network (default: one per node), ``node_ip``, this
    machine's address as the cluster should see it (default: Ray's guess), and
    ``verbose``: say the stages' plan (through ``notify``), and let Ray's log lines and
    Ray Data's progress onto stderr."""

    address: str | None = None
    actors: int | None = None
    node_ip: str | None = None
    verbose: bool = False

    def total(self, job: Job) -> None:
        return None  # the inputs are listed on the cluster, as the run goes

    def records(self, job: Job) -> Iterator[Record]:
        """The records of ``job``, as the cluster finishes them (not in input order)."""
        ray = import_ray()
        classes = None if job.head is None else job.head.labels
        with self._connected(ray):
            dataset = self._dataset(ray, job, job.notify)
            with _cluster_errors(self.verbose), _watched(ray, job.notify) as watch:
                for columns in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    watch.moved()
                    yield from column_records(columns, classes)

    def write_shards(self, inputs: list[str], folder: ShardFolder, options: RunOptions,
                     notify: Notify = lambda message: None) -> RunSummary:
        """Have the cluster write the records of ``inputs`` as Parquet shards into
        ``folder`` (see ``results.shards``); with ``options.resume``, only of inputs not
        yet there, and with ``options.overwrite`` after removing the shards there.
        ``notify`` hears the stages' plan when ``verbose``."""
        if options.head is not None:
            raise ValueError("a run with a head writes a results file (or stdout), not "
                             "Parquet shards")
        started = time.perf_counter()
        ray = import_ray()
        with folder.held():
            earlier = _earlier_shards(folder, options)
            done = {path_key(record.path) for record in earlier}
            failed_before = sum(record.error is not None for record in earlier)
            with self._connected(ray):
                job = Job(inputs, options.selection(), frozenset(done), options)
                dataset = self._dataset(ray, job, notify, shards=folder.uri)
                sink = _shard_sink(folder, new_run(), options.outputs)
                with _cluster_errors(self.verbose):
                    dataset.write_datasink(sink)
        classified, failed = sink.counts
        return RunSummary(classified, failed, len(done), failed_before,
                          time.perf_counter() - started, folder.uri)

    @contextlib.contextmanager
    def _connected(self, ray) -> Iterator[None]:
        """Connected to the cluster (or a local instance) for the block, unless this
        process already is (a library caller's own ``ray.init``)."""
        if ray.is_initialized():
            yield
            return
        # "local" starts an instance even where `ray start` left one running here
        address = self.address or os.environ.get("RAY_ADDRESS") or "local"
        local = {"include_dashboard": False} if address == "local" else {}
        if not local:
            _check_answers(address)
        try:
            # Workers' own output stays in Ray's session logs: what they hit that matters
            # reaches the driver as a record's error, or as the run's failure.
            with _own_signal_handlers():
                ray.init(address=address, _node_ip_address=self.node_ip,
                         log_to_driver=False,
                         logging_level=logging.INFO if self.verbose else logging.WARNING,
                         **local)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a local Ray instance" if local else f"the Ray cluster at {address}"
            raise ClusterError(f"could not connect to {where}: {exc}",
                               hint=Hint.RAY_ADDRESS) from None
        try:
            yield
        finally:
            ray.shutdown()

    def _dataset(self, ray, job: Job, notify: Notify, shards: str | None = None):
        """The job as a lazy Ray dataset of record columns, its stages fitted to the
        cluster (``cluster.plan``); never of the shards in the folder ``shards`` (the
        output), which may be one of the inputs."""
        from .source import PathSource
        from .stages import Decode, Infer, Listing

        options = job.options
        check_nodes(ray)
        plan = plan_stages(node_cpus(ray), self.actors, options.workers)
        if self.verbose:
            for line in plan.lines():
                notify(line)
        folder = os.getcwd()
        done_ref = ray.put(job.done)
        listings = [Listing(path, job.selection, folder, done_ref, shards)
                    for path in job.inputs]
        pools = ray.data.ActorPoolStrategy
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing actor options as keywords, and offers nothing
            # else for them yet; the extra's version bound keeps them working.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            listed = ray.data.read_datasource(
                PathSource(listings), num_cpus=LISTING_CPUS,
                override_num_blocks=len(listings) * LISTING_PIECES)
            listed.context.target_max_block_size = BLOCK_BYTES  # and every stage after
            # a stage's irv2 error reaches the driver as itself, not as Ray Data's text
            listed.context.raise_original_map_exception = True
            decoded = listed.map_batches(
                Decode, batch_size=DECODE_BATCH, batch_format="numpy",
                fn_constructor_args=(options.preprocessing, options.decode_limits, 1, folder),
                compute=pools(min_size=1, max_size=plan.decoders), num_cpus=DECODER_CPUS,
                **RETRIED)
            records = decoded.map_batches(
                Infer, batch_size=options.batch_size, batch_format="numpy",
                fn_constructor_args=(options, job.head),
                compute=pools(size=plan.engines), num_cpus=ENGINE_CPUS, **RETRIED)
        _quiet_unless(self.verbose, records.context)
        return records


def _quiet_unless(verbose: bool, context) -> None:
    """Ray Data's progress bars, log lines and advice on stderr only when ``verbose``:
    irv2 draws its own bar and says what matters; the log stays in Ray's session
    folder."""
    context.enable_progress_bars = verbose
    level = logging.INFO if verbose else logging.CRITICAL
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            handler.setLevel(level)
    if not verbose:
        # a pool larger than a small run's blocks is fine: the run is small
        warnings.filterwarnings("ignore", "The minimum number of concurrent actors",
                                UserWarning)


@contextlib.contextmanager
def _watched(ray, notify: Notify) -> Iterator[StallWatch]:
    """A ``StallWatch`` for the block that says what the cluster has free."""
    nodes = _node_count(ray)

    def free() -> str:
        cpus = ray.available_resources().get("CPU", 0.0)
        return (f"{cpus:g} of {ray.cluster_resources().get('CPU', 0.0):g} CPUs free and "
                f"{_node_count(ray)} of {nodes} nodes alive")

    with StallWatch(notify, free) as watch:
        yield watch


def _check_answers(address: str) -> None:
    """Fail fast where nothing listens at a cluster's ``host:port``: ``ray.init`` would
    wait for it forever, deaf even to Ctrl-C. (Other forms, ``ray://`` or ``auto``, are
    left to Ray.)"""
    host, _, port = address.rpartition(":")
    if not host or "/" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ClusterError(f"could not connect to the Ray cluster at {address}: nothing "
                           f"answers there ({exc.strerror or exc})",
                           hint=Hint.RAY_ADDRESS) from None


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """The process's SIGTERM and SIGHUP handlers as they were before the block:
    ``ray.init`` replaces them with its own (a C++ one that prints a stack trace and
    aborts), so a stopped driver would neither close its output nor say how to resume."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers, and Ray then sets none either
        return
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in names}
    try:
        yield
    finally:
        for name, handler in handlers.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(getattr(signal, name), handler)


def _node_count(ray) -> int:
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def _earlier_shards(folder: ShardFolder, options: RunOptions) -> list[Record]:
    """The records already in ``folder``; refused unless resuming or overwriting (then
    removed)."""
    earlier = list(folder.records())
    if earlier and options.overwrite:
        folder.remove_shards()
        return []
    if earlier and not options.resume:
        raise ClusterError(f"{folder.uri} already holds the shards of an earlier run",
                           hint=Hint.RESUME_OR_OVERWRITE)
    return earlier


def _shard_sink(folder: ShardFolder, run: str, outputs: tuple[str, ...]):
    from .shard_sink import ShardSink

    return ShardSink(folder, run, outputs, SHARD_ROWS)


@contextlib.contextmanager
def _cluster_errors(verbose: bool = False) -> Iterator[None]:
    """An irv2 error raised on the cluster (the weights do not fit, say) as itself,
    rather than wrapped in Ray's task errors; unless ``verbose``, a failure of the
    cluster itself (a node lost while its actors held batches, say) as one line, its
    detail left in Ray's logs."""
    import ray.exceptions

    quiet = _QuietIrv2Errors()
    loggers = [logging.getLogger(name) for name in RAY_DATA_ERROR_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    except Irv2Error:
        raise
    except Exception as exc:
        cause = _irv2_cause(exc)
        if cause is not None:
            raise cause from None
        if verbose or not isinstance(exc, ray.exceptions.RayError):
            raise
        raise ClusterError(f"the Ray cluster failed the run: {last_line(exc)} (the detail "
                           "is in Ray's logs, /tmp/ray/session_latest/logs)",
                           hint=Hint.RAY_RESUME) from None
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


class _QuietIrv2Errors(logging.Filter):
    """Drops what Ray Data logs while it handles an exception that holds an irv2 error
    (the weights do not fit, say): stack traces above the one-line error."""

    def filter(self, record: logging.LogRecord) -> bool:
        handled = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return _irv2_cause(handled) is None


def _irv2_cause(exc: BaseException | None) -> Irv2Error | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Irv2Error):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None
