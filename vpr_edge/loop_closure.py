"""Loop-closure detection: "have I been here before?" for a stream of camera frames.

:class:`LoopClosureDetector` sits on a :class:`~vpr_edge.Localizer`. For each keyframe it
queries the map (leaving out the frames just seen), keeps candidates above a score, reports
a loop only when several successive frames agree on the same stretch of the map, optionally
checks the geometry with ORB + RANSAC, and then adds the frame to the map. The ROS nodes in
``ros_examples/`` are thin adapters over this class.

Defaults follow practice: ORB-SLAM (2) accepts a loop candidate that stays consistent over
3 more keyframes after the one that found it (``mnCovisibilityConsistencyTh = 3``: 4 keyframes,
``consistency=4`` here; the default 3 reports a keyframe sooner); VINS-Mono searches only the
keyframes at least 50 older than the current one (``frame_index - 50``: the newest 49 are left
out, 50 here).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._optional import require
from .errors import InvalidInputError
from .geometric import OrbFeatures, VerifyConfig, count_inliers, orb_features
from .images import as_rgb_frame, load_image
from .index import PlaceMatch, validate
from .plain_numbers import plain_numbers
from .poses import JUMP_BACK_SECONDS, PoseValues, StreamClock

log = logging.getLogger("vpr_edge")

#: Seconds of float rounding allowed at the ``exclusion_seconds`` boundary: a keyframe exactly
#: that old is a candidate (10 Hz stamps ``i * 0.1`` put 1.0 - 0.3 below 0.7000000000000001).
STAMP_TOLERANCE = 1e-6
#: With ``exclusion_seconds``, stamps beyond this many seconds (the year 5138) are refused:
#: they are milli-, micro- or nanoseconds (epoch ns are about 1.8e18), and a window of
#: seconds measured on them excluded nothing.
MAX_STAMP_SECONDS = 1e11


@dataclass(frozen=True)
class LoopClosureConfig:
    """Parameters of :class:`LoopClosureDetector`.

    Attributes:
        exclusion_frames: the last ``exclusion_frames`` keyframes this detector added are
            never loop candidates (they are trivially similar to the current one).
            VINS-Mono: 50. Places of a map opened from disk are not counted: a robot that
            starts again where its last session ended can close a loop with its last places.
        exclusion_seconds: also exclude the keyframes this detector added less than this
            many seconds before the current frame (by their stamps; needs stamps; one exactly
            that old is a candidate); None disables the time window. Time that jumps back
            by more than :data:`JUMP_BACK_SECONDS` (1 s) from the newest keyframe (a bag
            played in a loop, a restarted simulator) starts the window afresh: places
            stamped "later" than now, from before the jump or from a map saved earlier, stay
            candidates. A keyframe stamped less before the newest is merely out of order: its
            window is measured from its own stamp, and the newer keyframes stay excluded.
            Nor does time jump back when the stream goes on from where it was before one
            keyframe stamped far ahead (a corrupt stamp, :class:`~vpr_edge.poses.StreamClock`):
            the window keeps its places, and holds that keyframe as if stamped like the one
            after it. Stamps beyond :data:`MAX_STAMP_SECONDS` (milli- to nanoseconds) are refused.
        min_score: candidates below this cosine similarity are ignored. NetVLAD scores are
            compressed (7168-d descriptors: the same place scores about 0.2-0.45, other
            places about 0-0.3), so this depends on the model: with the default model on
            Gardens Point (scripts/demo.sh) 0.30 gave precision 0.93 / recall 0.81 and 0.40
            precision 1.0 / recall 0.10. Calibrate it on your route
            (``vpr-edge loops --gt names --sweep`` prints the precision-recall curve).
        consistency: a loop is reported when this many successive keyframes each have a
            candidate close (``consistency_radius``) to the previous one's, the first
            keyframe of the chain included.
            1 reports every candidate above ``min_score``. Stamps that jump back by more
            than :data:`JUMP_BACK_SECONDS` end every chain (the frames are not successive).
            (ORB-SLAM's threshold of 3 counts the keyframes after the first, so it is 4 here.)
        consistency_radius: how far apart (in keyframes of the map, i.e. order of insertion)
            two successive candidates may be and still agree.
        candidates: map places considered per keyframe (top-k of the search).
        verify: check candidates geometrically (ORB + RANSAC on the fundamental matrix;
            needs ``vpr-edge[verify]``); only verified loops are reported. The check needs
            the matched place's ORB features, which the detector keeps in memory for the
            places it added (``max_feature_places``): places of a map opened from disk, or
            dropped from memory, cannot be checked and are skipped, unless
            ``report_unverifiable``.
        verify_config: the geometric check's parameters (min inliers etc.).
        max_feature_places: ORB features are kept in memory for at most this many recent
            places (about 36 KB each with 1000 features). With ``verify`` it must exceed
            ``exclusion_frames``: the places keeping features would otherwise all be inside
            the exclusion window, and no loop could ever be verified. The same holds for
            ``exclusion_seconds``, which depends on the frame rate: a place whose features are
            dropped while it is still inside the time window logs a warning (once).
        report_unverifiable: with ``verify``, also report loops to places that cannot be
            checked, with ``verified=None`` (for example against a map from an earlier
            session, whose images are not kept). False: skip them.
        add_to_map: add every processed keyframe to the map after searching it. False with
            ``verify`` needs ``report_unverifiable`` (no place would have features to check).
    """

    exclusion_frames: int = 50
    exclusion_seconds: float | None = None
    min_score: float = 0.3
    consistency: int = 3
    consistency_radius: int = 3
    candidates: int = 5
    verify: bool = False
    verify_config: VerifyConfig = VerifyConfig()
    max_feature_places: int = 20000
    report_unverifiable: bool = False
    add_to_map: bool = True

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems = []
        for name in ("exclusion_frames", "consistency_radius", "max_feature_places"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name} must be an int >= 0, got {value!r}")
        for name in ("consistency", "candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be an int >= 1, got {value!r}")
        if not (isinstance(self.min_score, numbers.Real) and not isinstance(self.min_score, bool)
                and -1.0 <= self.min_score <= 1.0):
            problems.append(f"min_score must be a number in [-1, 1], got {self.min_score!r}")
        for name in ("verify", "report_unverifiable", "add_to_map"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.verify_config, VerifyConfig):
            problems.append(f"verify_config must be a VerifyConfig, got "
                            f"{self.verify_config!r}: VerifyConfig(min_inliers=...)")
        if self.exclusion_seconds is not None and not (
                isinstance(self.exclusion_seconds, numbers.Real)
                and not isinstance(self.exclusion_seconds, bool)
                and 0 <= self.exclusion_seconds < math.inf):
            problems.append(f"exclusion_seconds must be finite seconds >= 0 or None, got "
                            f"{self.exclusion_seconds!r}")
        if (self.verify is True
                and not any(p.startswith(("max_feature_places", "exclusion_frames"))
                            for p in problems)
                and self.max_feature_places <= self.exclusion_frames):
            problems.append(
                f"exclusion_frames ({self.exclusion_frames}) must be less than "
                f"max_feature_places ({self.max_feature_places}) with verify=True: ORB features "
                f"are kept for the newest {self.max_feature_places} places only, which are all "
                f"inside the exclusion window, so no loop could ever be verified (a window of "
                f"{self.max_feature_places} keyframes or more needs max_feature_places raised, "
                f"in the Python API)")
        if self.verify is True and self.add_to_map is False and self.report_unverifiable is False:
            problems.append(
                "verify=True with add_to_map=False reports nothing: ORB features are kept only "
                "for the places this detector adds, so no candidate can be verified; set "
                "add_to_map=True, report_unverifiable=True (loops then come with "
                "verified=None), or verify=False")
        if problems:
            raise InvalidInputError("LoopClosureConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class LoopClosure:
    """A detected loop: the current keyframe matches an earlier place.

    Attributes:
        query_id: place id the current keyframe got in the map (None if not added).
        query_stamp: the current keyframe's stamp.
        match_id, match_stamp, match_pose: the earlier place.
        score: cosine similarity of the two descriptors.
        verified: True if geometry confirmed it, None if not checked (``verify=False``, or
            ``report_unverifiable`` and no stored features for the match).
        inliers: RANSAC inliers (None if not checked).
        consistent_frames: successive keyframes that agreed (>= ``consistency``).
        match_meta: the earlier place's metadata (a copy; the ROS nodes keep its image's
            exact header stamp there, as ``ros_stamp``).
    """

    query_id: int | None
    query_stamp: float | None
    match_id: int
    match_stamp: float | None
    score: float
    verified: bool | None
    inliers: int | None
    match_pose: tuple[float, ...] | None
    consistent_frames: int
    match_meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FrameResult:
    """What happened to one processed keyframe (for logs, plots and precision-recall)."""

    place_id: int | None
    best: PlaceMatch | None
    loop: LoopClosure | None


def check_stamp_unit(stamp: float | None, config: LoopClosureConfig) -> None:
    """Refuse a stamp beyond :data:`MAX_STAMP_SECONDS` when ``config`` has a time window
    (``exclusion_seconds``): it is not in seconds, and the window would exclude nothing.
    Called by the detector, and up front by the CLI and the ROS node core."""
    if config.exclusion_seconds is not None and stamp is not None \
            and abs(stamp) > MAX_STAMP_SECONDS:
        raise InvalidInputError(
            f"stamp {stamp!r} is not in seconds (beyond {MAX_STAMP_SECONDS:.0e} s: milli-, "
            "micro- or nanoseconds?), so exclusion_seconds would exclude nothing: pass "
            "seconds (ROS: vpr_edge.poses.stamp_seconds(header); nanoseconds / 1e9)")


class LoopClosureDetector:
    """Detect loop closures in a stream of keyframes::

        detector = LoopClosureDetector(localizer, LoopClosureConfig(min_score=0.3))
        loop = detector.process(frame, stamp=t, pose=pose)   # LoopClosure or None

    ``localizer`` is a :class:`~vpr_edge.Localizer`; for descriptors computed elsewhere a
    bare :class:`~vpr_edge.index.PlaceIndex` works too (then only
    :meth:`process_descriptor` is available). Not thread-safe by itself (feed it from one
    thread); the map may be queried from other threads meanwhile.

    Places added to the map by another writer (a second camera's detector, a map-building
    thread) while this detector runs have no position along this detector's route: it
    numbers the places of the map when it is created, then the keyframes it adds itself. A
    candidate without a position starts no chain and continues none (its chain length is
    always 1), so with ``consistency >= 2`` such places never form a loop, however often they
    match; a keyframe whose candidates are all such places also ends the chains in progress.
    With ``consistency=1`` they are reported like any other place above ``min_score``, and as
    soon as they are added, since the exclusion windows hold only this detector's own
    keyframes. With ``verify`` they have no ORB features here, so they are skipped (or
    reported with ``verified=None`` under ``report_unverifiable``). A detector created later
    on the same map numbers them like the rest.
    """

    def __init__(self, localizer: Any, config: LoopClosureConfig = LoopClosureConfig()) -> None:
        from .index import PlaceIndex

        if not isinstance(config, LoopClosureConfig):
            raise InvalidInputError(f"config must be a LoopClosureConfig, got "
                                    f"{type(config).__name__}: LoopClosureConfig(min_score=...)")
        if isinstance(localizer, PlaceIndex):
            self.localizer, self.index = None, localizer
        elif isinstance(getattr(localizer, "index", None), PlaceIndex):
            self.localizer, self.index = localizer, localizer.index
        else:
            raise InvalidInputError(f"LoopClosureDetector takes a Localizer or a PlaceIndex, got "
                                    f"{type(localizer).__name__}")
        self.config = config
        # place id -> position in insertion order ("where along the route" it was added);
        # places added to the map by anything else have none, and never agree
        self._order: dict[int, int] = {pid: i for i, pid in enumerate(self.index.ids())}
        self._next_order = len(self._order)
        # the places this detector added last (the frame exclusion window): its own, not
        # the map's newest, which another writer (a second camera) may have added
        self._recent: dict[int, None] = {}  # oldest first (an ordered set)
        # the time window: this detector's keyframes since time last jumped back, with their
        # stamps (in the order added), and the time of their stamps
        self._recent_stamps: dict[int, float] = {}
        self._clock = StreamClock()
        self._chains: list[tuple[int | None, int]] = []  # (order of candidate, chain length)
        self._frame_clock = StreamClock()  # of any keyframe: chains end when time restarts
        self._features: OrderedDict[int, OrbFeatures] = OrderedDict()
        self._warned_features = False
        if config.verify:  # a missing OpenCV fails at start-up, not at the first loop
            require("cv2", extra="verify", purpose="LoopClosureConfig(verify=True)")

    def reset(self) -> None:
        """Forget the consistency state (e.g. after the robot was carried elsewhere)."""
        self._chains = []

    def process(self, frame: Any, *, stamp: float | None = None,
                pose: PoseValues | None = None, meta: dict[str, Any] | None = None,
                colour_order: str | None = None) -> LoopClosure | None:
        """Process one keyframe; return a loop closure or None."""
        return self.process_frame(frame, stamp=stamp, pose=pose, meta=meta,
                                  colour_order=colour_order).loop

    def process_frame(self, frame: Any, *, stamp: float | None = None,
                      pose: PoseValues | None = None, meta: dict[str, Any] | None = None,
                      colour_order: str | None = None) -> FrameResult:
        """Like :meth:`process`, but also returns the frame's place id and best match."""
        if self.localizer is None:
            raise InvalidInputError("this detector works on a bare index: use "
                                    "process_descriptor(), or build it on a Localizer")
        order = colour_order or self.localizer.colour_order
        if isinstance(frame, (str, os.PathLike)):
            frame, order = load_image(frame), "RGB"
        elif isinstance(frame, (list, tuple)) or np.ndim(frame) == 4:  # before the inference
            what = (f"a list of {len(frame)}" if isinstance(frame, (list, tuple))
                    else f"an array of shape {np.shape(frame)}")
            raise InvalidInputError(
                f"the detector takes one frame at a time (HxWx3 or HxW), got {what}: call "
                "it once per frame, in time order")
        features = None
        if self.config.verify:  # ORB needs the full frame; convert it once for both
            frame, order = as_rgb_frame(frame, order), "RGB"
            features = orb_features(frame, self.config.verify_config)
        descriptor = self.localizer.describe(frame, colour_order=order)
        return self.process_descriptor(descriptor, stamp=stamp, pose=pose, meta=meta,
                                       features=features)

    def process_descriptor(self, descriptor: np.ndarray, *, stamp: float | None = None,
                           pose: PoseValues | None = None,
                           meta: dict[str, Any] | None = None,
                           features: OrbFeatures | None = None) -> FrameResult:
        """The detector's core, for a descriptor already computed (with ``verify``, pass the
        frame's ``features=orb_features(rgb, config.verify_config)``)."""
        cfg = self.config
        if np.ndim(descriptor) != 1:
            raise InvalidInputError(
                f"the detector takes one keyframe at a time (a descriptor of shape (dim,)), "
                f"got shape {np.shape(descriptor)}: call it once per frame, in time order")
        if cfg.exclusion_seconds is not None and stamp is None:
            raise InvalidInputError("exclusion_seconds is set, so every frame needs a stamp: "
                                    "pass stamp= (seconds), or use exclusion_frames instead")
        if cfg.verify and features is None:
            other = "" if self.localizer is None else ", or use process_frame()"
            raise InvalidInputError(
                "verify=True needs the frame's ORB features: pass features="
                f"vpr_edge.geometric.orb_features(rgb, config.verify_config){other}")
        if features is not None and not isinstance(features, OrbFeatures):
            raise InvalidInputError(
                f"features must be vpr_edge.geometric.OrbFeatures, got "
                f"{type(features).__name__}: features=orb_features(rgb, config.verify_config)")
        with validate.single_place_names():  # the time window needs the stamp now
            validate.stamps(stamp, 1, single=True)
        stamp = None if stamp is None else float(stamp)  # a numpy one, too: loops go to JSON
        check_stamp_unit(stamp, cfg)
        self._end_chains_if_time_jumped_back(stamp)
        matches = self.index.query(
            descriptor, cfg.candidates, min_score=cfg.min_score,
            # a filter, not exclude_ids, which the index turns into a mask and a set on every
            # query: 0.52 ms instead of 0.10 with a 5000-frame window at 20k 512-d places
            filter=self._exclusion_filter(stamp),
        )
        chains, state = self._extend_chains(matches)
        place_id = None
        if cfg.add_to_map:  # a frame the map refuses (a NaN pose...) changes nothing here
            with validate.single_place_names():
                (place_id,) = self.index.add(descriptor, stamps=stamp, poses=pose, meta=meta)
            self._order[place_id] = self._next_order
            self._next_order += 1
            self._remember_recent(place_id)
            if cfg.exclusion_seconds is not None:
                self._remember_stamp(place_id, float(stamp))
            if features is not None:
                self._remember(place_id, features)
        self._chains = state
        loop = self._report(matches, chains, place_id, stamp, features)
        return FrameResult(place_id=place_id, best=matches[0] if matches else None, loop=loop)

    # -- internals -----------------------------------------------------------------------
    def _exclusion_filter(self, stamp: float | None) -> Callable[[int], bool] | None:
        """The search filter of the exclusion windows (None when nothing is excluded). It
        changes nothing: the windows move once the frame is in the map."""
        recent = self._recent
        window = self.config.exclusion_seconds
        timed = {} if window is None or self._clock.restarts_at(stamp) else self._recent_stamps
        if not timed:
            return (lambda pid: pid not in recent) if recent else None
        cutoff = stamp - window + STAMP_TOLERANCE
        return lambda pid: pid not in recent and timed.get(pid, -math.inf) <= cutoff

    def _end_chains_if_time_jumped_back(self, stamp: float | None) -> None:
        """Keyframes before and after a jump back in time (a restarted simulator, a looped
        bag) are not successive: a chain begun before it was completed by the first frame
        after it. The jump ends the chains (as :meth:`reset` does)."""
        if stamp is None:
            return
        if self._frame_clock.restarts_at(stamp):
            self._chains = []
        self._frame_clock.advance(stamp)

    def _remember_stamp(self, place_id: int, stamp: float) -> None:
        """Put a place the detector added in the time window (after a jump back, in a new
        one), and drop the places no later keyframe's window can hold."""
        timed, clock, window = self._recent_stamps, self._clock, self.config.exclusion_seconds
        if clock.restarts_at(stamp):
            log.warning("keyframe stamps jumped back by %.3f s (a looped bag, a restarted "
                        "simulator?): the exclusion_seconds window starts afresh",
                        clock.newest - stamp)
            timed.clear()
        elif clock.returns_at(stamp):
            log.warning("a keyframe was stamped %.3f s ahead of the ones around it (a corrupt "
                        "stamp?): it stays in the exclusion_seconds window as if stamped %.3f",
                        clock.newest - stamp, stamp)
            for pid, seen in timed.items():  # (so the window's oldest still come first)
                if seen > stamp + window:
                    timed[pid] = stamp
        clock.advance(stamp)
        timed[place_id] = stamp
        # a later keyframe is stamped at least clock.trusted - JUMP_BACK_SECONDS (or starts
        # afresh)
        gone = clock.trusted - JUMP_BACK_SECONDS - window + STAMP_TOLERANCE
        while timed and next(iter(timed.values())) <= gone:
            del timed[next(iter(timed))]

    def _extend_chains(self, matches: list[PlaceMatch]
                       ) -> tuple[list[int], list[tuple[int | None, int]]]:
        """Each match's chain length, and the chains to keep once the frame is in."""
        radius = self.config.consistency_radius
        lengths = []
        for match in matches:
            where = self._order.get(match.place_id)
            previous = [] if where is None else [n for order, n in self._chains
                                                 if order is not None
                                                 and abs(order - where) <= radius]
            lengths.append(1 + max(previous, default=0))
        return lengths, [(self._order.get(m.place_id), n) for m, n in zip(matches, lengths)]

    def _report(self, matches: list[PlaceMatch], chains: list[int], place_id: int | None,
                stamp: float | None, features: OrbFeatures | None) -> LoopClosure | None:
        for match, chain in zip(matches, chains):  # best score first
            if chain < self.config.consistency:
                continue
            verified, inliers = None, None
            if self.config.verify:  # process_descriptor made sure features were given
                stored = self._features.get(match.place_id)
                if stored is None and not self.config.report_unverifiable:
                    continue  # cannot be checked (a place from disk, or features dropped)
                if stored is not None:
                    inliers = count_inliers(features, stored, self.config.verify_config)
                    verified = inliers >= self.config.verify_config.min_inliers
                    if not verified:
                        continue
            return LoopClosure(
                query_id=place_id, query_stamp=stamp, match_id=match.place_id,
                match_stamp=match.stamp, score=match.score, verified=verified,
                inliers=inliers, match_pose=match.pose, consistent_frames=chain,
                match_meta=match.meta,
            )
        return None

    def _remember_recent(self, place_id: int) -> None:
        recent = self._recent
        recent[place_id] = None
        while len(recent) > self.config.exclusion_frames:
            del recent[next(iter(recent))]

    def _remember(self, place_id: int, features: OrbFeatures) -> None:
        self._features[place_id] = features
        while len(self._features) > self.config.max_feature_places:
            dropped, _ = self._features.popitem(last=False)
            self._warn_if_still_excluded(dropped)

    def _warn_if_still_excluded(self, dropped: int) -> None:
        """Warn (once) when a place's features are dropped before the time window let it be a
        candidate: at this frame rate ``max_feature_places`` holds less than
        ``exclusion_seconds`` of keyframes, so no loop can be verified."""
        window = self.config.exclusion_seconds
        stamp = self._recent_stamps.get(dropped)
        newest = self._clock.trusted
        if (window is None or stamp is None or newest is None or self._warned_features
                or stamp <= newest - window + STAMP_TOLERANCE):
            return
        self._warned_features = True
        log.warning(
            "max_feature_places=%d holds only %.3g s of keyframes at this frame rate, less "
            "than exclusion_seconds=%g: a place's ORB features are dropped while it is still "
            "excluded, so verify=True can verify no loop; raise max_feature_places (or lower "
            "exclusion_seconds)", self.config.max_feature_places, newest - stamp, window)
