"""``vpr-export --plugin``: the plugin graphs, run in ONNX Runtime through the custom op,
give the plain graphs' descriptors; that proves the node contract equals the layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("onnxruntime_extensions", reason="the custom op needs vpr-edge[export]")
torch = pytest.importorskip("torch")

from vpr_edge.errors import InvalidInputError, ModelFormatError
from vpr_edge.export.exporter import export
from vpr_edge.export.plugin.onnx_node import (
    PLUGIN_DOMAIN,
    PLUGIN_ID,
    PLUGIN_OP,
    plugin_nodes,
    replace_netvlad,
)
from vpr_edge.export.plugin.ort_custom_op import netvlad_reference, ort_session
from vpr_edge.export.targets import ExportConfig
from vpr_edge.metadata import ONNX_METADATA_KEY, ModelMetadata, read_onnx_metadata
from vpr_edge.training.checkpoint import save_checkpoint
from vpr_edge.training.config import preset
from vpr_edge.training.model import build_model
from vpr_edge.training.whitening import PCAWhitening

H, W = 64, 96


@pytest.fixture(scope="module")
def exported(corridor_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(preset(num_clusters=8, input_size=(H, W))).eval()
    whitening = PCAWhitening(model.dim, 32, 24)
    whitening.fit(torch.randn(100, model.dim).numpy())
    model.set_whitening(whitening)
    checkpoint = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", model)
    out = tmp_path_factory.mktemp("out")
    result = export(ExportConfig(checkpoint=checkpoint, output_dir=out, fp16=True,
                                 plugin=True, engine=False, validate_dir=corridor_dir / "ref",
                                 validate_images=16, reference_images=0))
    return result, out


def test_plugin_files_are_written_and_validated(exported) -> None:
    result, out = exported
    assert {"onnx", "onnx-fp16", "onnx-plugin", "onnx-plugin-fp16"} <= set(result.files)
    checked = {(c.file, c.runtime.split(" +")[0]) for c in result.validation}
    assert ("small.plugin.onnx", "onnxruntime CPU") in checked
    assert ("small.plugin.fp16.onnx", "onnxruntime CPU") in checked
    assert result.passed
    for name, precision in (("small.plugin.onnx", "fp32"), ("small.plugin.fp16.onnx", "fp16")):
        props = {p.key: p.value for p in onnx.load(str(out / name)).metadata_props}
        meta = ModelMetadata.from_json(props[ONNX_METADATA_KEY])
        assert meta.precision == precision and meta.plugin is not None
        assert (meta.plugin.namespace, meta.plugin.name, meta.plugin.version) == (
            "vpr_edge", "NetVLAD", "1")
        assert meta.fingerprint == read_onnx_metadata(str(out / "small.onnx")).fingerprint


def test_runtime_explains_that_plugin_graphs_are_for_tensorrt(exported) -> None:
    _, out = exported
    from vpr_edge import Localizer

    with pytest.raises(ModelFormatError, match="plugin graph.*plain NAME.onnx"):
        Localizer(out / "small.plugin.onnx", backend="onnxruntime-cpu")
    # its metadata is read all the same (vpr-edge info, engine build, the next export)
    meta = read_onnx_metadata(str(out / "small.plugin.onnx"))
    assert meta.plugin is not None
    assert meta.fingerprint == read_onnx_metadata(str(out / "small.onnx")).fingerprint


@pytest.mark.parametrize("name, dtype", [("small.plugin.onnx", onnx.TensorProto.FLOAT),
                                         ("small.plugin.fp16.onnx", onnx.TensorProto.FLOAT16)])
def test_netvlad_is_one_node_with_its_weights_as_initializers(exported, name, dtype) -> None:
    _, out = exported
    model = onnx.load(str(out / name))
    (node,) = plugin_nodes(model)
    assert (node.domain, node.op_type) == (PLUGIN_DOMAIN, PLUGIN_OP)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["num_clusters"] == 8 and attrs["dim"] == 112 and attrs["normalize_input"] == 1
    # TensorRT parsers before the domain fallback find the plugin by this attribute only
    assert attrs["plugin_namespace"] == PLUGIN_ID.split("::")[0].encode()
    inits = {t.name: t for t in model.graph.initializer}
    assert [inits[i].data_type for i in node.input[1:]] == [dtype] * 3
    assert list(inits[node.input[1]].dims) == [8, 112]
    assert not [n for n in model.graph.node if n.name.startswith("/model/aggregation/")
                and n is not node and n.op_type not in ("Cast",)]


@pytest.mark.parametrize("plain, plugin, tolerance", [
    ("small.onnx", "small.plugin.onnx", 1e-5),
    ("small.fp16.onnx", "small.plugin.fp16.onnx", 2e-3),
])
def test_plugin_graph_matches_plain_graph(exported, plain, plugin, tolerance) -> None:
    _, out = exported
    images = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    a = ort_session(out / plugin).run(None, {"image": images})[0]
    b = ort.InferenceSession(str(out / plain), providers=["CPUExecutionProvider"]).run(
        None, {"image": images})[0]
    assert a.shape == b.shape == (3, 24)
    assert np.abs(a - b).max() <= tolerance
    assert ((a * b).sum(1) >= 0.9999).all()


def test_numpy_reference_is_the_layer() -> None:
    from vpr_edge.training.netvlad import NetVLAD

    torch.manual_seed(1)
    layer = NetVLAD(5, 12).eval()
    x = torch.randn(2, 12, 3, 4)
    with torch.no_grad():
        expected = layer(x).numpy()
    got = netvlad_reference(x.numpy(), layer.assignment_weight.detach().numpy(),
                            layer.assignment_bias.detach().numpy(),
                            layer.centroids.detach().numpy(), eps=layer.eps,
                            normalize_input=True)
    assert np.abs(got - expected).max() < 1e-6


def test_custom_op_refuses_inconsistent_attributes(exported) -> None:
    _, out = exported
    model = onnx.load(str(out / "small.plugin.onnx"))
    (node,) = plugin_nodes(model)
    for a in node.attribute:
        if a.name == "num_clusters":
            a.i = 9
    with pytest.raises(ValueError, match="do not fit num_clusters=9"):
        ort_session(model)


def test_graph_without_netvlad_is_refused(exported) -> None:
    _, out = exported
    weights = np.zeros((8, 112)), np.zeros(8), np.zeros((8, 112))
    with pytest.raises(ValueError, match="already has a vpr_edge::NetVLAD node"):
        replace_netvlad(onnx.load(str(out / "small.plugin.onnx")), *weights, eps=1e-12,
                        normalize_input=True)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    other = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"], name="/model/head/Relu")], "g", [x], [y]))
    with pytest.raises(ValueError, match="not a NetVLAD model"):
        replace_netvlad(other, *weights, eps=1e-12, normalize_input=True)
    with pytest.raises(ValueError, match="do not fit"):
        replace_netvlad(onnx.load(str(out / "small.onnx")), np.zeros((8, 112)), np.zeros(7),
                        np.zeros((8, 112)), eps=1e-12, normalize_input=True)


@pytest.mark.parametrize("k, d, ok", [(64, 112, True), (64, 128, True), (128, 64, True),
                                      (16, 40, True), (64, 256, False), (32, 256, False),
                                      (128, 128, False), (64, 512, False)])
def test_kernel_size_limits(k: int, d: int, ok: bool) -> None:
    from vpr_edge.export.plugin.onnx_node import kernel_size_problem

    problem = kernel_size_problem(k, d)
    assert (problem is None) is ok
    if not ok:
        assert f"K={k}, D={d}" in problem and "without --plugin" in problem


def test_plugin_on_a_layer_too_large_for_the_kernel_is_an_error(tmp_path: Path) -> None:
    model = build_model(preset("resnet18", num_clusters=8, input_size=(H, W),
                               pretrained=False)).eval()
    checkpoint = save_checkpoint(tmp_path / "r18.pt", model)
    with pytest.raises(InvalidInputError, match="D=256"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, plugin=True,
                            engine=False, validate=False))
    assert not list(tmp_path.glob("*.onnx"))


def test_plugin_on_a_gem_model_is_an_error(tmp_path: Path) -> None:
    model = build_model(preset(num_clusters=8, input_size=(H, W), aggregation="gem")).eval()
    checkpoint = save_checkpoint(tmp_path / "gem.pt", model)
    with pytest.raises(InvalidInputError, match="not NetVLAD"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, plugin=True,
                            engine=False, validate=False))
    assert not list(tmp_path.glob("*.onnx"))


def test_engine_without_plugin_support_is_built_from_the_plain_graph(exported,
                                                                      tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx")
    from vpr_edge.engine_file import read_engine_file

    result, _ = exported
    checkpoint = next(Path(result.files["onnx"]).parent.parent.glob("ckpt*/small.pt"))
    built = export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, plugin=True,
                                fp16=True, engine=True, validate=False,
                                compute_capabilities=("8.6",)))
    assert any("built from the plain graph" in note and "tensorrt_rtx" in note
               for note in built.notes)
    header, _ = read_engine_file(built.files["engine"])
    assert header.builder["plugin"] is None and header.model.plugin is None
    assert header.builder["onnx"] == "small.fp16.onnx"
    assert {"onnx-plugin-fp16", "engine"} <= set(built.files)


def test_fp32_engine_is_built_from_the_plain_graph(tmp_path: Path, monkeypatch) -> None:
    """The kernel's FP32 build does not fit an AOT plugin launch's 48 KB of shared memory
    (measured on an H200: 60 KB), so an FP32 engine never uses the plugin, whatever TensorRT
    is installed."""
    from vpr_edge.export import exporter
    from vpr_edge.export.exporter import ExportResult

    monkeypatch.setattr("vpr_edge.export.plugin.registration.prepare_builder",
                        lambda module: pytest.fail("FP32 must not reach the plugin builder"))
    result = ExportResult()
    temps = {"onnx-plugin": tmp_path / "m.plugin.onnx"}
    config = ExportConfig(checkpoint=tmp_path / "m.pt", output_dir=tmp_path, plugin=True)
    plugin, source = exporter._plugin_for_engine(result, config, tmp_path / "m.onnx", temps)
    assert plugin is None and source == tmp_path / "m.onnx"
    assert any("FP16 only" in note and "--fp16" in note for note in result.notes)
