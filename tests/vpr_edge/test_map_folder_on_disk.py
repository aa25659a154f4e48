"""A map folder where robots put it: `~` paths, permissions, mount points, locks held by a
stopped process, two writers starting the same new map (``atomic_dir``, ``PlaceIndex.save``,
``Localizer``)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import MapError
from vpr_edge.index import IndexSettings, PlaceIndex, atomic_dir
from vpr_edge.paths import user_path

DIM = 8


def small_index(n: int = 20) -> PlaceIndex:
    x = np.random.default_rng(n).standard_normal((n, DIM)).astype(np.float32)
    index = PlaceIndex(DIM, settings=IndexSettings(mode="exact"))
    index.add(x / np.linalg.norm(x, axis=1, keepdims=True))
    return index


def test_user_path_expands_the_home_folder(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert user_path("~/maps/lab") == tmp_path / "maps" / "lab"
    assert user_path("maps/lab") == tmp_path / "maps" / "lab"
    assert user_path(Path("/abs/x")) == Path("/abs/x")


def test_a_tilde_map_path_is_saved_in_the_home_folder(tmp_path: Path, tiny_onnx: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     cpu_only: None) -> None:
    """``~`` was taken literally: the map went to ``<cwd>/~/maps/lab`` (``~/.ros/~/...``
    under roslaunch), and a run started elsewhere found no map."""
    from vpr_edge import Localizer

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    model = home / "tiny.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    with Localizer("~/tiny.onnx", "~/maps/lab") as loc:
        loc.add(np.zeros((24, 32, 3), np.uint8))
        loc.save()
    assert (home / "maps" / "lab" / "manifest.json").is_file() and not (work / "~").exists()
    assert len(PlaceIndex.open("~/maps/lab")) == 1


def test_a_map_path_that_is_a_file_is_refused_at_once(tmp_path: Path, tiny_onnx: Path,
                                                      cpu_only: None) -> None:
    """It was refused only at the first save: a node lost its whole run's map."""
    from vpr_edge import Localizer

    a_file = tmp_path / "map"
    a_file.write_text("notes")
    with pytest.raises(MapError, match="exists and is not a directory"):
        Localizer(tiny_onnx, a_file)
    assert a_file.read_text() == "notes"


def test_two_writers_starting_one_new_map_do_not_replace_each_other(
        tmp_path: Path, tiny_onnx: Path, cpu_only: None) -> None:
    """Two ``map build`` runs into one new path both exited 0; the second save replaced the
    first's map, whose places were gone."""
    from vpr_edge import Localizer

    target = tmp_path / "map"
    first, second = Localizer(tiny_onnx, target), Localizer(tiny_onnx, target)
    with first, second:
        for _ in range(3):
            first.add(np.zeros((24, 32, 3), np.uint8))
        second.add(np.full((24, 32, 3), 200, np.uint8))
        first.save()
        with pytest.raises(MapError, match="saved there by another writer.*held no map"):
            second.save()
        assert len(PlaceIndex.open(target)) == 3
        second.save(tmp_path / "elsewhere")  # its own places are not lost
        first.add(np.zeros((24, 32, 3), np.uint8))
        first.save()  # the first writer goes on saving its own map
    assert len(PlaceIndex.open(target)) == 4


def test_a_save_finishing_between_a_readers_two_looks_still_shows_the_map(
        tmp_path: Path, monkeypatch) -> None:
    """A reader looks for ``m``, then for ``m.vpr-edge-old``; a save in another process can
    put the new ``m`` in place and delete the old one in between. A Localizer opened then
    came up with an empty map, silently (7 of 48 opens while another process saved in a
    loop). The looks are repeated before "no map" is believed."""
    small_index().save(tmp_path / "m")
    os.rename(tmp_path / "m", tmp_path / "m.vpr-edge-old")  # a save between its renames
    small_index().save(tmp_path / "new")
    real_absent = atomic_dir._absent_or_empty
    finished = []

    def save_finishes_meanwhile(path: Path) -> bool:
        absent = real_absent(path)
        if not finished:  # after the look at m, before the look at m.vpr-edge-old
            os.rename(tmp_path / "new", tmp_path / "m")
            shutil.rmtree(tmp_path / "m.vpr-edge-old")
            finished.append(True)
        return absent

    monkeypatch.setattr(atomic_dir, "_absent_or_empty", save_finishes_meanwhile)
    assert atomic_dir.resolve_for_read(tmp_path / "m") == tmp_path / "m"
    assert finished and len(PlaceIndex.open(tmp_path / "m")) == len(small_index())


