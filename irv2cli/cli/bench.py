"""``irv2 bench``: measure irv2's pipelines against a plain Keras loop, and show the tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import examples

if TYPE_CHECKING:
    from rich.table import Table

    from ..bench.harness import ColdStart, Summary
    from ..bench.serving import ServeMeasurement, Soak


def int_list(ctx, param, value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 1,8,16") from None
    if any(n < 1 for n in numbers):
        raise click.BadParameter("batch sizes must be at least 1")
    return numbers


@click.command(epilog=examples(
    "irv2 bench",
    "irv2 bench --images my-photos/ --rounds 3",
    "irv2 bench --serve --soak 0"))
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of JPEG photos to cycle through. Default: the sample photos "
                   "installed with irv2cli.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Weights to use. Default: seeded random weights generated offline.")
@click.option("--small", type=click.IntRange(1), default=8, show_default=True,
              help="Images in the small folder.")
@click.option("--large", type=click.IntRange(2), default=40, show_default=True,
              help="Images in the large folder.")
@click.option("--batch-sizes", callback=int_list, default="1,8,16", show_default=True,
              help="irv2 batch sizes to measure.")
@click.option("--keras-batch-sizes", callback=int_list, default="1,8", show_default=True,
              help="Plain Keras loop batch sizes to measure.")
@click.option("--cold-runs", type=click.IntRange(1), default=3, show_default=True,
              help="Cold starts of each one-image command (the median is shown).")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True,
              help="Rounds over every folder measurement (the median is shown).")
@click.option("--ray", is_flag=True,
              help="Also measure --runner ray, on a Ray instance each run starts here "
                   "(needs the ray extra).")
@click.option("--serve", is_flag=True,
              help="Measure `irv2 serve` instead: latency of one client and throughput of 8 "
                   "against the engine and `irv2 predict DIR` (needs the serve extra).")
@click.option("--requests", type=click.IntRange(1), default=400, show_default=True,
              help="With --serve: requests of the 8 clients, per precision.")
@click.option("--soak", type=click.IntRange(0), default=10_000, show_default=True,
              help="With --serve: requests of the memory and descriptor soak (0: none).")
def bench(images, weights, small, large, batch_sizes, keras_batch_sizes, cold_runs, rounds,
          ray, serve, requests, soak):
    """Measure folder classification against a plain Keras loop on this machine.

    Prints the cold start of `irv2 predict IMAGE` (fp32, with a 10-class --head, and int8)
    against the plain Keras recipe, then images/s (marginal: a small and a large folder,
    so start-up cancels), the time from process start to the first result, and peak RSS,
    for each pipeline and batch size, --head and int8 beside fp32. Uses generated weights
    and a temporary cache (the int8 runtime calibrated on the sample photos). Takes
    several minutes.
    """
    from rich.console import Console

    from ..bench.harness import BenchSettings, run_benchmark
    from .render import stderr_console

    if large <= small:
        raise click.BadParameter("must be larger than --small", param_hint="--large")
    console = stderr_console()
    if serve:
        from ..bench.serving import ServeBenchSettings, run_serve_benchmark

        measured, soaked = run_serve_benchmark(
            ServeBenchSettings(images, weights, concurrent=requests, soak=soak),
            progress=lambda message: console.print(message, style="dim"))
        Console().print(serve_table(measured))
        if soaked is not None:
            Console().print(soak_table(soaked))
        return
    settings = BenchSettings(images, weights, small, large, tuple(batch_sizes),
                             tuple(keras_batch_sizes), cold_runs, rounds, ray)
    starts, results = run_benchmark(
        settings, progress=lambda message: console.print(message, style="dim"))
    Console().print(cold_start_table(starts))
    Console().print(benchmark_table(results))


def benchmark_table(results: list[Summary]) -> Table:
    """Folder measurements; top-5 agreement is against the first baseline row
    (plain Keras), for fp32 rows with Keras's preprocessing (irv2's default differs on
    purpose, int8 approximates, a head has its own classes); int8 and --head rows give
    their speed against fp32 at that batch."""
    from rich.table import Table

    reference = next((m.top5 for m in results if m.pipeline.is_baseline), None)
    fp32 = {m.batch_size: m.images_per_second for m in results
            if m.pipeline.backend == "onnx" and m.pipeline.exact and m.pipeline.images == "small"
            and m.pipeline.keras_preprocessing and m.pipeline.runner == "local"}
    table = Table(title="folder classification (marginal img/s, start-up excluded; median)")
    for column in ("pipeline", "batch", "img/s", "rounds", "first result (s)",
                   "peak RSS (MB)", "top-5 = Keras", "vs fp32"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for m in results:
        same = ("-" if reference is None or not m.pipeline.keras_preprocessing
                or not m.pipeline.exact else "yes" if m.top5 == reference else "NO")
        speed_up = ("-" if m.pipeline.exact or m.batch_size not in fp32
                    else f"{m.images_per_second / fp32[m.batch_size]:.1f}x")
        table.add_row(m.pipeline.name, str(m.batch_size), f"{m.images_per_second:.2f}",
                      " ".join(f"{r:.2f}" for r in m.rounds), f"{m.first_result_s:.1f}",
                      f"{m.peak_rss_mb:.0f}", same, speed_up)
    return table


def cold_start_table(results: list[ColdStart]) -> Table:
    """One-image cold starts, with each one's speed-up over the slowest."""
    from rich.table import Table

    slowest = max(r.median_s for r in results)
    table = Table(title="one image, from process start to exit (median)")
    for column in ("command", "median (s)", "runs (s)", "peak RSS (MB)", "speed-up"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for r in results:
        table.add_row(r.command, f"{r.median_s:.2f}", " ".join(f"{t:.2f}" for t in r.runs),
                      f"{r.peak_rss_mb:.0f}", f"{slowest / r.median_s:.1f}x")
    return table


def serve_table(results: list[ServeMeasurement]) -> Table:
    """The server against the engine (one client's median latency over its batch-1 time)
    and against ``irv2 predict DIR`` (8 clients' rate over its marginal rate at batch 8)."""
    from rich.table import Table

    table = Table(title="irv2 serve on 127.0.0.1 (latency median / p99 in ms)")
    for column in ("precision", "engine batch 1", "1 client", "over engine", "8 clients",
                   "img/s", "predict DIR img/s", "vs predict", "p99 / median"):
        table.add_column(column, justify="left" if column == "precision" else "right")
    for m in results:
        one, eight = m.single, m.concurrent
        table.add_row(
            m.precision, f"{m.engine_batch1_s * 1000:.1f}",
            f"{one.median * 1000:.1f} / {one.p99 * 1000:.1f}",
            f"+{(one.median - m.engine_batch1_s) * 1000:.1f}",
            f"{eight.median * 1000:.0f} / {eight.p99 * 1000:.0f}", f"{eight.rate:.2f}",
            f"{m.predict_rate:.2f}", f"{eight.rate / m.predict_rate:.2f}x",
            f"{eight.p99 / eight.median:.2f}")
    return table


def soak_table(soak: Soak) -> Table:
    """The server's footprint before and after the soak."""
    from rich.table import Table

    answered = sum(soak.load.statuses.values())
    table = Table(title=f"soak: {answered:,} requests of 8 clients ({soak.precision}), "
                        f"statuses {soak.load.statuses}")
    for column in ("", "before", "after", "growth"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("resident memory (MB)", f"{soak.rss_before_mb:.0f}",
                  f"{soak.rss_after_mb:.0f}", f"{soak.rss_after_mb - soak.rss_before_mb:+.0f}")
    table.add_row("open file descriptors", str(soak.fds_before), str(soak.fds_after),
                  f"{soak.fds_after - soak.fds_before:+d}")
    return table
