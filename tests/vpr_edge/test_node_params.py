"""The ROS nodes' parameters, read and checked without ROS (``vpr_edge.node_params``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.node_params import DEFAULTS, compressed_image_topic, node_config_from_params


def read(**values):
    params = {**DEFAULTS, "model": "model.onnx", **values}
    return node_config_from_params(lambda name, _default: params[name])


def test_paths_that_cannot_be_written_are_refused_at_start(tmp_path: Path) -> None:
    """A map_dir or stats_file under a file was accepted, and the whole run's map (or its
    statistics) was lost at shutdown."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for name in ("map_dir", "stats_file"):
        with pytest.raises(InvalidInputError, match=f"parameter {name} .*could not be saved"):
            read(**{name: str(a_file / "inside")})
    # folders that do not exist yet are made when needed
    config = read(map_dir=str(tmp_path / "new" / "maps" / "lab"),
                  stats_file=str(tmp_path / "logs" / "stats.json"))
    assert config.map_dir == str(tmp_path / "new" / "maps" / "lab")
    assert read(map_dir="", stats_file="").map_dir is None


def test_a_stats_file_inside_the_map_folder_is_refused_at_start(tmp_path: Path) -> None:
    """stats_file inside map_dir was accepted: written into the map folder at shutdown, it
    was a file the map does not list, and the next start on that map (day 2 of a multi-session
    map) refused the folder with exit code 2."""
    import numpy as np

    from vpr_edge.index import PlaceIndex

    map_dir = tmp_path / "maps" / "lab"
    for stats in (map_dir / "stats.json", map_dir / "logs" / "stats.json", map_dir):
        with pytest.raises(InvalidInputError, match="parameter stats_file .*inside the map "
                                                    "folder .*outside the map folder"):
            read(map_dir=str(map_dir), stats_file=str(stats))  # (a new map: no folder yet)
    index = PlaceIndex(4)
    index.add(np.eye(4, dtype=np.float32)[0])
    index.save(tmp_path / "maps" / "other")  # any map's folder, through a link too
    (tmp_path / "current").symlink_to(tmp_path / "maps" / "other")
    for stats in (tmp_path / "maps" / "other" / "s.json", tmp_path / "current" / "s.json"):
        with pytest.raises(InvalidInputError, match="parameter stats_file"):
            read(map_dir=str(map_dir), stats_file=str(stats))
    with pytest.raises(InvalidInputError, match="parameter stats_file"):
        read(map_dir="", stats_file=str(tmp_path / "current" / "s.json"))
    # beside the map is fine
    config = read(map_dir=str(map_dir), stats_file=str(tmp_path / "maps" / "stats.json"))
    assert config.map_dir == str(map_dir)


def test_a_read_only_map_is_accepted_when_the_node_never_saves_it(tmp_path: Path) -> None:
    """A map in a read-only place (a shipped image, a read-only mount) was refused even with
    save_on_shutdown false, though nothing would ever be written there."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    unwritable = str(a_file / "map")
    with pytest.raises(InvalidInputError, match="parameter map_dir"):
        read(map_dir=unwritable)
    assert read(map_dir=unwritable, save_on_shutdown=False).map_dir == unwritable


def test_paths_starting_with_a_tilde_are_expanded(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No shell expands a ROS parameter: ``map_dir: ~/maps/lab`` made a folder named ``~`` in
    the node's working directory (``~/.ros`` under roslaunch)."""
    from vpr_edge.node_params import transport_settings

    monkeypatch.setenv("HOME", str(tmp_path))
    config = read(model="~/model.onnx", map_dir="~/maps/lab")
    assert config.model == str(tmp_path / "model.onnx")
    assert config.map_dir == str(tmp_path / "maps" / "lab")
    params = {**DEFAULTS, "stats_file": "~/logs/stats.json"}
    assert transport_settings(lambda name, _d: params[name])["stats_file"] == \
        str(tmp_path / "logs" / "stats.json")


def test_a_mount_point_map_dir_is_refused_at_start(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted at start, refused at the shutdown save: the whole run's map was lost."""
    import os

    target = tmp_path / "lab"
    target.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == target or real_ismount(p))
    with pytest.raises(InvalidInputError, match="parameter map_dir .*mount point"):
        read(map_dir=str(target))
    assert read(map_dir=str(target), save_on_shutdown=False).map_dir == str(target)


