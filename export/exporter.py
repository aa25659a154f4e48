"""``export(config)``: checkpoint -> validated ONNX (FP32, FP16) and TensorRT engine.

Steps, each timed and logged with its output size: load the checkpoint, trace to FP32 ONNX,
simplify and check, write metadata, convert to FP16, build the engine, validate on real
images. Outputs are written under temporary names and renamed only when every step
(validation included) succeeded, so a failure never leaves a half-written or unvalidated file
under the final name.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vpr_edge import __version__
from vpr_edge.atomic_file import temp_path_beside
from vpr_edge.errors import InvalidInputError, VprEdgeError
from vpr_edge.metadata import ModelMetadata, PluginInfo

from .plugin.onnx_node import PLUGIN_DOMAIN, PLUGIN_OP, PLUGIN_VERSION
from .targets import TARGETS, ExportConfig, check_arguments, check_output_dir

log = logging.getLogger("vpr_edge.export")


@dataclass
class Step:
    name: str
    seconds: float
    output: str | None = None
    bytes: int | None = None


@dataclass
class ExportResult:
    """What was written, how long each step took, and how validation went."""

    files: dict[str, Path] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    validation: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metadata: ModelMetadata | None = None

    @property
    def passed(self) -> bool | None:
        """True if every validation check passed, None if nothing was validated (a CI job
        gating on ``passed`` must not accept an unvalidated model)."""
        if not self.validation:
            return None
        return all(c.passed for c in self.validation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": {k: {"path": str(v), "bytes": v.stat().st_size if v.exists() else None}
                      for k, v in self.files.items()},
            "steps": [vars(s) for s in self.steps],
            "validation": [c.to_dict() for c in self.validation],
            "passed": self.passed, "notes": self.notes,
            "fingerprint": None if self.metadata is None else self.metadata.fingerprint,
        }


def _metadata(model, height: int, width: int, sha: str, precision: str) -> ModelMetadata:
    from vpr_edge.training.netvlad import NetVLAD

    config = model.config
    aggregation = model.aggregation
    if isinstance(aggregation, NetVLAD):
        k, d = aggregation.num_clusters, aggregation.dim
    else:
        k, d = 1, int(aggregation.output_dim)
    pre = config.preprocess
    return ModelMetadata(
        model_name=config.name, backbone=config.backbone.name, num_clusters=k, local_dim=d,
        dim=model.dim, input_height=height, input_width=width, mean=tuple(pre.mean),
        std=tuple(pre.std), weights_sha256=sha, package_version=__version__,
        whitening_dim=None if model.whitening is None else model.whitening.dim,
        precision=precision, colour_order=pre.colour_order,
        extra={"aggregation": config.aggregation, "backbone_stride": model.backbone.stride},
    )


class _Timer:
    def __init__(self, result: ExportResult, name: str) -> None:
        self.result, self.name = result, name

    def __enter__(self) -> _Timer:
        self.start = time.perf_counter()
        self.output: Path | None = None  # the file being written (a temporary name)
        self.label: str | None = None  # the name it will have
        return self

    def __exit__(self, kind, *_: object) -> None:
        if kind is not None:
            return
        seconds = time.perf_counter() - self.start
        size = self.output.stat().st_size if self.output is not None else None
        self.result.steps.append(Step(self.name, round(seconds, 3),
                                      self.label, size))
        log.info("%-22s %7.2f s%s", self.name, seconds,
                 "" if size is None else f"  {size / 2**20:.1f} MiB")


def export(config: ExportConfig) -> ExportResult:
    """Run the export described by ``config`` (see :class:`ExportConfig`)."""
    import torch

    from vpr_edge.tensorrt_build import EngineBuildConfig, builder_available, write_engine
    from vpr_edge.training.checkpoint import load_checkpoint

    from .onnx_fp16 import convert_to_fp16, fp16_fraction
    from .onnx_fp32 import export_fp32
    from .onnx_hygiene import check_graph, save_sealed, set_metadata, simplify

    check_arguments(config)
    out_dir = Path(config.output_dir)
    check_output_dir(out_dir)
    name = config.name or Path(config.checkpoint).stem
    result = ExportResult()
    final = {target: out_dir / f"{name}{spec['suffix']}" for target, spec in TARGETS.items()}
    folders = [path for path in final.values() if path.is_dir()]
    if folders:  # os.replace would fail on it after all the work
        raise InvalidInputError(f"{folders[0]} is a folder where the export writes a file: "
                                "remove it, or export with another --name or -o")
    temps: dict[str, Path] = {}
    try:
        with _Timer(result, "load checkpoint"):
            ckpt = load_checkpoint(config.checkpoint)
            model = ckpt.build()
            if config.whitening_dim is not None:
                model.set_whitening_dim(config.whitening_dim)
        pre = model.config.preprocess
        height = config.height or pre.input_height
        width = config.width or pre.input_width
        stride = model.backbone.stride
        if height < stride or width < stride:
            raise InvalidInputError(
                f"input {height}x{width} is smaller than the backbone's stride {stride}: "
                "NetVLAD would see no local features; use a larger --height/--width")
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, height, width))
        except RuntimeError as exc:
            raise InvalidInputError(f"the backbone cannot take {height}x{width} input "
                                    f"({str(exc).splitlines()[0]})") from exc

        with _Timer(result, "export FP32 ONNX") as step:
            graph = export_fp32(model, height, width, opset=config.opset)
            if config.simplify:
                graph = simplify(graph)
            check_graph(graph, height=height, width=width, dim=model.dim)
            meta32 = _metadata(model, height, width, ckpt.weights_sha256, "fp32")
            set_metadata(graph, meta32)
            temps["onnx"] = step.output = temp_path_beside(final["onnx"])
            step.label = final["onnx"].name
            save_sealed(graph, temps["onnx"])
        result.metadata = meta32
        if config.plugin:
            _write_plugin_graph(result, model, graph, meta32, "onnx-plugin", final, temps)
        engine_source = temps["onnx"]
        if config.fp16:
            with _Timer(result, "convert to FP16 ONNX") as step:
                half = convert_to_fp16(graph)
                check_graph(half, height=height, width=width, dim=model.dim)
                meta16 = replace(meta32, precision="fp16")
                set_metadata(half, meta16)
                temps["onnx-fp16"] = step.output = temp_path_beside(final["onnx-fp16"])
                step.label = final["onnx-fp16"].name
                save_sealed(half, temps["onnx-fp16"])
            result.notes.append(f"FP16 graph: {fp16_fraction(half):.0%} of Conv/MatMul "
                                "nodes in FP16; NetVLAD, softmax and norms in FP32")
            engine_source = temps["onnx-fp16"]
            if config.plugin:
                _write_plugin_graph(result, model, half, meta16, "onnx-plugin-fp16", final,
                                    temps)

        want_engine = config.engine
        if want_engine is None:
            want_engine, reason = builder_available(config.tensorrt_module)
            if not want_engine:
                result.notes.append(f"no engine built: {reason}")
        if want_engine:
            plugin = None
            if config.plugin:
                plugin, engine_source = _plugin_for_engine(result, config, engine_source, temps)
            with _Timer(result, "build TensorRT engine") as step:
                source_meta = meta16 if config.fp16 else meta32
                if plugin is not None:
                    source_meta = replace(source_meta, plugin=PLUGIN_INFO)
                temps["engine"] = step.output = temp_path_beside(final["engine"])
                step.label = final["engine"].name
                built = write_engine(engine_source, temps["engine"], source_meta, EngineBuildConfig(
                    batch=config.batch, workspace_mib=config.workspace_mib,
                    timing_cache=out_dir / f"{name}.timing.cache",
                    compute_capabilities=config.compute_capabilities,
                    module=config.tensorrt_module, plugin=plugin,
                    version_compatible=config.version_compatible),
                    shown_as=_final_name(engine_source, temps, final))
            targets = ", ".join(built.settings["compute_capabilities"])
            result.notes.append(f"engine built with {built.module} {built.version} for compute "
                                f"capability {targets}; engines run only on such a GPU, so it "
                                "was not validated by this export")
            if config.version_compatible:
                result.notes.append(f"version-compatible engine: runs on {built.module} "
                                    f"{built.version} or later and on the lean runtime "
                                    f"(tensorrt_lean) {built.version}")

        if config.validate:
            if config.validate_dir is None:
                result.notes.append("not validated: give --validate DIR (images)")
            else:
                with _Timer(result, "validate"):
                    result.validation = _validate(model, height, width, config, temps, final)
                for comparison in result.validation:
                    print(comparison.report())
                if not result.passed:
                    raise _ValidationFailed(result)
        for target, temp in temps.items():
            os.replace(temp, final[target])
            result.files[target] = final[target]
        stale = _other_models_files(final, temps, meta32.fingerprint)
        if stale:
            result.notes.append(
                f"{', '.join(stale)} beside it: from an earlier export of another model under "
                "this name (this one did not replace them); delete them, or export with "
                "another --name")
        return result
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def _other_models_files(final: dict[str, Path], written: dict[str, Path], fingerprint: str
                        ) -> list[str]:
    """Names of the files an export under this name writes that this one did not, and that
    hold another model (an unreadable one counts as another model's)."""
    from vpr_edge.engine_file import read_engine_header
    from vpr_edge.metadata import read_onnx_metadata

    stale = []
    for target, path in final.items():
        if target in written or not path.is_file():
            continue
        try:
            meta = (read_engine_header(path).model if target == "engine"
                    else read_onnx_metadata(str(path)))
            if meta.fingerprint == fingerprint:
                continue
        except VprEdgeError:
            pass
        stale.append(path.name)
    return stale


PLUGIN_INFO = PluginInfo(name=PLUGIN_OP, version=PLUGIN_VERSION, namespace=PLUGIN_DOMAIN)


def _write_plugin_graph(result: ExportResult, model, graph, meta: ModelMetadata, target: str,
                        final: dict[str, Path], temps: dict[str, Path]) -> None:
    """Write ``graph`` with its NetVLAD subgraph as one ``vpr_edge::NetVLAD`` node."""
    from vpr_edge.training.netvlad import NetVLAD

    from .onnx_hygiene import check_graph, save_sealed, set_metadata
    from .plugin.onnx_node import kernel_size_problem, replace_netvlad

    layer = model.aggregation
    if not isinstance(layer, NetVLAD):
        raise InvalidInputError(f"--plugin: the model aggregates with "
                                f"{model.config.aggregation}, not NetVLAD; export without "
                                "--plugin")
    problem = kernel_size_problem(layer.num_clusters, layer.dim)
    if problem is not None:
        raise InvalidInputError(f"--plugin: {problem}")
    dtype = np.float16 if meta.precision == "fp16" else np.float32
    with _Timer(result, f"plugin ONNX ({meta.precision})") as step:
        plugin_graph = replace_netvlad(
            graph, layer.assignment_weight.detach().numpy(),
            layer.assignment_bias.detach().numpy(), layer.centroids.detach().numpy(),
            eps=layer.eps, normalize_input=layer.normalize_input, dtype=dtype)
        check_graph(plugin_graph, height=meta.input_height, width=meta.input_width,
                    dim=meta.dim, extra_ops=frozenset({PLUGIN_OP}))
        set_metadata(plugin_graph, replace(meta, plugin=PLUGIN_INFO))
        temps[target] = step.output = temp_path_beside(final[target])
        step.label = final[target].name
        save_sealed(plugin_graph, temps[target])


def _plugin_for_engine(result: ExportResult, config: ExportConfig, plain_source: Path,
                       temps: dict[str, Path]) -> tuple[dict | None, Path]:
    """(plugin settings, ONNX to build from): the FP16 plugin graph when the engine is FP16
    and this TensorRT can register the plugin, else the plain graph, with the reason logged
    and noted."""
    from vpr_edge.tensorrt_build import find_builder

    from .plugin.onnx_node import PLUGIN_ID
    from .plugin.registration import prepare_builder

    if config.version_compatible:
        ok, reason = False, ("vpr-export builds version-compatible engines from plain ONNX ops "
                             "only (a plugin in such an engine is not verified)")
    elif config.fp16:
        found = find_builder(config.tensorrt_module)
        ok, reason = prepare_builder(found[1] if found else "tensorrt")
    else:
        ok, reason = False, ("the fused kernel runs FP16 only in TensorRT (its FP32 build "
                             "needs more shared memory than a plugin launch gets); add --fp16")
    if not ok:
        message = (f"--plugin: the engine is built from the plain graph, because {reason}; "
                   "the plugin ONNX files are written all the same")
        log.warning(message)
        result.notes.append(message)
        return None, plain_source
    return {"id": PLUGIN_ID, "version": PLUGIN_VERSION}, temps["onnx-plugin-fp16"]


def _final_name(path: Path, temps: dict[str, Path], final: dict[str, Path]) -> str:
    target = next(t for t, p in temps.items() if p == path)
    return final[target].name


class _ValidationFailed(VprEdgeError):
    def __init__(self, result: ExportResult) -> None:
        failed = [c for c in result.validation if not c.passed]
        super().__init__("validation FAILED for " + ", ".join(
            f"{c.file} ({c.runtime}: min cosine {c.min_cosine:.6f}, top-1 agreement "
            f"{c.top1_agreement:.1%})" for c in failed) + "; no file was written")
        self.result = result


def _validate(model, height: int, width: int, config: ExportConfig,
              temps: dict[str, Path], final: dict[str, Path]) -> list:
    import torch

    from vpr_edge.training.model import images_to_tensor

    from .validate import load_validation_images, validate_files

    images = load_validation_images(Path(config.validate_dir), height, width,
                                    limit=config.validate_images)
    pre = model.config.preprocess

    def describe(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(images_to_tensor(batch, pre)).numpy()

    files = [(temps[target], TARGETS[target]["precision"],
              "plugin" if "plugin" in target else "plain")
             for target in TARGETS if target in temps and target != "engine"]
    comparisons = validate_files(describe, images, files,
                                 reference_images=config.reference_images)
    target_of = {temps[t].name: t for t in temps}
    for c in comparisons:  # report the files' final names, not their temp names
        target = target_of.get(c.file)
        if target is not None:
            object.__setattr__(c, "file", final[target].name)
    return comparisons


def usage_commands(result: ExportResult) -> list[str]:
    """The exact commands to use what was written."""
    lines = []
    cpu_onnx = result.files.get("onnx")  # ONNX Runtime on a CPU: the FP32 graph
    trt_onnx = result.files.get("onnx-fp16") or cpu_onnx  # TensorRT: the exported precision
    if cpu_onnx is not None:
        meta = result.metadata
        lines += [
            f"vpr-edge info {cpu_onnx}",
            f"python -c \"from vpr_edge import Localizer; loc = Localizer('{cpu_onnx}'); "
            f"print(loc.info()['model'])\"",
            f"vpr-edge map build {cpu_onnx} maps/route --images FRAMES_DIR",
            f"vpr-edge engine build {trt_onnx}   # on the GPU that will run it (no torch)",
            f"polygraphy run {cpu_onnx} --onnxrt --input-shapes "
            f"image:[1,{meta.input_height},{meta.input_width},3]",
        ]
    if "onnx-plugin" in result.files:
        plugin_graph = result.files.get("onnx-plugin-fp16") or result.files["onnx-plugin"]
        lines.append("python -c \"from vpr_edge.export.plugin.registration import "
                     "register_plugin; register_plugin()\"   # before TensorRT parses "
                     f"{plugin_graph.name}")
    if "engine" in result.files:
        lines.append(f"vpr-edge bench {result.files['engine']}   # on the target GPU")
    return lines
