"""irv2 explain: Grad-CAM equals a plain GradientTape computation on keras.applications,
the heatmap lands on the region the network saw, and the command writes one PNG per image."""

from __future__ import annotations

import os
import shutil
import stat

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from irv2cli.cli.main import cli
from irv2cli.errors import ClassLookupError, OutputError
from irv2cli.inputs.images import load_input, resize
from irv2cli.results import heatmaps
from irv2cli.results.heatmaps import output_plan, overlay, save_png, seen_region, upsample
from irv2cli.results.labels import find_class

TABBY, TIGER_CAT = 281, 282


def invoke(*args):
    return CliRunner().invoke(cli, ["explain", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="session")
def explainer_model(top_weights):
    """One Grad-CAM model on the generated weights for the whole session."""
    from irv2cli.network.gradcam import load_explainer

    return load_explainer(top_weights)


@pytest.fixture
def shared_model(explainer_model, monkeypatch):
    """The command explains with the session's model instead of building its own."""
    from irv2cli.network.gradcam import Explainer

    monkeypatch.setattr(Explainer, "from_weights", classmethod(
        lambda cls, weights, traced=False: cls(explainer_model, traced)))
    return explainer_model


def reference_cam(model, inputs: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM written out plainly on ``keras.applications``' model (logits out)."""
    import keras
    import tensorflow as tf

    grad_model = keras.Model(model.input, [model.get_layer("conv_7b_ac").output,
                                            model.output])
    with tf.GradientTape() as tape:
        activations, logits = grad_model(inputs[None], training=False)
        score = logits[0, class_index]
    gradients = tape.gradient(score, activations)[0].numpy()
    cam = np.maximum((activations[0].numpy() * gradients.mean(axis=(0, 1))).sum(-1), 0)
    return cam / cam.max()


# The class lookup and the heatmap's placement: no network.

def test_a_class_is_found_by_wordnet_id_index_or_label():
    assert find_class("n02123159").index == TIGER_CAT
    assert find_class("281").wnid == "n02123045"
    assert find_class("tiger cat").index == find_class("Tiger_Cat").index == TIGER_CAT
    assert (find_class("Cardigan").index, find_class("cardigan").index) == (264, 474)


@pytest.mark.parametrize("query, words", [
    ("crane", ["n02012849", "n03126707"]), ("1000", ["0 to 999"]),
    ("n00000000", ["not the WordNet ID"]), ("tabbby", ["'tabby'"])])
def test_an_ambiguous_or_unknown_class_says_what_to_choose(query, words):
    with pytest.raises(ClassLookupError) as caught:
        find_class(query)
    assert all(word in caught.value.message for word in words)


def test_the_region_is_the_one_the_resize_keeps():
    assert seen_region((640, 480), "squash") == (0, 0, 640, 480)
    # An extreme ratio makes the resize sample that very box: the two must agree.
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 2000, 3), np.uint8))
    box = seen_region(image.size, "center-crop")
    assert np.array_equal(np.asarray(resize(image, "center-crop", "bilinear")),
                          np.asarray(image.resize((299, 299), Image.Resampling.BILINEAR,
                                                  box=box)))
    left, top, right, bottom = seen_region((640, 480), "center-crop")
    assert (top, bottom) == pytest.approx((24.5, 455.5), abs=0.01)
    assert (left + right) / 2 == pytest.approx(320, abs=1)


def test_the_heatmap_covers_the_region_cell_by_cell():
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[0, 7] = 1.0  # top right
    region = (100.0, 50.0, 900.0, 450.0)
    values, seen = upsample(heatmap, (1000, 500), region)
    assert values.shape == seen.shape == (500, 1000) and seen.sum() == 800 * 400
    assert values.min() >= 0 and values.max() == 1
    assert values[:50].max() == 0 and values[:, :100].max() == 0  # outside: nothing
    assert values[50:75, 850:900].min() == 1  # the cell's outer quarter holds its value
    assert values[300:, :].max() == 0
    # What explain draws: those values in colour over the region, the rest dimmed, drawn
    # in row chunks (500 rows > ROWS) that meet without a seam.
    grey = 100
    drawn = np.asarray(overlay(Image.new("RGB", (1000, 500), (grey,) * 3), heatmap, region))
    assert (drawn[~seen] == round(heatmaps.DIMMED * grey)).all()
    opacity = heatmaps.OPACITY
    expected = (1 - opacity) * grey + opacity * heatmaps.colorize(values)
    assert np.abs(drawn[seen] - expected[seen]).max() <= 0.5 + 1e-3
    assert (drawn[50:75, 850:900] == [114, 50, 50]).all()  # jet's red (127.5, 0, 0)
    assert (drawn[300:450, 100:900] == [50, 50, 114]).all()  # jet's blue (0, 0, 127.5)


