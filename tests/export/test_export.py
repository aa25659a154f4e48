"""vpr-export on small checkpoints: files, metadata, FP16 graph, engines, validation, errors."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from vpr_edge.errors import InvalidInputError, MissingDependencyError, ModelFormatError
from vpr_edge.export.cli import main
from vpr_edge.export.exporter import export
from vpr_edge.export.onnx_hygiene import TENSORRT_10_3_OPS
from vpr_edge.export.targets import ExportConfig
from vpr_edge.metadata import read_onnx_metadata
from vpr_edge.model_checksum import check_onnx_file
from vpr_edge.training.checkpoint import load_checkpoint, save_checkpoint
from vpr_edge.training.config import preset
from vpr_edge.training.model import build_model, images_to_tensor
from vpr_edge.training.whitening import PCAWhitening

H, W = 64, 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(preset(num_clusters=8, input_size=(H, W))).eval()
    whitening = PCAWhitening(model.dim, 32, 24)
    whitening.fit(torch.randn(100, model.dim).numpy())
    model.set_whitening(whitening)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", model)


@pytest.fixture(scope="module")
def exported(checkpoint, corridor_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = export(ExportConfig(checkpoint=checkpoint, output_dir=out, fp16=True,
                                 validate_dir=corridor_dir / "ref", validate_images=24,
                                 reference_images=2))
    return result, out


def test_files_metadata_and_fingerprint(exported, checkpoint) -> None:
    result, out = exported
    assert {p.name for p in out.iterdir() if not p.name.endswith(".cache")} >= {
        "small.onnx", "small.fp16.onnx"}
    assert not list(out.glob(".*.tmp")), "temp files left behind"
    meta32 = read_onnx_metadata(str(out / "small.onnx"))
    meta16 = read_onnx_metadata(str(out / "small.fp16.onnx"))
    ckpt = load_checkpoint(checkpoint)
    assert meta32.weights_sha256 == ckpt.weights_sha256
    assert (meta32.precision, meta16.precision) == ("fp32", "fp16")
    assert meta32.fingerprint == meta16.fingerprint  # comparable descriptors
    assert (meta32.num_clusters, meta32.local_dim, meta32.dim, meta32.whitening_dim) == (
        8, 112, 24, 24)
    assert meta32.input_shape == (H, W) and meta32.plugin is None
    assert [s.name for s in result.steps][:2] == ["load checkpoint", "export FP32 ONNX"]
    assert all(s.seconds >= 0 for s in result.steps)
    # every ONNX file carries its checksum (plugin graphs too, when written)
    onnx_files = sorted(out.glob("*.onnx"))
    assert len(onnx_files) >= 2 and all(check_onnx_file(f) for f in onnx_files)


def test_graph_contract_and_tensorrt_op_set(exported) -> None:
    _, out = exported
    for name in ("small.onnx", "small.fp16.onnx"):
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model)
        (inp,), (outp,) = model.graph.input, model.graph.output
        dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
        assert (inp.name, inp.type.tensor_type.elem_type) == ("image", onnx.TensorProto.UINT8)
        assert isinstance(dims[0], str) and dims[1:] == [H, W, 3]
        assert outp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert model.opset_import[0].version == 17
        ops = Counter(n.op_type for n in model.graph.node)
        assert set(ops) <= TENSORRT_10_3_OPS, set(ops) - TENSORRT_10_3_OPS


def test_fp16_graph_is_fp16_where_it_should_be(exported) -> None:
    _, out = exported
    model = onnx.load(str(out / "small.fp16.onnx"))
    inits = {t.name: t.data_type for t in model.graph.initializer}
    half, full = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    backbone = [n for n in convs if n.name.startswith("/model/backbone/")]
    assert backbone and all(inits[n.input[1]] == half for n in backbone)
    netvlad = [n for n in convs if n.name.startswith("/model/aggregation/")]
    assert netvlad and all(inits[n.input[1]] == full for n in netvlad)
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert all(types[n.output[0]] == full for n in softmax)  # softmax in FP32
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert sum(1 for c in casts if c.attribute[0].i == half) >= 1
    assert sum(1 for c in casts if c.attribute[0].i == full) >= 1


def test_validation_passed_and_says_who_ran_it(exported) -> None:
    result, _ = exported
    runtimes = {(c.file, c.runtime) for c in result.validation}  # the files' names
    assert ("small.onnx", "onnxruntime CPU") in runtimes
    assert ("small.fp16.onnx", "onnxruntime CPU") in runtimes
    assert ("small.fp16.onnx", "onnx.reference (numpy FP16)") in runtimes
    assert result.passed
    fp32 = next(c for c in result.validation if c.precision == "fp32")
    assert fp32.min_cosine >= 0.9999 and fp32.images == 24


def test_exported_model_matches_pytorch_through_the_runtime(exported, checkpoint) -> None:
    from vpr_edge.backends import open_backend

    _, out = exported
    model = load_checkpoint(checkpoint).build()
    frames = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = model(images_to_tensor(frames, model.config.preprocess)).numpy()
    with open_backend(out / "small.onnx", backend="onnxruntime-cpu") as backend:
        got = backend.run(frames)
    assert (got * expected).sum(1).min() > 0.9999


def test_engine_builds_with_tensorrt_rtx(checkpoint, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx")
    from vpr_edge.engine_file import read_engine_file

    result = export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, fp16=True,
                                 engine=True, validate=False, compute_capabilities=("8.9",),
                                 batch=(1, 2, 4)))
    header, blob = read_engine_file(result.files["engine"])
    assert header.tensorrt_module == "tensorrt_rtx" and header.compute_capability == "8.9"
    assert header.builder["strongly_typed"] and header.builder["precision"] == "fp16"
    assert header.builder["profile"] == {"min": 1, "opt": 2, "max": 4}
    assert header.model.fingerprint == read_onnx_metadata(
        str(result.files["onnx"])).fingerprint
    assert len(blob) == header.engine_size > 100_000
    # TensorRT-RTX has no timing cache: none is written, none is claimed as reused.
    assert not (tmp_path / "small.timing.cache").exists()
    assert header.builder["timing_cache_reused"] is False
    fp32 = export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path / "fp32",
                               engine=True, validate=False, compute_capabilities=("8.6",)))
    header32, _ = read_engine_file(fp32.files["engine"])
    assert header32.builder["precision"] == "fp32" and header32.compute_capability == "8.6"


def test_cli_prints_steps_commands_and_json(checkpoint, tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    assert main([str(checkpoint), "-o", str(tmp_path), "--no-engine", "--no-validate",
                 "--whitening-dim", "16", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "vpr-edge info" in out and "vpr-edge engine build" in out and "Localizer(" in out
    data = json.loads(report.read_text())
    assert data["files"]["onnx"]["bytes"] > 0 and data["steps"]
    written = {step["output"]: step["bytes"] for step in data["steps"] if step["output"]}
    assert written == {Path(data["files"]["onnx"]["path"]).name: data["files"]["onnx"]["bytes"]}
    assert read_onnx_metadata(str(tmp_path / "small.onnx")).dim == 16



def test_json_to_stdout_is_the_report_alone(checkpoint, tmp_path: Path, capfd) -> None:
    """`--json -` wrote the report to stdout after the validation table, the files written
    and how to use them, so `| jq` could not read it: they now go to stderr."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(images / f"{i}.png")
    assert main([str(checkpoint), "-o", str(tmp_path), "--no-engine", "--validate",
                 str(images), "--validate-images", "4", "--json", "-"]) == 0
    out, err = capfd.readouterr()
    report = json.loads(out)
    assert report["passed"] is True and report["files"]["onnx"]["bytes"] > 0
    assert "cosine" in err and "written:" in err and "vpr-edge info" in err

