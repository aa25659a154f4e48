"""NumPy numbers in the runtime's config dataclasses (a parameter sweep over np.arange)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vpr_edge.backends.onnxruntime_backend import OnnxRuntimeOptions
from vpr_edge.errors import InvalidInputError
from vpr_edge.geometric import VerifyConfig
from vpr_edge.index import IndexSettings
from vpr_edge.keyframes import KeyframeConfig
from vpr_edge.loop_closure import LoopClosureConfig
from vpr_edge.loop_node import NodeConfig
from vpr_edge.poses import Pose

NUMPY_VALUES = [
    (IndexSettings, {"M": np.int64(8), "ef": np.int32(100), "exact_max_places": np.uint16(5),
                     "search_dim": np.int64(256), "growth_factor": np.float32(1.5),
                     "norm_tolerance": np.float64(0.02)}),
    (LoopClosureConfig, {"consistency": np.int8(2), "exclusion_frames": np.int64(0),
                         "min_score": np.float32(0.25), "exclusion_seconds": np.int64(3)}),
    (VerifyConfig, {"min_inliers": np.int64(20), "ransac_threshold": np.float16(2.0)}),
    (KeyframeConfig, {"every_n": np.int64(2), "min_distance": np.float32(0.5)}),
    (OnnxRuntimeOptions, {"intra_op_num_threads": np.int64(2), "max_batch": np.uint8(4)}),
    (NodeConfig, {"model": "model.onnx", "pose_max_gap": np.float32(0.2),
                  "autosave_seconds": np.int64(30)}),
]


@pytest.mark.parametrize(("config", "values"), NUMPY_VALUES,
                         ids=[c.__name__ for c, _ in NUMPY_VALUES])
def test_numpy_numbers_are_taken_as_python_ones(config, values) -> None:
    """They were refused ("M must be an int, got np.int64(8)"), and a NumPy float that was
    taken made the config impossible to write as JSON."""
    made = config(**values)
    for name, value in values.items():
        if isinstance(value, str):
            continue
        got = getattr(made, name)
        assert type(got) in (int, float) and got == pytest.approx(float(value)), name
        field_type = {f.name: str(f.type) for f in dataclasses.fields(config)}[name]
        assert type(got).__name__ in field_type, name  # an int field holds an int
    json.dumps(dataclasses.asdict(made))


def test_a_pose_of_numpy_floats_holds_python_floats() -> None:
    pose = Pose(*np.arange(7, dtype=np.float32))
    assert all(type(v) is float for v in pose.as_tuple())
    assert pose.as_tuple() == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


@pytest.mark.parametrize(("make", "words"), [
    (lambda: IndexSettings(M=np.float64(16.0)), "M must be an int, got np.float64"),
    (lambda: IndexSettings(ef=np.bool_(True)), "ef must be an int"),
    (lambda: LoopClosureConfig(consistency=np.float32(3)), "consistency must be an int"),
    (lambda: LoopClosureConfig(verify=np.bool_(True)), "verify must be True or False"),
    (lambda: LoopClosureConfig(min_score=np.float64(np.nan)), "min_score must be a number"),
    (lambda: KeyframeConfig(every_n=np.float64(2.5)), "every_n must be an int"),
], ids=["float-for-int", "bool-for-int", "float32-for-int", "numpy-bool", "nan", "fraction"])
def test_numbers_of_the_wrong_kind_are_still_refused(make, words) -> None:
    """A float is never truncated into an int field, and NumPy's bool is not a number."""
    with pytest.raises(InvalidInputError, match=words):
        make()
