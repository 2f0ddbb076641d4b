"""atomic_write: all-or-nothing output."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from physnode.data import atomic_write
from physnode.errors import DataError, FileExistsOutputError, InvalidInputError


def test_success_renames_temp_into_place(tmp_path):
    target = tmp_path / "out.h5"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path  # same directory: os.replace stays on one filesystem
        assert tmp.name.startswith(".out.h5.") and tmp.name.endswith(".tmp")
        assert tmp.exists() and not target.exists()
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert os.listdir(tmp_path) == ["out.h5"]


def test_two_temp_names_differ(tmp_path):
    with atomic_write(tmp_path / "a") as t1, atomic_write(tmp_path / "b") as t2:
        assert t1 != t2
        t1.write_bytes(b"1")
        t2.write_bytes(b"2")


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_leaves_nothing(tmp_path, exc):
    target = tmp_path / "out.h5"
    with pytest.raises(type(exc)), atomic_write(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise exc
    assert os.listdir(tmp_path) == []  # no target, no temp file


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_keeps_existing_file(tmp_path, exc):
    target = tmp_path / "out.h5"
    target.write_bytes(b"previous result")
    with pytest.raises(type(exc)), atomic_write(target, overwrite=True) as tmp:
        tmp.write_bytes(b"half a file")
        raise exc
    assert target.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.h5"]


def test_existing_file_refused_before_the_block_runs(tmp_path):
    target = tmp_path / "out.h5"
    target.write_bytes(b"previous result")
    ran = []
    with pytest.raises(FileExistsOutputError, match="--overwrite") as info:
        with atomic_write(target):
            ran.append(True)
    assert "overwrite=True" in str(info.value)
    assert isinstance(info.value, FileExistsError)  # generic handlers keep working
    assert ran == []
    assert target.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.h5"]


def test_file_created_meanwhile_is_not_clobbered(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(FileExistsOutputError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"mine")
            target.write_bytes(b"another process")
    assert target.read_bytes() == b"another process"
    assert os.listdir(tmp_path) == ["out.h5"]


def test_overwrite_replaces(tmp_path):
    target = tmp_path / "out.h5"
    target.write_bytes(b"old")
    with atomic_write(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_missing_directory_and_directory_target(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        with atomic_write(tmp_path / "nodir" / "out.h5"):
            pass
    with pytest.raises(InvalidInputError, match="is a directory"):
        with atomic_write(tmp_path):
            pass


def test_block_that_deletes_temp_is_an_error(tmp_path):
    with pytest.raises(DataError, match="nothing was written"):
        with atomic_write(tmp_path / "out.h5") as tmp:
            tmp.unlink()
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.h5") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    # 0o666 & ~0o022: like a plainly created file, not mkstemp's private 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "out.h5").st_mode) == 0o644