@pytest.mark.parametrize("changes, error, words", [
    ({"height": 8}, InvalidInputError, "too small"),
    ({"batch": (4, 2, 8)}, InvalidInputError, "min <= opt <= max"),
    ({"whitening_dim": 64}, InvalidInputError, "whitening dim"),
    ({"validate_dir": Path("/nonexistent/images")}, InvalidInputError, "no such folder"),
    ({"name": "sub/m"}, InvalidInputError, "plain file name"),  # was a raw FileNotFoundError
    ({"name": ".."}, InvalidInputError, "plain file name"),
    ({"name": ""}, InvalidInputError, "plain file name"),
    # TensorRT-RTX has no FP32 GEMM on Turing: the build failed late with a Myelin error
    ({"compute_capabilities": ("7.5",)}, InvalidInputError, "before 8.0, and NetVLAD needs"),
    ({"compute_capabilities": ("sm89",)}, InvalidInputError, "give MAJOR.MINOR"),
    # a Jetson Orin: TensorRT-RTX cannot target it (the build failed late, without a word
    # about building on the Jetson)
    ({"compute_capabilities": ("8.7",)}, InvalidInputError, "Jetson.*vpr-edge engine build"),
])
def test_bad_requests_fail_before_writing(checkpoint, tmp_path: Path, changes, error,
                                          words) -> None:
    with pytest.raises(error, match=words):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, engine=False,
                            **changes))
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp"))


