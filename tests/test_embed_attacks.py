"""Hostile-world regressions for ``irv2 embed`` and the run API: damaged and lying
feature files, a full disk, odd names, a race on the lock, and API misuse.

Each test is a defect found by attacking the real program, kept now that it is fixed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import fill, tmpfs

from irv2cli import RunInterrupted, RunOptions, run
from irv2cli.cli.main import cli
from irv2cli.errors import OutputError
from irv2cli.inputs.paths import path_key
from irv2cli.results import locked
from irv2cli.results.feature_parquet import SCHEMA, staged_path
from irv2cli.results.features import open_features
from irv2cli.results.files import open_results
from irv2cli.results.labels import Prediction
from irv2cli.results.records import Record
from irv2cli.spec import FEATURES

pytestmark = pytest.mark.in_memory_engine  # the subject is not the network

DIM = 1536


def records(count: int, start: int = 0) -> list[Record]:
    rng = np.random.default_rng(start)
    return [Record(f"/photos/img{i:03d}.jpg",
                   features=rng.standard_normal(DIM).astype(np.float32))
            for i in range(start, start + count)]


def write(path, items, *, resume=False, overwrite=False) -> set[str]:
    """Open, write the items not already done, close; the keys found done."""
    with open_features(path, resume=resume, overwrite=overwrite) as output:
        done = set(output.done)
        for record in items:
            if path_key(record.path) not in done:
                output.writer.write(record)
    return done


# --- parquet files that lie ----------------------------------------------------------

def _damage_first_page(path):
    data = bytearray(path.read_bytes())
    for i in range(4, 12):  # just after the leading PAR1: the first page's header
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _fake_magic(path):
    path.write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")


@pytest.mark.parametrize("damage", [_damage_first_page, _fake_magic])
def test_a_damaged_parquet_is_refused_in_one_line_on_resume(tmp_path, damage):
    out = tmp_path / "features.parquet"
    write(out, records(3))
    damage(out)
    before = out.read_bytes()
    with pytest.raises(OutputError) as caught:
        write(out, records(5), resume=True)
    assert "features.parquet" in str(caught.value) and "\n" not in str(caught.value)
    assert out.read_bytes() == before


def test_a_parquet_row_without_a_path_is_refused_on_resume(tmp_path):
    out = tmp_path / "features.parquet"
    pq.write_table(pa.Table.from_pylist([{"path": None, "features": None, "error": "x"}],
                                        schema=SCHEMA), out)
    with pytest.raises(OutputError):
        write(out, records(2), resume=True)


def test_a_name_holding_a_literal_backslash_u_escape_resumes_once(tmp_path):
    out = tmp_path / "features.parquet"
    item = Record("/photos/back\\udcff.jpg", features=np.ones(DIM, np.float32))
    write(out, [item])
    assert path_key(item.path) in write(out, [item], resume=True)
    assert pq.read_table(out)["path"].to_pylist() == [item.path]


# --- jsonl files that lie ------------------------------------------------------------

def test_a_deeply_nested_jsonl_line_is_refused_in_one_line(tmp_path):
    out = tmp_path / "features.jsonl"
    out.write_bytes(b'{"path": "/photos/a.jpg", "features": ' + b"[" * 100_000 + b"\n")
    with pytest.raises(OutputError):
        write(out, records(2), resume=True)


# --- a full disk ---------------------------------------------------------------------

@pytest.mark.parametrize("earlier", [0, 3])
def test_a_full_disk_while_a_parquet_is_finished_is_one_line_and_leaves_nothing(
        tmp_path, earlier):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        out, items = disk / "features.parquet", records(30)
        if earlier:
            write(out, items[:earlier])
        before = out.read_bytes() if earlier else None
        filler = fill(disk, leave=3000)
        with pytest.raises(OutputError) as caught:
            write(out, items, resume=True)
        assert "no space left" in str(caught.value)
        assert not os.path.exists(staged_path(str(out)))
        assert sorted(os.listdir(disk)) == sorted(["filler"] + ([out.name] if earlier else []))
        if earlier:
            assert out.read_bytes() == before
        filler.unlink()


# --- two runs on one parquet ---------------------------------------------------------

def test_a_run_that_locks_a_replaced_parquet_does_not_clobber_it(tmp_path, monkeypatch):
    out = tmp_path / "features.parquet"
    first_rows, second_rows = records(2), records(1, start=2)
    first = open_features(out, resume=False, overwrite=False)
    for record in first_rows:
        first.writer.write(record)
    real_flock = locked.fcntl.flock
    ended = []

    def end_first():
        if not ended:
            ended.append(True)
            first.__exit__(None, None, None)

    def flock(fd, operation):
        # The second run has opened the file; the first one ends before it locks.
        monkeypatch.setattr(locked.fcntl, "flock", real_flock)
        end_first()
        return real_flock(fd, operation)

    monkeypatch.setattr(locked.fcntl, "flock", flock)
    try:
        write(out, second_rows, resume=True)
    except OutputError:
        pass  # refusing the second run is fine too
    finally:
        end_first()
    paths = pq.read_table(out)["path"].to_pylist()
    assert [r.path for r in first_rows] == paths[:2]


# --- the run API ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_single_str_input_is_one_path_not_its_characters(weights, samples):
    photo = str(samples / "chelsea.jpg")
    seen = []

    def stop(record):
        seen.append(record.path)
        raise KeyboardInterrupt  # never walk far

    try:
        run(photo, None, RunOptions(weights=weights, outputs=(FEATURES,), batch_size=1),
            on_record=stop)
    except (TypeError, ValueError):
        return  # refusing a bare str is a fix too
    except RunInterrupted:
        pass
    assert seen == [photo]


def test_an_output_reused_after_its_run_never_writes_into_another_file(tmp_path):
    output = open_features(tmp_path / "features.jsonl", resume=False, overwrite=False)
    first, second = records(2)
    with output as opened:  # what run() does with an Output sink
        opened.writer.write(first)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    fd = os.open(victim, os.O_RDWR)
    if fd != output.file.fd:  # the number the closed output held is reused
        os.dup2(fd, output.file.fd)
        os.close(fd)
    try:
        with output as opened:  # a second run() on the same Output
            opened.writer.write(second)
    except Exception:
        pass  # refusing a closed output is the fix
    finally:
        with contextlib.suppress(OSError):  # the second use may have closed it
            os.close(output.file.fd)
    assert victim.read_text() == "precious\n"


# --- Ctrl-C at the wrong moment ------------------------------------------------------

def _open_any(path, *, resume, overwrite):
    """A feature file (``.parquet``, ``.npy``, ``.jsonl``) or predict's ``.json``/``.csv``."""
    if path.suffix in (".json", ".csv"):
        return open_results(path, path.suffix[1:], resume=resume, overwrite=overwrite,
                            top_k=1)
    return open_features(path, resume=resume, overwrite=overwrite)


