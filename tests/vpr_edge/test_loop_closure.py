from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import InvalidInputError
from vpr_edge.localizer import Localizer
from vpr_edge.loop_closure import JUMP_BACK_SECONDS, LoopClosureConfig, LoopClosureDetector


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def loc(tiny_onnx: Path, cpu_only: None) -> Localizer:
    with Localizer(tiny_onnx, backend="onnxruntime-cpu") as localizer:
        yield localizer


@pytest.fixture
def route(tiny) -> np.ndarray:
    """80 distinct places along a route (random directions, so neighbours are unrelated)."""
    return unit(np.random.default_rng(0).standard_normal((80, tiny.DIM)))


def revisit(route: np.ndarray, idx: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(route[idx] + noise * rng.standard_normal(route.shape[1]) / np.sqrt(route.shape[1]))


def run(detector: LoopClosureDetector, descriptors) -> list:
    return [detector.process_descriptor(d, stamp=float(i)) for i, d in enumerate(descriptors)]


def test_loop_reported_after_k_consistent_frames(loc: Localizer, route: np.ndarray) -> None:
    detector = LoopClosureDetector(loc, LoopClosureConfig(min_score=0.8, consistency=3,
                                                          exclusion_frames=10))
    first = run(detector, route[:60])
    assert all(r.loop is None for r in first), "no loop on a route seen once"
    second = [detector.process_descriptor(revisit(route, i, 0.3, i), stamp=100.0 + i)
              for i in range(10, 20)]
    loops = [r.loop for r in second]
    assert loops[0] is None and loops[1] is None, "needs 3 consistent frames"
    for offset, loop in enumerate(loops[2:], start=12):
        assert loop is not None and loop.match_id == offset
        assert loop.consistent_frames >= 3 and loop.score > 0.8
        assert loop.match_stamp == float(offset) and loop.verified is None
    assert second[2].place_id == 62 and loops[2].query_id == 62


def test_inconsistent_candidates_are_not_reported(loc: Localizer, route: np.ndarray) -> None:
    detector = LoopClosureDetector(loc, LoopClosureConfig(min_score=0.8, consistency=3,
                                                          consistency_radius=2,
                                                          exclusion_frames=10))
    run(detector, route[:60])
    # revisits that jump around the map: each is a good match, but they never agree
    jumps = [5, 30, 15, 45, 25, 40]
    out = [detector.process_descriptor(revisit(route, j, 0.3, j), stamp=200.0 + n)
           for n, j in enumerate(jumps)]
    assert all(r.best is not None and r.best.place_id == j for r, j in zip(out, jumps))
    assert all(r.loop is None for r in out)
    one = LoopClosureDetector(loc, LoopClosureConfig(min_score=0.8, consistency=1,
                                                     exclusion_frames=10))
    assert one.process_descriptor(revisit(route, 33, 0.3, 1)).loop.match_id == 33


def test_recent_frames_are_excluded(loc: Localizer, route: np.ndarray) -> None:
    detector = LoopClosureDetector(loc, LoopClosureConfig(min_score=0.5, consistency=1,
                                                          exclusion_frames=50))
    run(detector, route[:40])
    # the robot stands still: the same view again is NOT a loop, it is the last frame
    result = detector.process_descriptor(revisit(route, 39, 0.1, 3), stamp=40.0)
    assert result.loop is None and result.best is None


def test_time_window_exclusion(loc: Localizer, route: np.ndarray) -> None:
    config = LoopClosureConfig(min_score=0.5, consistency=1, exclusion_frames=0,
                               exclusion_seconds=30.0)
    detector = LoopClosureDetector(loc, config)
    run(detector, route[:40])  # stamps 0..39
    assert detector.process_descriptor(revisit(route, 20, 0.1, 4), stamp=45.0).loop is None
    loop = detector.process_descriptor(revisit(route, 5, 0.1, 5), stamp=46.0).loop
    assert loop is not None and loop.match_id == 5
    with pytest.raises(InvalidInputError, match="stamp"):
        detector.process_descriptor(route[0])



def test_a_loop_of_numpy_stamps_writes_as_json(loc: Localizer, route: np.ndarray) -> None:
    """A float32 stamp stayed float32 in the loop's query_stamp (the match's came back from
    the map as a float): json.dumps(loop.to_dict()) failed."""
    import json

    config = LoopClosureConfig(min_score=0.5, consistency=1, exclusion_frames=0,
                               exclusion_seconds=0.3)
    detector = LoopClosureDetector(loc, config)
    for i in range(10):
        detector.process_descriptor(route[i], stamp=np.float32(i))
    loop = detector.process_descriptor(route[3], stamp=np.float32(10)).loop
    assert loop is not None and type(loop.query_stamp) is float
    assert json.loads(json.dumps(loop.to_dict()))["query_stamp"] == 10.0


def test_a_keyframe_exactly_the_window_old_is_a_candidate(loc: Localizer,
                                                          route: np.ndarray) -> None:
    """10 Hz stamps ``i * 0.1`` and a 0.3 s window: the keyframe 3 back was a candidate at
    every frame but frame 10 (1.0 - 0.3 < 0.7000000000000001)."""
    config = LoopClosureConfig(min_score=0.5, consistency=1, exclusion_frames=0,
                               exclusion_seconds=0.3)
    detector = LoopClosureDetector(loc, config)
    for i in range(10):
        detector.process_descriptor(route[i], stamp=i * 0.1)
    loop = detector.process_descriptor(route[7], stamp=10 * 0.1).loop
    assert loop is not None and loop.match_id == 7


def test_time_jumping_back_starts_the_time_window_afresh(loc: Localizer,
                                                          route: np.ndarray) -> None:
    """A bag played in a loop (or a restarted simulator) reuses stamps: every place of the
    earlier pass was stamped "after" the window's start, and all of them were excluded, so
    no loop was ever found again."""
    config = LoopClosureConfig(min_score=0.5, consistency=1, exclusion_frames=0,
                               exclusion_seconds=30.0)
    detector = LoopClosureDetector(loc, config)
    run(detector, route[:40])  # stamps 0..39
    loop = detector.process_descriptor(revisit(route, 5, 0.1, 8), stamp=5.0).loop
    assert loop is not None and loop.match_id == 5  # the first pass, same stamp
    # the new pass's own keyframes are in the window again: not the place just added
    again = detector.process_descriptor(revisit(route, 5, 0.1, 9), stamp=6.0)
    assert again.loop is not None and again.loop.match_id == 5
    # a detector on the same map after a restart: the map's places are not its keyframes
    fresh = LoopClosureDetector(loc, config)
    found = fresh.process_descriptor(revisit(route, 30, 0.1, 10), stamp=1.0).loop
    assert found is not None and found.match_id == 30


def test_time_jumping_back_ends_the_consistency_chains(loc: Localizer,
                                                      route: np.ndarray) -> None:
    """Keyframes on both sides of a restart are not successive: two agreeing keyframes
    before it and the first one after it made a "3-consistent" loop."""
    config = LoopClosureConfig(min_score=0.8, consistency=3, exclusion_frames=10)
    detector = LoopClosureDetector(loc, config)
    run(detector, route[:40])  # stamps 0..39
    for i in (10, 11):
        assert detector.process_descriptor(revisit(route, i, 0.3, i),
                                           stamp=100.0 + i).loop is None
    after = detector.process_descriptor(revisit(route, 12, 0.3, 12), stamp=0.5)
    assert after.loop is None and after.best.place_id == 12  # the chain starts again
    for i in (13, 14):
        loop = detector.process_descriptor(revisit(route, i, 0.3, i), stamp=0.5 + i).loop
    assert loop is not None and loop.match_id == 14 and loop.consistent_frames == 3
    # a jump of less than JUMP_BACK_SECONDS is out of order, not a restart
    steady = LoopClosureDetector(loc, config)
    run(steady, route[:40])
    stamps = [100.0, 101.0, 101.0 - 0.9 * JUMP_BACK_SECONDS]
    loops = [steady.process_descriptor(revisit(route, 10 + k, 0.3, k), stamp=t).loop
             for k, t in enumerate(stamps)]
    assert loops[2] is not None and loops[2].consistent_frames == 3


def test_stamps_in_nanoseconds_are_refused_for_the_time_window(loc: Localizer,
                                                               route: np.ndarray) -> None:
    """Epoch nanoseconds passed as seconds (a --list in ns, header.stamp.to_nsec()) were
    taken, and a 3 s window then excluded nothing: frames 0.1 s apart matched each other."""
    windowed = LoopClosureDetector(loc, LoopClosureConfig(exclusion_seconds=3.0))
    for stamp in (1.7e18, 1.7e15, 1.7e12, -1.7e18):
        with pytest.raises(InvalidInputError, match="not in seconds"):
            windowed.process_descriptor(route[0], stamp=stamp)
    assert len(loc.index) == 0
    windowed.process_descriptor(route[0], stamp=1.7e9)  # epoch seconds
    frames_only = LoopClosureDetector(loc, LoopClosureConfig())  # stamps are only recorded
    frames_only.process_descriptor(route[1], stamp=1.7e18)
    assert len(loc.index) == 2


def test_min_score_gates_candidates(loc: Localizer, route: np.ndarray) -> None:
    detector = LoopClosureDetector(loc, LoopClosureConfig(min_score=0.99, consistency=1,
                                                          exclusion_frames=5))
    run(detector, route[:30])
    assert detector.process_descriptor(revisit(route, 3, 1.0, 6)).loop is None
    assert detector.process_descriptor(revisit(route, 3, 0.01, 7)).loop.match_id == 3


def saved_session(tiny_onnx: Path, map_dir: Path, config: LoopClosureConfig,
                  route: np.ndarray) -> Path:
    """A map left by an earlier session of the detector along ``route``."""
    with Localizer(tiny_onnx, map_dir) as loc:
        run(LoopClosureDetector(loc, config), route)
        loc.save()
    return map_dir


def test_map_opened_from_disk_keeps_route_order(tiny_onnx: Path, route: np.ndarray,
                                                tmp_path: Path, cpu_only: None) -> None:
    config = LoopClosureConfig(min_score=0.8, consistency=2, exclusion_frames=5)
    saved_session(tiny_onnx, tmp_path / "map", config, route[:50])
    with Localizer(tiny_onnx, tmp_path / "map") as loc:
        detector = LoopClosureDetector(loc, config)
        out = [detector.process_descriptor(revisit(route, i, 0.3, i)) for i in (20, 21, 22)]
    assert out[0].loop is None and out[1].loop.match_id == 21 and out[2].loop.match_id == 22


@pytest.mark.parametrize(
    "changes, words",
    [({"consistency": 0}, "consistency"), ({"min_score": 2.0}, "min_score"),
     ({"exclusion_frames": -1}, "exclusion_frames"), ({"exclusion_seconds": -1.0}, "seconds")],
)
def test_bad_config_is_refused(changes: dict, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        LoopClosureConfig(**changes)


def test_geometric_verification_separates_same_and_other_places(gardens_point_dir: Path) -> None:
    pytest.importorskip("cv2")
    from vpr_edge.geometric import VerifyConfig, count_inliers, orb_features
    from vpr_edge.images import load_image

    def feats(side: str, n: int):
        return orb_features(load_image(gardens_point_dir / side / f"Image{n:03d}.jpg"))

    config = VerifyConfig()
    frames = range(0, 200, 20)
    same = [count_inliers(feats("day_left", n), feats("day_right", n), config) for n in frames]
    other = [count_inliers(feats("day_left", n), feats("day_right", (n + 70) % 200), config)
             for n in frames]
    # the same place from the other side of the path: most pairs verify
    assert np.median(same) >= config.min_inliers, same
    # unrelated places: none does
    assert max(other) < config.min_inliers, other


def test_verification_does_not_depend_on_the_cameras_resolution(gardens_point_dir: Path
                                                                ) -> None:
    """The same views at twice the resolution (a 1080p camera) verify as well: RANSAC works in
    the pixels ORB ran on. In original pixels the same threshold was 3x stricter at 1080p
    than at 540p, and true pairs lost about 30% of their inliers."""
    cv2 = pytest.importorskip("cv2")
    from vpr_edge.geometric import VerifyConfig, count_inliers, orb_features
    from vpr_edge.images import load_image

    config = VerifyConfig()

    def pair(n: int, upscale: bool):
        views = [load_image(gardens_point_dir / side / f"Image{n:03d}.jpg")
                 for side in ("day_left", "day_right")]
        if upscale:
            views = [cv2.resize(v, (2 * v.shape[1], 2 * v.shape[0]),
                                interpolation=cv2.INTER_CUBIC) for v in views]
        a, b = (orb_features(v, config) for v in views)
        assert max(a.points.max(), b.points.max()) <= config.max_side
        return count_inliers(a, b, config)

    frames = range(0, 200, 20)
    native = np.median([pair(n, False) for n in frames])
    hd = np.median([pair(n, True) for n in frames])
    assert hd >= 0.8 * native, (native, hd)


def test_the_frame_window_counts_only_this_sessions_frames(tiny_onnx: Path, route: np.ndarray,
                                                           tmp_path: Path, cpu_only: None) -> None:
    """A robot that starts again where its last session ended (at its dock) can close a loop
    with the last places of that session; the frames it has just seen stay excluded."""
    config = LoopClosureConfig(min_score=0.8, consistency=1, exclusion_frames=50)
    saved_session(tiny_onnx, tmp_path / "map", config, route[:60])
    with Localizer(tiny_onnx, tmp_path / "map") as loc:
        detector = LoopClosureDetector(loc, config)
        view = revisit(route, 59, 0.3, 1)
        first = detector.process_descriptor(view)
        assert first.loop is not None and first.loop.match_id == 59
        # the same view again: the place it just added (score 1.0) is excluded, 59 is not
        again = detector.process_descriptor(view)
        assert again.loop is not None and again.loop.match_id == 59
        assert again.best.place_id == 59 != first.place_id


def _Features():  # (named like the class it stands in for)
    """Stands in for the frame's OrbFeatures (count_inliers is replaced in these tests)."""
    from vpr_edge.geometric import OrbFeatures

    return OrbFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))


