"""Loop closure on a route walked twice: precision-recall, with and without the consistency
check and geometric verification, side by side on the same descriptors.

The sequence is Gardens Point day_left (frames 0-199) followed by day_right (200-399), the
same walk on the other side of the path; a loop is correct when it matches the same frame
number +-2 in the other walk (``truth_from_names``). Every frame is described once with the
model (default: a fresh ``vpr-train init`` EfficientNet-Lite0 NetVLAD: k-means on every 4th
day_left frame, no training, exported to FP32 ONNX in a temporary folder removed once the
frames are described); then the detector runs over ``min_score``
thresholds for four configurations. Reported: the PR curve, recall at 100% precision, the
best F1, and a PNG plot when matplotlib is installed (``vpr-edge[bench]``).

    python benchmarks/loop_closure.py --json benchmarks/results/loop_closure.json \\
        --plot benchmarks/results/loop_closure_pr.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter

from accuracy_matrix import add_data_argument  # neighbour script

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {  # name: (consistency, verify)
    "single frame": (1, False),
    "3 consecutive": (3, False),
    "single frame + ORB/RANSAC": (1, True),
    "3 consecutive + ORB/RANSAC": (3, True),
}


def default_model(data: Path, work: Path) -> Path:
    from latency import make_checkpoint  # benchmarks/latency.py, next to this script

    from vpr_edge.export.exporter import export
    from vpr_edge.export.targets import ExportConfig

    checkpoint = make_checkpoint(data, work)
    return export(ExportConfig(checkpoint=checkpoint, output_dir=work, name="loops",
                               engine=False, validate=False)).files["onnx"]


@contextlib.contextmanager
def model_to_use(model: Path | None, data: Path, prefix: str) -> Iterator[Path]:
    """``model``, or else the default init model, made in a temporary folder (its name starts
    with ``prefix``) that is removed when the ``with`` block ends."""
    if model is not None:
        yield model
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        yield default_model(data, Path(work))


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--data``, shared with retrieval_montage.py."""
    p.add_argument("--model", type=Path, default=None,
                   help="exported .onnx to use (default: a fresh init model, see above)")
    add_data_argument(p)


def describe_files(model: Path, files: list[Path]) -> np.ndarray:
    """Descriptors of image files, in batches of 8, on the CPU."""
    from vpr_edge.localizer import Localizer

    with Localizer(model, backend="cpu") as loc:
        return np.concatenate([loc.describe([str(f) for f in files[i:i + 8]])
                               for i in range(0, len(files), 8)])


def spinning_after_run(model: Path, frames: list[np.ndarray], verify: bool = True,
                       block: int = 25) -> dict:
    """ONNX Runtime's intra-op threads left spinning after each inference (its default,
    what vpr-edge did before) against stopped when the run returns
    (``session.force_spinning_stop``, what the backend sets): each variant its own
    ``LoopClosureDetector`` over the same ``frames``, in alternating blocks of ``block``
    frames; medians of ``process`` per frame, and whether both reported the same loops."""
    from vpr_edge import Localizer
    from vpr_edge.backends import onnxruntime_backend as ortb
    from vpr_edge.loop_closure import LoopClosureConfig, LoopClosureDetector

    made = ortb.OnnxRuntimeBackend._session_options

    def spinning(self, ort):
        options = made(self, ort)
        options.add_session_config_entry(ortb.FORCE_SPINNING_STOP, "0")
        return options

    localizers = {}
    try:
        ortb.OnnxRuntimeBackend._session_options = spinning
        localizers["spinning after run (before)"] = Localizer(model, backend="onnxruntime-cpu")
    finally:
        ortb.OnnxRuntimeBackend._session_options = made
    localizers["stopped after run (now)"] = Localizer(model, backend="onnxruntime-cpu")
    config = LoopClosureConfig(verify=verify)
    detectors = {name: LoopClosureDetector(loc, config) for name, loc in localizers.items()}
    times = {name: [] for name in detectors}
    loops = {name: [] for name in detectors}
    for start in range(0, len(frames), block):
        for name, detector in detectors.items():
            for frame in frames[start:start + block]:
                tic = time.perf_counter()
                loop = detector.process(frame)
                times[name].append(time.perf_counter() - tic)
                loops[name].append(None if loop is None else (loop.match_id, loop.inliers))
    for loc in localizers.values():
        loc.close()
    first = next(iter(loops.values()))
    return {"process ms": {name: round(1e3 * float(np.median(t[block:] or t)), 3)
                           for name, t in times.items()},
            "loops": sum(x is not None for x in first),
            "same loops": all(v == first for v in loops.values())}


