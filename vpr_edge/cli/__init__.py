"""``vpr-edge``: the runtime's command line (maps, queries, loop closures, benchmarks).

    vpr-edge info model.onnx
    vpr-edge map build model.onnx maps/route --images run1/
    vpr-edge map repair maps/route
    vpr-edge engine build model.fp16.onnx
    vpr-edge query model.onnx maps/route frame.jpg
    vpr-edge localize model.onnx maps/route --images run2/ --gt names
    vpr-edge loops model.onnx --images run1/ run2/ --gt names --sweep
    vpr-edge bench model.onnx --places 10000
    vpr-edge backends model.onnx
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import VprEdgeError
from . import backends, bench, engine_build, info, localize, loops, map_build, map_repair, query
from .help_format import HelpFormatter
from .interrupts import Terminated, sigterm_as_interrupt
from .output import (
    check_distinct_outputs,
    check_output_file,
    given_paths,
    tables_off_stdout,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vpr-edge", formatter_class=HelpFormatter,
        description="Visual place recognition on the robot: build maps, query them, detect "
                    "loop closures, measure latency.")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="run `vpr-edge COMMAND --help` for its options")
    info.add_parser(sub)
    map_parser = sub.add_parser("map", help="map commands (build, repair)")
    map_sub = map_parser.add_subparsers(dest="map_command", required=True, metavar="ACTION",
                                        help="run `vpr-edge map ACTION --help`")
    map_build.add_parser(map_sub)
    map_repair.add_parser(map_sub)
    engine_parser = sub.add_parser("engine", help="engine commands (build)")
    engine_sub = engine_parser.add_subparsers(dest="engine_command", required=True,
                                              metavar="ACTION",
                                              help="run `vpr-edge engine ACTION --help`")
    engine_build.add_parser(engine_sub)
    query.add_parser(sub)
    localize.add_parser(sub)
    loops.add_parser(sub)
    bench.add_parser(sub)
    backends.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        outputs = _outputs(args)
        check_distinct_outputs(outputs)  # before the work, not after it
        for option in ("json", "csv"):
            check_output_file(getattr(args, option, None), f"--{option}", given_paths(args),
                              getattr(args, "map", None))
        results = (outputs["--json"], outputs["--csv"])  # (written as text: may be stdout)
        with sigterm_as_interrupt(), tables_off_stdout(results):
            args.run(args)
        sys.stdout.flush()  # (a reader that left shows here, not as a traceback at exit)
    except VprEdgeError as exc:
        command = " ".join(filter(None, (args.command, getattr(args, "map_command", None),
                                         getattr(args, "engine_command", None))))
        print(f"vpr-edge {command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # numpy's, anywhere (the index's own is an OutOfMemoryError)
        print(f"vpr-edge {args.command}: error: not enough memory ({exc}); free memory or "
              "raise the process's limit (ulimit -v); maps on disk are as last saved",
              file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as the shell reports a process it ended
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vpr-edge info m | head`: the reader left, as it may
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no error at exit)
        return 141  # 128 + SIGPIPE, as the shell reports a process the pipe ended
    return 0


def _outputs(args: argparse.Namespace) -> dict[str, Path | None]:
    """The files a command writes, by the option that names them: ``--json``, ``--csv``, and
    those its parser declares (``set_defaults(writes={"--output": "output"})``)."""
    named = {f"--{option}": getattr(args, option, None) for option in ("json", "csv")}
    return {**named, **{option: getattr(args, dest)
                        for option, dest in getattr(args, "writes", {}).items()}}


if __name__ == "__main__":
    sys.exit(main())