def test_plugin_without_its_dependencies_is_an_error(checkpoint, tmp_path: Path,
                                                     monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime_extensions"
                        else real(name, *a))
    with pytest.raises(MissingDependencyError, match="--plugin.*onnxruntime_extensions"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, engine=False,
                            plugin=True))
    assert not list(tmp_path.glob("*.onnx"))


def test_engine_without_tensorrt_is_an_error(checkpoint, tmp_path: Path, monkeypatch) -> None:
    from vpr_edge import tensorrt_build

    monkeypatch.setattr(tensorrt_build, "find_builder", lambda preferred=None: None)
    with pytest.raises(MissingDependencyError, match="install"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, engine=True))


def test_the_tensorrt_module_asked_for_is_the_one_checked(checkpoint, tmp_path: Path,
                                                         monkeypatch) -> None:
    """With --tensorrt-module tensorrt where only tensorrt_rtx is installed, --engine passed
    the start check (some module was there) and failed after the ONNX work; and the default
    (build an engine when possible) failed the export instead of skipping the engine."""
    from vpr_edge import tensorrt_build

    rtx = (SimpleNamespace(__version__="1.0"), "tensorrt_rtx")
    monkeypatch.setattr(tensorrt_build, "find_builder",
                        lambda preferred=None: None if preferred == "tensorrt" else rtx)
    with pytest.raises(MissingDependencyError, match="full TensorRT .tensorrt. is not importable"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path / "asked",
                            engine=True, tensorrt_module="tensorrt"))
    assert not (tmp_path / "asked").exists() or not any((tmp_path / "asked").iterdir())
    result = export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path / "auto",
                                 tensorrt_module="tensorrt", validate=False))
    assert "engine" not in result.files and result.files["onnx"].is_file()
    assert any("no engine built: full TensorRT (tensorrt) is not importable" in note
               for note in result.notes), result.notes


def test_not_our_checkpoint_and_unwritable_output(tmp_path: Path, checkpoint) -> None:
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(3)}, junk)
    with pytest.raises(ModelFormatError, match="not a vpr-edge checkpoint"):
        export(ExportConfig(checkpoint=junk, output_dir=tmp_path / "o", engine=False))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError, match="cannot write"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=blocker / "sub", engine=False))


def test_failed_validation_writes_nothing(checkpoint, corridor_dir, tmp_path: Path,
                                          monkeypatch) -> None:
    from vpr_edge.export import validate

    monkeypatch.setitem(validate.THRESHOLDS, "fp32", {"min_cosine": 1.1, "top1_agreement": 0})
    assert main([str(checkpoint), "-o", str(tmp_path), "--no-engine", "--validate",
                 str(corridor_dir / "ref"), "--validate-images", "4"]) == 1
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp"))


