"""What ``vpr-export`` can write, what each output needs, and up-front argument checks.

Targets (file; precision; what it needs; the arguments it takes):

- ``onnx``: NAME.onnx; FP32; torch, onnx; height, width, whitening_dim, opset, plugin.
- ``onnx-fp16``: NAME.fp16.onnx (``--fp16``); FP16 (strongly typed); torch, onnx; the same.
- ``onnx-plugin``: NAME.plugin.onnx (``--plugin``); FP32, NetVLAD as one ``vpr_edge::NetVLAD``
  node; onnx, onnxruntime-extensions; the same.
- ``onnx-plugin-fp16``: NAME.plugin.fp16.onnx (``--plugin --fp16``); FP16, an FP16 plugin node;
  the same; the same.
- ``engine``: NAME.engine; as its ONNX (the plugin graph with ``--plugin`` on TensorRT >= 10.9);
  tensorrt or tensorrt_rtx; batch, workspace, compute capability, version_compatible.

Everything is checked before any work starts; a request that cannot be honoured is an error
that says what to install or change, never a silent downgrade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vpr_edge._optional import install_command
from vpr_edge.errors import InvalidInputError, MissingDependencyError
from vpr_edge.sources import not_a_folder
from vpr_edge.tensorrt_build import engine_request_problems

TARGETS = {
    "onnx": {"suffix": ".onnx", "precision": "fp32",
             "arguments": ("height", "width", "whitening_dim", "opset", "plugin")},
    "onnx-fp16": {"suffix": ".fp16.onnx", "precision": "fp16",
                  "arguments": ("height", "width", "whitening_dim", "opset", "plugin")},
    "onnx-plugin": {"suffix": ".plugin.onnx", "precision": "fp32",
                    "arguments": ("height", "width", "whitening_dim", "opset")},
    "onnx-plugin-fp16": {"suffix": ".plugin.fp16.onnx", "precision": "fp16",
                         "arguments": ("height", "width", "whitening_dim", "opset")},
    "engine": {"suffix": ".engine", "precision": "from its ONNX",
               "arguments": ("batch", "workspace_mib", "compute_capabilities",
                             "version_compatible")},
}


@dataclass(frozen=True)
class ExportConfig:
    """Arguments of :func:`vpr_edge.export.exporter.export` (the CLI fills them).

    Attributes:
        checkpoint: the ``.pt`` file from ``vpr-train``.
        output_dir, name: outputs are ``output_dir/name.onnx`` etc. (name: checkpoint stem).
        height, width: input size (None: the checkpoint's).
        fp16: also write the strongly typed FP16 ONNX (and build the engine from it).
        engine: True = build an engine (error without TensorRT), False = don't, None = build
            one when a TensorRT module is installed.
        batch: engine profile (min, opt, max); the ONNX has a dynamic batch anyway.
        whitening_dim: output dims for checkpoints with PCA-whitening (None: as trained).
        validate_dir: images to validate on (None with validate=True: skip with a warning).
        plugin: also write the plugin graphs (NetVLAD as one ``vpr_edge::NetVLAD`` node, see
            ``export/plugin``) and build the engine from them where TensorRT >= 10.9 can
            register the plugin.
        version_compatible: build the engine with TensorRT's ``VERSION_COMPATIBLE`` flag
            (runs on later TensorRT versions and on the lean runtime of its version; full
            TensorRT only).
    """

    checkpoint: Path
    output_dir: Path = Path(".")
    name: str | None = None
    height: int | None = None
    width: int | None = None
    fp16: bool = False
    engine: bool | None = None
    batch: tuple[int, int, int] = (1, 1, 8)
    workspace_mib: int = 1024
    compute_capabilities: tuple[str, ...] | None = None
    tensorrt_module: str | None = None
    whitening_dim: int | None = None
    validate: bool = True
    validate_dir: Path | None = None
    validate_images: int = 64
    reference_images: int = 2
    plugin: bool = False
    version_compatible: bool = False
    opset: int = 17
    simplify: bool = True
    extra: dict = field(default_factory=dict)


def check_arguments(config: ExportConfig) -> None:
    """Refuse impossible requests before any work starts."""
    problems = engine_request_problems(config.batch, config.tensorrt_module,
                                       config.compute_capabilities, config.version_compatible)
    for name in ("height", "width"):
        value = getattr(config, name)
        if value is not None and value < 16:
            problems.append(f"--{name} {value} is too small (at least 16 pixels)")
    if config.workspace_mib < 16:
        problems.append(f"--workspace {config.workspace_mib} MiB is too small")
    if not 13 <= config.opset <= 21:
        problems.append(f"--opset must be between 13 and 21, got {config.opset}")
    if config.version_compatible and config.engine is False:
        problems.append("--version-compatible is about the engine, and --no-engine builds none")
    if config.validate and config.validate_images < 2:
        problems.append(f"--validate-images must be at least 2 (the check compares images "
                        f"with each other), got {config.validate_images}")
    if config.validate_dir is not None and not Path(config.validate_dir).is_dir():
        problems.append(f"--validate: {not_a_folder(Path(config.validate_dir))}")
    if config.name is not None and (not config.name or config.name in (".", "..")
                                    or Path(config.name).name != config.name
                                    or "\\" in config.name):
        problems.append(f"--name {config.name!r} must be a plain file name (no folders: "
                        "give the folder with -o)")
    if not Path(config.checkpoint).is_file():
        problems.append(f"{config.checkpoint}: no such checkpoint file")
    if config.version_compatible and config.engine is not False and not problems:
        from vpr_edge.tensorrt_build import find_builder

        found = find_builder(config.tensorrt_module)
        if found is None or found[1] != "tensorrt":
            problems.append(
                "--version-compatible needs full TensorRT (tensorrt) to build the engine; "
                + ("none is installed" if found is None else f"only {found[1]} is here")
                + ": install it (the vpr-edge[tensorrt] extra: "
                + install_command("tensorrt") + ") or drop the flag")
    if problems:
        raise InvalidInputError("; ".join(problems))
    if config.plugin:
        from .plugin import plugin_available

        ok, reason = plugin_available()
        if not ok:
            raise MissingDependencyError(f"--plugin cannot be honoured: {reason}")
    if config.engine:
        from vpr_edge.tensorrt_build import builder_available

        ok, reason = builder_available(config.tensorrt_module)
        if not ok:
            raise MissingDependencyError(f"--engine cannot be honoured: {reason}")


def check_output_dir(path: Path) -> None:
    """The output directory exists (or can be made) and is writable."""
    import tempfile

    if path.exists() and not path.is_dir():  # (mkdir said "File exists")
        raise InvalidInputError(f"--output-dir {path}: not a folder (a file, a device); give "
                                "the folder the export writes its files into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise InvalidInputError(f"--output-dir {path}: cannot write there ({exc})") from exc
