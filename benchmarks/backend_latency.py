"""A model on a GPU backend: inference latency by batch, agreement with ONNX Runtime on the CPU,
and ``Localizer.query`` on that backend, side by side with the CPU in one run.

For a TensorRT engine (``--backend tensorrt``) or an ONNX model on ONNX Runtime's CUDA or
TensorRT provider (``onnxruntime-cuda``, ``onnxruntime-tensorrt``); ``auto`` takes the first
that runs here, as ``Localizer`` does. No torch needed. What it measures:

- ``backend.run`` (host frames in, host descriptors out: the copies, the inference and the
  synchronisation a robot pays) at each ``--batches`` size, median and p90 over ``--repeat``
  runs after ``--warmup``, and frames per second;
- with a CPU reference (``--reference``, default: the model itself when it is an ``.onnx``):
  ONNX Runtime's CPU provider at batch 1 (``--threads``), and the cosine between the two
  backends' descriptors of ``--frames`` random frames;
- ``Localizer.query`` of a 640x480 frame on the backend against a ``--places`` map, split into
  resize, inference and search, and its overhead over inference alone (the breakdown of
  ``latency.py``).

Without a GPU backend here it prints why and writes ``"status": "not run: ..."``.

    python benchmarks/backend_latency.py runs/demo/model.engine \
        --reference runs/demo/model.fp16.onnx --json benchmarks/results/engine_latency.json
    python benchmarks/backend_latency.py runs/demo/model.fp16.onnx --backend onnxruntime-cuda
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from latency import print_breakdown, query_breakdown, timed  # neighbour scripts
from plugin_kernel import write_report

from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.paths import expanded_path

CPU = "onnxruntime-cpu"


def latency_rows(backend, batches: list[int], warmup: int, repeat: int) -> list[dict]:
    """``backend.run`` latency for each batch size (random frames of the model's input size)."""
    h, w, _ = backend.input_shape
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        frames = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        result = timed(lambda frames=frames: backend.run(frames), warmup, repeat)
        rows.append({"runtime": backend.name, "batch": batch, **result,
                     "frames_per_s": round(1e3 * batch / result["median_ms"], 1)})
    return rows


def agreement(backend, cpu, frames: int) -> dict[str, float]:
    """Cosine between two backends' descriptors of the same random frames."""
    h, w, _ = backend.input_shape
    images = np.random.default_rng(1).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    cosine = np.sum(backend.run(images) * cpu.run(images), axis=1)
    return {"frames": frames, "cosine_min": round(float(cosine.min()), 5),
            "cosine_median": round(float(np.median(cosine)), 5)}


def cpu_row(cpu, threads: int, warmup: int, repeat: int) -> dict:
    """ONNX Runtime on the CPU at batch 1, the baseline beside the GPU backend."""
    (row,) = latency_rows(cpu, [1], warmup, repeat)
    return {**row, "runtime": f"onnxruntime-cpu, {threads} thread(s)"}


def speedup_at_batch1(rows: list[dict]) -> float | None:
    """CPU time / backend time at batch 1 (the first and the last row); None without both."""
    first, last = rows[0], rows[-1]
    if first is last or first["batch"] != 1 or last["batch"] != 1:
        return None
    return round(last["median_ms"] / first["median_ms"], 2)


def gpu_name() -> str | None:
    """The CUDA device's name (through cuda-python), or None where it cannot be read."""
    try:
        from vpr_edge.backends import cuda_memory

        return cuda_memory.device_name(0)
    except Exception:  # no cuda-python: the name is only a label
        return None


def print_inference(results: dict) -> None:
    info = results["backend"]
    print(f"{info['model_path']} on {info['backend']} ({info['runtime']}, {info['device']}: "
          f"{results.get('gpu') or 'GPU name unknown'})")
    print(f"{'runtime':<30}{'batch':>6}{'median ms':>11}{'p90 ms':>9}{'frames/s':>10}")
    for r in results["inference"]:
        print(f"{r['runtime']:<30}{r['batch']:>6}{r['median_ms']:>11.2f}{r['p90_ms']:>9.2f}"
              f"{r['frames_per_s']:>10.0f}")
    if results.get("speedup_over_cpu_batch1"):
        print(f"{info['backend']} vs the CPU at batch 1: {results['speedup_over_cpu_batch1']}x")
    if "agreement" in results:
        a = results["agreement"]
        print(f"{info['backend']} vs the CPU, cosine over {a['frames']} frames: min "
              f"{a['cosine_min']}, median {a['cosine_median']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("model", type=expanded_path, help="the .engine or .onnx file to measure")
    p.add_argument("--backend", default="auto",
                   help="tensorrt, onnxruntime-cuda, onnxruntime-tensorrt, or auto (the first "
                        "that runs the model here)")
    p.add_argument("--reference", type=expanded_path, default=None,
                   help="ONNX model for the CPU baseline and the agreement check (default: the "
                        "model itself when it is an .onnx; none for an engine)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32],
                   help="batch sizes to time (above the backend's maximum, runs are chunked)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the CPU baseline")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    p.add_argument("--repeat", type=int, default=50, help="timed runs")
    p.add_argument("--rounds", type=int, default=200,
                   help="paired rounds (inference, then query) for the query overhead")
    p.add_argument("--places", type=int, default=10000, help="map size for the query breakdown")
    p.add_argument("--frames", type=int, default=32, help="frames for the agreement check")
    p.add_argument("--json", type=expanded_path, default=None, help="write results here")
    args = p.parse_args(argv)

    from vpr_edge import Localizer
    from vpr_edge.backends import open_backend
    from vpr_edge.errors import BackendUnavailableError, MissingDependencyError

    results: dict = {"benchmark": "backend_latency", "model": str(args.model)}
    reference = args.reference
    if reference is None and args.model.suffix == ".onnx":
        reference = args.model
    try:
        backend = open_backend(args.model, backend=args.backend)
        if backend.name == CPU:
            backend.close()
            raise BackendUnavailableError(f"{args.model.name} runs only on the CPU here")
    except (BackendUnavailableError, MissingDependencyError) as exc:
        print(f"no GPU backend runs {args.model.name} here, so it was not measured: {exc}")
        results["status"] = f"not run: {exc}"
        write_report(results, args.json)
        return 0
    with backend:
        results["backend"] = backend.info()
        results["gpu"] = gpu_name()
        rows = latency_rows(backend, args.batches, args.warmup, args.repeat)
        if reference is not None:
            with open_backend(reference, backend=CPU,
                              intra_op_num_threads=args.threads) as cpu:
                results["agreement"] = agreement(backend, cpu, args.frames)
                rows.append(cpu_row(cpu, args.threads, args.warmup, args.repeat))
            results["speedup_over_cpu_batch1"] = speedup_at_batch1(rows)
    results["inference"] = rows
    print_inference(results)
    write_report(results, args.json)  # kept if the query part fails
    with Localizer(args.model, backend=backend.name) as loc:
        results["query"] = query_breakdown(loc, args.places, args.warmup, args.repeat,
                                           args.rounds)
    results["status"] = "ok"
    print_breakdown(f"Localizer.query on {backend.name}, {args.places} places (batch 1)",
                    results["query"])
    write_report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