def _fake_full_tensorrt():
    """Enough of full TensorRT's builder API to see what build_engine asks of it."""
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.flags = []

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3,
                                         VERBOSE=4)

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(VERSION_COMPATIBLE="VERSION_COMPATIBLE")
    image = types.SimpleNamespace(name="image", shape=(-1, 32, 32, 3))
    network = types.SimpleNamespace(get_input=lambda i: image)
    config = types.SimpleNamespace(set_memory_pool_limit=lambda *a: None,
                                   set_flag=trt.flags.append,
                                   add_optimization_profile=lambda p: None)
    profile = types.SimpleNamespace(set_shape=lambda *a: None)
    trt.Builder = lambda logger: types.SimpleNamespace(
        create_network=lambda flags: network, create_builder_config=lambda: config,
        create_optimization_profile=lambda: profile,
        build_serialized_network=lambda net, cfg: b"plan")
    trt.OnnxParser = lambda net, logger: types.SimpleNamespace(parse_from_file=lambda p: True)
    return trt


@pytest.mark.parametrize("version_compatible", [False, True])
def test_version_compatible_engines_set_the_builder_flag(tmp_path: Path, monkeypatch,
                                                         version_compatible) -> None:
    from vpr_edge import tensorrt_build
    from vpr_edge.backends import cuda_memory

    trt = _fake_full_tensorrt()
    monkeypatch.setattr(tensorrt_build, "find_builder", lambda preferred=None: (trt, "tensorrt"))
    monkeypatch.setattr(cuda_memory, "device_count", lambda: 1)  # an Orin
    monkeypatch.setattr(cuda_memory, "compute_capability", lambda device: (8, 7))
    monkeypatch.setattr(cuda_memory, "device_name", lambda device: "Orin")
    built = tensorrt_build.build_engine(tmp_path / "m.onnx", tensorrt_build.EngineBuildConfig(
        version_compatible=version_compatible))
    assert built.engine == b"plan" and built.compute_capability == "8.7"
    assert trt.flags == (["VERSION_COMPATIBLE"] if version_compatible else [])
    assert built.settings.get("version_compatible", False) is version_compatible


def test_version_compatible_needs_full_tensorrt(checkpoint, tmp_path: Path,
                                                monkeypatch) -> None:
    from vpr_edge import tensorrt_build

    for changes, words in (({"engine": False}, "--no-engine builds none"),
                           ({"tensorrt_module": "tensorrt_rtx"}, "needs full TensorRT")):
        with pytest.raises(InvalidInputError, match=words):
            export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path,
                                version_compatible=True, **changes))
    rtx = _fake_full_tensorrt()
    monkeypatch.setattr(tensorrt_build, "find_builder",
                        lambda preferred=None: (rtx, "tensorrt_rtx"))
    with pytest.raises(ModelFormatError, match="needs full TensorRT"):
        tensorrt_build.build_engine(tmp_path / "m.onnx", tensorrt_build.EngineBuildConfig(
            version_compatible=True))
    assert rtx.flags == []


def test_version_compatible_is_refused_before_any_work_without_full_tensorrt(
        checkpoint, tmp_path: Path, monkeypatch) -> None:
    """With only TensorRT-RTX the export used to write both ONNX files and then fail at the
    engine (leaving nothing); with no TensorRT at all the flag was silently ignored."""
    from vpr_edge import tensorrt_build

    for found, words in (((object(), "tensorrt_rtx"), "only tensorrt_rtx is here"),
                         (None, "none is installed")):
        monkeypatch.setattr(tensorrt_build, "find_builder", lambda preferred=None, f=found: f)
        out = tmp_path / f"out-{words.split()[0]}"
        with pytest.raises(InvalidInputError, match=words):
            export(ExportConfig(checkpoint=checkpoint, output_dir=out, version_compatible=True))
        assert not out.exists() or not any(out.iterdir())


