"""``vpr-export CHECKPOINT``: validated ONNX (FP32, FP16) and TensorRT engines for robots.

    vpr-export model.pt --fp16 --validate data/corridor/ref
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vpr_edge._optional import require
from vpr_edge.cli.engine_build import add_engine_arguments
from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.cli.output import (
    TO_STDOUT,
    check_output_file,
    given_paths,
    is_stdout,
    tables_off_stdout,
    write_json,
)
from vpr_edge.errors import InvalidInputError, VprEdgeError
from vpr_edge.paths import expanded_path

from .targets import ExportConfig

if TYPE_CHECKING:  # (the exporter is imported when used: it needs onnx)
    from .exporter import ExportResult


def build_parser() -> argparse.ArgumentParser:
    d = ExportConfig(checkpoint=Path("x"))
    p = argparse.ArgumentParser(
        prog="vpr-export", formatter_class=HelpFormatter,
        description="Export a vpr-train checkpoint to ONNX (uint8 NHWC image in, L2-normalised "
                    "float32 descriptor out, metadata inside) and, when TensorRT is installed, "
                    "a TensorRT engine. Validated against PyTorch on real images.")
    p.add_argument("checkpoint", type=expanded_path, help="checkpoint (.pt) from vpr-train")
    p.add_argument("--output-dir", "-o", type=expanded_path,
                   default=Path("."), help="where files go")
    p.add_argument("--name", default=None, help="file name stem (default: the checkpoint's)")
    p.add_argument("--height", type=int, default=None, help="input height (default: model's)")
    p.add_argument("--width", type=int, default=None, help="input width (default: model's)")
    p.add_argument("--fp16", action="store_true",
                   help="also write NAME.fp16.onnx (strongly typed FP16) and build the engine "
                        "from it")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--engine", dest="engine", action="store_const", const=True,
                        default=None, help="build NAME.engine (error if no TensorRT module)")
    engine.add_argument("--no-engine", dest="engine", action="store_const", const=False,
                        help="do not build an engine (default: build one when TensorRT or "
                             "TensorRT-RTX is installed)")
    add_engine_arguments(p)  # --tensorrt-module, --batch, --workspace, --compute-capability, ...
    p.add_argument("--whitening-dim", type=int, default=None,
                   help="output dims of a whitened checkpoint (any up to the stored ones)")
    p.add_argument("--validate", type=expanded_path,
                   default=None, dest="validate_dir", metavar="DIR",
                   help="images to validate on (up to --validate-images, evenly spaced)")
    p.add_argument("--validate-images", type=int, default=d.validate_images,
                   help="images used for validation")
    p.add_argument("--no-validate", action="store_false", dest="validate",
                   help="skip validation")
    plugin = p.add_mutually_exclusive_group()
    plugin.add_argument("--plugin", action="store_true", dest="plugin",
                        help="also write NAME.plugin[.fp16].onnx with NetVLAD as one "
                        "vpr_edge::NetVLAD node (validated through an ONNX Runtime custom "
                        "op) and build the engine from it on TensorRT >= 10.9 "
                        "(export/plugin/README.md)")
    plugin.add_argument("--no-plugin", action="store_false", dest="plugin",
                        help="plain ONNX ops (runs everywhere)")
    p.add_argument("--opset", type=int, default=d.opset, help="ONNX opset")
    p.add_argument("--no-simplify", action="store_false", dest="simplify",
                   help="skip onnxslim simplification")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write the export report here" + TO_STDOUT)
    p.add_argument("--quiet", "-q", action="store_true", help="no step log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # loading the checkpoint needs torch, writing the graphs onnx
        for module in ("torch", "onnx"):
            require(module, extra="export", purpose="vpr-export")
    except VprEdgeError as exc:
        print(f"vpr-export: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s")
    fields = {k: v for k, v in vars(args).items() if k not in ("json", "quiet")}
    fields["batch"] = tuple(fields["batch"])
    if fields["compute_capabilities"]:
        fields["compute_capabilities"] = tuple(fields["compute_capabilities"])
    inputs = given_paths(args, ("json", "output_dir"))
    with tables_off_stdout([args.json]):  # (--json -: stdout holds the report alone)
        return _export(fields, args.json, inputs)


def _export(fields: dict, json_path: Path | None, inputs: list[Path]) -> int:
    """Export, print what was written and how to use it, write the report; the exit status."""
    from .exporter import export, usage_commands

    try:
        _check_output_dir(fields["output_dir"])
        check_output_file(json_path, "--json", inputs)
        result = export(ExportConfig(**fields))
    except VprEdgeError as exc:
        report = getattr(exc, "result", None)
        if report is not None:
            _write_report(json_path, report)
        print(f"vpr-export: error: {exc}", file=sys.stderr)
        return 1 if report is not None else 2
    except KeyboardInterrupt:  # outputs appear only when every one is done
        print("vpr-export: interrupted; nothing was written", file=sys.stderr)
        return 130
    print("\nwritten:")
    for target, path in result.files.items():
        print(f"  {target:<16} {path}  ({path.stat().st_size / 2**20:.1f} MiB)")
    for note in result.notes:
        print(f"note: {note}")
    print("\nuse them:")
    for line in usage_commands(result):
        print(f"  {line}")
    return _write_report(json_path, result)


def _check_output_dir(path: Path) -> None:
    """Refuse ``-o -`` (or ``/dev/stdout``): the export writes binary files into a folder,
    never to standard output (it made a folder named ``-``)."""
    if is_stdout(path):
        raise InvalidInputError(f"--output-dir {path}: the export writes files (NAME.onnx, "
                                "NAME.engine) into a folder, not to standard output; give a "
                                "folder (-o models)")


def _write_report(json_path: Path | None, report: ExportResult) -> int:
    """Write the report to ``--json`` (when given); 0, or 2 after saying why it could not be
    written (a full disk: the export itself is done)."""
    try:
        write_json(json_path, report.to_dict())
    except VprEdgeError as exc:
        print(f"vpr-export: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
