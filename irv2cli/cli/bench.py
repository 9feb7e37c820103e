"""``irv2 bench``: measure irv2's pipelines against a plain Keras loop, and show the tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import examples

if TYPE_CHECKING:
    from rich.table import Table

    from ..bench.harness import ColdStart, Summary


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
    "irv2 bench --images my-photos/ --rounds 3"))
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
def bench(images, weights, small, large, batch_sizes, keras_batch_sizes, cold_runs, rounds,
          ray):
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
