"""``irv2 bench``'s pipelines as data: their commands and their rows (nothing is timed)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from irv2cli.bench.harness import (
    DEFAULT_PREPROCESSING,
    IRV2_HEAD,
    IRV2_INT8,
    IRV2_KERAS,
    IRV2_ON_RAY,
    IRV2_ONNX,
    KERAS_LOOP,
    ColdStart,
    Summary,
    photo_sources,
    plan,
    python_call,
    sample_photos,
)
from irv2cli.cli.bench import benchmark_table, cold_start_table

FOLDER, WEIGHTS, OUTPUT = Path("/data/small"), Path("/w/top.h5"), Path("/tmp/out.jsonl")


def test_plan_lists_every_measurement_in_table_order_int8_beside_fp32():
    assert plan([1, 8], [1]) == [(IRV2_ONNX, 1), (IRV2_HEAD, 1), (IRV2_INT8, 1),
                                 (IRV2_ONNX, 8), (IRV2_HEAD, 8), (IRV2_INT8, 8),
                                 (IRV2_KERAS, 8), (KERAS_LOOP, 1),
                                 *((p, 8) for p in DEFAULT_PREPROCESSING)]
    assert [p.images for p in DEFAULT_PREPROCESSING] == ["small", "photos"]
    assert plan([1, 8], [1], ray=True)[-1] == (IRV2_ON_RAY, 8)


def test_the_ray_pipeline_runs_predict_on_the_ray_engine():
    command = IRV2_ON_RAY.command(FOLDER, WEIGHTS, 8, OUTPUT)
    assert command[command.index("--runner") + 1] == "ray"
    assert IRV2_ONNX.command(FOLDER, WEIGHTS, 8, OUTPUT)[-2:] == ["--runner", "local"]


def test_irv2_pipelines_run_predict_on_their_backend():
    command = IRV2_KERAS.command(FOLDER, WEIGHTS, 8, OUTPUT)
    assert command[1:4] == ["-m", "irv2cli", "predict"]
    assert command[command.index("--backend") + 1] == "keras"
    assert command[command.index("--batch-size") + 1] == "8"
    assert "squash" in command and "nearest" in command  # Keras's preprocessing
    default = DEFAULT_PREPROCESSING[1].command(FOLDER, WEIGHTS, 8, OUTPUT)
    assert "--resize" not in default and "--interpolation" not in default
    assert default[default.index("--backend") + 1] == "onnx"
    assert default[default.index("--precision") + 1] == "fp32"
    int8 = IRV2_INT8.command(FOLDER, WEIGHTS, 8, OUTPUT)
    assert int8[int8.index("--precision") + 1] == "int8"
    assert int8[int8.index("--backend") + 1] == "onnx" and "squash" in int8
    head = IRV2_HEAD.command(FOLDER, WEIGHTS, 8, OUTPUT, Path("/tmp/bench.head"))
    assert head[head.index("--head") + 1] == "/tmp/bench.head" and "squash" in head
    assert "--head" not in IRV2_ONNX.command(FOLDER, WEIGHTS, 8, OUTPUT, Path("/h"))


def test_the_baseline_calls_the_keras_loop_with_json_arguments():
    command = KERAS_LOOP.command(FOLDER, WEIGHTS, 4, OUTPUT)
    assert "from irv2cli.bench.baselines import keras_loop" in command[2]
    assert json.loads(command[3]) == [str(FOLDER), str(WEIGHTS), 4, str(OUTPUT)]
    assert KERAS_LOOP.is_baseline and not IRV2_ONNX.is_baseline


@pytest.mark.slow  # starts a process
def test_python_call_passes_arguments_as_data_not_code():
    hostile = "a'); import os; os._exit(9) #\n\"b"
    result = subprocess.run(python_call("builtins", "print", hostile, Path("/x y"), 3),
                            capture_output=True, text=True, check=True)
    assert result.stdout == f"{hostile} /x y 3\n"


def rendered(table) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


def summary(pipeline, top5, images_per_second=10.0) -> Summary:
    return Summary(pipeline, 8, images_per_second, [9.0, 11.0], 2.5, 900.0, top5)


def table_rows(text: str) -> dict[str, tuple[str, str]]:
    """Each row's pipeline -> its last two columns (top-5 = Keras, vs fp32)."""
    return {cells[1].strip(): (cells[-3].strip(), cells[-2].strip())
            for cells in (line.split("│") for line in text.splitlines() if line.startswith("│"))}


def test_benchmark_rows_compare_top5_with_the_plain_keras_loop_and_int8_with_fp32():
    same, other = {"a.jpg": [1, 2]}, {"a.jpg": [2, 1]}
    text = rendered(benchmark_table([summary(IRV2_ONNX, same), summary(IRV2_INT8, other, 31.0),
                                     summary(KERAS_LOOP, same), summary(IRV2_KERAS, other),
                                     summary(DEFAULT_PREPROCESSING[1], other),
                                     summary(IRV2_ON_RAY, same, 5.0),
                                     summary(IRV2_HEAD, other, 9.9)]))
    assert table_rows(text) == {"irv2 onnx": ("yes", "-"), "irv2 onnx int8": ("-", "3.1x"),
                                "keras": ("yes", "-"), "irv2 keras": ("NO", "-"),
                                "irv2 onnx, 12 MP photos": ("-", "-"),
                                "irv2 onnx, --runner ray": ("yes", "-"),
                                "irv2 onnx --head": ("-", "1.0x")}


def test_cold_start_rows_show_the_speed_up_over_the_slowest():
    text = rendered(cold_start_table([ColdStart("irv2 predict (onnx)", 2.0, [2.0], 300.0),
                                      ColdStart("Keras recipe", 8.0, [8.0], 1500.0)]))
    assert "4.0x" in text and "1.0x" in text


def test_the_default_photos_are_the_samples_installed_with_the_package():
    import irv2cli

    folder = sample_photos()
    assert folder.is_relative_to(Path(irv2cli.__file__).parent)  # not the checkout's
    assert [p.name for p in photo_sources(folder)] == [
        "astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]


def test_a_folder_without_photos_is_one_line_before_anything_runs(tmp_path):
    from click.testing import CliRunner

    from irv2cli.cli.main import cli

    (tmp_path / "notes.txt").write_text("no photos here")
    result = CliRunner().invoke(cli, ["bench", "--images", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path} holds no JPEG photos" in result.output


def test_serve_rows_compare_one_client_with_the_engine_and_eight_with_predict():
    from irv2cli.bench.serving import Load, ServeMeasurement, Soak
    from irv2cli.cli.bench import serve_table, soak_table

    one = Load([0.050, 0.052, 0.060], 0.162, {"200": 3})
    eight = Load([0.2] * 98 + [0.5, 0.6], 10.0, {"200": 100})
    text = rendered(serve_table([ServeMeasurement("int8", 0.040, one, eight, 11.0)]))
    row = next(line for line in text.splitlines() if line.startswith("│ int8"))
    assert [cell.strip() for cell in row.split("│")[1:-1]] == [
        "int8", "40.0", "52.0 / 60.0", "+12.0", "200 / 500", "10.00", "11.00", "0.91x", "2.50"]

    soak = rendered(soak_table(Soak("int8", eight, 300.0, 310.4, 40, 40)))
    assert "+10" in soak and "+0" in soak and "100 requests" in soak
