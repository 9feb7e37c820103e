"""``irv2 train`` and ``predict --head``: folders, bad input, the feature cache, faults.

The subject here is files, folders and faults, not the network: the in-memory engine
(tests/pixel_engine.py) gives features from each picture's coarse colours. The network's
own features are in test_train_network.py; the fitting on feature matrices in
test_train_fit.py.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pictures import LOOKS, class_folders, split_folders, write_pictures

from irv2cli.cli.main import cli
from irv2cli.errors import HeadError, OutputError, TrainingDataError
from irv2cli.pipeline.job import RunOptions
from irv2cli.pipeline.run import RunInterrupted
from irv2cli.results.heads import load_head
from irv2cli.store import atomic
from irv2cli.training.train import TrainOptions, train

pytestmark = pytest.mark.in_memory_engine


def irv2(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def options(weights: Path, **fields) -> TrainOptions:
    return TrainOptions(run=RunOptions(weights=weights, workers=2), **fields)


def feature_entries(cache) -> list[Path]:
    return sorted((cache.irv2 / "features").rglob("*.f32"))


def test_train_then_predict_with_the_users_class_names(weights, tmp_path):
    data = class_folders(tmp_path / "data")
    (data / "notes.txt").write_text("what these are")
    head = tmp_path / "shapes.head"
    trained = irv2("train", data, "-o", head, "--weights", weights)
    assert trained.exit_code == 0, trained.output
    assert "notes.txt is beside the class folders, in no class: left out" in trained.output
    assert "validation (3 images): top-1 100.0%" in trained.output
    assert "top-5" not in trained.output  # only above 5 classes
    for name in LOOKS:
        assert name in trained.output  # the per-class table and the matrix
    assert load_head(head).classes == tuple(sorted(LOOKS))

    results, report = tmp_path / "shapes.jsonl", tmp_path / "shapes.html"
    predicted = irv2("predict", data, "--head", head, "--weights", weights, "-o", results,
                     "--report", report)
    assert predicted.exit_code == 1  # notes.txt is an input of predict, and fails there
    assert predicted.output.count("the head has 3 classes") == 1
    assert report.read_text().count('<span class="label" title="head:') == 18 * 3
    records = [json.loads(line) for line in results.read_text().splitlines()]
    for record in records:
        if record["error"] is None:
            assert len(record["predictions"]) == 3
            assert record["predictions"][0]["label"] == Path(record["path"]).parent.name
            assert record["predictions"][0]["wnid"] == load_head(head).tag


def test_the_report_shows_the_misclassified_with_true_and_predicted(weights, tmp_path):
    data = split_folders(tmp_path / "data")
    # a red disc filed as green bars: the kind of picture the report is for
    write_pictures(data / "val" / "green bars", "red disc", 1, first=500)
    report = tmp_path / "validation.html"
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights,
                  "--report", report)
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count('class="card') == 1
    assert "true class: green bars" in page and "data:image/jpeg;base64," in page
    assert "Confusion matrix" in page and "<th>red disc</th>" in page


@pytest.mark.parametrize("layout", ["empty class", "one class", "only files"])
def test_unusable_class_folders_are_one_line_and_nothing_is_written(weights, tmp_path, layout):
    data = tmp_path / "data"
    if layout == "empty class":
        class_folders(data)
        (data / "yellow").mkdir()
        said = "class yellow"
    elif layout == "one class":
        class_folders(data, classes=["red disc"])
        said = "holds one class folder (red disc); a head needs at least two"
    else:
        data.mkdir()
        (data / "a.png").write_bytes(b"")
        said = "holds no class folder; a head needs at least two"
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 1
    assert said in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "h.head").exists()


def test_a_class_name_that_is_not_utf8_is_refused(weights, tmp_path):
    data = class_folders(tmp_path / "data", classes=["red disc", "green bars"])
    write_pictures(Path(os.fsdecode(bytes(data) + b"/caf\xe9")), "blue square", 6)
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 1
    assert "caf\\udce9: a class folder's name is not valid UTF-8" in result.output
    assert result.output.count("\n") == 1


def test_class_names_are_any_unicode_shown_and_stored_exactly(weights, tmp_path):
    names = ["mûr", "未熟", "[bold]x"]
    data = tmp_path / "data"
    for name, look in zip(names, LOOKS, strict=True):
        write_pictures(data / name, look, 5)
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 0, result.output
    assert load_head(tmp_path / "h.head").classes == tuple(sorted(names))
    assert "[bold]x" in result.output  # text, never markup


def test_a_thousand_classes_of_three_images_are_refused_before_embedding(
        weights, tmp_path, cache):
    data = tmp_path / "data"
    for i in range(1000):
        (data / f"c{i:04d}").mkdir(parents=True)
        for j in range(3):
            (data / f"c{i:04d}" / f"{j}.png").write_bytes(b"")
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 1
    assert ("1000 classes have fewer than 5 images (c0000 (3), c0001 (3), c0002 (3) and "
            "997 more): each class needs at least 5 (4 to fit on and 1 to validate)"
            in result.output)
    assert result.output.count("\n") == 1
    assert feature_entries(cache) == []


def test_train_and_val_with_different_classes_are_refused(weights, tmp_path):
    data = split_folders(tmp_path / "data")
    (data / "val" / "red disc").rename(data / "val" / "red")
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 1
    assert ("train/ and val/ must hold the same class folders (only in train/: red disc; "
            "only in val/: red)") in result.output


def test_a_class_of_only_broken_files_is_refused_after_listing_them(weights, tmp_path):
    data = class_folders(tmp_path / "data", count=5)
    (data / "broken").mkdir()
    for i in range(5):
        (data / "broken" / f"{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg %d" % i)
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 1
    assert result.output.count("error: ") == 5  # each listed as it fails
    assert ("class broken: none of its 5 files could be read as an image (each is listed "
            "above)") in result.output
    assert not (tmp_path / "h.head").exists()


def test_broken_files_are_counted_and_left_out(weights, tmp_path):
    data = class_folders(tmp_path / "data")
    (data / "red disc" / "torn.png").write_bytes(b"\x89PNG torn")
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 1  # some input failed; the head is written
    assert "1 could not be read (left out)" in result.output
    assert load_head(tmp_path / "h.head").metadata["training"]["images"]["failed"] == 1


def test_an_existing_head_is_kept_unless_overwriting(weights, tmp_path):
    data = class_folders(tmp_path / "data")
    head = tmp_path / "h.head"
    head.write_bytes(b"precious")
    result = irv2("train", data, "-o", head, "--weights", weights)
    assert result.exit_code == 1 and "h.head already exists; pass --overwrite" in result.output
    assert head.read_bytes() == b"precious"


def test_the_cache_embeds_only_what_is_new_or_changed_and_rebuilds_damage(
        weights, tmp_path, cache):
    data = class_folders(tmp_path / "data")
    first = train(data, tmp_path / "a.head", options(weights))
    assert (first.embedded, first.cached) == (18, 0)
    entries = feature_entries(cache)
    assert len(entries) == 18

    write_pictures(data / "red disc", "red disc", 1, first=50)  # a new picture
    (data / "blue square" / "000.png").unlink()  # a file changed under the same name
    write_pictures(data / "blue square", "blue square", 1, first=0)
    os.replace(data / "blue square" / "000.png", data / "blue square" / "tmp.png")
    write_pictures(data / "blue square", "blue square", 1, first=77)
    os.replace(data / "blue square" / "077.png", data / "blue square" / "000.png")
    (data / "blue square" / "tmp.png").unlink()
    entries[0].write_bytes(entries[0].read_bytes()[:-9] + b"\0" * 9)  # a damaged entry
    second = train(data, tmp_path / "b.head", options(weights))
    # the new picture, the changed one and the damaged entry's; the other 16 from the cache
    assert (second.embedded, second.cached) == (3, 16)
    assert load_head(tmp_path / "b.head").metadata["training"]["images"] == {
        "train": 16, "val": 3, "failed": 0}
    assert len(feature_entries(cache)) == 20  # 18, the new picture's, the changed file's


def test_a_file_changed_while_it_is_embedded_is_not_cached_under_its_old_content(
        weights, tmp_path, cache, monkeypatch):
    from pixel_engine import PixelEngine

    data = class_folders(tmp_path / "data")
    changing = data / "blue square" / "000.png"  # in the first batch
    real = PixelEngine.__call__

    def change_it_meanwhile(self, batch):
        if changing.read_bytes() != (data / "red disc" / "000.png").read_bytes():
            changing.write_bytes((data / "red disc" / "000.png").read_bytes())
        return real(self, batch)

    monkeypatch.setattr(PixelEngine, "__call__", change_it_meanwhile)
    first = train(data, tmp_path / "a.head", options(weights))
    assert first.embedded == 18 and len(feature_entries(cache)) == 17
    monkeypatch.setattr(PixelEngine, "__call__", real)
    second = train(data, tmp_path / "b.head", options(weights))
    assert (second.embedded, second.cached) == (0, 17)  # its new content: red disc 000's


def test_two_trainings_at_once_share_the_cache_safely(weights, tmp_path, cache):
    data = class_folders(tmp_path / "data")
    outcomes: dict[str, object] = {}

    def training(name: str) -> None:
        try:
            outcomes[name] = train(data, tmp_path / f"{name}.head", options(weights))
        except Exception as exc:  # reported below
            outcomes[name] = exc

    threads = [threading.Thread(target=training, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    a, b = load_head(tmp_path / "a.head"), load_head(tmp_path / "b.head")
    assert np.array_equal(a.weights, b.weights) and a.classes == b.classes
    assert len(feature_entries(cache)) == 18
    third = train(data, tmp_path / "c.head", options(weights))
    assert (third.embedded, third.cached) == (0, 18)  # every entry whole and checking


def test_ctrl_c_while_embedding_keeps_what_was_cached(weights, tmp_path, cache):
    data = class_folders(tmp_path / "data")
    seen = []

    def interrupt_at_the_fifth(record) -> None:
        seen.append(record)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted):
        train(data, tmp_path / "h.head", options(weights), on_record=interrupt_at_the_fifth)
    assert not (tmp_path / "h.head").exists()
    assert len(feature_entries(cache)) == 5
    again = train(data, tmp_path / "h.head", options(weights))
    assert (again.embedded, again.cached) == (13, 5)


def test_ctrl_c_while_embedding_says_what_the_cache_kept(weights, tmp_path, cache,
                                                        monkeypatch):
    from irv2cli.store.features import FeatureCache

    data = class_folders(tmp_path / "data")
    real, kept = FeatureCache.put, []

    def interrupted_at_the_fifth(self, key, features):
        if len(kept) == 4:
            raise KeyboardInterrupt
        real(self, key, features)
        kept.append(key)

    monkeypatch.setattr(FeatureCache, "put", interrupted_at_the_fifth)
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 130
    assert ("Interrupted while embedding: the features of 4 more images were cached, so the "
            "same command goes on from there. No head was written.") in result.output
    assert len(feature_entries(cache)) == 4 and not (tmp_path / "h.head").exists()


def test_ctrl_c_while_fitting_writes_no_head(weights, tmp_path, monkeypatch):
    from irv2cli.training import train as training

    data = class_folders(tmp_path / "data")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit_head", interrupted)
    result = irv2("train", data, "-o", tmp_path / "h.head", "--weights", weights)
    assert result.exit_code == 130
    assert ("Interrupted while fitting: no head was written (the features are cached: the "
            "same command starts again from the fit).") in result.output
    assert not (tmp_path / "h.head").exists()


class FullDisk:
    """A staged file on a disk that fills up halfway through the write."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stream.close()

    def write(self, data: bytes) -> None:
        self.stream.write(data[: len(data) // 2])
        self.stream.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_the_head_leaves_nothing_half_written(
        weights, tmp_path, monkeypatch):
    data = class_folders(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "h.head").write_bytes(b"the old head")
    real = os.fdopen

    def disk_fills(stage: str) -> None:
        if stage == "writing":
            monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode)))

    with pytest.raises(OutputError, match=r"h\.head: no space left on device; free space"):
        train(data, out / "h.head", options(weights, overwrite=True), on_stage=disk_fills)
    assert [p.name for p in out.iterdir()] == ["h.head"]
    assert (out / "h.head").read_bytes() == b"the old head"


