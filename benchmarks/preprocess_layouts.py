"""Preprocessing of RGB, BGR and mono camera frames: channels converted before or after the resize.

``Localizer`` used to turn every frame into a full-size RGB array first (a BGR frame
reversed and copied, a mono frame repeated three times) and then resize it. It now resizes
the frame as it comes and reorders or repeats the channels at the model's size
(``vpr_edge.images.prepare_frame``); a test checks that the pixels are identical. Side by
side in one run, alternating the two on the same frames: median time per frame and the ratio
(after / before).

    python benchmarks/preprocess_layouts.py --json benchmarks/results/preprocess_layouts.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.images import as_rgb_frame, prepare_frame, resize, resizer_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--frame-size", type=int, nargs=2, default=(480, 640),
                   metavar=("H", "W"), help="camera frame size")
    p.add_argument("--input-size", type=int, nargs=2, default=(240, 320),
                   metavar=("H", "W"), help="model input size")
    p.add_argument("--repeat", type=int, default=1000, help="timed rounds per layout")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args(argv)


def run(frame_size: tuple[int, int], input_size: tuple[int, int], repeat: int) -> list[dict]:
    h, w = input_size
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*frame_size, 3), dtype=np.uint8)
    frames = {"RGB": (rgb, "RGB"), "BGR": (np.ascontiguousarray(rgb[:, :, ::-1]), "BGR"),
              "mono": (np.ascontiguousarray(rgb[:, :, 1]), "RGB")}
    out = np.empty((h, w, 3), np.uint8)

    def before(frame: np.ndarray, order: str) -> None:
        resize(as_rgb_frame(frame, order), h, w, out=out)

    def after(frame: np.ndarray, order: str) -> None:
        prepare_frame(frame, order, h, w, "RGB", out=out)

    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for layout, (frame, order) in frames.items():
            for name, fn in (("before", before), ("after", after)):
                start = time.perf_counter()
                fn(frame, order)
                times.setdefault((layout, name), []).append(time.perf_counter() - start)
    rows = []
    for layout in frames:
        old = float(np.median(times[(layout, "before")])) * 1e3
        new = float(np.median(times[(layout, "after")])) * 1e3
        rows.append({"frame": layout, "convert_then_resize_ms": round(old, 3),
                     "resize_then_convert_ms": round(new, 3), "ratio": round(new / old, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = run(tuple(args.frame_size), tuple(args.input_size), args.repeat)
    print(f"{args.frame_size[1]}x{args.frame_size[0]} -> {args.input_size[1]}x"
          f"{args.input_size[0]} with {resizer_name()}, median of {args.repeat}")
    print(f"{'frame':6} {'convert, resize ms':>19} {'resize, convert ms':>19} {'ratio':>6}")
    for r in rows:
        print(f"{r['frame']:6} {r['convert_then_resize_ms']:19.3f} "
              f"{r['resize_then_convert_ms']:19.3f} {r['ratio']:6.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"resizer": resizer_name(),
                                         "frame_size": list(args.frame_size),
                                         "input_size": list(args.input_size),
                                         "repeat": args.repeat, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
