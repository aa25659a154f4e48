"""The logic of the ROS loop-closure nodes, without ROS: frames in, loop closures out.

``ros_examples/`` holds thin ROS 1 / ROS 2 adapters that convert messages and call this class;
everything that decides something lives here and is tested without ROS.

Frames arrive on the middleware's thread (:meth:`LoopClosureNode.on_image`), which only does
cheap work: the keyframe decision and putting the frame in a **one-slot mailbox**. A worker
thread takes the newest frame from the mailbox, describes it, runs the
:class:`~vpr_edge.loop_closure.LoopClosureDetector` and calls ``publish(loop)``. A frame that
arrives while the worker is busy replaces the waiting one (counted as ``dropped_busy``), so the
node keeps up with any camera rate by dropping frames, never by growing a queue.

Poses go to the map at the map's own length: a map built with ``x, y`` poses (``--list`` with
two pose columns) gets the ``x, y`` of each odometry pose, not all seven values (which it
would refuse).
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import numbers
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_file import atomic_write
from .errors import InvalidInputError, MapError, VprEdgeError
from .keyframes import KeyframeConfig, KeyframePolicy
from .loop_closure import LoopClosure, LoopClosureConfig, LoopClosureDetector, check_stamp_unit
from .plain_numbers import plain_numbers
from .poses import JUMP_BACK_SECONDS, Pose, PoseTrack, StreamClock, jumped_back

log = logging.getLogger("vpr_edge.loop_node")

#: Odometry older than the newest pose by this many seconds is forgotten (at 100 Hz a node
#: otherwise gathers 70 MB of poses an hour); image stamps lag far less.
POSE_HISTORY_SECONDS = 60.0
#: loops whose latency the node's summary keeps (its p50/p95 are over these)
LATENCY_WINDOW = 1000
#: Odometry often trails the camera (VIO or an EKF: 50-150 ms). With motion keyframes, a
#: frame stamped after the newest pose, by at most this many seconds (or before the first),
#: waits (at most as long) for odometry past its stamp, so that the keyframe decision and the
#: pose stored with the place use the pose at its stamp: decided at once, it had none, and
#: motion keyframing fell back to keyframe_every_n (every frame a keyframe, no pose stored,
#: at 120 ms of lag). Keyframes by count wait as well once there is odometry (for the pose
#: stored with their place); without any, they are decided at once, as they come.
POSE_WAIT_SECONDS = 0.5
#: Frames waiting for odometry at most (each holds its message: 0.5 s of a 60 Hz camera):
#: beyond, the oldest is decided with what odometry there is.
MAX_WAITING_FRAMES = 32
#: At close, the worker gets this long to take the keyframes waiting for it (those decided at
#: close among them) before it stops and the map is saved; those left count as dropped_busy.
CLOSE_DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class NodeConfig:
    """Everything the ROS nodes expose as parameters (see ros_examples/README.md); checked
    when made (:class:`~vpr_edge.errors.InvalidInputError` names every bad field)."""

    model: str
    map_dir: str | None = None
    backend: str = "auto"
    detector: LoopClosureConfig = field(default_factory=LoopClosureConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    pose_max_gap: float = 0.1
    save_on_shutdown: bool = True
    #: with ``map_dir`` and ``save_on_shutdown``: save the changed map this often (finite; 0:
    #: only at shutdown and on request), so a power cut loses at most this many seconds of places
    autosave_seconds: float = 60.0

    def __post_init__(self) -> None:
        plain_numbers(self)
        problems = []
        if not _is_path(self.model):
            problems.append(f"model must be the path of the exported model (.onnx or .engine), "
                            f"got {self.model!r}")
        if self.map_dir is not None and not _is_path(self.map_dir):
            problems.append(f"map_dir must be a path, or None for a map kept in memory, got "
                            f"{self.map_dir!r}")
        if not isinstance(self.backend, str):
            problems.append(f"backend must be a str such as 'auto', got {self.backend!r}")
        for name, kind in (("detector", LoopClosureConfig), ("keyframes", KeyframeConfig)):
            if not isinstance(getattr(self, name), kind):
                problems.append(f"{name} must be a {kind.__name__}, got "
                                f"{getattr(self, name)!r}")
        if not (_is_number(self.pose_max_gap) and self.pose_max_gap > 0):
            problems.append(f"pose_max_gap must be > 0 seconds, got {self.pose_max_gap!r}")
        if not isinstance(self.save_on_shutdown, bool):
            problems.append(f"save_on_shutdown must be True or False, got "
                            f"{self.save_on_shutdown!r}")
        if not (_is_number(self.autosave_seconds) and 0 <= self.autosave_seconds < math.inf):
            problems.append(f"autosave_seconds must be >= 0 and finite seconds (0: off), got "
                            f"{self.autosave_seconds!r}")
        if problems:
            raise InvalidInputError("NodeConfig: " + "; ".join(problems))


@dataclass
class NodeStats:
    """A node's counters. Every received frame ends in exactly one of ``processed``,
    ``dropped_policy``, ``dropped_busy``, ``dropped_reset``, ``errors`` or, as a bad image,
    ``problems`` (by kind; the odometry kinds there count poses, or frames that were decided
    all the same). ``keyframes`` counts the frames the policy kept and that were converted."""

    received: int = 0
    keyframes: int = 0
    processed: int = 0
    dropped_policy: int = 0
    dropped_busy: int = 0
    #: frames of the old session that a reset() dropped: keyframes waiting for the worker or
    #: converted during it, and frames still waiting for odometry
    dropped_reset: int = 0
    errors: int = 0
    loops: int = 0
    #: loop closures found but not published (the publish callback raised)
    publish_failures: int = 0
    autosaves: int = 0
    autosave_failures: int = 0
    #: image-to-loop-closure latency of the last LATENCY_WINDOW loops (a node runs for hours)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    problems: dict[str, int] = field(default_factory=dict)  # bad input, by kind

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms)
        return {"received": self.received, "keyframes": self.keyframes,
                "processed": self.processed, "dropped_policy": self.dropped_policy,
                "dropped_busy": self.dropped_busy, "dropped_reset": self.dropped_reset,
                "errors": self.errors, "loops": self.loops,
                "publish_failures": self.publish_failures,
                "autosaves": self.autosaves, "autosave_failures": self.autosave_failures,
                "problems": dict(self.problems),
                "latency_ms_p50": float(np.median(lat)) if lat.size else None,
                "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None}


@dataclass(frozen=True)
class _Arrived:
    """A frame waiting for its keyframe decision (for odometry past its stamp)."""

    convert: Callable[[], Any]
    stamp: float
    arrived: float  # time.monotonic() when the message reached on_image
    session: int
    meta: dict[str, Any] | None = None  # the place's metadata, if it becomes one


@dataclass(frozen=True)
class _Pending:
    frame: np.ndarray
    colour_order: str
    stamp: float
    pose: Pose | None
    arrived: float  # time.monotonic() when the message reached on_image
    session: int  # LoopClosureNode's session when it arrived (reset() starts a new one)
    decision: int  # the _decide_waiting() call that made it a keyframe
    meta: dict[str, Any] | None = None


class LoopClosureNode:
    """Keyframe selection, a drop-oldest mailbox, a worker, and the detector.

    Args:
        config: the node's parameters.
        publish: called from the worker thread with each :class:`LoopClosure`.
        localizer: an open :class:`~vpr_edge.Localizer` (tests inject one); by default one is
            opened from ``config.model`` / ``config.map_dir``.
    """

    def __init__(self, config: NodeConfig, publish: Callable[[LoopClosure], None],
                 localizer: Any = None) -> None:
        self._owns_localizer = localizer is None  # closed with the node (its ONNX session)
        if localizer is None:
            from .localizer import Localizer

            localizer = Localizer(config.model, config.map_dir, backend=config.backend)
        try:
            _check_pose_width(localizer.index.pose_dim, config.map_dir)
        except MapError:
            if self._owns_localizer:
                localizer.close()
            raise
        self.config = config
        self.localizer = localizer
        self.detector = LoopClosureDetector(localizer, config.detector)
        self.policy = KeyframePolicy(config.keyframes)
        self.poses = _pose_track(config)
        self.stats = NodeStats()
        self._publish = publish
        # the mailbox: the newest keyframe, or those of the newest decision (one pose may
        # decide several waiting frames at once: they must not replace each other while the
        # worker is idle)
        self._mailbox: deque[_Pending] = deque()
        self._decision = 0  # counts _decide_waiting() calls: a keyframe's decision
        self._cond = threading.Condition()
        self._stop = False
        self._closing = False  # close() began: frames are refused, the waiting ones decided
        self._save_refused = False  # stop_without_saving() was called: close() must not save
        self._busy = False
        self._failure: BaseException | None = None  # what stopped the worker, if it died
        self._map_lock = threading.Lock()
        # places added or the map reset since it was opened or saved (or it was read from
        # what an interrupted save left: a save puts it back in place)
        self._changed = _read_from_a_crash(config.map_dir)
        self._changes = 0  # counts changes: a save clears _changed only if none came meanwhile
        self._last_save = time.monotonic()  # (or the start): when the next autosave is due
        self._saver: threading.Thread | None = None  # the latest autosave's thread
        # an autosave in progress: set by the worker, cleared (under _cond) by the saver when
        # done; not the thread's is_alive(), which is still True for a moment after the saver
        # woke the worker to time the next one
        self._autosaving = False
        self._session = 0
        self._pose_clock = StreamClock()  # the odometry's time (one corrupt stamp ahead too)
        self._poses_restarted = False  # odometry jumped back, images not yet
        self._last_image_stamp: float | None = None
        self._image_clock = StreamClock()  # (one corrupt stamp ahead is not a restart)
        # frames waiting for odometry, oldest first; the keyframe policy, the pose track and
        # these are used by the image and odometry callbacks (threads of their own in ROS 1)
        self._waiting: deque[_Arrived] = deque()
        self._input_lock = threading.RLock()
        self._had_odometry = False  # a motion keyframe decision had a pose (this session)
        self._frames_without_odometry = 0  # since odometry was lost (0: not lost)
        self._worker = threading.Thread(target=self._run, name="vpr-edge-loop-worker",
                                        daemon=True)
        self._worker.start()
        # a process that ends without close() would stop the worker in the middle of native
        # code (ONNX Runtime, hnswlib) and abort ("terminate called without an active
        # exception"), and lose the places since the last save
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)

    @property
    def failure(self) -> BaseException | None:
        """What stopped the worker thread (None while it runs): no frame is processed any
        more, and :meth:`on_image` raises; a ROS node then shuts down."""
        return self._failure

    # -- inputs (middleware threads) -------------------------------------------------------
    def report_problem(self, kind: str, error: Exception | str) -> None:
        """Count a bad input by kind; log the first of each kind (the rest only count)."""
        if self._count_problem(kind) == 1:
            log.warning("%s: %s (further ones are counted in the node's statistics, not "
                        "logged)", kind, error)

    def _count_problem(self, kind: str) -> int:
        """Count a bad input by kind, without a word; how many of that kind there were."""
        count = self.stats.problems.get(kind, 0) + 1
        self.stats.problems[kind] = count
        return count

    def on_pose(self, stamp: float, pose: Pose) -> None:
        """An odometry pose; out-of-order ones are kept (and counted); one stamped more than
        :data:`~vpr_edge.poses.JUMP_BACK_SECONDS` before the newest starts a new
        history (time jumped back), and is not counted, unless the newest was one pose
        stamped far ahead that the odometry now comes back from (a corrupt stamp:
        :class:`~vpr_edge.poses.StreamClock`): that pose is dropped, and counted as
        "odometry stamp far ahead". A stamp that is not finite seconds raises
        :class:`InvalidInputError` (as :meth:`on_image` does)."""
        if not (_is_number(stamp) and math.isfinite(stamp)):
            raise InvalidInputError(f"a pose's stamp must be finite seconds, got {stamp!r}")
        with self._input_lock:
            clock = self._pose_clock
            last = clock.newest
            if clock.restarts_at(stamp):
                log.warning("odometry stamps jumped back by %.3f s (a looped bag, a restarted "
                            "simulator?): the pose history starts again", last - stamp)
                self._poses_restarted = True  # images that jump back next keep these poses
            elif clock.returns_at(stamp):  # the PoseTrack drops that pose
                self.report_problem("odometry stamp far ahead",
                                    f"a pose stamped {last:.3f}, then one stamped "
                                    f"{stamp:.3f}: the first was a corrupt stamp, dropped")
            elif last is not None and stamp < last:
                self.report_problem("odometry out of order",
                                    f"pose stamped {stamp:.3f} after one stamped {last:.3f}")
            clock.advance(stamp)
            self.poses.add(stamp, pose)
            self._decide_waiting()

    def _restart_poses_if_time_jumped_back(self, stamp: float) -> None:
        """Image stamps that jump back by more than JUMP_BACK_SECONDS (a restarted simulator,
        a looped bag) start a new pose history, as odometry that jumps back does: frames that
        arrive before the new run's first odometry took the last run's poses at the same
        stamps, and kept them in the map. (Compared with the images before, not with odometry:
        images that lag the odometry by seconds are not a restart; nor is the new run's history
        cleared when its odometry jumped back first; nor is it by images that go on from
        before one stamped far ahead: :class:`~vpr_edge.poses.StreamClock`.)"""
        clock = self._image_clock
        restart, newest = clock.restarts_at(stamp), clock.newest
        clock.advance(stamp)
        if not restart:
            return
        restarted, self._poses_restarted = self._poses_restarted, False
        if restarted or not jumped_back(stamp, self._pose_clock.trusted):
            return
        log.warning("image stamps jumped back by %.3f s (a looped bag, a restarted "
                    "simulator?): the pose history starts again", newest - stamp)
        self.poses.clear()
        self._pose_clock = StreamClock()

    def on_image(self, convert: Callable[[], np.ndarray | tuple[np.ndarray, str]],
                 stamp: float, meta: dict[str, Any] | None = None) -> bool:
        """A camera frame arrived. ``convert`` turns the message into pixels: an RGB (or
        mono) array, or ``(pixels, colour_order)`` (``vpr_edge.ros_image.message_to_frame``);
        it is called only for keyframes, so skipped frames cost nothing. A malformed message
        is counted by kind (:meth:`report_problem`) and dropped; any other exception from
        ``convert`` is counted in ``errors`` and propagates, and the next frame takes this
        one's place as keyframe. ``meta`` is stored with the frame's place in the map, and
        comes back in the ``match_meta`` of loops to it (the ROS nodes keep the header's
        exact stamp there: ``vpr_edge.ros_messages.ExactStamps``). Returns True if the
        frame was queued (False after :meth:`close`, uncounted). Raises
        :class:`~vpr_edge.errors.VprEdgeError` once the worker has died (no frame would be
        processed again: restart the node)."""
        if self._closing:  # closed: a middleware callback may still fire while it shuts down
            return False
        if self._failure is not None:
            raise VprEdgeError(f"the loop-closure worker stopped ({self._failure!r}; its "
                               "traceback is in the log), so no frame is processed any more: "
                               "restart the node") from self._failure
        if not (_is_number(stamp) and math.isfinite(stamp)):
            raise InvalidInputError(f"stamp must be finite seconds, got {stamp!r} (from a "
                                    "message header: vpr_edge.poses.stamp_seconds(header))")
        check_stamp_unit(stamp, self.config.detector)  # here, not in the worker's log
        if meta is not None and not isinstance(meta, dict):
            raise InvalidInputError(f"meta must be a dict (a JSON object) or None, got "
                                    f"{type(meta).__name__}")
        arrived = time.monotonic()
        with self._input_lock:
            if self._closing:  # close() began meanwhile, and decided the waiting frames
                return False
            session = self._session  # a reset() while this frame is converted drops it
            self.stats.received += 1
            if stamp == self._last_image_stamp:  # would become a "loop" with itself
                self.report_problem("duplicate image stamp",
                                    f"a frame stamped {stamp:.6f} again (a republished "
                                    "message, a stuck camera driver or a one-frame bag in a "
                                    "loop): skipped")
                return False
            self._restart_poses_if_time_jumped_back(stamp)
            self._last_image_stamp = stamp
            frame = _Arrived(convert, stamp, arrived, session, meta)
            self._waiting.append(frame)
            return self._decide_waiting(frame)

    def _decide_waiting(self, own: _Arrived | None = None, everything: bool = False) -> bool:
        """Decide the waiting frames, oldest first, up to the first that still waits for
        odometry (:data:`POSE_WAIT_SECONDS`), or ``everything`` that waits (at close).
        Returns whether ``own`` (the caller's frame) was queued, or still waits (True). A
        converter's exception (counted in ``errors``) propagates for ``own``, and is logged
        for a frame decided on behalf of another (a pose, the worker, close())."""
        queued = True
        now = time.monotonic()
        decided = False
        self._decision += 1
        while self._waiting and (everything or len(self._waiting) > MAX_WAITING_FRAMES
                                 or not self._waits_for_odometry(self._waiting[0], now)):
            frame = self._waiting.popleft()
            decided = True
            if frame is own:
                queued = self._decide(frame)
                continue
            try:
                self._decide(frame)
            except Exception:  # a bug in a custom converter, raised here for another frame
                log.exception("the frame stamped %.3f could not be converted", frame.stamp)
        if decided or self._waiting:  # wait_idle() may be waiting; the worker decides the
            with self._cond:         # waiting ones when their time is up
                self._cond.notify_all()
        return queued

    def _waits_for_odometry(self, frame: _Arrived, now: float) -> bool:
        """Whether the frame has not waited its time, and odometry is coming but not yet
        past its stamp, by a little (a frame far ahead of it, a restart or a glitch, is
        decided at once), or, with keyframes that follow motion, has not come yet. Keyframes
        by count wait too once there is odometry, for the pose stored with their place: taken
        on arrival, it was the newest pose, from as long before the frame as the odometry
        trails the camera (up to ``pose_max_gap``), or none (beyond); without odometry they
        are decided at once (keyframes one pose decides together all reach the worker)."""
        if now - frame.arrived >= POSE_WAIT_SECONDS:
            return False
        span = self.poses.span()
        if span is None:
            return self.config.keyframes.uses_motion
        # the odometry's time, or a pose stamped far ahead of it that nothing followed yet:
        # a corrupt stamp (the track drops it when the odometry goes on from before it, and
        # the frames waiting for their poses were decided without them) or time that passed
        return any(newest < frame.stamp <= newest + POSE_WAIT_SECONDS
                   for newest in (self._pose_clock.trusted, span[1]))

    def _decide(self, arrived: _Arrived) -> bool:
        """The keyframe decision for a frame, with the pose at its stamp; a keyframe is
        converted and put in the mailbox. Whether it was."""
        stamp = arrived.stamp
        pose = self.poses.at(stamp) if len(self.poses) else None
        if self.config.keyframes.uses_motion:
            self._watch_odometry(stamp, pose)
        if not self.policy.accept(stamp=stamp, pose=pose):
            self.stats.dropped_policy += 1
            return False
        try:
            converted = arrived.convert()
        except VprEdgeError as exc:  # a malformed message, or Bayer pixels without OpenCV
            self.policy.unaccept()  # the next good frame takes its place as keyframe
            self.report_problem(getattr(exc, "kind", "bad image"), exc)
            return False
        except Exception:  # a bug in a custom converter: the middleware logs it
            self.policy.unaccept()
            self.stats.errors += 1
            raise
        except BaseException:  # Ctrl-C landing in the conversion (a ROS 2 node's thread)
            self.policy.unaccept()
            self.stats.dropped_busy += 1  # as a keyframe left at close is
            raise
        with self._cond:
            self.stats.keyframes += 1
            if arrived.session != self._session:  # from before a reset(), with old odometry
                self.stats.dropped_reset += 1
                return False
            mailbox = self._mailbox
            while mailbox and mailbox[0].decision != self._decision:  # drop-oldest
                mailbox.popleft()
                self.stats.dropped_busy += 1
            frame, order = converted if isinstance(converted, tuple) else (converted, "RGB")
            mailbox.append(_Pending(frame, order, stamp, pose, arrived.arrived,
                                    arrived.session, self._decision, arrived.meta))
            self._cond.notify()
        return True

    def _watch_odometry(self, stamp: float, pose: Pose | None) -> None:
        """A motion keyframe decision with a pose, or without one (counted as "no odometry at
        a frame"). Without one before any frame had one (a camera up before the odometry), or
        in a gap of the odometry (poses sparser than ``pose_max_gap``, messages lost), the
        first is logged; when the odometry ends more than ``pose_max_gap`` before a frame,
        after frames that had it, it is lost: said once, with its newest stamp, and once more
        when it is back, with the frames decided without it."""
        if pose is not None:
            if self._frames_without_odometry:
                log.info("odometry is back at the frame stamped %.3f: %d frame(s) were "
                         "decided without it (by keyframe_every_n, their places without a "
                         "pose)", stamp, self._frames_without_odometry)
            self._had_odometry, self._frames_without_odometry = True, 0
            return
        kind = "no odometry at a frame"
        reached = self._pose_clock.trusted  # not one pose stamped far ahead, held alone
        newest = "none yet" if reached is None else f"{reached:.3f} s"
        stopped = reached is None or reached < stamp - self.config.pose_max_gap
        if self._closing:  # odometry trailing the last frames is no loss
            self._count_problem(kind)
        elif not (self._had_odometry and stopped):
            self.report_problem(
                kind, f"no pose within pose_max_gap ({self.config.pose_max_gap} s) of the "
                f"frame stamped {stamp:.3f} (newest odometry: {newest}), so keyframe_every_n "
                "decided, and its place has no pose: is the odometry late or stopped, or "
                "sparser than pose_max_gap?")
        else:
            self._count_problem(kind)
            self._frames_without_odometry += 1
            if self._frames_without_odometry == 1:
                log.warning("odometry lost: no pose within pose_max_gap (%s s) of the frame "
                            "stamped %.3f (newest odometry: %s), so keyframe_every_n decides, "
                            "and places get no pose, until it is back: has it stopped?",
                            self.config.pose_max_gap, stamp, newest)

    @property
    def unsaved_changes(self) -> bool:
        """Whether the map has a directory and changes (places, a reset) no save holds yet."""
        return bool(self.config.map_dir) and self._changed

    # -- services --------------------------------------------------------------------------
    def save(self) -> str:
        """Save the map atomically; returns its directory. Keyframes go on being processed
        meanwhile (their adds wait only while the map's files are written, not while they
        are hashed and fsynced); the map counts as changed again if one was added."""
        with self._map_lock:
            changes = self._changes
        path = str(self.localizer.save())
        with self._map_lock:
            self._changed = self._changed and self._changes != changes
            self._last_save = time.monotonic()
        return path

    def reset(self) -> None:
        """Forget the map's places, the frames waiting for the worker or for odometry (counted
        as ``dropped_reset``), the odometry and the detector's state (a new session). The
        emptied map is saved like a changed one."""
        with self._map_lock, self._input_lock:
            with self._cond:
                self._session += 1
                # the old session's keyframes, and its frames not decided yet
                self.stats.dropped_reset += len(self._mailbox) + len(self._waiting)
                self._mailbox.clear()
                self._waiting.clear()
                self.poses = _pose_track(self.config)
                self._had_odometry, self._frames_without_odometry = False, 0
                self._pose_clock = StreamClock()
                self._last_image_stamp = None
                self._image_clock = StreamClock()
                self._poses_restarted = False
                self.policy = KeyframePolicy(self.config.keyframes)
            index = self.localizer.index
            ids = index.ids()
            if ids:
                index.remove(ids)
                index.rebuild()  # drops the removed places' rows for good
            self._changed = True
            self._changes += 1
            self.detector = LoopClosureDetector(self.localizer, self.config.detector)
        with self._cond:
            self._cond.notify_all()  # the worker's autosave timer starts now

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no frame waits for odometry, the mailbox is empty and the worker
        idle (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._mailbox or self._busy or self._waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Refuse frames from now on; decide the frames still waiting for odometry, with the
        odometry there is (as when their wait runs out); give the worker up to
        :data:`CLOSE_DRAIN_SECONDS` to take the keyframes waiting for it, then stop it (those
        left count as ``dropped_busy``) and an autosave in progress to finish; then save the
        map if configured to, it has a directory and it changed, and close the Localizer if
        the node opened it (one given to the node stays open). Called from the worker's own
        thread (a publish callback), it neither drains nor waits for the worker, which stops
        once the callback returns, and the Localizer stays open."""
        atexit.unregister(self._exit_hook)
        on_worker = threading.current_thread() is self._worker
        with self._input_lock:
            self._closing = True
            self._decide_waiting(everything=True)
        if self._failure is None and not on_worker:  # (a dead worker takes none)
            self.wait_idle(CLOSE_DRAIN_SECONDS)
        self._stop_worker(join=not on_worker)
        self._wait_for_autosave()
        try:
            if (self.config.save_on_shutdown and self.config.map_dir and self._changed
                    and not self._save_refused):
                self.save()
        finally:
            self._release_localizer()

    def stop_without_saving(self) -> None:
        """Stop at once: refuse frames, drop those waiting (``dropped_busy``), stop the
        worker after the frame it is processing, let an autosave in progress finish (a save
        cannot be stopped halfway), close the Localizer if the node opened it; the map is not
        saved. For a second Ctrl-C that cut :meth:`close` short (the worker would otherwise
        still run in native code as the process exits, and abort it). Called
        again, it does nothing more. Called from the worker's own thread (a publish
        callback), it does not wait for the worker, which stops once the callback returns,
        and the Localizer stays open (as with :meth:`close`). A :meth:`close` running on
        another thread then does not save either, nor does the worker autosave after its frame
        (unless the save had begun)."""
        self._save_refused = True
        atexit.unregister(self._exit_hook)
        with self._input_lock:
            self._closing = True
            self.stats.dropped_busy += len(self._waiting)
            self._waiting.clear()
        on_worker = threading.current_thread() is self._worker
        self._stop_worker(join=not on_worker)
        self._wait_for_autosave()
        self._release_localizer()

    def _release_localizer(self) -> None:
        """Close the Localizer if the node opened it and the worker and an autosave have
        stopped (each closed node kept its ONNX Runtime session, 20 MB, and a thread)."""
        saver = self._saver
        if (self._owns_localizer and not self._worker.is_alive()
                and not (saver is not None and saver.is_alive())):
            self.localizer.close()

    def _wait_for_autosave(self) -> None:
        """Let an autosave in progress finish (it cannot be stopped halfway; a save is
        atomic): the map must not be saved twice at once, nor closed under it."""
        saver = self._saver
        if saver is not None and saver is not threading.current_thread():
            saver.join()

    def _stop_worker(self, join: bool) -> None:
        """Stop the worker once its frame is done; the keyframes it had not taken count as
        ``dropped_busy``."""
        with self._cond:
            self._stop = True
            self.stats.dropped_busy += len(self._mailbox)
            self._mailbox.clear()
            self._cond.notify_all()
        if join:
            self._worker.join(timeout=30)

    def shutdown(self, stats_file: str | None = None) -> dict[str, Any]:
        """:meth:`close`, then the run's statistics (also written as JSON to ``stats_file``,
        even when the save at close fails). A KeyboardInterrupt that cuts :meth:`close` short
        (a second Ctrl-C) stops the node at once (:meth:`stop_without_saving`) before the
        statistics are written, so that they count every frame, and propagates. The file is
        written atomically; one that cannot be written (a full or read-only disk) is logged
        as an error, and neither hides how the close went (a failed save's error) nor
        keeps the statistics from the caller."""
        try:
            self.close()
        except KeyboardInterrupt:  # the frames still queued, and the worker's, are counted
            self.stop_without_saving()
            raise
        finally:
            summary = self.stats.summary()
            if stats_file:
                _write_statistics(stats_file, summary)
        return summary

    # -- worker ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # on_image says so from now on, instead of queueing
            self._failure = exc
            log.critical("the loop-closure worker stopped: no frame is processed any more; "
                         "restart the node", exc_info=True)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._mailbox and not self._stop:
                    due = _soonest(self._autosave_due_in(), self._waiting_due_in())
                    if due is not None and due <= 0:
                        break
                    self._cond.wait(None if due is None else min(due, threading.TIMEOUT_MAX))
                if self._stop:
                    return
                item = self._mailbox.popleft() if self._mailbox else None
                self._busy = True
            try:
                if item is not None:
                    self._process(item)
                due = self._waiting_due_in()
                if due is not None and due <= 0:  # odometry did not come: decide them now
                    self._decide_expired()
                due = self._autosave_due_in()
                if due is not None and due <= 0:
                    self._autosave()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _process(self, item: _Pending) -> None:
        """One keyframe: counted once, as processed, dropped_reset or errors."""
        try:
            with self._map_lock:
                if item.session != self._session:  # taken just before a reset()
                    self.stats.dropped_reset += 1
                    return
                result = self.detector.process_frame(
                    item.frame, stamp=item.stamp, colour_order=item.colour_order,
                    pose=self._pose_for_map(item.pose), meta=item.meta)
                if result.place_id is not None:
                    self._changed = True
                    self._changes += 1
        except Exception:  # one bad frame must not kill the node
            self.stats.errors += 1
            log.exception("frame stamped %.3f could not be processed", item.stamp)
            return
        except BaseException:  # it kills the worker (_run): the frame is still counted
            self.stats.errors += 1
            raise
        self.stats.processed += 1
        if result.loop is None:
            return
        self.stats.loops += 1
        self.stats.latencies_ms.append((time.monotonic() - item.arrived) * 1e3)
        try:
            self._publish(result.loop)
        except Exception:  # the place is in the map; a publisher failing must not stop it
            self.stats.publish_failures += 1
            if self.stats.publish_failures == 1:
                log.exception("publishing the loop closure of the frame stamped %.3f failed "
                              "(further failures are counted in the node's statistics)",
                              item.stamp)

    def _waiting_due_in(self) -> float | None:
        """Seconds until the oldest frame waiting for odometry has waited its time (<= 0:
        now), or None when none waits."""
        try:
            oldest = self._waiting[0]  # (read without the input lock: the callbacks' own)
        except IndexError:
            return None
        return oldest.arrived + POSE_WAIT_SECONDS - time.monotonic()

    def _decide_expired(self) -> None:
        """Decide the frames that waited for odometry in vain (no later image or pose came
        to decide them: the camera or the odometry stopped)."""
        with self._input_lock:
            self._decide_waiting()

    def _autosave_due_in(self) -> float | None:
        """Seconds until the changed map is to be saved (<= 0: now), or None when no
        autosave is due (off, nowhere to save, nothing changed, one is in progress, or the
        node is closing: after the frame it was processing when :meth:`stop_without_saving`
        came, an autosave saved the map that was to stay as it was; :meth:`close` saves
        itself once the worker took the last keyframes, and from the exit hook, Python 3.12
        refuses to start the autosave's thread)."""
        config = self.config
        if (not config.autosave_seconds or not config.map_dir or not config.save_on_shutdown
                or not self._changed or self._stop or self._closing or self._autosaving):
            return None
        return self._last_save + config.autosave_seconds - time.monotonic()

    def _autosave(self) -> None:
        """Start saving the map on a thread of its own, so that the worker goes on with the
        keyframes meanwhile: their adds wait only while the files are written, not while
        they are hashed and fsynced (seconds for a large map on an SD card). Where no thread
        can be started (the interpreter is exiting), the worker saves it itself."""
        self._autosaving = True
        saver = threading.Thread(target=self._autosave_now, name="vpr-edge-autosave",
                                 daemon=True)
        self._saver = saver
        try:
            saver.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown" (3.12)
            self._saver = None  # (one never started cannot be joined)
            self._autosave_now()

    def _autosave_now(self) -> None:
        """Save; a failure is counted and logged (the first one with its reason), and tried
        again a period later, not at every keyframe."""
        try:
            self.save()
            self.stats.autosaves += 1
        except Exception as exc:  # a full disk must not kill the node; shutdown tries again
            self._last_save = time.monotonic()
            self.stats.autosave_failures += 1
            if self.stats.autosave_failures == 1:
                log.error("autosave of the map to %s failed (%s); trying again in %g s "
                          "(further failures are counted in the node's statistics)",
                          self.config.map_dir, exc, self.config.autosave_seconds)
        finally:
            with self._cond:
                self._autosaving = False
                self._cond.notify_all()  # the worker's autosave timer starts again

    def _pose_for_map(self, pose: Pose | None) -> tuple[float, ...] | None:
        """``pose`` as the map stores poses: all seven values, or the first ``pose_dim``
        (``x, y`` or ``x, y, z``) of a map that was built with shorter ones."""
        if pose is None:
            return None
        values = pose.as_tuple()
        width = self.localizer.index.pose_dim
        return values if width in (0, len(values)) else values[:width]


def _check_pose_width(width: int, map_dir: str | None) -> None:
    """The node stores odometry poses (x, y, z, qx, qy, qz, qw), or the first ``width`` of
    them in a map built with shorter ones; a map whose poses are longer (a flattened Odometry
    with its covariances: 85 values, which earlier versions stored) would refuse every place
    the node adds."""
    names = [f.name for f in fields(Pose)]
    if width > len(names):
        raise MapError(
            f"{map_dir or 'the map'}: its poses have {width} values, but the node stores "
            f"{len(names)} ({', '.join(names)}), and every place it added would be refused: "
            "give the node another map_dir (a new map), or extend this map with "
            "PlaceIndex.add() and poses of its length")


def _write_statistics(stats_file: str, summary: dict[str, Any]) -> None:
    """Write ``summary`` to ``stats_file`` as JSON, atomically (a crash or a full disk during
    the write left a truncated file, which a script reading it choked on); a failure is
    logged, not raised: raised from :meth:`LoopClosureNode.shutdown`'s ``finally``, it took
    the place of a failed save's error (the ROS nodes then exited without saying that the
    map was not saved) and of the statistics the nodes log."""
    text = json.dumps(summary, indent=2).encode()
    try:
        Path(stats_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(stats_file, lambda fh: fh.write(text))
    except OSError as exc:
        log.error("the statistics could not be written to %s (%s): they are in the node's "
                  "log only; free space on that disk or choose another stats_file",
                  stats_file, exc)


def _close_at_exit(node_ref: weakref.ref) -> None:
    """Exit hook of a node its program did not close: close it (the worker stops between
    frames; a changed map is saved as configured)."""
    node = node_ref()
    if node is None or node._closing:
        return
    log.warning("the loop-closure node was not closed: closing it at exit (call close() or "
                "shutdown() when done)")
    try:
        node.close()
    except Exception:  # an exit hook must not raise: say what was lost
        log.error("closing the loop-closure node at exit failed; places added since the "
                  "last save are lost", exc_info=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and bool(os.fspath(value))


def _pose_track(config: NodeConfig) -> PoseTrack:
    return PoseTrack(max_gap=config.pose_max_gap, keep_seconds=POSE_HISTORY_SECONDS,
                     jump_back_seconds=JUMP_BACK_SECONDS)


def _read_from_a_crash(map_dir: str | None) -> bool:
    """True when the map at ``map_dir`` is read from ``<map>.vpr-edge-old`` (left by an
    interrupted save), which the node's next save puts back in place."""
    if not map_dir:
        return False
    from .index import atomic_dir

    where = atomic_dir.resolve_for_read(Path(map_dir))
    return where is not None and where != atomic_dir.real_target(Path(map_dir))


def _soonest(*delays: float | None) -> float | None:
    """The smallest of the delays given (None: none due)."""
    due = [d for d in delays if d is not None]
    return min(due) if due else None