def test_autosave_seconds_reaches_the_node_and_a_bad_one_is_refused() -> None:
    assert read().autosave_seconds == 60.0
    assert read(autosave_seconds=5).autosave_seconds == 5.0  # an int from the command line
    assert read(autosave_seconds=0.0).autosave_seconds == 0.0  # off
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="autosave_seconds must be >= 0 and finite"):
            read(autosave_seconds=bad)


def test_the_node_configs_ranges_are_checked_when_read() -> None:
    """pose_max_gap 0 passed here and was refused only when the node started, as
    "max_gap must be positive" (no parameter of that name); NodeConfig checks it now, and
    the model's presence, naming the parameters."""
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidInputError, match="pose_max_gap must be > 0"):
            read(pose_max_gap=bad)
    with pytest.raises(InvalidInputError, match="model must be the path of the exported model"):
        read(model="")


def test_detector_parameters_are_named_as_parameters() -> None:
    """exclusion_seconds -1 said "LoopClosureConfig: exclusion_seconds must be finite
    seconds >= 0 or None" (ROS has no None: 0 is off)."""
    for bad in (-1.0, float("inf")):
        with pytest.raises(InvalidInputError, match=r"^parameter exclusion_seconds must be "
                                                    r"finite seconds >= 0 \(0: off\), got"):
            read(exclusion_seconds=bad)
    with pytest.raises(InvalidInputError, match=r"^parameter min_inliers must be an int >= 8"):
        read(min_inliers=7)
    with pytest.raises(InvalidInputError, match=r"^parameter exclusion_frames \(20000\) must "
                                                r"be less than max_feature_places"):
        read(exclusion_frames=20000, verify=True)


def test_keyframe_parameters_are_named_as_parameters() -> None:
    """keyframe_min_distance -1 said "min_distance must be > 0 or None" (no such parameter,
    and ROS has no None); inf was taken, and then no keyframe ever came from motion."""
    for bad in (-1.0, float("inf")):
        with pytest.raises(InvalidInputError, match=r"^parameter keyframe_min_distance must be "
                                                    r"> 0 and finite \(0: off\)"):
            read(keyframe_min_distance=bad)
    with pytest.raises(InvalidInputError, match="needs keyframe_min_distance or "
                                                "keyframe_min_rotation"):
        read(keyframe_max_interval=2.0)


def test_image_reliability_reaches_the_transport_settings_and_a_bad_one_is_refused() -> None:
    """A ROS 2 best-effort image subscription got none of 20 raw frames from a reliable
    publisher that a reliable subscriber got all of; `image_reliability` picks the QoS."""
    from vpr_edge.node_params import transport_settings

    params = {**DEFAULTS, "model": "model.onnx"}
    assert transport_settings(lambda name, _d: params[name])["image_reliability"] == "best_effort"
    params["image_reliability"] = "reliable"
    assert transport_settings(lambda name, _d: params[name])["image_reliability"] == "reliable"
    read(image_reliability="reliable")
    with pytest.raises(InvalidInputError, match="image_reliability must be 'best_effort' or "
                                                "'reliable', got 'RELIABLE'"):
        read(image_reliability="RELIABLE")


@pytest.mark.parametrize("remaps, topic", [
    ({}, "/ns/image/compressed"),
    ({"/ns/image": "/camera/image_raw"}, "/camera/image_raw/compressed"),
    ({"/ns/image": "/camera/image_raw", "/ns/image/compressed": "/jpeg"}, "image/compressed"),
    ({"/ns/image/compressed": "/jpeg"}, "image/compressed"),
])
def test_the_compressed_topic_follows_a_remap_of_image(remaps, topic) -> None:
    """As image_transport names it: `image:=/camera/image_raw` takes
    /camera/image_raw/compressed; a remap of image/compressed itself is left to the
    middleware (the relative name)."""
    def expand(name: str) -> str:
        return "/ns/" + name

    def resolve(name: str) -> str:
        return remaps.get(expand(name), expand(name))

    assert compressed_image_topic(resolve, expand) == topic