def test_validation_needs_two_images_and_no_validation_is_not_a_pass(checkpoint,
                                                                     tmp_path: Path) -> None:
    from vpr_edge.export.exporter import ExportResult

    with pytest.raises(InvalidInputError, match="--validate-images must be at least 2"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, engine=False,
                            validate_images=1))
    assert ExportResult().passed is None and ExportResult().to_dict()["passed"] is None


def test_cli_takes_version_compatible() -> None:
    from vpr_edge.export.cli import build_parser

    assert build_parser().parse_args(["m.pt", "--version-compatible"]).version_compatible
    assert not build_parser().parse_args(["m.pt"]).version_compatible


def test_cli_takes_tensorrt_module() -> None:
    """With full TensorRT installed, `vpr-export --compute-capability` is refused with
    "--tensorrt-module tensorrt_rtx builds for the GPUs you name" (the README says the same),
    but only `vpr-edge engine build` had that option: vpr-export rejected it."""
    from vpr_edge.export.cli import build_parser

    args = build_parser().parse_args(["m.pt", "--tensorrt-module", "tensorrt_rtx",
                                      "--compute-capability", "8.9"])
    fields = {k: v for k, v in vars(args).items() if k not in ("json", "quiet")}
    assert ExportConfig(**fields).tensorrt_module == "tensorrt_rtx"
    assert build_parser().parse_args(["m.pt"]).tensorrt_module is None


def test_a_json_report_that_cannot_be_written_is_refused_first(checkpoint, tmp_path: Path,
                                                               capsys) -> None:
    out = tmp_path / "out"
    assert main([str(checkpoint), "-o", str(out), "--no-engine", "--no-validate",
                 "--json", str(tmp_path)]) == 2
    assert "--json" in capsys.readouterr().err and not out.exists()


def test_files_of_another_model_under_the_same_name_are_named(checkpoint, tmp_path: Path
                                                              ) -> None:
    """Exporting another model as small.onnx beside an earlier export's small.fp16.onnx and
    small.engine left those in place without a word (they hold the earlier model)."""
    export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, fp16=True, engine=False,
                        validate=False))
    (tmp_path / "small.engine").write_bytes(b"not an engine")  # unreadable: another model's
    again = export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, engine=False,
                                validate=False))
    (note,) = [n for n in again.notes if "earlier export" in n]
    assert note.startswith("small.engine beside it")  # small.fp16.onnx is this model's
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pt",
                            build_model(preset(num_clusters=8, input_size=(H, W))).eval())
    third = export(ExportConfig(checkpoint=other, output_dir=tmp_path, name="small",
                                engine=False, validate=False))
    (note,) = [n for n in third.notes if "earlier export" in n]
    assert note.startswith("small.fp16.onnx, small.engine beside it")


def test_engine_build_errors_name_the_final_file(tmp_path: Path) -> None:
    """The ONNX the builder reads is a temporary beside the output; errors named it
    (`.small.fp16.onnx.f94abfbf7760.tmp`)."""
    pytest.importorskip("tensorrt_rtx")
    from vpr_edge.tensorrt_build import EngineBuildConfig, build_engine

    temp = tmp_path / ".small.fp16.onnx.f94abfbf7760.tmp"
    temp.write_bytes(b"not an onnx graph")
    with pytest.raises(ModelFormatError) as raised:
        build_engine(temp, EngineBuildConfig(module="tensorrt_rtx"), shown_as="small.fp16.onnx")
    assert "cannot parse small.fp16.onnx" in str(raised.value)
    assert ".tmp" not in str(raised.value)


