"""``vpr-edge engine build``: a TensorRT engine from an exported ONNX, built where it will run.

It needs TensorRT, not torch. An engine runs only on the GPU architecture and TensorRT version
it was built with, so a Jetson builds its own: export on a workstation (``vpr-export model.pt
--fp16``), copy ``model.fp16.onnx`` to the robot, and build there with the TensorRT it has
(JetPack's). The engine gets the header the runtime checks (model metadata, TensorRT
version, GPU), which an engine from ``trtexec`` lacks. Plain graphs only: an engine from a
``--plugin`` graph needs the plugin's registration, which ``vpr-export --plugin`` does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..atomic_file import unwritable_folder
from ..errors import InvalidInputError, VprEdgeError
from ..paths import expanded_path
from .arg_types import positive_int
from .help_format import HelpFormatter, summary
from .output import TO_STDOUT, check_model_file, print_facts, write_json

MODULES = ("tensorrt", "tensorrt_rtx")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a TensorRT engine from an exported ONNX (no torch)",
                       formatter_class=HelpFormatter, description=summary(__doc__))
    p.add_argument("onnx", type=expanded_path,
                   help="model exported by vpr-export (NAME.fp16.onnx for an FP16 engine, "
                        "or NAME.onnx)")
    p.add_argument("--output", "-o", type=expanded_path, default=None,
                   help="engine file (default: NAME.engine beside the ONNX)")
    add_engine_arguments(p, batch_type=positive_int, workspace_type=positive_int)
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write a JSON summary here" + TO_STDOUT)
    p.set_defaults(run=run, writes={"--output": "output"})


def add_engine_arguments(p: argparse.ArgumentParser, *, batch_type: Any = int,
                         workspace_type: Any = int) -> None:
    """The engine options ``vpr-export`` and ``vpr-edge engine build`` share (builder module,
    profile, workspace, TensorRT-RTX targets, version compatibility); ``*_type``: argparse
    types."""
    from ..tensorrt_build import EngineBuildConfig

    d = EngineBuildConfig()
    p.add_argument("--tensorrt-module", choices=MODULES, default=None,
                   help="build with this module (default: tensorrt, else tensorrt_rtx)")
    p.add_argument("--batch", type=batch_type, nargs=3, default=d.batch,
                   metavar=("MIN", "OPT", "MAX"),
                   help="engine optimisation profile (frames per inference call)")
    p.add_argument("--workspace", type=workspace_type, default=d.workspace_mib,
                   dest="workspace_mib",
                   help="TensorRT builder workspace (MiB)")
    p.add_argument("--compute-capability", action="append", default=None,
                   dest="compute_capabilities",
                   help="TensorRT-RTX target GPU architecture (e.g. 8.9; repeat for "
                        "several; TensorRT-RTX 1.7 targets 8.0, 8.6, 8.9, 12.0 and 12.1, not "
                        "a Jetson nor an H100/H200/B200; full TensorRT builds for the GPU it "
                        "runs on); default: 8.0, 8.6, 8.9 and 12.0 (the engine runs on those "
                        "alone)")
    p.add_argument("--version-compatible", action="store_true",
                   help="build the engine with TensorRT's VERSION_COMPATIBLE flag: it then "
                        "also runs on later TensorRT versions and on the lean runtime "
                        "(tensorrt_lean) of its own version, maybe a little slower; full "
                        "TensorRT only, plain graph only (not with the --plugin engine)")


def engine_path_for(onnx: Path) -> Path:
    """``NAME.engine`` beside ``NAME.onnx`` or ``NAME.fp16.onnx``, as vpr-export names it."""
    stem = onnx.name[: -len(".onnx")] if onnx.name.lower().endswith(".onnx") else onnx.stem
    return onnx.with_name(stem.removesuffix(".fp16") + ".engine")


def _replace_problem(output: Path, metadata) -> str | None:
    """Why the file at ``output`` must not be replaced by an engine of ``metadata``'s model:
    it is not an engine, or one of another model or precision (a rebuild of the same one,
    after a TensorRT update say, replaces it)."""
    if not output.is_file():
        return None
    from ..engine_file import MAGIC, read_engine_header

    with open(output, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            return (f"{output} exists and is not a vpr-edge engine: refusing to replace it; "
                    "give --output, or move it away")
    try:
        old = read_engine_header(output).model
    except VprEdgeError:  # a damaged engine of ours: what a rebuild mends
        return None
    if old.fingerprint != metadata.fingerprint or old.precision != metadata.precision:
        return (f"{output} holds the engine of another model ({old.precision}, fingerprint "
                f"{old.fingerprint[:19]}...), not of this {metadata.precision} one: give "
                "--output, or delete it first")
    return None


def build_engine_file(onnx: Path, output: Path | None = None, *,
                      batch: tuple[int, int, int] = (1, 1, 8), workspace_mib: int = 1024,
                      tensorrt_module: str | None = None,
                      compute_capabilities: tuple[str, ...] | None = None,
                      version_compatible: bool = False) -> dict[str, Any]:
    """Build ``output`` (default :func:`engine_path_for`) from ``onnx``; a summary."""
    from ..metadata import read_onnx_metadata

    output = engine_path_for(onnx) if output is None else output
    check_model_file(output, "--output")  # not "-": a file of that name; not a device
    problems = []
    if not onnx.is_file():
        problems.append(f"{onnx}: no such file")
    elif not onnx.name.lower().endswith(".onnx"):
        problems.append(f"{onnx}: not an .onnx file (give the NAME.fp16.onnx vpr-export wrote)")
    if output.is_dir():
        problems.append(f"--output {output} is a folder: give the engine file's path")
    elif (unwritable := unwritable_folder(output)) is not None:
        problems.append(f"--output {output}: {unwritable}")
    from ..tensorrt_build import engine_request_problems

    problems += engine_request_problems(batch, tensorrt_module, compute_capabilities,
                                        version_compatible)
    if problems:
        raise InvalidInputError("; ".join(problems))
    metadata = read_onnx_metadata(str(onnx))  # a vpr-export model (names the fix if not)
    problem = _replace_problem(output, metadata)
    if problem:
        raise InvalidInputError(problem)
    if metadata.plugin is not None:
        raise InvalidInputError(
            f"{onnx} uses the {metadata.plugin.name} plugin: build its engine with "
            "`vpr-export CHECKPOINT --plugin --engine`, or build from the plain graph "
            f"({engine_path_for(onnx).stem.removesuffix('.plugin')}.fp16.onnx)")
    from ..tensorrt_build import EngineBuildConfig, write_engine

    output.parent.mkdir(parents=True, exist_ok=True)  # (as --json's is)
    start = time.perf_counter()
    built = write_engine(onnx, output, metadata, EngineBuildConfig(
        batch=tuple(batch), workspace_mib=workspace_mib,
        timing_cache=output.with_name(output.stem + ".timing.cache"),
        compute_capabilities=tuple(compute_capabilities) if compute_capabilities else None,
        module=tensorrt_module, version_compatible=version_compatible))
    return {"engine": str(output), "onnx": str(onnx), "precision": metadata.precision,
            "tensorrt": f"{built.module} {built.version}",
            "compute_capabilities": ", ".join(built.settings["compute_capabilities"]),
            "device": built.device_name, "batch": " ".join(map(str, batch)),
            "version_compatible": version_compatible, "bytes": output.stat().st_size,
            "seconds": round(time.perf_counter() - start, 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = build_engine_file(
        args.onnx, args.output, batch=tuple(args.batch), workspace_mib=args.workspace_mib,
        tensorrt_module=args.tensorrt_module, compute_capabilities=args.compute_capabilities,
        version_compatible=args.version_compatible)
    print_facts(result, title="vpr-edge engine build")
    write_json(args.json, result)
    return result