@pytest.mark.parametrize("thing", ["fifo", "folder"])
def test_a_lock_file_that_is_not_a_file_is_named_not_waited_on(tmp_path: Path,
                                                              thing: str) -> None:
    """A named pipe where ``map.lock`` belongs made PlaceIndex.open hang for ever (opening
    a pipe waits for a writer)."""
    small_index().save(tmp_path / "map")
    lock = tmp_path / "map.lock"
    lock.unlink()
    os.mkfifo(lock) if thing == "fifo" else lock.mkdir()
    kind = "a named pipe" if thing == "fifo" else "a folder"
    with pytest.raises(MapError, match=rf"map\.lock: not a file but {kind}, where the map's "
                                       "lock file belongs; move it away"):
        PlaceIndex.open(tmp_path / "map")


def test_the_lock_file_follows_the_umask(tmp_path: Path) -> None:
    """It was made 0644 whatever the umask: a group-shared map (umask 002) could not be
    saved by the other members of the group."""
    old = os.umask(0o002)
    try:
        small_index().save(tmp_path / "map")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "map.lock").stat().st_mode) == 0o664


@pytest.mark.parametrize("mode", [0o700, 0o2775])
def test_a_save_keeps_the_permissions_of_the_map_folder(tmp_path: Path, mode: int) -> None:
    """A private 0700 map came back 0755 after a save (world-readable); a group-shared 2775
    one 2755 (the group locked out)."""
    index = small_index()
    target = index.save(tmp_path / "map")
    os.chmod(target, mode)
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    index.save()
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_a_mount_point_map_folder_is_refused_with_what_to_mount(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker -v host:/maps/lab``: every save failed with EBUSY and a hint to free space."""
    target = small_index().save(tmp_path / "map")
    before = sorted(p.name for p in target.iterdir())
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == target or real_ismount(p))
    index = PlaceIndex.open(target)
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    with pytest.raises(MapError, match="mount point.*mount the folder above it"):
        index.save()
    assert sorted(p.name for p in target.iterdir()) == before and len(PlaceIndex.open(target)) == 20


def test_permission_problems_of_a_save_are_map_errors(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A map folder made by another user (sudo) was replaced, then every later save raised a
    raw PermissionError; a read-only place raised one from the lock file (the ROS nodes,
    which catch VprEdgeError at shutdown, printed a traceback)."""
    target = small_index().save(tmp_path / "map")
    index = PlaceIndex.open(target)
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, m, **kw: False if Path(p) == target else real_access(p, m))
    with pytest.raises(MapError, match="cannot delete the files of .*chown/chmod"):
        index.save()
    monkeypatch.setattr(os, "access", real_access)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "map.lock"))

    for step in ("exclusive_lock", "recover", "make_temp"):
        with monkeypatch.context() as patched:
            patched.setattr(atomic_dir, step, denied)
            with pytest.raises(MapError, match="cannot save the map there.*Permission denied"):
                index.save()
    assert len(PlaceIndex.open(target)) == 20
    index.save()
    assert len(PlaceIndex.open(target)) == 21