def test_ctrl_c_during_an_export_leaves_nothing_and_no_traceback(checkpoint, tmp_path: Path,
                                                                monkeypatch, capsys) -> None:
    """Interrupted after the FP32 graph was written, during the FP16 conversion."""
    from vpr_edge.export import onnx_fp16

    def interrupted(graph):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_fp16, "convert_to_fp16", interrupted)  # imported when run
    assert main([str(checkpoint), "-o", str(tmp_path), "--fp16", "--no-engine",
                 "--no-validate"]) == 130
    assert "vpr-export: interrupted; nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_full_tensorrt_is_not_held_to_the_rtx_targets(checkpoint, tmp_path: Path) -> None:
    """The 8.0 minimum is TensorRT-RTX's; full TensorRT builds for the GPU it runs on, so a
    target given to it is refused as such (vpr-export ignored it, and built for the GPU
    here), not as an RTX target."""
    from vpr_edge.export.targets import check_arguments

    with pytest.raises(InvalidInputError, match="is for TensorRT-RTX: full TensorRT builds for "
                       "the GPU it runs on$"):
        check_arguments(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path,
                                     tensorrt_module="tensorrt", compute_capabilities=("7.5",)))
    with pytest.raises(InvalidInputError, match="before 8.0"):
        check_arguments(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path,
                                     tensorrt_module="tensorrt_rtx",
                                     compute_capabilities=("7.5",)))


def test_a_folder_where_an_output_goes_is_refused_first(checkpoint, tmp_path: Path) -> None:
    """os.replace failed on it after the export and its validation (IsADirectoryError)."""
    (tmp_path / "small.onnx").mkdir()
    with pytest.raises(InvalidInputError, match="small.onnx is a folder where the export"):
        export(ExportConfig(checkpoint=checkpoint, output_dir=tmp_path, engine=False,
                            validate=False))


@pytest.mark.parametrize("output, words", [
    ("-", "--output-dir -: the export writes files (NAME.onnx, NAME.engine) into a folder, "
          "not to standard output"),
    ("a-file", "--output-dir a-file: not a folder"),  # (was "cannot write there (File exists")
    (os.devnull, "not a folder"),
])
def test_an_output_folder_that_is_not_one_is_refused(checkpoint, tmp_path: Path, output: str,
                                                    words: str, monkeypatch, capsys) -> None:
    """`-o -` exported into a new folder named `-`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    assert main([str(checkpoint), "-o", output, "--no-engine", "--no-validate"]) == 2
    assert words in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_a_report_over_an_input_is_refused_first(tmp_path: Path, capsys) -> None:
    """vpr-edge refuses a --json that would overwrite an image it reads; vpr-export wrote
    its report over one of the --validate images after the export."""
    from PIL import Image

    image = tmp_path / "images" / "0.png"
    image.parent.mkdir()
    Image.new("RGB", (W, H)).save(image)
    assert main([str(tmp_path / "m.pt"), "-o", str(tmp_path / "out"), "--no-engine",
                 "--validate", str(image.parent), "--json", str(image)]) == 2
    assert "is an input of this command" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_report_that_cannot_be_written_is_an_error_not_a_traceback(checkpoint, tmp_path: Path,
                                                                     monkeypatch,
                                                                     capsys) -> None:
    """A full disk when the --json report was written, after the export (or after a failed
    validation, whose report is written too): a raw traceback; now one line each, the
    exported files kept."""
    from vpr_edge.export import exporter

    assert main([str(checkpoint), "-o", str(tmp_path), "--no-engine", "--no-validate",
                 "--json", "/dev/full"]) == 2
    out, err = capsys.readouterr()
    assert "vpr-export: error: --json /dev/full: cannot write it (No space left" in err
    assert "written:" in out and (tmp_path / "small.onnx").is_file()

    def validation_failed(config):
        raise exporter._ValidationFailed(exporter.ExportResult())

    monkeypatch.setattr(exporter, "export", validation_failed)
    assert main([str(checkpoint), "-o", str(tmp_path), "--json", "/dev/full"]) == 1
    err = capsys.readouterr().err
    assert "--json /dev/full: cannot write it" in err and "validation FAILED" in err
