"""Feature files (what ``irv2 embed`` writes): every format round-trips exactly, resumes
after Ctrl-C, a hard kill and a full disk with every record once, refuses to clobber or
share a file, and keeps names that are not UTF-8. No model: records are made by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import fill, tmpfs

from irv2cli.errors import Hint, OutputError
from irv2cli.inputs.paths import path_key
from irv2cli.results.feature_npy import sidecar_path
from irv2cli.results.feature_parquet import staged_path
from irv2cli.results.features import feature_format, open_features
from irv2cli.results.records import Record

FORMATS = ["jsonl", "parquet", "npy"]
DIM = 1536


def records(count: int, start: int = 0, seed: int = 0) -> list[Record]:
    """``count`` records with random features; every fourth one is an error."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + count):
        path = f"/photos/img{i:03d}.jpg"
        vector = rng.standard_normal(DIM).astype(np.float32)
        out.append(Record(path, error=f"{path}: not an image") if i % 4 == 3
                   else Record(path, features=vector))
    return out


def read_back(path: Path, fmt: str) -> list[tuple[str, np.ndarray | None, str | None]]:
    """(path, features, error) for each record in the file, read with the plain tools."""
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [(r["path"], None if r["features"] is None
                 else np.asarray(r["features"], np.float32), r["error"]) for r in rows]
    if fmt == "parquet":
        return [(r["path"] if r["path_bytes"] is None else os.fsdecode(r["path_bytes"]),
                 None if r["features"] is None
                 else np.asarray(r["features"], np.float32), r["error"])
                for r in pq.read_table(path).to_pylist()]
    array = np.load(path)
    assert array.dtype == np.float32 and array.shape[1:] == (DIM,)
    lines = [json.loads(line) for line in sidecar_path(path).read_text().splitlines()]
    assert [r["row"] for r in lines if "row" in r] == list(range(len(array)))
    return [(r["path"], array[r["row"]] if "row" in r else None, r.get("error"))
            for r in lines]


def assert_holds(path: Path, fmt: str, expected: list[Record]) -> None:
    """The file holds exactly ``expected``, each once, bit for bit, in order."""
    got = read_back(path, fmt)
    assert [p for p, _, _ in got] == [r.path for r in expected]
    for (_, features, error), record in zip(got, expected, strict=True):
        assert error == record.error
        if record.error is None:
            assert features.tobytes() == record.features.tobytes()
        else:
            assert features is None


def write(path: Path, fmt: str, items: list[Record], *, resume: bool = False,
          overwrite: bool = False) -> set[str]:
    """Open, write ``items`` (those not already done), close; the keys it found done."""
    with open_features(path, fmt, resume=resume, overwrite=overwrite) as output:
        done = set(output.done)
        for record in items:
            if path_key(record.path) not in done:
                output.writer.write(record)
    return done