def test_a_lock_held_by_a_stopped_process_is_named_not_waited_on_for_ever(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A saver stopped with Ctrl-Z made every process opening the map hang, silently."""
    target = small_index().save(tmp_path / "map")
    monkeypatch.setattr(atomic_dir, "LOCK_NOTICE_S", 0.05)
    monkeypatch.setattr(atomic_dir, "LOCK_LIMIT_S", 0.3)
    fd = os.open(tmp_path / "map.lock", os.O_RDWR)  # another open file: flock conflicts
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with caplog.at_level(logging.WARNING, logger="vpr_edge"), \
                pytest.raises(MapError, match=r"waited \d+ s for .*map\.lock.*fuser -v"):
            PlaceIndex.open(target)
        assert "waiting for" in caplog.text and "saving the map" in caplog.text
    finally:
        os.close(fd)
    assert len(PlaceIndex.open(target)) == 20  # free again: opens at once


def test_a_change_interrupted_halfway_is_never_saved(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C between hnswlib's insert and the records' append left the index's parts
    disagreeing, and the next save replaced a sound map with one that did not open
    ("counts disagree")."""
    from vpr_edge.index import records

    index = small_index()
    target = index.save(tmp_path / "map")

    def interrupted(self, *args):  # the graph holds the places, the records not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(records.PlaceRecords, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        index.add(np.eye(DIM, dtype=np.float32)[:2])
    with pytest.raises(MapError, match=r"add\(\) was interrupted halfway.*unchanged"):
        index.save()
    assert len(PlaceIndex.open(target)) == 20


def test_a_save_interrupted_after_its_rename_counts_as_done(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The next save (map build saves again on the way out) said "saved by another writer"."""
    index = small_index()
    real_commit = atomic_dir.commit

    def interrupted(tmp, target):
        real_commit(tmp, target)
        raise KeyboardInterrupt

    for _ in range(2):  # a new map, then over its own save
        with monkeypatch.context() as patched:
            patched.setattr(atomic_dir, "commit", interrupted)
            with pytest.raises(KeyboardInterrupt):
                index.save(tmp_path / "map")
        index.add(np.eye(DIM, dtype=np.float32)[:1])
        index.save(tmp_path / "map")
    assert len(PlaceIndex.open(tmp_path / "map")) == 22


def test_a_file_system_without_permissions_still_saves(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """vfat/exFAT cards (common on robots) refuse chmod and chown: keeping the folder's
    permissions is best effort, never a reason for a save to fail."""
    index = small_index()
    target = index.save(tmp_path / "map")

    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refused)
    monkeypatch.setattr(os, "chown", refused)
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    index.save()
    assert len(PlaceIndex.open(target)) == 21


def test_a_map_file_it_may_not_read_is_not_called_damaged(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A map this user may not read was a MapCorruptError ("restore it from a backup"), and
    rebuild_if_corrupt=True rebuilt its index.hnsw as damaged."""
    from vpr_edge.errors import MapCorruptError
    from vpr_edge.index import hnsw_file

    target = small_index().save(tmp_path / "map")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    from vpr_edge.index import map_store

    def refused_file(name: str):
        def opener(path, *args, **kwargs):
            if Path(path).name.endswith(name):
                raise PermissionError(13, "Permission denied", str(path))
            return open(path, *args, **kwargs)
        return opener

    with monkeypatch.context() as patched:
        patched.setattr(hnsw_file, "read_header", denied)
        for rebuild in (False, True):
            with pytest.raises(MapError, match="no permission to read this map file") as raised:
                PlaceIndex.open(target, rebuild_if_corrupt=rebuild)
            assert not isinstance(raised.value, MapCorruptError)
    for name in ("manifest.json", ".descriptors.npy"):  # (the manifest was still "damage")
        with monkeypatch.context() as patched:
            patched.setattr(map_store, "open", refused_file(name), raising=False)
            with pytest.raises(MapError, match="no permission to read this map file") as raised:
                PlaceIndex.open(target)
            assert not isinstance(raised.value, MapCorruptError)


def test_only_damage_to_the_graph_file_suggests_map_repair(tmp_path: Path) -> None:
    """Every damaged file suggested `map repair`, which then said it rebuilds only
    index.hnsw."""
    from vpr_edge.errors import MapCorruptError

    target = small_index().save(tmp_path / "map")
    meta = next(target.glob("*.meta.jsonl"))
    meta.write_bytes(meta.read_bytes()[:-3])
    with pytest.raises(MapCorruptError) as raised:
        PlaceIndex.open(target)
    assert "map repair" not in str(raised.value) and "build it again" in str(raised.value)
    small_index().save(tmp_path / "other")
    graph = tmp_path / "other" / "index.hnsw"
    graph.write_bytes(graph.read_bytes()[:-5])
    with pytest.raises(MapCorruptError, match="vpr-edge map repair MAP"):
        PlaceIndex.open(tmp_path / "other")


def test_leftovers_of_a_map_named_like_a_pattern_are_deleted(tmp_path: Path) -> None:
    """``maps[v2]`` was read as a glob pattern when a save looked for the temp folders that
    interrupted saves left: none was ever deleted (each can be as large as the map)."""
    index = small_index()
    target = index.save(tmp_path / "maps[v2]")
    stale = tmp_path / f"maps[v2]{atomic_dir.TMP_INFIX}4242-deadbeef"
    stale.mkdir()
    (stale / "descriptors.npy").write_bytes(b"x" * 100)
    notes = tmp_path / f"maps[v2]{atomic_dir.TMP_INFIX}notes"  # not a name a save makes
    notes.mkdir()
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    index.save()
    assert not stale.exists() and notes.is_dir() and len(PlaceIndex.open(target)) == 21


def test_a_map_name_too_long_for_a_save_is_refused_before_any_work(tmp_path: Path) -> None:
    """A save names its temp folder ``<map>.vpr-edge-tmp-<pid>-<hex>``: a 230-byte map name
    passed the start check of `map build`, which described every frame and then failed at
    its first save ("File name too long"); at 250 bytes save() and open() raised a raw
    OSError."""
    from vpr_edge.index import map_store

    longest = atomic_dir.DEFAULT_NAME_MAX - atomic_dir.SAVE_NAME_EXTRA
    small_index().save(tmp_path / ("m" * longest))  # the longest name that fits
    for length in (longest + 1, 250):
        target = tmp_path / ("m" * length)
        assert f"use a name of at most {longest} bytes" in map_store.save_problem(target)
        with pytest.raises(MapError, match=f"name is {length} bytes long.*at most {longest}"):
            small_index().save(target)
        with pytest.raises(MapError, match="no map at"):
            PlaceIndex.open(target)
    wide = tmp_path / ("é" * (longest // 2 + 1))  # bytes, not characters, count
    assert "bytes long" in map_store.save_problem(wide)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m" * longest, "m" * longest + ".lock"]


def test_a_folder_above_the_map_it_may_not_enter_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A map under a folder of another user (mode 0700) raised a bare PermissionError from
    open(), save(), `vpr-edge info` and `map repair`; an I/O error from stat() a bare
    OSError."""
    import errno

    from vpr_edge.cli.info import describe_path

    closed = tmp_path / "alice"
    target = small_index().save(closed / "map")
    index = PlaceIndex.open(target)
    real_stat, real_access = os.stat, os.access

    def failing_stat(error: int):
        def stat_(path, *args, **kwargs):
            if closed in Path(path).parents:
                raise OSError(error, os.strerror(error), str(path))
            return real_stat(path, *args, **kwargs)
        return stat_

    monkeypatch.setattr(os, "access", lambda p, m, **kw: (Path(p) != closed or not m & os.X_OK)
                        and real_access(p, m))
    monkeypatch.setattr(os, "stat", failing_stat(errno.EACCES))
    fix = rf"cannot look into {closed} \(owned by uid \d+, mode \d+\), where map is: .*chmod o\+x"
    for attempt in (lambda: PlaceIndex.open(target), index.save,
                    lambda: describe_path(target)):
        with pytest.raises(MapError, match=fix):
            attempt()
    monkeypatch.setattr(os, "stat", failing_stat(errno.EIO))
    with pytest.raises(MapError, match=r"cannot look at .*map \(Input/output error\): the "
                                       "disk or file system failed"):
        PlaceIndex.open(target)
    monkeypatch.setattr(os, "stat", real_stat)
    assert len(PlaceIndex.open(target)) == 20


def test_a_map_in_a_sticky_folder_owned_by_another_user_is_refused_at_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a 1777 folder (/tmp, a shared drop folder) only the map folder's owner may rename
    it: another user's `map build` described every frame, then failed at the save with
    "Operation not permitted ... free some space"."""
    from vpr_edge.index import map_store

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    target = small_index().save(shared / "map")
    assert map_store.save_problem(target) is None  # its owner (and root) may
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    assert "has the sticky bit (mode 1777, as /tmp)" in map_store.save_problem(target)
    index = PlaceIndex.open(target)
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    with pytest.raises(MapError, match=r"sticky bit.*only the owner of map \(uid \d+\).*uid "
                                       "4242.*the map saved before is unchanged"):
        index.save()
    assert map_store.save_problem(shared / "new") is None  # a new map is this user's own


def test_a_save_below_a_map_folder_is_refused_at_any_depth(tmp_path: Path) -> None:
    """``save("map/a/b")`` was allowed (only the folder right above was checked); the map's
    own next save was then refused for the stranger folder ``a/`` in it."""
    from vpr_edge.cli.output import check_output_file
    from vpr_edge.errors import InvalidInputError
    from vpr_edge.index import map_store

    target = small_index().save(tmp_path / "map")
    for inner in (target / "a", target / "a" / "b"):
        with pytest.raises(MapError, match=f"inside the map folder {target}"):
            small_index().save(inner)
        assert "inside the map folder" in map_store.save_problem(inner)
    with pytest.raises(InvalidInputError, match="inside the map folder"):
        check_output_file(target / "notes" / "out.json", "--json")
    assert sorted(p.name for p in target.iterdir()) == sorted(
        p.name for p in small_index().save(tmp_path / "twin").iterdir())


def test_access_given_to_a_map_survives_its_next_save(tmp_path: Path) -> None:
    """A map's new files followed the saving process's umask: after ``chmod -R a+rX map``
    (the advice a reader gets), the owner's next save (umask 077) made them 0600 again."""
    index = small_index()
    old = os.umask(0o077)
    try:
        target = index.save(tmp_path / "map")
        assert {stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()} == {0o600}
        os.chmod(target, 0o755)
        for p in target.iterdir():
            os.chmod(p, 0o644)
        index.add(np.eye(DIM, dtype=np.float32)[:1])
        index.save()
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()} == {0o644}
    os.chmod(target, 0o700)  # and the other way: a map made private stays private
    index.add(np.eye(DIM, dtype=np.float32)[1:2])
    index.save()
    assert {stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()} == {0o600}


@pytest.mark.parametrize(("error", "fix"), [
    ("ENOSPC", "free some space on that disk"), ("EFBIG", r"file size limit \(`ulimit -f`\)"),
    ("EDQUOT", "disk quota"), ("EIO", "the disk failed"), ("EPERM", "fix the cause")])
def test_a_failed_save_says_what_to_do_about_its_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str, fix: str) -> None:
    """Every failed save asked to "free some space" (also for a file size limit), and named
    the file in the temp folder, which was deleted by then."""
    import errno

    from vpr_edge.index import map_store

    index = small_index()
    target = index.save(tmp_path / "map")
    code = getattr(errno, error)

    def fails(tmp, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp / "index.hnsw"))

    monkeypatch.setattr(map_store, "write_files", fails)
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    with pytest.raises(MapError) as raised:
        index.save()
    message = str(raised.value)
    assert re.search(fix, message) and f"{os.strerror(code)}, writing index.hnsw" in message
    assert atomic_dir.TMP_INFIX not in message and "the map saved before is unchanged" in message
    assert len(PlaceIndex.open(target)) == 20


def saved_map_read_unlocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                            ) -> tuple[PlaceIndex, Path]:
    """A saved map (its index, its path), read from here on without its lock, as by a user
    who may not open ``<map>.lock``."""
    import contextlib

    owner = small_index()
    target = owner.save(tmp_path / "map")

    @contextlib.contextmanager
    def unlocked(path):
        yield False

    monkeypatch.setattr(atomic_dir, "shared_lock", unlocked)
    return owner, target


