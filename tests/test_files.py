"""The one atomic writer (deepemhancer.files): a file or folder appears whole or not at all."""
from __future__ import annotations

import os

import pytest

from deepemhancer.files import atomic_folder, atomic_path, temporary_path, write_atomic


def names(folder) -> list[str]:
    """Every name in the folder, hidden temporaries included."""
    return sorted(os.listdir(folder))


def test_write_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    assert write_atomic(target, "new ✓") == target
    assert target.read_text(encoding="utf-8") == "new ✓" and names(tmp_path) == ["result.json"]
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "figure.png"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and names(tmp_path) == ["figure.png"]


def test_the_temporary_is_hidden_beside_the_target_ends_like_it_and_names_the_process(tmp_path):
    temporary = temporary_path(tmp_path / "map.mrc.gz")
    assert temporary.parent == tmp_path and temporary.name.endswith(".map.mrc.gz")
    assert temporary.name.startswith(f".{os.getpid()}-")


def test_a_writer_that_writes_nothing_fails_without_touching_the_target(tmp_path):
    target = tmp_path / "model.json"
    with pytest.raises(FileNotFoundError):
        with atomic_path(target):
            pass
    assert names(tmp_path) == []


def test_atomic_folder_replaces_a_folder_whole(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.png").write_text("old")
    with atomic_folder(out) as work:
        assert work.parent == tmp_path and work.name.startswith(".report.")
        (work / "report.json").write_text("{}")
    assert names(out) == ["report.json"] and names(tmp_path) == ["report"]


def test_a_failing_folder_writer_leaves_the_old_folder(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.png").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as work:
            (work / "report.json").write_text("{}")
            raise RuntimeError("plot failed")
    assert names(out) == ["old.png"] and names(tmp_path) == ["report"]
