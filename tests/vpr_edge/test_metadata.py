from __future__ import annotations

import dataclasses
import json

import pytest

from vpr_edge.errors import ModelFormatError
from vpr_edge.metadata import ModelMetadata, PluginInfo, model_fingerprint

SHA = "ab" * 32


def make(**changes) -> ModelMetadata:
    base = dict(
        model_name="lite0-netvlad",
        backbone="efficientnet_lite0",
        num_clusters=64,
        local_dim=112,
        dim=64 * 112,
        input_height=240,
        input_width=320,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        weights_sha256=SHA,
        package_version="0.1.0",
    )
    base.update(changes)
    return ModelMetadata(**base)


def test_json_round_trip_keeps_every_field() -> None:
    meta = make(precision="fp16", plugin=PluginInfo("NetVLAD", "1"), extra={"note": "x"})
    again = ModelMetadata.from_json(meta.to_json())
    assert again == meta
    assert json.loads(meta.to_json())["fingerprint"] == meta.fingerprint


def test_fingerprint_ignores_precision_but_not_weights_preprocessing_or_dim() -> None:
    base = make()
    assert make(precision="fp16").fingerprint == base.fingerprint
    assert make(weights_sha256="cd" * 32).fingerprint != base.fingerprint
    assert make(input_width=640).fingerprint != base.fingerprint
    assert make(mean=(0.5, 0.5, 0.5)).fingerprint != base.fingerprint
    assert make(dim=512, whitening_dim=512).fingerprint != base.fingerprint
    assert base.fingerprint == model_fingerprint(SHA, base.preprocessing(), base.dim)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"num_clusters": 0}, "num_clusters"),
        ({"dim": 100}, "num_clusters*local_dim"),
        ({"precision": "int8"}, "precision"),
        ({"colour_order": "YUV"}, "colour_order"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"std": (float("nan"),) * 3}, "std must be three finite numbers"),
        ({"mean": (float("inf"), 0.0, 0.0)}, "mean must be three finite numbers"),
        ({"std": (True, 1.0, 1.0)}, "std must be three finite numbers"),
        ({"weights_sha256": "abc"}, "sha256"),
        ({"weights_sha256": "z" * 64}, "hex sha256"),
        ({"extra": [1]}, "extra must be a JSON object"),
        ({"model_name": 5}, "model_name must be a string"),
        ({"schema_version": 99}, "install a newer vpr-edge"),
        ({"whitening_dim": 512}, "whitening_dim"),
        # a type that compares as no number (it read "whitening_dim (7168) must equal dim
        # (7168)" and "'>' not supported between instances of 'str' and 'int'")
        ({"whitening_dim": "7168"}, "whitening_dim must be a positive integer or null, got '7168'"),
        ({"whitening_dim": 7168.0}, "whitening_dim must be a positive integer"),
        ({"schema_version": "1"}, "schema_version must be a positive integer, got '1'"),
        ({"schema_version": None}, "schema_version must be a positive integer, got None"),
    ],
)
def test_invalid_fields_are_refused_with_their_name(changes: dict, words: str) -> None:
    with pytest.raises(ModelFormatError, match=words.replace("*", r"\*")):
        make(**changes)


def test_missing_fields_and_garbage_are_refused() -> None:
    data = make().to_dict()
    del data["weights_sha256"]
    with pytest.raises(ModelFormatError, match="lacks weights_sha256"):
        ModelMetadata.from_dict(data)
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        ModelMetadata.from_json("{not json")
    with pytest.raises(ModelFormatError, match="JSON object"):
        ModelMetadata.from_json("[1, 2]")
    with pytest.raises(ModelFormatError, match="not valid JSON"):  # not a RecursionError
        ModelMetadata.from_json("[" * 100000 + "]" * 100000)
    data = make().to_dict()
    data["mean"] = [10 ** 400, 0.5, 0.5]  # an int no float holds: not an OverflowError
    with pytest.raises(ModelFormatError, match="mean must be three finite numbers"):
        ModelMetadata.from_dict(data)


def test_edited_metadata_is_detected_by_its_fingerprint() -> None:
    data = make().to_dict()
    data["input_width"] = 640
    with pytest.raises(ModelFormatError, match="fingerprint"):
        ModelMetadata.from_dict(data)


def test_unknown_keys_from_newer_minor_writers_are_ignored() -> None:
    data = make().to_dict()
    data["some_future_field"] = 1
    assert ModelMetadata.from_dict(data) == make()


def test_metadata_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().dim = 3  # type: ignore[misc]


def test_model_metadata_and_engine_headers_are_hashable(tiny) -> None:
    """Frozen dataclasses claim a hash, but their dict fields (extra, builder) made hash()
    raise TypeError: a functools.lru_cache keyed by a model's metadata failed at run time."""
    from vpr_edge.engine_file import engine_header_for

    meta = tiny.metadata()
    header = engine_header_for(meta, b"engine", tensorrt_module="tensorrt",
                               tensorrt_version="10.3", compute_capability="8.7")
    assert len({meta, meta}) == 1 and len({header, header}) == 1
