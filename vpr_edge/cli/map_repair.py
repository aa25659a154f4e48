"""``vpr-edge map repair``: rebuild a map's damaged search graph from its stored descriptors.

The search graph (``index.hnsw``), damaged or missing, is built again from the descriptors the
map stores, and the map is saved.

Only the graph can be rebuilt: damage to the descriptors or records (or the manifest) is still
refused, naming the file (restore the map from a backup, or build it again). A sound map is
left as it is. The same in code: ``PlaceIndex.open(map, rebuild_if_corrupt=True).save()``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import MapCorruptError
from ..paths import expanded_path
from .common import require_map
from .help_format import HelpFormatter, summary
from .output import TO_STDOUT, print_facts, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repair", help="rebuild a map's damaged search graph from its descriptors",
                       formatter_class=HelpFormatter, description=summary(__doc__))
    p.add_argument("map", type=expanded_path, help="map directory")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="write a JSON summary here" + TO_STDOUT)
    p.set_defaults(run=run)


def repair_map(map_dir: Path) -> dict[str, Any]:
    """Rebuild ``map_dir``'s search graph when it is damaged or missing and save the map;
    a summary (``repaired``: whether anything was written, ``problem``: what was wrong)."""
    from ..index import PlaceIndex

    require_map(map_dir)
    start = time.perf_counter()
    try:
        index = PlaceIndex.open(map_dir)
        problem = None
    except MapCorruptError as exc:  # the graph, or something a rebuild cannot mend
        problem = getattr(exc, "cause", str(exc))  # (what is wrong, not the advice)
        try:
            index = PlaceIndex.open(map_dir, rebuild_if_corrupt=True)
        except MapCorruptError as again:
            raise MapCorruptError(
                f"{getattr(again, 'cause', again)}: `map repair` rebuilds only index.hnsw, "
                "and this damage is elsewhere: restore the map from a backup, or build it "
                "again into a new folder (vpr-edge map build MODEL NEW_MAP ...)"
            ) from again
        index.save()
    return {"map": str(map_dir), "places": len(index), "repaired": problem is not None,
            "problem": problem, "seconds": round(time.perf_counter() - start, 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = repair_map(args.map)
    print_facts({**result, "problem": result["problem"] or "none: the map is sound, left as "
                 "it was"}, title="vpr-edge map repair")
    write_json(args.json, result)
    return result