def _run(path, items, *, overwrite=False, interrupt=False) -> None:
    """A run writing ``items``, then ended by a Ctrl-C if ``interrupt``."""
    with contextlib.suppress(KeyboardInterrupt), \
            _open_any(path, resume=False, overwrite=overwrite) as output:
        for record in items:
            output.writer.write(record)
        if interrupt:
            raise KeyboardInterrupt


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("name", ["features.parquet", "features.npy", "features.jsonl",
                                  "results.json", "results.csv"])
def test_ctrl_c_before_the_first_record_leaves_an_overwritten_file_as_it_was(tmp_path,
                                                                             name):
    out = tmp_path / name
    items = records(3)
    if out.suffix in (".json", ".csv"):
        items = [Record(r.path, [Prediction(1, 285, "n02124075", "Egyptian_cat", 0.5)])
                 for r in items]
    _run(out, items)
    before = _files(tmp_path)
    _run(out, [], overwrite=True, interrupt=True)  # Ctrl-C while the runtime loads
    assert _files(tmp_path) == before
    _run(out, items[:1], overwrite=True, interrupt=True)  # one record: closed cleanly
    with _open_any(out, resume=True, overwrite=False) as output:
        assert output.done == {path_key(items[0].path)}
    fresh = tmp_path / "fresh" / name
    fresh.parent.mkdir()
    _run(fresh, [], interrupt=True)
    assert _files(fresh.parent) == {}



@pytest.mark.slow
def test_ctrl_c_while_the_runtime_loads_is_an_interrupt(tmp_path, samples, top_weights,
                                                        monkeypatch):
    from irv2cli.engines import base

    def interrupted_import(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:  # what pybind11 turns a Ctrl-C in PyInit into
            raise ImportError("initialization failed") from exc

    monkeypatch.setattr(base, "load_engine", interrupted_import)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(samples / name, folder / name)
    out = tmp_path / "features.jsonl"
    out.write_text(json.dumps({"path": str(folder / "chelsea.jpg"), "features": [0.0] * DIM,
                               "error": None}) + "\n")
    result = CliRunner().invoke(cli, ["embed", str(folder), "-o", str(out), "--weights",
                                      str(top_weights), "--resume"])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 130 and "Interrupted" in result.stderr
