"""Ctrl-C and SIGTERM held back while a map changes (``vpr_edge.interrupts``)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.index import IndexSettings, PlaceIndex, place_index
from vpr_edge.interrupts import signals_held


def test_a_signal_waits_for_the_block_then_reaches_the_handler_in_place() -> None:
    ran = []
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            ran.append("the rest of the block")
    assert ran == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    got = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            assert got == []
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_ignored_signal_stays_ignored_and_other_threads_are_left_alone() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    seen = []

    def worker() -> None:
        with signals_held():  # signal.signal() would raise ValueError outside the main thread
            seen.append("ran")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == ["ran"]


def test_ctrl_c_inside_an_add_leaves_a_whole_index_that_saves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C between hnswlib's insert and the records' append left the index's parts
    disagreeing (and a map saved from it did not open)."""
    x = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = PlaceIndex(8, settings=IndexSettings(mode="hnsw"))
    index.add(x[:20])
    real_insert = place_index.PlaceIndex._insert

    def ctrl_c_inside(self, *args):
        real_insert(self, *args)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(place_index.PlaceIndex, "_insert", ctrl_c_inside)
    with pytest.raises(KeyboardInterrupt):
        index.add(x[20:])
    monkeypatch.undo()
    assert len(index) == 30
    reopened = PlaceIndex.open(index.save(tmp_path / "map"))
    assert len(reopened) == 30 and reopened.query(x[25], k=1)[0].place_id == 25


def _sigaction_fields(raw: bytes) -> bytes:
    """glibc's ``struct sigaction`` (x86-64 and aarch64): the handler, the kernel's 64-bit
    signal mask (glibc fills the rest of ``sa_mask`` with whatever its stack held), the flags
    and the restorer."""
    return raw[:16] + raw[136:152]


def test_a_handler_a_c_library_installed_is_put_back_as_it_was() -> None:
    """rclpy installs its SIGINT/SIGTERM handlers in C: swapping them for Python ones and
    back with signal.signal put Python's default in their place, and a ROS 2 node then died
    on SIGTERM without saving its map (rclpy never saw the signal)."""
    import ctypes

    from vpr_edge import interrupts

    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    foreign = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda signum: None)  # never called
    old = libc.signal(signal.SIGTERM, ctypes.cast(foreign, ctypes.c_void_p))
    try:
        installed = interrupts._c_handler(libc, signal.SIGTERM)
        before = _sigaction_fields(interrupts._BUFFER.raw)
        assert installed not in (None, 0, 1)
        with signals_held():  # held: Python's handler in the meantime
            assert interrupts._c_handler(libc, signal.SIGTERM) == interrupts._python_trampoline()
        assert interrupts._c_handler(libc, signal.SIGTERM) == installed
        assert _sigaction_fields(interrupts._BUFFER.raw) == before  # flags and mask too
    finally:
        libc.signal(signal.SIGTERM, old)
    assert interrupts._python_trampoline() is not None  # (Linux: Python's own are held)


def test_ctrl_c_inside_a_remove_with_a_c_library_s_handler_waits_then_reaches_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rclpy's executor runs a service callback (the node's reset: remove, rebuild) in the
    main thread under rclpy's C handler, which was left in place: Ctrl-C then stopped the
    change halfway, save() refused, and the places added since the last save were lost.
    faulthandler's chained handler stands in for rclpy's: C code that sees the signal, then
    calls the handler it replaced (Python's)."""
    import ctypes
    import faulthandler

    from vpr_edge import interrupts

    x = np.random.default_rng(1).standard_normal((30, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = PlaceIndex(8, settings=IndexSettings(mode="hnsw"))
    index.add(x)
    real_delete = index._hnsw.mark_deleted
    calls = []

    class Graph:  # hnswlib's Index is a C type: wrap it to signal between two deletions
        def __getattr__(self, name):
            return getattr(hnsw, name)

        def mark_deleted(self, label):
            real_delete(label)
            calls.append(label)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGINT)

    hnsw = index._hnsw
    monkeypatch.setattr(index, "_hnsw", Graph())
    libc = ctypes.CDLL(None)
    with open(tmp_path / "dump.txt", "w+") as dump:
        faulthandler.register(signal.SIGINT, file=dump, chain=True)
        try:
            installed = interrupts._c_handler(libc, signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                index.remove(list(range(10)))
            assert interrupts._c_handler(libc, signal.SIGINT) == installed
        finally:
            faulthandler.unregister(signal.SIGINT)
        dump.seek(0)
        seen = dump.read()
    monkeypatch.undo()
    assert len(calls) == 10 and len(index) == 20  # the whole remove, then Ctrl-C
    assert "Stack" in seen or "File" in seen  # faulthandler's handler ran (after the block)
    reopened = PlaceIndex.open(index.save(tmp_path / "map"))
    assert len(reopened) == 20 and reopened.query(x[25], k=1)[0].place_id == 25


def test_a_held_signal_reaches_a_wakeup_fd_listener_once() -> None:
    """asyncio's add_signal_handler listens on signal.set_wakeup_fd: the held signal was
    written there when it arrived and again when it was raised anew (two Ctrl-C's: a
    "force quit" for many programs)."""
    import socket

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    reader.setblocking(False)
    calls = []
    old_fd = signal.set_wakeup_fd(writer.fileno())
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
        written = reader.recv(64)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.set_wakeup_fd(old_fd)
        reader.close()
        writer.close()
    assert calls == [signal.SIGINT] and written == bytes([signal.SIGINT])


def test_finding_python_s_handler_leaves_the_probe_signal_s_handler_as_it_was() -> None:
    """The probe put SIG_DFL where a C library's SIGRTMAX handler had been."""
    import ctypes

    from vpr_edge import interrupts

    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    foreign = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda signum: None)  # never called
    probe = signal.SIGRTMAX
    old = libc.signal(probe, ctypes.cast(foreign, ctypes.c_void_p))
    try:
        installed = interrupts._c_handler(libc, probe)
        interrupts._python_trampoline.cache_clear()
        assert interrupts._python_trampoline() not in (None, installed)
        assert interrupts._c_handler(libc, probe) == installed
    finally:
        libc.signal(probe, old)
        interrupts._python_trampoline.cache_clear()
