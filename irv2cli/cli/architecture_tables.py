"""The architecture as rich tables and JSON, read from the network's plain description."""

from __future__ import annotations

import dataclasses

from rich.table import Table

from ..network import architecture as arch

LAYOUT_KEY = ("A branch a line, its ops in order; \"3x3/2 384 valid\" is a 3x3 conv, stride 2, "
              "384 filters, no padding, then BatchNorm and ReLU. A residual block adds scale x "
              "its 1x1 conv to its input.")


def shape_text(shape: arch.Shape) -> str:
    return "x".join(map(str, shape))


def window_text(kernel: tuple[int, int], strides: int) -> str:
    return shape_text(kernel) + (f"/{strides}" if strides != 1 else "")


def op_text(op: arch.Op) -> str:
    """``3x3/2 384 valid``: a conv's kernel, stride when not 1, filters, padding when
    valid; ``max 3x3/2 valid``: a pooling."""
    valid = " valid" if getattr(op, "padding", None) == arch.VALID else ""
    if isinstance(op, arch.Conv):
        return f"{window_text(op.kernel, op.strides)} {op.filters}{valid}"
    if isinstance(op, arch.Pool):
        return f"{op.kind} {window_text((op.size, op.size), op.strides)}{valid}"
    if isinstance(op, arch.Dense):
        return f"dense {op.units} {op.activation}"
    return "global avg"


def layout_text(summary: arch.StageSummary) -> str:
    """One block's layout: a lone branch one op a line, else one branch a line, then the join."""
    stage = summary.stage
    if len(stage.branches) == 1:
        return "\n".join(op_text(op) for op in stage.branches[0])
    lines = [" → ".join(op_text(op) for op in branch) for branch in stage.branches]
    if stage.blocks:
        lines.append(f"concat → 1x1 {summary.output_shape[-1]} +bias")
    else:
        lines.append(f"concat {summary.output_shape[-1]}")
    return "\n".join(lines)


def scale_text(stage: arch.Stage) -> str:
    """Residual scale (and activation when linear) per run of blocks: ``0.2 x9``."""
    return "\n".join(
        str(run.scale) + (" linear" if run.activation is None else "")
        + (f" x{run.count}" if len(stage.blocks) > 1 else "")
        for run in stage.blocks
    )


def stage_name(stage: arch.Stage) -> str:
    return f"{stage.name}_1..{stage.block_count}" if stage.blocks else stage.name


def totals_caption(counts: dict[str, int]) -> str:
    return (f"{counts['total']:,} parameters: {counts['trainable']:,} trainable, "
            f"{counts['non_trainable']:,} non-trainable (BatchNorm moving statistics)")


def stages_table() -> Table:
    """The stages from the stem to the classifier, with one block's branch layout."""
    table = Table(title=f"Inception-ResNet-V2, input {shape_text(arch.INPUT_SHAPE)}",
                  caption=f"{totals_caption(arch.parameter_counts())}\n{LAYOUT_KEY}",
                  title_justify="left", caption_justify="left")
    for header in ("stage", "layout of one block", "scale", "output"):
        table.add_column(header)
    table.add_column("parameters", justify="right")
    for summary in arch.stages():
        stage = summary.stage
        table.add_row(f"{stage_name(stage)}\n{stage.kind}", layout_text(summary),
                      scale_text(stage), shape_text(summary.output_shape),
                      f"{summary.parameters:,}", end_section=True)
    return table


def layers_table() -> Table:
    """Every layer, in the order of Keras's ``model.layers``."""
    table = Table(title=f"Inception-ResNet-V2 layers, input {shape_text(arch.INPUT_SHAPE)}",
                  caption=totals_caption(arch.parameter_counts()), title_justify="left",
                  caption_justify="left")
    table.add_column("#", justify="right")
    for header in ("name", "type", "output"):
        table.add_column(header)
    table.add_column("parameters", justify="right")
    for index, layer in enumerate(arch.layers()):
        table.add_row(str(index), layer.name, layer.type, shape_text(layer.output_shape),
                      f"{layer.parameters:,}")
    return table


def op_json(op: arch.Op) -> dict:
    fields = {key: value for key, value in dataclasses.asdict(op).items() if value is not None}
    return {"op": type(op).__name__, **fields}


def stage_json(summary: arch.StageSummary) -> dict:
    stage = summary.stage
    return {"name": stage.name, "kind": stage.kind,
            "blocks": [dataclasses.asdict(run) for run in stage.blocks],
            "branches": [[op_json(op) for op in branch] for branch in stage.branches],
            "output_shape": list(summary.output_shape), "parameters": summary.parameters,
            "last_layer": summary.last_layer}


def layer_json(layer: arch.Layer) -> dict:
    return {"name": layer.name, "type": layer.type, "output_shape": list(layer.output_shape),
            "parameters": layer.parameters}


def summary_json(with_layers: bool) -> dict:
    """The JSON document: the stages (or every layer) and the parameter counts."""
    key, rows = (("layers", [layer_json(layer) for layer in arch.layers()]) if with_layers
                 else ("stages", [stage_json(summary) for summary in arch.stages()]))
    return {"model": "inception_resnet_v2", "input_shape": list(arch.INPUT_SHAPE), key: rows,
            "parameters": arch.parameter_counts()}
