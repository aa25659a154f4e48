"""An error's advice, followed literally, resolves it (found by following every message's
advice: a batch normalised as told stayed unnormalised, "build the map again" over the same
folder changed nothing, a rebuild command named the builder that had made the unusable
engine, and one fix pointed to a method that sent the caller back)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vpr_edge.errors import EngineMismatchError, InvalidInputError, ModelMismatchError
from vpr_edge.index import PlaceIndex


def test_normalising_a_batch_as_the_error_says_makes_it_unit_length() -> None:
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    index = PlaceIndex(16)
    with pytest.raises(InvalidInputError) as error:
        index.add(x)
    advice = re.search(r"L2-normalised: (.*)$", str(error.value)).group(1)
    assert index.add(eval(advice, {"np": np, "x": x})) == [0, 1, 2]  # as written


def test_a_map_of_another_model_is_to_be_built_in_a_new_folder(tmp_path: Path) -> None:
    PlaceIndex(16, fingerprint="a" * 64).save(tmp_path / "m")
    with pytest.raises(ModelMismatchError, match=r"in a new folder \(vpr-edge map build MODEL "
                                                 r"NEW_MAP"):
        PlaceIndex.open(tmp_path / "m", fingerprint="b" * 64)


def test_verify_on_a_bare_index_names_only_what_works() -> None:
    from vpr_edge.loop_closure import LoopClosureConfig, LoopClosureDetector

    detector = LoopClosureDetector(PlaceIndex(16), LoopClosureConfig(verify=True))
    with pytest.raises(InvalidInputError) as error:
        detector.process_descriptor(np.eye(16, dtype=np.float32)[0], stamp=1.0)
    assert "orb_features" in str(error.value) and "process_frame" not in str(error.value)


def test_an_rtx_engine_on_a_hopper_gpu_is_rebuilt_with_full_tensorrt(tiny) -> None:
    from vpr_edge import engine_file

    header = engine_file.engine_header_for(
        tiny.metadata(), b"engine", tensorrt_module="tensorrt_rtx", tensorrt_version="1.2",
        compute_capability=None, builder={"compute_capabilities": ["8.0", "8.6", "8.9",
                                                                   "12.0"]})
    with pytest.raises(EngineMismatchError, match="engine build MODEL.fp16.onnx "
                                                  "--tensorrt-module tensorrt"):
        engine_file.check_engine_compatible(header, tensorrt_module="tensorrt_rtx",
                                            tensorrt_version="1.2", compute_capability=(9, 0))
