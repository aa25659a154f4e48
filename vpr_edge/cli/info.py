"""``vpr-edge info PATH``: what a model file, engine file or map directory holds."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..paths import expanded_path
from .help_format import HelpFormatter
from .output import TO_STDOUT, print_facts, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model (.onnx/.engine) or a map directory",
                       formatter_class=HelpFormatter,
                       description="Print the metadata of an exported model or engine, or "
                                   "the manifest of a map directory.")
    p.add_argument("path", type=expanded_path, help="model.onnx, model.engine or a map directory")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="also write the facts as JSON" + TO_STDOUT)
    p.set_defaults(run=run)


def _graph_file(graph_rows: int | None, rows: int) -> str:
    """What a map's index.hnsw holds, in words (see ``IndexSettings.graph_resave``)."""
    if graph_rows is None:
        return "rebuilt on opening"
    if graph_rows >= rows:
        return f"holds all {rows} rows"
    return (f"written for {graph_rows} of the {rows} rows: opening the map inserts the "
            f"places of the other {rows - graph_rows} (a save writes it again past "
            "IndexSettings.graph_resave)")


def describe_path(path: Path) -> dict[str, Any]:
    from ..index import atomic_dir

    # a map, or what a save interrupted between its two renames left (<map>.vpr-edge-old)
    where = atomic_dir.resolve_for_read(path) if not atomic_dir.is_file(path) else None
    if where is not None or atomic_dir.is_dir(path):
        where = where or path
        if not any(os.path.lexists(where / name) for name in ("manifest.json", "index.hnsw")):
            raise InvalidInputError(f"{path}: a directory, but not a map (no manifest.json)")
        # a damaged map (its manifest missing, a folder, a dangling link): open says which
        from ..index import PlaceIndex

        index = PlaceIndex.open(path)
        info = index.info()
        return {"kind": "map", "path": str(path), "places": info["places"],
                "next_id": info["next_id"], "saved_at": info["saved_at"],
                "dim": info["dim"], "fingerprint": info["fingerprint"],
                "M": info["settings"]["M"], "ef": info["settings"]["ef"],
                **({"resized_with": ", ".join(info["provenance"]["resizers"])}
                   if info["provenance"].get("resizers") else {}),
                "graph_file": _graph_file(info["graph_file_rows"], info["rows"]),
                "bytes_on_disk": sum(f.stat().st_size for f in where.rglob("*") if f.is_file())}
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file or directory"
                                f"{atomic_dir.legacy_map_hint(path)}")
    from ..backends.select import ENGINE_SUFFIXES, ONNX_SUFFIXES

    if path.suffix.lower() in ONNX_SUFFIXES:
        from ..metadata import read_onnx_metadata
        from ..model_checksum import check_onnx_file

        verified = check_onnx_file(path)  # (a checksum that fails is refused here)
        meta = read_onnx_metadata(str(path), verify=False)
        return {"kind": "onnx model", "path": str(path), **_model_facts(meta),
                "checksum": "ok" if verified else "none (exported before checksums: "
                "unchecked)", "bytes": path.stat().st_size}
    from ..engine_file import read_engine_file, read_engine_header
    from ..errors import ModelFormatError

    try:
        read_engine_header(path)
    except ModelFormatError:
        if path.suffix.lower() in ENGINE_SUFFIXES:
            raise
        raise InvalidInputError(
            f"{path}: neither an ONNX model (.onnx) nor a vpr-edge engine nor a map; "
            "vpr-edge info takes an exported .onnx or .engine file, or a map directory"
        ) from None
    header, _ = read_engine_file(path)  # a truncated or damaged engine is refused here
    targets = header.builder.get("compute_capabilities")
    return {"kind": "tensorrt engine", "path": str(path), **_model_facts(header.model),
            "tensorrt": f"{header.tensorrt_module} {header.tensorrt_version}",
            "compute_capability": header.compute_capability or (
                ", ".join(map(str, targets)) if targets else "any"),
            "checksum": "ok", "bytes": path.stat().st_size}


def _model_facts(meta) -> dict[str, Any]:
    return {
        "model": meta.model_name, "backbone": meta.backbone, "clusters": meta.num_clusters,
        "local_dim": meta.local_dim, "dim": meta.dim, "whitening": meta.whitening_dim,
        "input": f"{meta.input_height}x{meta.input_width} {meta.colour_order} uint8 NHWC",
        "precision": meta.precision,
        "plugin": None if meta.plugin is None else f"{meta.plugin.name} v{meta.plugin.version}",
        "fingerprint": meta.fingerprint, "package_version": meta.package_version,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    facts = describe_path(args.path)
    print_facts(facts, title=f"{facts['kind']}: {args.path}")
    write_json(args.json, facts)
    return json.loads(json.dumps(facts, default=str))
