"""A retrieval montage on Corridor: query, best match, ground truth, for a few queries.

Rows are ``--failures`` queries whose best match is wrong, then queries chosen evenly along
the corridor; columns are the query, the model's best database match (with its cosine score,
green when correct, red when not) and the middle one of its ground-truth images (Corridor
lists the reference frames within +-2 of the query's, so usually the query's own frame). The
model is ``--model`` or, by default, the same fresh init model as ``loop_closure.py``
(EfficientNet-Lite0 NetVLAD, k-means on Gardens Point, no training: Corridor is unseen), made
in a temporary folder that is removed afterwards.

    python benchmarks/retrieval_montage.py --plot benchmarks/results/corridor_montage.png \\
        --json benchmarks/results/corridor_montage.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vpr_edge.cli.help_format import HelpFormatter

from loop_closure import add_model_arguments, describe_files, model_to_use  # neighbour script


def pick_queries(correct: np.ndarray, count: int, failures: int) -> list[int]:
    """``count`` query indices: up to ``failures`` wrong ones (evenly spread among the wrong
    ones), then evenly spaced others."""
    wrong = [int(i) for i in np.flatnonzero(~correct)]
    take = min(failures, count, len(wrong))
    chosen = [wrong[int(j)] for j in np.linspace(0, len(wrong) - 1, take).round()] if take else []
    rest = [i for i in range(len(correct)) if i not in chosen]
    need = count - len(chosen)
    if need > 0 and rest:
        chosen += [rest[int(j)] for j in np.linspace(0, len(rest) - 1, need).round()]
    return chosen


def middle(names: list[str]) -> str:
    """The middle ground-truth image (Corridor lists the query's frame +-2)."""
    return names[len(names) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    add_model_arguments(p)
    p.add_argument("--rows", type=int, default=5, help="queries shown")
    p.add_argument("--failures", type=int, default=2, help="wrong matches shown first")
    p.add_argument("--plot", type=Path, default=None, help="write the montage (PNG) here")
    p.add_argument("--json", type=Path, default=None, help="write the chosen rows here")
    args = p.parse_args(argv)

    from vpr_edge.images import load_image
    from vpr_edge.training.datasets.corridor import corridor_dataset

    if not (args.data / "corridor").is_dir():
        print(f"skipped: no Corridor under {args.data}")
        return 0
    data = corridor_dataset(args.data / "corridor")
    refs, queries = list(data.database.paths), list(data.queries.paths)
    with model_to_use(args.model, args.data, "vpr-montage-") as model:
        db, qd = describe_files(model, refs), describe_files(model, queries)
    sims = qd @ db.T
    best = sims.argmax(1)
    truth = data.positives()
    correct = np.array([b in t for b, t in zip(best, truth)])
    rows = []
    for q in pick_queries(correct, args.rows, args.failures):
        rows.append({"query": queries[q].name, "match": refs[best[q]].name,
                     "score": round(float(sims[q, best[q]]), 4), "correct": bool(correct[q]),
                     "ground_truth": [refs[t].name for t in truth[q]]})
    print(f"Corridor: {len(queries)} queries, {len(refs)} database images, Recall@1 "
          f"{correct.mean():.3f} (model {Path(model).name})")
    print(f"{'query':<14}{'best match':<14}{'score':>7}  {'correct':<8}ground truth")
    for r in rows:
        print(f"{r['query']:<14}{r['match']:<14}{r['score']:>7.3f}  {str(r['correct']):<8}"
              f"{', '.join(r['ground_truth'])}")
    plotted = False
    if args.plot is not None:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("no montage: matplotlib is not installed (pip install 'vpr-edge[bench]')")
        else:
            fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.4 * len(rows)), dpi=100,
                                     squeeze=False)
            root = args.data / "corridor"
            for ax_row, r in zip(axes, rows):
                panels = ((root / "query" / r["query"], f"query {r['query']}", "black"),
                          (root / "ref" / r["match"], f"match {r['match']}  {r['score']:.3f}",
                           "green" if r["correct"] else "red"),
                          (root / "ref" / middle(r["ground_truth"]),
                           f"ground truth {middle(r['ground_truth'])}", "black"))
                for ax, (path, title, colour) in zip(ax_row, panels):
                    ax.imshow(load_image(path))
                    ax.set_title(title, fontsize=8, color=colour)
                    ax.axis("off")
            fig.suptitle(f"Corridor, Recall@1 {correct.mean():.3f}", fontsize=10)
            fig.tight_layout()
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.plot)
            plt.close(fig)
            plotted = True
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"recall_at_1": round(float(correct.mean()), 4),
                                         "rows": rows,
                                         "plot": str(args.plot) if plotted else None},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
