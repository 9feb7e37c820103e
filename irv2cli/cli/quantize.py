"""``irv2 quantize``: build the int8 runtime from the user's own photos, and measure it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import examples, weights_option

if TYPE_CHECKING:
    from ..engines.int8 import Int8Report

RECOMMENDED_IMAGES = 200  # "a few hundred": fewer is said to be few


@click.command(epilog=examples(
    "irv2 quantize --calibrate my-photos/ --check other-photos/"))
@click.option("--calibrate", "calibration", required=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of your own photos to calibrate on, like those you will "
                   "classify (a few hundred recommended).")
@click.option("--check", metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of other photos: measure top-1 and top-5 agreement and the "
                   "largest probability change against fp32 on them.")
@weights_option
def quantize(calibration, check, weights):
    """Build the int8 runtime for the weights, for --precision int8.

    Quantizes the network statically (int8 weights per channel, uint8 activations) with
    the value ranges it meets on the calibration photos, optimises it for this CPU and
    caches it beside the fp32 runtime. The same photos again find it built; others build
    it anew. With --check, says how far int8 strays from fp32 on photos it was not
    calibrated on; the report is kept with the runtime and shown by predict.
    """

    from ..pipeline.quantize import quantize as build
    from .official import official_weights
    from .render import status_printer, stderr_console

    console = stderr_console()
    notify = status_printer(console)

    if weights is None:
        weights = official_weights(console)
    done = build(calibration, check, weights, notify=notify)
    click.echo(f"int8 runtime {'built' if done.built else 'already built from these images'}: "
               f"{done.artifact}")
    if done.check_overlap:
        click.echo(f"left out of the check: {counted(done.check_overlap, 'image')} of {check} "
                   "that the calibration has too")
    for line in report_lines(done.report):
        click.echo(line)


def counted(count: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def report_lines(report: Int8Report) -> list[str]:
    """How the int8 runtime was calibrated and how it measured against fp32, in words."""
    used = f"int8 runtime calibrated on {report.calibration_images} images"
    if report.calibration_left_out:
        used += f" ({counted(report.calibration_left_out, 'file')} left out: not decodable)"
    if report.calibration_images < RECOMMENDED_IMAGES:
        used += "; a few hundred are recommended"
    check = report.check
    if check is None:
        return [used, "not checked against fp32: `irv2 quantize --calibrate DIR --check DIR` "
                      "measures it on your own photos"]
    return [used, f"against fp32 on {check.images} other images: top-1 agreement "
                  f"{check.top1:.1%}, fp32's top-1 in int8's top 5 {check.top5:.1%}, largest "
                  f"probability change {check.max_change:.4f}"]