def out_path(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / f"features.{fmt}"


# --- formats --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips_exactly(tmp_path, fmt):
    out, items = out_path(tmp_path, fmt), records(21)
    write(out, fmt, items)
    assert_holds(out, fmt, items)


def test_the_parquet_schema_is_path_features_error_path_bytes(tmp_path):
    out = out_path(tmp_path, "parquet")
    write(out, "parquet", records(600))  # more than one row group
    schema = pq.read_schema(out)
    assert schema.names == ["path", "features", "error", "path_bytes"]
    assert schema.field("path").type == pa.string()
    assert schema.field("features").type == pa.list_(pa.float32(), DIM)
    assert schema.field("error").type == pa.string()
    assert schema.field("path_bytes").type == pa.binary()
    assert pq.ParquetFile(out).num_row_groups == 3


def test_the_npy_array_maps_and_its_sidecar_is_named_after_it(tmp_path):
    out = out_path(tmp_path, "npy")
    items = records(9)
    write(out, "npy", items)
    assert sidecar_path(out) == tmp_path / "features.paths.jsonl"
    mapped = np.load(out, mmap_mode="r")
    assert mapped.shape == (sum(r.error is None for r in items), DIM)
    assert np.array_equal(mapped, np.stack([r.features for r in items if r.error is None]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_run_leaves_an_empty_readable_file(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    write(out, fmt, [])
    assert read_back(out, fmt) == []


def test_the_format_comes_from_the_extension(tmp_path):
    assert [feature_format(Path(f"f{s}")) for s in (".parquet", ".NPY", ".jsonl", ".ndjson")] \
        == ["parquet", "npy", "jsonl", "jsonl"]
    assert feature_format(Path("f.bin"), "npy") == "npy"
    for bad in [("f.csv", None), ("f.npy", "csv")]:
        with pytest.raises(OutputError) as caught:
            feature_format(Path(bad[0]), bad[1])
        assert caught.value.hint is Hint.NAME_FORMAT


# --- resume ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_ctrl_c_keeps_what_was_written_and_resume_adds_the_rest(tmp_path, fmt):
    out, items = out_path(tmp_path, fmt), records(30)
    with pytest.raises(KeyboardInterrupt), \
            open_features(out, fmt, resume=False, overwrite=False) as output:
        for record in items[:11]:
            output.writer.write(record)
        raise KeyboardInterrupt
    assert_holds(out, fmt, items[:11])
    done = write(out, fmt, items, resume=True)
    assert done == {path_key(r.path) for r in items[:11]}
    assert_holds(out, fmt, items)
    assert write(out, fmt, items, resume=True) == {path_key(r.path) for r in items}
    assert_holds(out, fmt, items)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [out.name] + ([sidecar_path(out).name] if fmt == "npy" else []))


@pytest.mark.parametrize("fmt", ["jsonl", "npy"])
def test_a_torn_tail_is_cut_on_resume(tmp_path, fmt):
    out, items = out_path(tmp_path, fmt), records(8)
    write(out, fmt, items[:5])
    lines = out if fmt == "jsonl" else sidecar_path(out)
    lines.write_bytes(lines.read_bytes() + b'{"path": "/photos/img0')  # a crash cut it
    if fmt == "npy":  # and a row written before its sidecar line
        with open(out, "ab") as array:
            array.write(b"\0" * 100)
    write(out, fmt, items, resume=True)
    assert_holds(out, fmt, items)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from test_feature_files import records
    from irv2cli.inputs.paths import path_key
    from irv2cli.results.features import open_features
    with open_features(Path(sys.argv[1]), sys.argv[2], resume=True, overwrite=False) as out:
        for record in records(200):
            if path_key(record.path) in out.done:
                continue
            out.writer.write(record)
            print(record.path, flush=True)
            time.sleep(0.01)
""")


def killed_mid_way(out: Path, fmt: str, after: int) -> list[str]:
    """Run a writer in another process, SIGKILL it once it has written ``after`` records;
    the paths it reported written."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), fmt,
                              str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True)
    written = [child.stdout.readline().strip() for _ in range(after)]
    child.send_signal(signal.SIGKILL)
    child.wait()
    return written


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "npy"])
def test_a_hard_kill_loses_no_completed_record(tmp_path, fmt):
    out, items = out_path(tmp_path, fmt), records(200)
    written = killed_mid_way(out, fmt, after=40)
    with open_features(out, fmt, resume=True, overwrite=False) as output:
        assert {path_key(p) for p in written} <= output.done
        for record in items:
            if path_key(record.path) not in output.done:
                output.writer.write(record)
    assert_holds(out, fmt, items)


@pytest.mark.slow
def test_a_hard_kill_leaves_the_last_complete_parquet_file(tmp_path):
    out, items = out_path(tmp_path, "parquet"), records(200)
    write(out, "parquet", items[:10])
    before = out.read_bytes()
    killed_mid_way(out, "parquet", after=40)
    assert out.read_bytes() == before
    assert os.path.exists(staged_path(str(out)))  # what the kill left
    assert write(out, "parquet", items, resume=True) == {path_key(r.path) for r in items[:10]}
    assert_holds(out, "parquet", items)
    assert os.listdir(tmp_path) == [out.name]


