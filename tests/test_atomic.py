"""store.atomic: a file is placed whole with the mode asked for, and a no-clobber place
never replaces what is already there."""

from __future__ import annotations

import os
import stat

import pytest

from irv2cli.store.atomic import atomic_file


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_file_is_placed_with_its_mode(tmp_path):
    target = tmp_path / "a.bin"
    with atomic_file(target, mode=0o644) as stream:
        stream.write(b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o644
    with atomic_file(target, mode=0o600) as stream:  # replace=True: replaces
        stream.write(b"newer")
    assert target.read_bytes() == b"newer" and mode(target) == 0o600
    assert os.listdir(tmp_path) == ["a.bin"]


def test_a_no_clobber_place_never_replaces_an_existing_file(tmp_path):
    target = tmp_path / "a.bin"
    with atomic_file(target, replace=False) as stream:
        stream.write(b"first")
    assert target.read_bytes() == b"first" and mode(target) == 0o644
    with pytest.raises(FileExistsError), atomic_file(target, replace=False) as stream:
        stream.write(b"second")
    assert target.read_bytes() == b"first"
    # One made while the block was writing is not replaced either, nor is a dangling link.
    late, link = tmp_path / "late.bin", tmp_path / "link.bin"
    os.symlink(tmp_path / "nowhere", link)
    for existing in (late, link):
        with pytest.raises(FileExistsError), atomic_file(existing, replace=False) as stream:
            stream.write(b"mine")
            if existing == late:
                late.write_bytes(b"theirs")
    assert late.read_bytes() == b"theirs" and os.readlink(link) == str(tmp_path / "nowhere")
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "late.bin", "link.bin"]


def test_a_failed_block_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as stream:
        stream.write(b"half")
        raise RuntimeError
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
