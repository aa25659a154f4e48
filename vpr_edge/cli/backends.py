"""``vpr-edge backends [MODEL]``: which backends can run here, why the others cannot, what
``auto`` picks, and the libraries' versions (for bringing up a robot)."""

from __future__ import annotations

import argparse
from typing import Any

from ..paths import expanded_path
from .help_format import HelpFormatter
from .output import TO_STDOUT, print_facts, print_table, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backends", help="which backends can run here, and why not",
                       formatter_class=HelpFormatter,
                       description="List every inference backend with whether it can run on "
                                   "this machine (and why not), the order `--backend auto` "
                                   "tries them in, and the versions of the libraries the "
                                   "runtime uses. Loads no model.")
    p.add_argument("model", type=expanded_path, nargs="?", default=None,
                   help="an exported .onnx or .engine: only the backends for its file type")
    p.add_argument("--json", type=expanded_path, default=None,
                   help="also write it as JSON" + TO_STDOUT)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..backends.environment import environment_report
    from ..errors import InvalidInputError

    if args.model is not None and not args.model.is_file():
        raise InvalidInputError(f"{args.model}: no such model file")
    report = environment_report(args.model)
    print_table([{"backend": b["backend"],
                  "runs here": ("yes" if b["auto"] else "named only" if b["available"]
                                else "no"),
                  "why not": b["why not"]} for b in report["backends"]],
                title="backends (in the order auto tries them)")
    auto = report["auto_order"]
    what = "here" if args.model is None else f"{args.model.name} here"
    print(f"auto picks: {auto[0] if auto else f'nothing: no backend can run {what}'}"
          + (f" (then {', '.join(auto[1:])} if it fails to open)" if len(auto) > 1 else ""))
    print_facts({**report["libraries"],
                 "onnxruntime providers": ", ".join(report["onnxruntime_providers"] or []),
                 "resizer": report["resizer"], "python": report["python"],
                 "platform": report["platform"]}, title="libraries")
    write_json(args.json, report)
    return report