def test_features_that_are_not_orb_features_are_refused_before_the_frame_is_added(
        tiny) -> None:
    """cv2's (keypoints, descriptors) as features: the first frame went into the map, and
    the frame after it raised AttributeError ("'tuple' object has no attribute
    'descriptors'") after it, too, had been added."""
    from vpr_edge.index import PlaceIndex

    detector = LoopClosureDetector(PlaceIndex(tiny.DIM), LoopClosureConfig(
        verify=True, exclusion_frames=0, consistency=1, min_score=-1.0))
    place = unit(np.eye(tiny.DIM)[0])
    for _ in range(2):
        with pytest.raises(InvalidInputError, match="features must be .*OrbFeatures"):
            detector.process_descriptor(place, features=(np.zeros((9, 2)),
                                                         np.zeros((9, 32), np.uint8)))
    assert len(detector.index) == 0


def test_verification_skips_places_it_cannot_check(route: np.ndarray, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cv2")
    from vpr_edge import loop_closure
    from vpr_edge.index import PlaceIndex

    monkeypatch.setattr(loop_closure, "count_inliers", lambda a, b, config: 40)
    config = LoopClosureConfig(min_score=0.8, consistency=1, exclusion_frames=5, verify=True)
    index = PlaceIndex(route.shape[1])
    first = LoopClosureDetector(index, config)
    for d in route[:30]:
        first.process_descriptor(d, features=_Features())
    index.save(tmp_path / "map")
    reopened = PlaceIndex.open(tmp_path / "map")
    detector = LoopClosureDetector(reopened, config)
    # a place from disk has no features in memory: it cannot be verified, so it is skipped
    assert detector.process_descriptor(revisit(route, 10, 0.3, 1), features=_Features()).loop \
        is None
    ids = [detector.process_descriptor(d, features=_Features()).place_id
           for d in route[30:40]]  # this session's places can be checked
    loop = detector.process_descriptor(revisit(route, 32, 0.3, 2), features=_Features()).loop
    assert (loop.match_id, loop.verified, loop.inliers) == (ids[2], True, 40)
    monkeypatch.setattr(loop_closure, "count_inliers", lambda a, b, config: 7)
    assert detector.process_descriptor(revisit(route, 33, 0.3, 3), features=_Features()).loop \
        is None  # checked and refused
    # report_unverifiable: a loop to an earlier session's place, marked unchecked
    lenient = LoopClosureDetector(PlaceIndex.open(tmp_path / "map"),
                                  LoopClosureConfig(min_score=0.8, consistency=1, verify=True,
                                                    report_unverifiable=True))
    loop = lenient.process_descriptor(revisit(route, 10, 0.3, 4), features=_Features()).loop
    assert (loop.match_id, loop.verified, loop.inliers) == (10, None, None)
    with pytest.raises(InvalidInputError, match="ORB features"):
        lenient.process_descriptor(route[0])


@pytest.mark.parametrize("min_inliers", [0, 7, -1, 8.5])
def test_too_few_inliers_to_mean_anything_are_refused(min_inliers) -> None:
    from vpr_edge.geometric import VerifyConfig

    with pytest.raises(InvalidInputError, match="min_inliers must be an int >= 8"):
        VerifyConfig(min_inliers=min_inliers)



@pytest.mark.parametrize("changes, words", [
    ({"ratio": "0.8"}, "ratio"), ({"ratio": None}, "ratio"), ({"ratio": True}, "ratio"),
    ({"confidence": None}, "confidence"), ({"ransac_threshold": "2"}, "ransac_threshold"),
    ({"ransac_threshold": float("inf")}, "ransac_threshold"),
    ({"ransac_threshold": float("nan")}, "ransac_threshold"),
])
def test_verification_settings_of_the_wrong_kind_are_refused(changes: dict, words: str) -> None:
    """A string or None for ratio, confidence or ransac_threshold raised a bare TypeError
    ("'<' not supported between instances of 'float' and 'str'"); True was taken as a ratio
    of 1; an infinite RANSAC threshold was taken, and made every match an inlier, so every
    candidate with 15 matches verified."""
    from vpr_edge.geometric import VerifyConfig

    with pytest.raises(InvalidInputError, match=f"VerifyConfig: {words} must be"):
        VerifyConfig(**changes)


def test_degenerate_matches_verify_nothing() -> None:
    """Points that fit no fundamental matrix (all on one spot, or on one line): OpenCV then
    hands back no matrix and, in 5.0, a mask of uninitialised bytes, which was summed into
    hundreds of 'inliers' (a loop verified from 20 matches)."""
    pytest.importorskip("cv2")
    from vpr_edge.geometric import OrbFeatures, count_inliers

    descriptors = np.random.default_rng(0).integers(0, 256, (20, 32), dtype=np.uint8)
    spot = np.zeros((20, 2), np.float32)
    line = np.stack([np.arange(20), np.zeros(20)], axis=1).astype(np.float32)
    for points in (spot, line):
        for _ in range(5):
            assert count_inliers(OrbFeatures(points, descriptors),
                                 OrbFeatures(points, descriptors)) == 0


def test_places_added_by_others_never_agree_and_do_not_shift_the_window(
        route: np.ndarray, tiny) -> None:
    """A map filled by another writer (a second camera, a map-building thread): its places
    have no position in this detector's route, so they never make a chain (they all used
    to 'agree'), and the frame window covers this detector's own keyframes, not the map's
    newest rows."""
    from vpr_edge.index import IndexSettings, PlaceIndex

    index = PlaceIndex(tiny.DIM, settings=IndexSettings(mode="exact"))
    detector = LoopClosureDetector(index, LoopClosureConfig(
        min_score=0.8, consistency=3, consistency_radius=2, exclusion_frames=10))
    index.add(route[:60])  # not through the detector
    out = [detector.process_descriptor(revisit(route, j, 0.3, n)) for n, j in
           enumerate([5, 40, 20])]
    assert [r.best.place_id for r in out] == [5, 40, 20] and all(r.loop is None for r in out)
    # its own keyframes stay excluded while another writer adds places
    own = LoopClosureDetector(index, LoopClosureConfig(min_score=0.5, consistency=1,
                                                       exclusion_frames=10))
    first = own.process_descriptor(route[70]).place_id
    index.add(route[61:69])  # the other camera's places, newer than `first`
    again = own.process_descriptor(revisit(route, 70, 0.1, 9))
    assert again.loop is None and (again.best is None or again.best.place_id != first)


def test_a_frame_the_map_refuses_leaves_the_consistency_state(loc: Localizer,
                                                               route: np.ndarray) -> None:
    detector = LoopClosureDetector(loc, LoopClosureConfig(min_score=0.8, consistency=2,
                                                          exclusion_frames=5))
    run(detector, route[:30])
    with pytest.raises(InvalidInputError):  # a NaN pose: refused by the map
        detector.process_descriptor(revisit(route, 10, 0.3, 1), pose=(float("nan"), 0.0))
    assert len(loc) == 30
    # the next revisit is the first of a chain, not the second
    assert detector.process_descriptor(revisit(route, 11, 0.3, 2)).loop is None
    assert detector.process_descriptor(revisit(route, 12, 0.3, 3)).loop.match_id == 12


@pytest.mark.parametrize("refused, words", [
    ({"stamp": float("inf")}, "stamp: inf is not finite"),
    ({"stamp": float("nan")}, "stamp: nan is not finite"),
    ({"stamp": "0.25"}, "stamp: expected float seconds"),
    ({"stamp": 0.199, "pose": (float("nan"), 0.0)}, "pose: contains NaN"),
    ({"stamp": 0.199, "pose": (0.0, 0.0, 0.0)}, "pose: 3 values, but this map's poses have 2"),
    ({"stamp": 0.199, "meta": {"x": float("nan")}}, "meta: not JSON-serialisable"),
])
def test_a_frame_the_map_refuses_leaves_the_time_window(tiny, refused: dict,
                                                         words: str) -> None:
    """A refused frame moved the exclusion_seconds window before the map refused it (an
    inf stamp, or an out-of-order one with a NaN pose, emptied it), so the next frame was a
    "loop" to one 0.3 s old in a 5 s window. The error named ``stamps[0]``, not ``stamp``."""
    from vpr_edge.index import PlaceIndex

    standing_still = unit(np.eye(tiny.DIM)[0])
    detector = LoopClosureDetector(PlaceIndex(tiny.DIM), LoopClosureConfig(
        exclusion_frames=0, exclusion_seconds=5.0, consistency=1, min_score=0.5))
    for t in (0.0, 0.1, 0.2):
        assert detector.process_descriptor(standing_still, stamp=t, pose=(t, 0.0)).loop is None
    with pytest.raises(InvalidInputError, match=f"^{words}"):
        detector.process_descriptor(standing_still, **refused)
    assert len(detector.index) == 3
    assert detector.process_descriptor(standing_still, stamp=0.3).loop is None


def test_stamps_slightly_out_of_order_keep_the_time_window(loc: Localizer,
                                                           route: np.ndarray) -> None:
    """Any stamp before the last one, by 1 ms too, emptied the exclusion_seconds window:
    the frames of the last seconds became loops. Only a jump back by more than
    JUMP_BACK_SECONDS starts the window afresh."""
    config = LoopClosureConfig(min_score=0.5, consistency=1, exclusion_frames=0,
                               exclusion_seconds=5.0)
    detector = LoopClosureDetector(loc, config)
    for i in range(60):  # 10 Hz, stamps 0.0 .. 5.9
        assert detector.process_descriptor(route[i], stamp=i * 0.1).loop is None
    # 0.4 s late: the place it revisits (stamped 5.5) is in its window, and the newer ones
    late = detector.process_descriptor(revisit(route, 55, 0.1, 1), stamp=5.5)
    assert late.loop is None
    assert detector.process_descriptor(revisit(route, 58, 0.1, 2), stamp=6.0).loop is None
    loop = detector.process_descriptor(revisit(route, 5, 0.1, 3), stamp=6.1).loop
    assert loop is not None and loop.match_id == 5  # 5.6 s before: out of the window
    # a jump back by more is a new pass: the places stamped "later" are candidates again
    jumped = detector.process_descriptor(revisit(route, 55, 0.1, 4),
                                         stamp=6.1 - JUMP_BACK_SECONDS - 0.1)
    assert jumped.loop is not None and jumped.loop.match_id == 55



def test_one_keyframe_stamped_far_ahead_keeps_the_time_window(loc: Localizer,
                                                              route: np.ndarray) -> None:
    """One corrupt stamp 1000 s ahead, then the stream going on: it was taken for time
    jumping back, the window started afresh (and the leap had dropped the window's places),
    so the next keyframes matched the robot's own last seconds: a false loop after 3 frames.
    The glitch's own place stays excluded for a window, and the window's memory stays
    bounded."""
    config = LoopClosureConfig(min_score=0.5, consistency=3, exclusion_frames=0,
                               exclusion_seconds=5.0)
    detector = LoopClosureDetector(loc, config)
    for i in range(60):  # 10 Hz, 0.0 .. 5.9 s
        assert detector.process_descriptor(route[i], stamp=i * 0.1).loop is None
    assert detector.process_descriptor(route[60], stamp=1006.0).loop is None  # the glitch
    # the robot stands still where it was 0.5 s ago: never a loop within the window
    results = [detector.process_descriptor(revisit(route, 55, 0.1, k), stamp=6.0 + 0.1 * k)
               for k in range(6)]
    assert [r.loop for r in results] == [None] * 6
    assert {r.best.place_id for r in results if r.best is not None} <= set(range(50))
    # the glitch's place (60) is held as if stamped 6.0: a candidate 5 s later, not in 1000 s
    for k in range(6, 50):
        detector.process_descriptor(route[70 + k % 10], stamp=6.0 + 0.1 * k)
    later = [detector.process_descriptor(revisit(route, 60, 0.05, k), stamp=11.5 + 0.1 * k)
             for k in range(3)]
    assert later[-1].loop is not None and later[-1].loop.match_id == 60
    assert len(detector._recent_stamps) <= 5.0 / 0.1 + 2 / 0.1  # window + JUMP_BACK margin


def test_a_still_robot_with_jittery_stamps_makes_no_loops(tiny) -> None:
    """A robot waiting 20 s at a door (the same view) at 5 Hz, one keyframe 1 ms out of
    order: every keyframe after it was a "loop" to one up to 12 s old in a 30 s window."""
    from vpr_edge.index import PlaceIndex

    standing_still = unit(np.eye(tiny.DIM)[0])
    detector = LoopClosureDetector(PlaceIndex(tiny.DIM),
                                   LoopClosureConfig(exclusion_seconds=30.0))
    stamps = [i * 0.2 for i in range(100)]
    stamps[60] = stamps[59] - 0.001
    assert [s for s in stamps
            if detector.process_descriptor(standing_still, stamp=s).loop] == []


def test_a_batch_is_refused_naming_the_fix(loc: Localizer, route: np.ndarray) -> None:
    detector = LoopClosureDetector(loc, LoopClosureConfig())
    with pytest.raises(InvalidInputError, match="one keyframe at a time"):
        detector.process_descriptor(route[:2])
    frames = np.zeros((2, 24, 32, 3), np.uint8)
    described = []
    real_describe = loc.describe
    loc.describe = lambda *a, **k: described.append(1) or real_describe(*a, **k)
    # refused before the inference, naming the frames' shape (it named a descriptor's)
    for batch in (frames, list(frames)):
        with pytest.raises(InvalidInputError, match=r"one frame at a time.*got (a list of 2|"
                                                    r"an array of shape \(2, 24, 32, 3\))"):
            detector.process(batch)
    assert described == []


@pytest.mark.parametrize("changes", [{"exclusion_seconds": float("inf")},
                                     {"exclusion_seconds": "5"}, {"min_score": None},
                                     {"verify": True, "verify_config": None}])
def test_config_values_of_the_wrong_kind_are_refused(changes) -> None:
    with pytest.raises(InvalidInputError, match="LoopClosureConfig"):
        LoopClosureConfig(**changes)


def test_recall_at_full_precision_counts_every_wrong_loop() -> None:
    from vpr_edge.loop_metrics import recall_at_full_precision

    rows = [{"precision": 1.0, "recall": 0.8333, "reported": 25000, "correct": 24999},
            {"precision": 1.0, "recall": 0.5, "reported": 100, "correct": 100}]
    assert recall_at_full_precision(rows) == 0.5


def test_a_detector_of_something_else_is_refused_clearly(loc: Localizer) -> None:
    """AttributeError: 'str' object has no attribute 'index' (or 'min_score')."""
    with pytest.raises(InvalidInputError, match="takes a Localizer or a PlaceIndex, got str"):
        LoopClosureDetector("foo")
    with pytest.raises(InvalidInputError, match="config must be a LoopClosureConfig, got dict"):
        LoopClosureDetector(loc, {"min_score": 0.3})


@pytest.mark.parametrize("frames, kept", [(50, 50), (50, 10), (0, 0), (300, 200)])
def test_feature_places_all_inside_the_exclusion_window_are_refused(frames: int,
                                                                     kept: int) -> None:
    """verify=True keeps ORB features for the newest ``max_feature_places`` places only; with
    no more of them than ``exclusion_frames`` they are all excluded and no loop can ever be
    verified, which was accepted silently."""
    with pytest.raises(InvalidInputError, match=r"exclusion_frames \(\d+\) must be less than "
                                                r"max_feature_places \(\d+\) with verify"):
        LoopClosureConfig(verify=True, exclusion_frames=frames, max_feature_places=kept)
    LoopClosureConfig(verify=False, exclusion_frames=frames, max_feature_places=kept)
    LoopClosureConfig(verify=True, exclusion_frames=frames, max_feature_places=frames + 1)


def test_verify_without_adding_to_the_map_is_refused_unless_unverified_loops_are_wanted(
        ) -> None:
    """ORB features are kept only for places the detector adds: verify=True with
    add_to_map=False reported nothing, ever, and was accepted silently."""
    with pytest.raises(InvalidInputError, match="verify=True with add_to_map=False reports "
                                                "nothing.*report_unverifiable=True"):
        LoopClosureConfig(verify=True, add_to_map=False)
    LoopClosureConfig(verify=True, add_to_map=False, report_unverifiable=True)
    LoopClosureConfig(verify=False, add_to_map=False)


def test_features_dropped_inside_the_time_window_warn(route: np.ndarray, tiny,
                                                      caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A time window cannot be checked against the cap on feature places before the frame
    rate is known: the detector warns once when it drops a place's features while that
    place is still excluded, and finds no verified loop (the revisit of place 2 below)."""
    pytest.importorskip("cv2")
    from vpr_edge import loop_closure
    from vpr_edge.index import PlaceIndex

    monkeypatch.setattr(loop_closure, "count_inliers", lambda a, b, config: 40)

    def detector(kept: int) -> LoopClosureDetector:
        return LoopClosureDetector(PlaceIndex(tiny.DIM), LoopClosureConfig(
            min_score=0.8, consistency=1, exclusion_frames=0, exclusion_seconds=10.0,
            verify=True, max_feature_places=kept))

    for kept, warned in ((5, True), (20, False)):
        caplog.clear()
        found = detector(kept)
        with caplog.at_level("WARNING", logger="vpr_edge"):
            for i in range(15):  # 1 Hz: 5 places are 5 s of a 10 s window
                found.process_descriptor(route[i], stamp=float(i), features=_Features())
            loop = found.process_descriptor(revisit(route, 2, 0.1, 1), stamp=15.0,
                                             features=_Features()).loop
        warnings = [r.getMessage() for r in caplog.records if "max_feature_places" in r.message]
        assert len(warnings) == (1 if warned else 0), warnings
        assert (loop is None) == warned
        if warned:
            assert "max_feature_places=5 holds only 5 s" in warnings[0]
            assert "exclusion_seconds=10" in warnings[0]