def test_a_reader_without_the_lock_reads_again_when_the_map_was_saved_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user who may not open ``<map>.lock`` reads without it; a map saved during such a
    read came back as "damaged" (893 of 1568 opens while its owner saved in a loop) or as
    a raw FileNotFoundError. Such a read is now repeated; real damage is not."""
    from vpr_edge.errors import MapCorruptError
    from vpr_edge.index import map_store

    owner, target = saved_map_read_unlocked(tmp_path, monkeypatch)
    real_read = map_store._read_records
    reads: list[int] = []

    def saved_meanwhile(*args, **kwargs):
        reads.append(1)
        if len(reads) == 1:  # the owner saves while this read is half done
            owner.add(np.eye(DIM, dtype=np.float32)[:1])
            owner.save()
            raise map_store.damaged(target / "removed.npy", "checksum mismatch")
        return real_read(*args, **kwargs)

    monkeypatch.setattr(map_store, "_read_records", saved_meanwhile)
    assert len(PlaceIndex.open(target)) == 21 and len(reads) == 2

    def damaged(*args, **kwargs):  # real damage, no save meanwhile: at once, as it is
        reads.append(1)
        raise map_store.damaged(target / "removed.npy", "checksum mismatch")

    reads.clear()
    monkeypatch.setattr(map_store, "_read_records", damaged)
    with pytest.raises(MapCorruptError, match="checksum mismatch"):
        PlaceIndex.open(target)
    assert len(reads) == 1

    def always_saved_meanwhile(*args, **kwargs):
        reads.append(1)
        owner.add(np.eye(DIM, dtype=np.float32)[len(reads) % DIM:][:1])
        owner.save()
        raise FileNotFoundError(2, "No such file or directory", str(target / "x.npy"))

    reads.clear()
    monkeypatch.setattr(map_store, "_read_records", always_saved_meanwhile)
    with pytest.raises(MapError, match=r"saved again during each of 5 reads.*may not open its "
                                       r"lock file .*map\.lock.*chmod a\+r"):
        PlaceIndex.open(target)
    assert len(reads) == map_store.UNLOCKED_READ_TRIES


def test_a_map_in_a_folder_this_user_may_not_list_still_saves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drop-box folder (mode 0333: write, no read): looking for leftovers by listing it
    made every save fail with PermissionError (the glob before found nothing, quietly)."""
    index = small_index()
    real_iterdir = Path.iterdir

    def unlistable(self):
        if self == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", unlistable)
    target = index.save(tmp_path / "map")
    index.add(np.eye(DIM, dtype=np.float32)[:1])
    index.save()
    monkeypatch.setattr(Path, "iterdir", real_iterdir)
    assert len(PlaceIndex.open(target)) == 21


def test_an_unlocked_read_that_worked_is_read_again_if_the_map_changed_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the lock, a read can succeed with files of two saves (with
    rebuild_if_corrupt=True, a graph of one save beside the records of the other is taken
    for damage and rebuilt): places came back with other places' descriptors."""
    from vpr_edge.index import map_store

    owner, target = saved_map_read_unlocked(tmp_path, monkeypatch)
    real_read = map_store._read_records
    reads: list[int] = []

    def saved_after_reading(*args, **kwargs):
        records = real_read(*args, **kwargs)  # this save's records...
        reads.append(1)
        if len(reads) == 1:  # ... then another save lands before the graph is read
            owner.add(np.eye(DIM, dtype=np.float32)[:2])
            owner.save()
        return records

    monkeypatch.setattr(map_store, "_read_records", saved_after_reading)
    opened = PlaceIndex.open(target, rebuild_if_corrupt=True)
    assert len(reads) == 2 and len(opened) == 22
    for pid in opened.ids():
        assert opened.get(pid).place_id == pid
        assert opened.query(owner._records.desc16[owner._row_of[pid]].astype(np.float32),
                            k=1)[0].place_id == pid