# --- existing files and two runs ------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_an_existing_file_is_refused_and_kept(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    write(out, fmt, records(5))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(OutputError) as caught:
        open_features(out, fmt, resume=False, overwrite=False)
    assert caught.value.hint is Hint.RESUME_OR_OVERWRITE
    assert caught.value.message == f"{out} already exists"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_replaces_the_file(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    write(out, fmt, records(5))
    fresh = records(3, start=50, seed=1)
    assert write(out, fmt, fresh, overwrite=True) == set()
    assert_holds(out, fmt, fresh)


def test_a_sidecar_without_its_array_is_refused(tmp_path):
    out = out_path(tmp_path, "npy")
    write(out, "npy", records(5))
    out.unlink()
    kept = sidecar_path(out).read_bytes()
    with pytest.raises(OutputError, match="holds 0 rows but its sidecar"):
        open_features(out, "npy", resume=True, overwrite=False)
    with pytest.raises(OutputError, match="already exists"):
        open_features(out, "npy", resume=False, overwrite=False)
    assert sidecar_path(out).read_bytes() == kept and not out.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_foreign_file_is_refused_on_resume_and_kept(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    out.write_bytes(b'{"a": 1}\n')
    with pytest.raises(OutputError, match="move the file away or fix it before resuming"):
        open_features(out, fmt, resume=True, overwrite=False)
    assert out.read_bytes() == b'{"a": 1}\n'


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_second_open_of_one_file_is_refused_at_once(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    with open_features(out, fmt, resume=False, overwrite=False) as first:
        first.writer.write(records(1)[0])
        for resume, overwrite in [(True, False), (False, True)]:
            with pytest.raises(OutputError) as caught:
                open_features(out, fmt, resume=resume, overwrite=overwrite)
            assert "is being written by another irv2 run" in caught.value.message
            assert caught.value.hint is Hint.OTHER_OUTPUT
    assert_holds(out, fmt, records(1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_fifo_is_refused(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    os.mkfifo(out)
    with pytest.raises(OutputError, match="is a FIFO"):
        open_features(out, fmt, resume=True, overwrite=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_run_that_fails_before_its_first_record_leaves_nothing(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    with pytest.raises(RuntimeError), open_features(out, fmt, resume=False, overwrite=False):
        raise RuntimeError("the engine did not load")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("earlier", [False, True])
def test_a_staged_file_that_cannot_be_made_is_one_line_and_leaves_nothing(tmp_path, earlier):
    out = out_path(tmp_path, "parquet")
    if earlier:
        write(out, "parquet", records(3))
    before = out.read_bytes() if earlier else None
    os.mkdir(staged_path(str(out)))  # in the way: it cannot be removed or made
    with pytest.raises(OutputError) as caught:
        open_features(out, "parquet", resume=earlier, overwrite=False)
    message = str(caught.value)
    assert "\n" not in message and ".features.parquet.staged" in message, message
    assert (out.read_bytes() if earlier else None) == before
    assert sorted(os.listdir(tmp_path)) == sorted([".features.parquet.staged"]
                                                  + (["features.parquet"] if earlier else []))


def _damage_a_features_page(path: Path) -> None:
    """Flip the header of the last row group's features page: reading the names alone
    would not notice."""
    metadata = pq.ParquetFile(path).metadata
    chunk = metadata.row_group(metadata.num_row_groups - 1).column(1)
    data = bytearray(path.read_bytes())
    for i in range(chunk.data_page_offset, chunk.data_page_offset + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_features_page_is_refused_before_the_run_starts(tmp_path):
    out = tmp_path / "features.parquet"
    write(out, "parquet", records(600))  # three row groups
    _damage_a_features_page(out)
    before = out.read_bytes()
    with pytest.raises(OutputError, match="not a feature file") as caught:
        open_features(out, "parquet", resume=True, overwrite=False)
    assert "\n" not in str(caught.value)
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]


def test_resuming_a_parquet_reads_each_row_group_once(tmp_path, monkeypatch):
    out, items = tmp_path / "features.parquet", records(700)
    write(out, "parquet", items[:600])
    reads = []
    read_row_group = pq.ParquetFile.read_row_group

    def counted(self, i, *args, **kwargs):
        reads.append(i)
        return read_row_group(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    write(out, "parquet", items, resume=True)
    assert reads == [0, 1, 2]
    assert [row[0] for row in read_back(out, "parquet")] == [r.path for r in items]


# --- full disk ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: room for 40 records in any format, unmounted afterwards."""
    with tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_is_one_line_and_leaves_a_resumable_file(small_disk, fmt):
    out, items = out_path(small_disk, fmt), records(40)
    write(out, fmt, items[:2])  # a complete file from an earlier run
    filler = fill(small_disk, leave=100 * 1024)
    with pytest.raises(OutputError) as caught, \
            open_features(out, fmt, resume=True, overwrite=False) as output:
        for record in items[2:]:
            output.writer.write(record)
    error = caught.value
    assert error.hint is Hint.RESUME and "\n" not in str(error)
    assert error.message == f"{out}: no space left on device; free space"
    filler.unlink()
    write(out, fmt, items, resume=True)
    assert_holds(out, fmt, items)
    assert sorted(os.listdir(small_disk)) == sorted(
        [out.name] + ([sidecar_path(out).name] if fmt == "npy" else []))


# --- names that are not UTF-8 ---------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_name_that_is_not_utf8_round_trips_and_resumes(tmp_path, fmt):
    out = out_path(tmp_path, fmt)
    name = os.fsdecode(b"/photos/caf\xe9.jpg")
    vector = np.arange(DIM, dtype=np.float32) / 7
    items = [Record(name, features=vector),
             Record(os.fsdecode(b"/photos/\xff.png"), error="not an image")]
    write(out, fmt, items)
    assert_holds(out, fmt, items)
    assert write(out, fmt, items, resume=True) == {path_key(r.path) for r in items}
    assert_holds(out, fmt, items)
    assert os.fsencode(read_back(out, fmt)[0][0]) == b"/photos/caf\xe9.jpg"
    if fmt == "parquet":  # the text column shows the name, the binary one keeps it
        assert pq.read_table(out)["path"][0].as_py() == "/photos/caf\\udce9.jpg"