def best_f1(rows: list[dict]) -> float:
    scores = [2 * r["precision"] * r["recall"] / (r["precision"] + r["recall"])
              for r in rows if r["precision"] + r["recall"] > 0 and r["reported"] > 0]
    return round(max(scores, default=0.0), 4)


def pyplot(path: Path):
    """``matplotlib.pyplot`` (Agg backend), or None with a message when it is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"no plot: matplotlib is not installed (pip install 'vpr-edge[bench]'); {path} "
              "not written")
        return None
    return plt


def plot(curves: dict[str, list[dict]], path: Path, title: str) -> bool:
    plt = pyplot(path)
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for name, rows in curves.items():
        pts = sorted((r["recall"], r["precision"]) for r in rows if r["reported"] > 0)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_model_arguments(p)
    p.add_argument("--thresholds", type=int, default=25, help="min_score values swept")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    p.add_argument("--plot", type=Path, default=None, help="write the PR curves (PNG) here")
    args = p.parse_args(argv)

    from vpr_edge.cli.loops import _eligible, _score, detect
    from vpr_edge.geometric import orb_features
    from vpr_edge.loop_closure import LoopClosureConfig
    from vpr_edge.loop_metrics import pr_curve, recall_at_full_precision, truth_from_names
    from vpr_edge.sources import IMAGE_SUFFIXES

    route = args.data / "gardens_point"
    if not route.is_dir():
        print(f"skipped: no Gardens Point under {args.data}")
        return 0
    files = [f for walk in ("day_left", "day_right")
             for f in sorted((route / walk).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    keys = [f"{f.parent.name}/{f.name}" for f in files]
    truth = truth_from_names(keys, tolerance=2)
    stamps = list(range(len(files)))
    with model_to_use(args.model, args.data, "vpr-loops-") as model:
        tic = time.perf_counter()
        descriptors = describe_files(model, files)
        describe_s = time.perf_counter() - tic
    from vpr_edge.images import load_image

    tic = time.perf_counter()
    features = [orb_features(load_image(f), LoopClosureConfig().verify_config) for f in files]
    orb_s = time.perf_counter() - tic
    base = LoopClosureConfig()
    eligible = _eligible(base, stamps)
    best = [r.best.score for r in detect(descriptors, stamps, replace(base, min_score=-1.0,
                                                                      consistency=1))
            if r.best is not None]
    thresholds = np.unique(np.quantile(best, np.linspace(0.0, 0.99, args.thresholds)).round(4))
    curves, summary = {}, []
    for name, (consistency, verify) in CONFIGS.items():
        config = replace(base, consistency=consistency, verify=verify)
        tic = time.perf_counter()
        rows = pr_curve(lambda t, c=config, v=verify: _score(
            detect(descriptors, stamps, replace(c, min_score=t), features if v else None),
            truth, eligible), thresholds)
        curves[name] = rows
        at_default = next((r for r in rows if r["min_score"] >= base.min_score), rows[-1])
        summary.append({"configuration": name, "consistency": consistency, "verify": verify,
                        "recall_at_100_precision": recall_at_full_precision(rows),
                        "best_f1": best_f1(rows),
                        "at_min_score": at_default,
                        "sweep_s": round(time.perf_counter() - tic, 1)})
    print(f"Gardens Point day_left + day_right ({len(files)} frames, {len(thresholds)} "
          f"thresholds), model {Path(model).name}; describe {describe_s:.1f} s, ORB "
          f"{orb_s:.1f} s")
    print(f"{'configuration':<28}{'R@100%P':>9}{'best F1':>9}   at min_score ~{base.min_score}")
    for s in summary:
        d = s["at_min_score"]
        print(f"{s['configuration']:<28}{s['recall_at_100_precision']:>9.3f}{s['best_f1']:>9.3f}"
              f"   P {d['precision']:.3f} R {d['recall']:.3f} (t={d['min_score']})")
    plotted = args.plot is not None and plot(curves, args.plot,
                                             "Gardens Point, day_left then day_right")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "sequence": "gardens_point day_left + day_right", "frames": len(files),
            "model": str(model) if args.model else "fresh init model (k-means, no training)",
            "truth": "same frame number +-2 in the other walk",
            "exclusion_frames": base.exclusion_frames, "summary": summary, "curves": curves,
            "plot": str(args.plot) if plotted else None}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
