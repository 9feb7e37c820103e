"""Inputs by URI: an ``s3://`` folder on a real S3-compatible server (moto's, on 127.0.0.1)
is walked like the same local folder, decoded in the same isolated workers, and gives the
same records; ``file://`` URIs are local paths."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image
from support import predict

from irv2cli.cli.main import cli
from irv2cli.errors import ImageError
from irv2cli.inputs import uris
from irv2cli.inputs.decoding import Decoded, DecodeLimits, DecodePool
from irv2cli.inputs.images import Preprocessing, decode, open_rgb
from irv2cli.inputs.paths import InputSelection, iter_image_paths, path_key

pytestmark = pytest.mark.in_memory_engine  # the subject is not the network


def test_a_uri_has_a_scheme_and_a_local_path_does_not():
    for uri in ("s3://bucket/a.jpg", "gs://b/", "hdfs://host:8020/x", "file:///tmp/x",
                "S3://bucket/a.jpg"):
        assert uris.is_uri(uri), uri
    for path in ("photos/a.jpg", "photos:2024/a.jpg", "C://photos/a.jpg", "C:\\photos",
                 "./s3://bucket/a.jpg", "/tmp/x", "a:/b"):
        assert not uris.is_uri(path), path


def test_a_uri_is_its_own_key_and_a_path_is_made_absolute():
    assert path_key("s3://bucket/./a.jpg?scheme=http") == "s3://bucket/./a.jpg?scheme=http"
    assert path_key("photos/a.jpg") == os.path.abspath("photos/a.jpg")


@pytest.fixture
def tree(tmp_path, samples) -> Path:
    """A folder with nested, hidden and awkwardly named files, and names that sort apart
    from their keys (``a`` before ``a.jpg``, though the key ``a/`` sorts after it)."""
    root = tmp_path / "tree"
    photo = (samples / "chelsea.jpg").read_bytes()
    for name in ("a.jpg", "a/1.jpg", "a/deep/2.png", "B.jpg", "b/.hidden.jpg",
                 ".secret/3.jpg", "notes.txt", "with space #1 100%?.jpg", "z/4.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(photo)
    return root


def local_walk(root: Path, **selection) -> list[str]:
    return [os.path.relpath(p, root)
            for p in iter_image_paths([str(root)], InputSelection(**selection))]


def uri_walk(uri: str, **selection) -> list[str]:
    """The walk of folder ``uri``, each URI as its path relative to ``uri`` (decoded)."""
    prefix, query = uri.split("?")
    found = list(iter_image_paths([uri], InputSelection(**selection)))
    assert all(p.startswith(prefix) and p.endswith("?" + query) for p in found)
    return [unquote(p[len(prefix):-len(query) - 1]) for p in found]


SELECTIONS = [{}, {"recursive": False}, {"globs": ("*.jpg",)},
              {"globs": ("a/*.jpg", "*.png")}, {"include_hidden": True},
              {"include_hidden": True, "recursive": False, "globs": ("*.jpg",)}]


@pytest.mark.parametrize("selection", SELECTIONS, ids=str)
def test_an_s3_folder_is_walked_like_the_same_local_folder(s3, tree, selection):
    uri = s3.upload(tree, "tree")
    assert uri_walk(uri, **selection) == local_walk(tree, **selection)


def test_the_walk_is_the_local_one_in_order_and_kind(s3, tree):
    assert uri_walk(s3.upload(tree, "tree")) == [
        "B.jpg", "a/1.jpg", "a/deep/2.png", "a.jpg", "notes.txt", "with space #1 100%?.jpg",
        "z/4.jpg"]


def test_each_uri_of_a_walk_opens_its_own_object(s3, tree, samples):
    for uri in iter_image_paths([s3.upload(tree, "tree")]):
        assert uris.read_uri(uri) == (samples / "chelsea.jpg").read_bytes()


def test_a_uri_without_a_slash_a_bucket_and_a_file_are_walked_too(s3, tree):
    with_slash = list(iter_image_paths([s3.upload(tree, "tree")]))
    assert list(iter_image_paths([s3.uri("tree")])) == with_slash
    assert list(iter_image_paths([s3.uri()])) == with_slash  # the bucket holds only tree/
    single = s3.uri("tree/a.jpg")
    assert list(iter_image_paths([single])) == [single]


def test_a_missing_uri_is_passed_through_and_an_empty_folder_object_holds_nothing(s3):
    s3.put("empty/")  # the "folder" a console makes: an object whose key ends with /
    missing = [s3.uri("nothing/"), s3.uri("nothing.jpg"), s3.uri("x", bucket="no-such-bucket")]
    assert list(iter_image_paths(missing)) == missing
    assert list(iter_image_paths([s3.uri("empty/")])) == []


def test_a_uri_pyarrow_cannot_open_is_passed_through(s3):
    odd = [s3.uri("a.jpg") + "&no_such_option=1", "nosuchscheme://host/a.jpg"]
    assert list(iter_image_paths(odd)) == odd


def test_the_walk_lists_one_folder_at_a_time_as_it_reaches_it(s3, tree, monkeypatch):
    listed = []
    real = uris._listing
    monkeypatch.setattr(uris, "_listing", lambda fs, folder: listed.append(folder) or
                        real(fs, folder))
    walk = iter_image_paths([s3.upload(tree, "tree")])
    assert unquote(next(walk)).split("?")[0].endswith("/tree/B.jpg")
    assert listed == [f"{s3.bucket}/tree/"]
    rest = list(walk)
    assert len(rest) == 6
    assert [folder.removeprefix(f"{s3.bucket}/tree/") for folder in listed] == [
        "", "a", "a/deep", "b", "z"]


def test_an_endpoint_from_the_environment_reaches_the_server(s3, tree, monkeypatch):
    """pyarrow honours ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_S3``), so a URI needs no
    query for an S3-compatible server."""
    s3.upload(tree, "tree")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    uri = f"s3://{s3.bucket}/tree/"
    found = list(iter_image_paths([uri]))
    assert [unquote(p.removeprefix(uri)) for p in found] == local_walk(tree)
    assert uris.read_uri(found[0]) == (tree / "B.jpg").read_bytes()


def test_a_file_uri_is_the_local_path(tree, tmp_path):
    uri = "file://" + str(tree).replace(" ", "%20")
    found = list(iter_image_paths([uri], InputSelection(globs=("*.jpg",))))
    assert [unquote(p).removeprefix(f"file://{tree}/") for p in found] == local_walk(
        tree, globs=("*.jpg",))
    assert np.array_equal(decode(found[0]), decode(tree / "B.jpg"))
    missing = f"file://{tmp_path}/missing.jpg"
    assert list(iter_image_paths([missing])) == [missing]
    with pytest.raises(ImageError) as caught:
        open_rgb(missing)
    assert str(caught.value) == f"{missing}: no such file."


def test_a_file_uri_to_a_fifo_is_refused_unread(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    uri = f"file://{tmp_path}/pipe.jpg"
    with pytest.raises(ImageError) as caught:
        open_rgb(uri)
    assert str(caught.value) == f"{uri}: not a regular file, so not read."


def test_an_object_decodes_to_the_same_pixels_as_the_file(s3, samples):
    s3.put("cat.jpg", (samples / "chelsea.jpg").read_bytes())
    for preprocessing in (Preprocessing(), Preprocessing("squash", "nearest")):
        assert np.array_equal(decode(s3.uri("cat.jpg"), preprocessing),
                              decode(samples / "chelsea.jpg", preprocessing))


def test_an_object_fails_as_the_file_would_naming_the_uri(s3, mixed_folder):
    s3.put("notes.jpg", (mixed_folder / "notes.jpg").read_bytes())
    for key, reason in (("notes.jpg", "not an image Pillow can read."),
                        ("missing.jpg", "no such file.")):
        with pytest.raises(ImageError) as caught:
            open_rgb(s3.uri(key))
        assert str(caught.value) == f"{s3.uri(key)}: {reason}"


def test_a_uri_that_cannot_be_read_says_why_in_one_line(s3):
    uri = s3.uri("a.jpg") + "&no_such_option=1"
    with pytest.raises(ImageError) as caught:
        open_rgb(uri)
    message = str(caught.value)
    assert message.startswith(f"{uri}: cannot read it (") and "no_such_option" in message
    assert "\n" not in message


def test_the_isolated_workers_decode_objects_as_they_decode_files(s3, mixed_folder):
    """Each object's outcome in a worker is the local file's, with the URI for the path."""
    s3.upload(mixed_folder, "mixed")
    names = ["chelsea.jpg", "coffee.jpg", "notes.jpg", "missing.jpg"]
    with DecodePool(2) as pool:
        remote = [pool.submit(s3.uri(f"mixed/{n}"), Preprocessing()).result() for n in names]
        local = [pool.submit(str(mixed_folder / n), Preprocessing()).result() for n in names]
    for name, got, want in zip(names, remote, local, strict=True):
        if isinstance(want, str):
            assert got == want.replace(str(mixed_folder / name), s3.uri(f"mixed/{name}")), name
        else:
            assert np.array_equal(got.pixels, want.pixels), name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux's")
def test_an_object_is_read_under_the_worker_s_memory_ceiling(s3, samples):
    """Loading pyarrow is the worker's cost, not the file's: a small ceiling still reads a
    photo, and an object larger than the ceiling is that object's error."""
    s3.put("cat.jpg", (samples / "chelsea.jpg").read_bytes())
    s3.put("huge.jpg", bytes(32 << 20))
    with DecodePool(1, DecodeLimits(memory=16 << 20)) as pool:
        photo = pool.submit(s3.uri("cat.jpg"), Preprocessing()).result()
        huge = pool.submit(s3.uri("huge.jpg"), Preprocessing()).result()
    assert isinstance(photo, Decoded)
    assert huge == (f"{s3.uri('huge.jpg')}: decoding needed more than 16 MiB; raise the "
                    "memory limit (decode-memory) if you trust this file.")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def same_records(got: list[dict], want: list[dict], to_local) -> None:
    """``got`` (by URI) holds ``want``'s records (by local path): same order, same errors,
    the same top-k classes, scores within 1e-6."""
    assert [to_local(r["path"]) for r in got] == [r["path"] for r in want]
    for mine, theirs in zip(got, want, strict=True):
        assert (mine["error"] is None) == (theirs["error"] is None)
        if theirs["error"] is not None:
            assert mine["error"] == theirs["error"].replace(theirs["path"], mine["path"])
        assert [p["index"] for p in mine["predictions"]] == [
            p["index"] for p in theirs["predictions"]]
        assert np.allclose([p["score"] for p in mine["predictions"]],
                           [p["score"] for p in theirs["predictions"]], rtol=0, atol=1e-6)


