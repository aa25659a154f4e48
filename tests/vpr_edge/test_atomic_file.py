"""Atomic file writes: ordinary permissions, and a failed write keeps the old file."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from vpr_edge.atomic_file import atomic_write


def test_new_file_gets_umask_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "model.onnx", lambda fh: fh.write(b"abc"))
    finally:
        os.umask(old)
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def broken(fh) -> None:
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_no_process_wide_umask_change(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the umask to read it races with other threads creating files (they would get
    world-writable ones): the temporary file's mode comes from the kernel instead."""
    from vpr_edge import atomic_file

    def forbidden(mask: int) -> int:
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", forbidden)
    temp = atomic_file.temp_path_beside(tmp_path / "engine.plan")
    assert temp.parent == tmp_path and temp.exists() and temp.stat().st_size == 0
    assert atomic_write(tmp_path / "a.bin", lambda fh: fh.write(b"x")).read_bytes() == b"x"


def test_the_rename_is_made_durable(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vpr_edge import atomic_file

    synced = []
    monkeypatch.setattr(atomic_file, "fsync_dir", lambda path: synced.append(path))
    atomic_write(tmp_path / "model.pt", lambda fh: fh.write(b"abc"))
    assert synced == [tmp_path]


@pytest.mark.parametrize(("code", "warned"), [(errno.EIO, True), (errno.EINVAL, False)])
def test_a_folder_the_disk_failed_to_sync_is_reported(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture,
                                                      code: int, warned: bool) -> None:
    """An I/O error syncing the folder (the rename may not survive a power cut) was ignored
    silently; file systems that do not sync folders (EINVAL) still say nothing."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with caplog.at_level("WARNING", logger="vpr_edge.atomic_file"):
        assert atomic_write(tmp_path / "a.bin", lambda fh: fh.write(b"x")).read_bytes() == b"x"
    messages = [r.getMessage() for r in caplog.records]
    assert bool(messages) is warned, messages
    if warned:
        assert str(tmp_path) in messages[0] and "power cut" in messages[0]