def test_outputs_are_named_after_the_inputs_and_never_clobbered(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    odd = os.fsdecode(b"caf\xe9 \n.jpg")
    for name in ("a.jpg", "a.png", "sub/a.jpg", odd):
        (photos / name).write_bytes(b"")
    out = tmp_path / "out"
    plan = dict(output_plan([str(photos)], out))
    assert sorted(os.path.relpath(p, out) for p in plan.values()) == sorted(
        ["a.cam.png", "a-2.cam.png", "sub/a.cam.png", os.fsdecode(b"caf\xe9 \n.cam.png")])
    assert output_plan([str(photos / "a.jpg")], tmp_path / "x.png") == [
        (str(photos / "a.jpg"), tmp_path / "x.png")]
    save_png(Image.new("RGB", (3, 2)), out / "a.cam.png")
    assert stat.S_IMODE(os.stat(out / "a.cam.png").st_mode) == 0o644
    with pytest.raises(OutputError, match="already exists"):
        output_plan([str(photos)], out)
    with pytest.raises(OutputError, match="already exists"):
        save_png(Image.new("RGB", (5, 5)), out / "a.cam.png")
    assert Image.open(out / "a.cam.png").size == (3, 2)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_folder_s_own_heatmaps_are_never_inputs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "a.cam.png", "b.CAM.PNG", "cam.png"):
        (photos / name).write_bytes(b"")
    plan = output_plan([str(photos)], tmp_path / "out")
    assert sorted(os.path.basename(path) for path, _ in plan) == ["a.jpg", "cam.png"]
    # One named as a file is still explained: it was asked for.
    assert [p for p, _ in output_plan([str(photos / "a.cam.png")], tmp_path)] == [
        str(photos / "a.cam.png")]


def test_an_ambiguous_class_is_a_usage_error_listing_the_choices(samples):
    result = invoke(samples / "chelsea.jpg", "--class", "crane")
    assert result.exit_code == 2
    assert "n02012849" in result.stderr and "n03126707" in result.stderr


def test_an_existing_output_is_refused_and_left_as_it_was(samples, tmp_path):
    target = tmp_path / "cam.png"
    target.write_bytes(b"mine")
    weights = tmp_path / "any.h5"
    weights.write_bytes(b"")
    result = invoke(samples / "chelsea.jpg", "-o", target, "--weights", weights)
    assert result.exit_code == 1 and "--force" in result.stderr
    assert target.read_bytes() == b"mine"


# The network: Grad-CAM itself.

@pytest.mark.slow
def test_grad_cam_equals_a_gradient_tape_on_keras_applications(explainer_model,
                                                              reference_model, samples):
    from irv2cli.network.gradcam import Explainer

    explainer = Explainer(explainer_model)
    inputs = load_input(samples / "chelsea.jpg")
    top = explainer.explain(inputs)
    logits = reference_model(inputs[None], training=False).numpy()[0]
    assert top.class_index == int(np.argmax(logits))
    np.testing.assert_allclose(top.probabilities, np.exp(logits) / np.exp(logits).sum(),
                               atol=1e-5)
    for cam in (top, explainer.explain(inputs, TABBY)):
        assert cam.heatmap.shape == (8, 8)
        np.testing.assert_allclose(cam.heatmap, reference_cam(reference_model, inputs,
                                                              cam.class_index), atol=1e-4)


@pytest.mark.slow
def test_the_heatmap_fills_the_image_and_follows_the_class(explainer_model, samples):
    from irv2cli.network.gradcam import Explainer

    image = Image.open(samples / "chelsea.jpg")
    inputs = load_input(samples / "chelsea.jpg")
    tabby, tiger = (Explainer(explainer_model).explain(inputs, c) for c in (TABBY, TIGER_CAT))
    values, _ = upsample(tabby.heatmap, image.size, seen_region(image.size))
    assert values.shape == (image.height, image.width)
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.01
    assert np.abs(tabby.heatmap - tiger.heatmap).max() > 0.01
    traced = Explainer(explainer_model, traced=True).explain(inputs, TABBY)
    np.testing.assert_allclose(traced.heatmap, tabby.heatmap, atol=1e-5)


# The command.

@pytest.mark.slow
def test_one_image_gives_a_png_of_its_size_and_its_top_k(shared_model, top_weights,
                                                         samples, tmp_path):
    target = tmp_path / "cam.png"
    result = invoke(samples / "chelsea.jpg", "-o", target, "--weights", top_weights, "-k", 3)
    assert result.exit_code == 0, result.stderr
    assert Image.open(target).size == Image.open(samples / "chelsea.jpg").size
    assert "WordNet ID" in result.stdout and "3 │" in result.stdout
    assert "-> " in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("wanted", ["281", "n02123159"])
def test_the_class_asked_for_is_explained(shared_model, top_weights, samples, tmp_path,
                                          wanted):
    result = invoke(samples / "coffee.jpg", "--class", wanted, "-o", tmp_path / "c.png",
                    "--weights", top_weights)
    assert result.exit_code == 0, result.stderr
    chosen = find_class(wanted)
    assert f"{chosen.label} ({chosen.wnid}) -> " in result.stderr


@pytest.mark.slow
def test_a_folder_gives_one_png_per_image(shared_model, top_weights, photos, tmp_path):
    odd = os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(photos / "coffee.jpg", photos / odd)
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = invoke(photos, "-o", out, "--weights", top_weights, "--resize", "squash")
    assert result.exit_code == 1  # notes.txt
    assert "notes.txt" in result.stderr
    names = sorted(p.name for p in out.iterdir())
    expected = sorted(f"{os.path.splitext(p.name)[0]}.cam.png" for p in photos.glob("*.jpg"))
    assert names == expected and os.fsdecode(b"caf\xe9.cam.png") in names
    for photo in photos.glob("*.jpg"):
        written = out / f"{os.path.splitext(photo.name)[0]}.cam.png"
        assert Image.open(written).size == Image.open(photo).size
