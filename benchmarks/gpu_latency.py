"""Whole-model latency on a GPU: PyTorch eager FP32 / FP16 and ONNX Runtime's CUDA provider.

Side by side in one run, for the default model architecture (EfficientNet-Lite0, NetVLAD
K = 64, 240x320; random weights, so that it needs no weights package: the timing does not
depend on them) at batch 1, 8 and 32: PyTorch eager in FP32 and FP16 (CUDA-event timed), and the
exported FP32 and FP16 ONNX graphs on ONNX Runtime's ``CUDAExecutionProvider`` when
onnxruntime-gpu is installed (wall-clock, input copied from the host and the descriptor back,
as ``Localizer`` does). Medians over ``--repeat`` runs after ``--warmup``. Needs a CUDA GPU;
without one it prints why, writes the JSON with ``"status": "not run"`` and exits 0. The
fused NetVLAD kernel alone is ``plugin_kernel.py``.

    python benchmarks/gpu_latency.py --json benchmarks/results/gpu_latency.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from plugin_kernel import cuda_device, cuda_time_ms, write_report  # neighbour script

from vpr_edge.cli.help_format import HelpFormatter

BATCHES = (1, 8, 32)


def eager_rows(model, warmup: int, repeat: int) -> list[dict]:
    import torch

    from vpr_edge.training.model import images_to_tensor

    rows = []
    pre = model.config.preprocess
    for batch in BATCHES:
        frames = np.random.default_rng(batch).integers(
            0, 256, (batch, pre.input_height, pre.input_width, 3), dtype=np.uint8)
        x32 = images_to_tensor(frames, pre).cuda()
        for name, dtype in (("pytorch eager fp32", torch.float32),
                            ("pytorch eager fp16", torch.float16)):
            net = model.to("cuda", dtype)
            x = x32.to(dtype)
            with torch.inference_mode():
                ms = cuda_time_ms(lambda net=net, x=x: net(x), warmup, repeat)
            rows.append({"runtime": name, "batch": batch, "median_ms": round(ms, 3)})
    model.to("cpu", torch.float32)
    return rows


def onnxruntime_rows(model, warmup: int, repeat: int) -> list[dict]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [{"runtime": "onnxruntime cuda", "status": "not run: onnxruntime has no "
                 "CUDAExecutionProvider (pip install 'vpr-edge[gpu]')"}]
    from vpr_edge.export.exporter import export
    from vpr_edge.export.targets import ExportConfig
    from vpr_edge.training.checkpoint import save_checkpoint

    rows = []
    pre = model.config.preprocess
    with tempfile.TemporaryDirectory(prefix="vpr-gpu-latency-") as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "gpu.pt", model)
        files = export(ExportConfig(checkpoint=checkpoint, output_dir=Path(tmp), fp16=True,
                                    engine=False, validate=False)).files
        for name, key in (("onnxruntime cuda fp32", "onnx"), ("onnxruntime cuda fp16",
                                                               "onnx-fp16")):
            session = ort.InferenceSession(str(files[key]), providers=["CUDAExecutionProvider"])
            if session.get_providers()[0] != "CUDAExecutionProvider":
                rows.append({"runtime": name, "status": "not run: CUDA provider did not load"})
                continue
            input_name = session.get_inputs()[0].name
            for batch in BATCHES:
                frames = np.random.default_rng(batch).integers(
                    0, 256, (batch, pre.input_height, pre.input_width, 3), dtype=np.uint8)
                for _ in range(warmup):
                    session.run(None, {input_name: frames})
                times = []
                for _ in range(repeat):
                    tic = time.perf_counter()
                    session.run(None, {input_name: frames})
                    times.append((time.perf_counter() - tic) * 1e3)
                rows.append({"runtime": name, "batch": batch,
                             "median_ms": round(float(np.median(times)), 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    p.add_argument("--repeat", type=int, default=50, help="timed runs (median reported)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    report: dict = {"benchmark": "gpu_latency"}
    device = cuda_device(report, "the GPU latency benchmark")
    if device is not None:
        from vpr_edge.training.config import preset
        from vpr_edge.training.model import build_model

        model = build_model(preset(pretrained=False)).eval()
        rows = eager_rows(model, args.warmup, args.repeat)
        rows += onnxruntime_rows(model, args.warmup, args.repeat)
        print(f"{device}; {model.config.name}, 240x320; median of {args.repeat} runs")
        print(f"{'runtime':<24}{'batch':>6}{'ms':>10}{'frames/s':>10}")
        for r in rows:
            if "median_ms" in r:
                print(f"{r['runtime']:<24}{r['batch']:>6}{r['median_ms']:>10.2f}"
                      f"{1e3 * r['batch'] / r['median_ms']:>10.0f}")
            else:
                print(f"{r['runtime']:<24}  {r['status']}")
        report.update(status="ran", device=device, rows=rows)
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