@pytest.fixture
def trained_head(weights, tmp_path) -> Path:
    """A head of the three looks for the in-memory engine's weights (its weights drawn at
    random, not fitted: what these tests check comes before any score), and the folders
    of pictures."""
    from irv2cli.results.heads import Head, head_metadata, save_head
    from irv2cli.store.artifacts import network_key

    class_folders(tmp_path / "data")
    rng = np.random.default_rng(0)
    classes = tuple(sorted(LOOKS))
    head = tmp_path / "h.head"
    save_head(Head(rng.normal(size=(3, 1536)).astype(np.float32), np.zeros(3, np.float32),
                   classes, head_metadata(classes, network_key(weights), precision="fp32",
                                          preprocessing={}, training={})), head)
    return head


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not a head", "a picture"])
def test_damaged_heads_are_refused_in_one_line(weights, trained_head, tmp_path, damage):
    body = trained_head.read_bytes()
    if damage == "truncated":
        trained_head.write_bytes(body[: len(body) // 2])
    elif damage == "flipped":
        at = body.index(b"weights.npy") + 200  # inside the weights array
        trained_head.write_bytes(body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:])
    elif damage == "not a head":
        np.savez(trained_head.with_suffix(".npz"), weights=np.zeros(3))
        trained_head.write_bytes(trained_head.with_suffix(".npz").read_bytes())
    else:
        trained_head.write_bytes((tmp_path / "data" / "red disc" / "000.png").read_bytes())
    result = irv2("predict", tmp_path / "data", "--head", trained_head, "--weights", weights)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {trained_head} is not a usable head: ")
    assert result.output.count("\n") == 1


def test_a_head_from_other_weights_is_refused(weights, trained_head, tmp_path):
    other = tmp_path / "other.h5"
    other.write_bytes(b"other weights, other features")
    with pytest.raises(HeadError, match="trained on the features of other network weights"):
        load_head(trained_head).check_network("xxh3-0")
    result = irv2("predict", tmp_path / "data", "--head", trained_head, "--weights", other)
    assert result.exit_code == 1
    assert "was trained on the features of other network weights" in result.output
    assert "pass the --weights the head was trained on" in result.output


def test_resume_needs_the_same_head(weights, trained_head, tmp_path):
    results = tmp_path / "r.csv"
    first = irv2("predict", tmp_path / "data" / "red disc", "--head", trained_head,
                 "--weights", weights, "-o", results, "-k", "2")
    assert first.exit_code == 0, first.output
    for other in ([], ["--head", trained_head.with_name("x.head")]):
        if other:  # the same classes, other weights
            from irv2cli.results.heads import save_head

            first_head = load_head(trained_head)
            save_head(replace(first_head, weights=first_head.weights * 2), other[1])
        refused = irv2("predict", tmp_path / "data", *other, "--weights", weights,
                       "-o", results, "-k", "2", "--resume")
        assert refused.exit_code == 1
        assert "holds results of the head" in refused.output
        assert "run with the same --head (or none, as that run did)" in refused.output
    resumed = irv2("predict", tmp_path / "data", "--head", trained_head, "--weights", weights,
                   "-o", results, "-k", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    plain = tmp_path / "plain.jsonl"
    assert irv2("predict", tmp_path / "data", "--weights", weights, "-o", plain).exit_code == 0
    refused = irv2("predict", tmp_path / "data", "--head", trained_head, "--weights", weights,
                   "-o", plain, "--resume")
    assert "holds results of ImageNet's classes and this run classifies with the head" \
        in refused.output


def test_the_table_of_a_head_names_its_classes(weights, trained_head, tmp_path):
    result = irv2("predict", tmp_path / "data" / "red disc" / "000.png", "--head",
                  trained_head, "--weights", weights, "-k", "2")
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert "head" in table[2] and "WordNet ID" not in result.stdout
    rows = [line for line in table if line.startswith("│")]
    assert sum(any(name in row for name in LOOKS) for row in rows) == 2


def test_the_library_run_takes_a_head(weights, trained_head, tmp_path):
    from irv2cli.pipeline.run import run

    records, said = [], []
    run([tmp_path / "data" / "green bars"], None,
        RunOptions(weights=weights, head=trained_head, top_k=10),
        notify=said.append, on_record=records.append)
    assert said == ["top-10 asked for, but the head has 3 classes: each image gets all 3"]
    assert len(records) == 6
    assert all({p.label for p in r.predictions} == set(LOOKS) for r in records)


def test_bad_training_data_errors_are_the_librarys(weights, tmp_path):
    with pytest.raises(TrainingDataError, match="is not a folder"):
        train(tmp_path / "missing", tmp_path / "h.head", options(weights))