def test_predict_on_an_s3_folder_gives_the_records_of_the_same_local_folder(
        weights, s3, mixed_folder, tmp_path):
    uri = s3.upload(mixed_folder, "mixed")
    missing = s3.uri("mixed/gone.jpg")
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    predict(mixed_folder, mixed_folder / "gone.jpg", "--weights", weights, "-o", local)
    result = predict(uri, missing, "--weights", weights, "-o", remote)
    assert result.exit_code == 1
    assert "2 classified, 2 failed" in result.stderr
    records = read_jsonl(remote)
    prefix, query = uri.split("?")
    same_records(records, read_jsonl(local),
                 lambda path: str(mixed_folder / path[len(prefix):].split("?")[0]))
    assert records[-1] == {"path": missing, "predictions": [],
                           "error": f"{missing}: no such file."}
    assert all(r["path"].endswith("?" + query) for r in records)


def test_a_uri_run_resumes_by_uri(weights, s3, mixed_folder, samples, tmp_path):
    uri = s3.upload(mixed_folder, "mixed")
    out = tmp_path / "out.csv"
    assert predict(uri, "--weights", weights, "-o", out, "-k", "1").exit_code == 1
    s3.put("mixed/rocket.jpg", (samples / "rocket.jpg").read_bytes())
    result = predict(uri, "--weights", weights, "-o", out, "-k", "1", "--resume")
    assert "1 classified" in result.stderr and "3 already in" in result.stderr
    paths = [line.split(",")[0].strip('"') for line in out.read_text().splitlines()[1:]]
    assert sorted(paths) == sorted(s3.uri(f"mixed/{name}") for name in (
        "chelsea.jpg", "coffee.jpg", "notes.jpg", "rocket.jpg"))


