"""``vpr-edge query``: the places in a map most similar to some images."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..paths import expanded_path, is_dir
from .arg_types import finite_float, positive_int
from .common import add_model_arguments, backend_options, require_map
from .help_format import HelpFormatter
from .output import TO_STDOUT, print_table, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="find the places in a map most similar to images",
                       formatter_class=HelpFormatter,
                       description="Print the k best matches in MAP for each image.")
    add_model_arguments(p)
    p.add_argument("map", type=expanded_path, help="map directory")
    p.add_argument("images", type=expanded_path, nargs="+", help="image files to look up")
    p.add_argument("-k", type=positive_int, default=5, help="matches per image")
    p.add_argument("--min-score", type=finite_float, default=None, help="drop matches below this")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write all matches as JSON" + TO_STDOUT)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..localizer import Localizer

    require_map(args.map)
    for image in args.images:
        if is_dir(image):
            raise InvalidInputError(
                f"{image} is a folder: give image files (e.g. {image}/*.jpg), or match every "
                f"image in it with: vpr-edge localize {args.model} {args.map} --images {image}")
    results = []
    with Localizer(args.model, args.map, backend=args.backend, batch_size=args.batch,
                   backend_options=backend_options(args)) as loc:
        descriptors = loc.describe([str(p) for p in args.images])
        for image, descriptor in zip(args.images, descriptors):
            for rank, m in enumerate(loc.query_descriptor(descriptor, args.k,
                                                          min_score=args.min_score), start=1):
                results.append({"image": str(image), "rank": rank, "place_id": m.place_id,
                                "score": round(m.score, 4), "stamp": m.stamp,
                                "source": str(m.meta["source"]) if m.meta.get("source")
                                else None})
    print_table(_table_rows(results), title=f"vpr-edge query ({len(args.images)} images)")
    write_json(args.json, results)
    return {"matches": results}


def _table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The matches as the table shows them: each image and source by its file name, but by
    its whole path where another one has that name (``day_left/Image042.jpg`` and
    ``day_right/Image042.jpg``); the JSON keeps every path whole."""
    short = {column: _distinct_names(row[column] for row in results)
             for column in ("image", "source")}
    return [{**row, **{column: names.get(row[column]) for column, names in short.items()}}
            for row in results]


def _distinct_names(paths: Iterable[str | None]) -> dict[str, str]:
    """Each path's file name, or the path itself where a different path has the same name."""
    given = {path for path in paths if path}
    names = Counter(Path(path).name for path in given)
    return {path: Path(path).name if names[Path(path).name] == 1 else path for path in given}
