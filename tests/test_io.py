"""Atomic writes: a directory replaced in place survives a crash at any point."""

import os

import pytest

from sutra.io import atomic_directory


def test_a_crash_between_the_two_renames_of_a_replacement_is_undone(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v1")
    os.replace(target, tmp_path / ".ckpt.old")  # as a crash after the first rename leaves it
    with pytest.raises(RuntimeError):
        with atomic_directory(target):
            raise RuntimeError("the new write fails too")
    assert (target / "weights").read_text() == "v1", "the old directory is put back"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