def test_embed_on_an_s3_folder_gives_the_features_of_the_same_local_folder(
        weights, s3, mixed_folder, tmp_path):
    uri = s3.upload(mixed_folder, "mixed")
    local, remote = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    for source, output in ((mixed_folder, local), (uri, remote)):
        result = CliRunner().invoke(cli, ["embed", str(source), "--weights", str(weights),
                                          "-o", str(output)], catch_exceptions=False)
        assert "2 embedded, 1 failed" in result.stderr
    mine, theirs = pq.read_table(remote).to_pylist(), pq.read_table(local).to_pylist()
    assert [row["path"] for row in mine] == [s3.uri(f"mixed/{name}") for name in (
        "chelsea.jpg", "coffee.jpg", "notes.jpg")]
    for got, want in zip(mine, theirs, strict=True):
        if want["features"] is None:
            assert got["features"] is None and got["error"] == want["error"].replace(
                want["path"], got["path"])
        else:
            np.testing.assert_allclose(got["features"], want["features"], rtol=0, atol=1e-6)


def test_predict_on_a_file_uri_gives_the_records_of_the_path(weights, mixed_folder, tmp_path):
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    predict(mixed_folder, "--weights", weights, "-o", local)
    predict(f"file://{mixed_folder}", "--weights", weights, "-o", remote)
    same_records(read_jsonl(remote), read_jsonl(local),
                 lambda path: path.removeprefix("file://"))


def test_a_large_object_is_read_whole_and_decoded(s3, samples, tmp_path):
    """A 4000x3000 photo (megabytes), more than one read buffer's worth."""
    big = tmp_path / "big.jpg"
    Image.open(samples / "chelsea.jpg").resize((4000, 3000)).save(big, quality=95)
    s3.put("big.jpg", big.read_bytes())
    assert np.array_equal(decode(s3.uri("big.jpg")), decode(big))
