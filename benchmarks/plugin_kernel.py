"""The fused NetVLAD Triton kernel against PyTorch eager NetVLAD (FP16 and FP32), on a GPU.

Side by side in one run, batch 1/8/32 x maps 15x20/30x40/60x80, K=64, D=112 (the default
EfficientNet-Lite0 model): median time over ``--repeat`` CUDA-event-timed runs after warm-up,
the speed-ups of the FP16 kernel over eager FP16 and eager FP32 and of the FP32 kernel over
eager FP32, the FP16 kernel's max error against the FP32 layer, and its achieved memory
bandwidth (bytes it must move: features + assignment weight and bias + centroids + output,
over its time) as a fraction of the GPU's peak (``--peak-gbs``, default: looked up from the
device name). Needs a CUDA GPU; without one it prints why, writes the JSON with ``"status": "not
run"`` and exits 0.

    python benchmarks/plugin_kernel.py --json benchmarks/results/plugin_kernel.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vpr_edge.cli.help_format import HelpFormatter

#: peak DRAM bandwidth in GB/s by device-name fragment (vendor data sheets)
PEAK_GBS = {"H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100": 3350, "H200": 4800,
            "A100-SXM4-80GB": 2039, "A100": 1555, "L4": 300, "Orin": 204.8}
BATCHES = (1, 8, 32)
MAPS = ((15, 20), (30, 40), (60, 80))
CLUSTERS, DIM = 64, 112  # NetVLAD K and D of the default model


def fp16_bytes_moved(batch: int, height: int, width: int, clusters: int = CLUSTERS,
                     dim: int = DIM) -> int:
    """Bytes the FP16 kernel must read and write at least: the features ``[N, D, H, W]``, the
    layer's assignment weight ``[K, D]``, bias ``[K]`` and centroids ``[K, D]``, and the
    descriptors ``[N, K * D]``, 2 bytes each."""
    layer = 2 * clusters * dim + clusters
    return 2 * (batch * dim * height * width + layer + batch * clusters * dim)


def speedups(row: dict) -> dict:
    """Each kernel's speed-up (time ratio) over the eager layers, from a row's medians."""
    return {"kernel_fp16_speedup_vs_eager_fp16":
            round(row["eager_fp16_ms"] / row["kernel_fp16_ms"], 2),
            "kernel_fp16_speedup_vs_eager_fp32":
            round(row["eager_fp32_ms"] / row["kernel_fp16_ms"], 2),
            "kernel_fp32_speedup_vs_eager_fp32":
            round(row["eager_fp32_ms"] / row["kernel_fp32_ms"], 2)}


def peak_bandwidth(device_name: str) -> float | None:
    for fragment, gbs in PEAK_GBS.items():
        if fragment in device_name:
            return float(gbs)
    return None


def cuda_time_ms(fn, warmup: int, repeat: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def bench(warmup: int, repeat: int, peak_gbs: float | None) -> list[dict]:
    import torch

    from vpr_edge.export.plugin.kernel import fused_netvlad
    from vpr_edge.training.netvlad import NetVLAD

    torch.manual_seed(0)
    layer32 = NetVLAD(CLUSTERS, DIM).eval().cuda()
    layer16 = NetVLAD(CLUSTERS, DIM).eval().cuda()
    layer16.load_state_dict(layer32.state_dict())
    layer16.half()
    weights32 = [t.detach() for t in (layer32.assignment_weight, layer32.assignment_bias,
                                      layer32.centroids)]
    weights16 = [t.half() for t in weights32]
    rows = []
    for n in BATCHES:
        for h, w in MAPS:
            x32 = torch.randn(n, DIM, h, w, device="cuda").relu()
            x16 = x32.half()
            with torch.no_grad():
                reference = layer32(x16.float())
                row = {"batch": n, "map": f"{h}x{w}"}
                for name, fn in (
                        ("eager_fp32", lambda: layer32(x32)),
                        ("eager_fp16", lambda: layer16(x16)),
                        ("kernel_fp32", lambda: fused_netvlad(x32, *weights32)),
                        ("kernel_fp16", lambda: fused_netvlad(x16, *weights16))):
                    row[f"{name}_ms"] = round(cuda_time_ms(fn, warmup, repeat), 4)
                got = fused_netvlad(x16, *weights16).float()
            row["kernel_fp16_max_abs_error"] = float((got - reference).abs().max())
            row.update(speedups(row))
            gbs = fp16_bytes_moved(n, h, w) / (row["kernel_fp16_ms"] * 1e-3) / 1e9
            row["kernel_fp16_gbs"] = round(gbs, 1)
            row["fraction_of_peak"] = None if peak_gbs is None else round(gbs / peak_gbs, 3)
            rows.append(row)
            print(f"{n:>5} {h:>3}x{w:<3} {row['eager_fp32_ms']:>9.3f} {row['eager_fp16_ms']:>9.3f}"
                  f" {row['kernel_fp32_ms']:>9.3f} {row['kernel_fp16_ms']:>9.3f} "
                  f"{row['kernel_fp16_speedup_vs_eager_fp16']:>7.2f}x {gbs:>8.1f} "
                  f"{row['kernel_fp16_max_abs_error']:>9.2e}", flush=True)
    return rows


def cuda_device(report: dict, what: str) -> str | None:
    """The CUDA device name, or None after noting in ``report`` that ``what`` was not run."""
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    print(f"no CUDA GPU here: {what} was not run (run it on a GPU machine)")
    report["status"] = "not run: no CUDA GPU"
    return None


def write_report(report: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    p.add_argument("--repeat", type=int, default=50, help="timed runs (median reported)")
    p.add_argument("--peak-gbs", type=float, default=None,
                   help="the GPU's peak memory bandwidth in GB/s (default: by device name)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    report: dict = {"benchmark": "plugin_kernel"}
    device = cuda_device(report, "the kernel benchmark")
    if device is not None:
        peak = args.peak_gbs or peak_bandwidth(device)
        print(f"{device}, peak {peak} GB/s; K={CLUSTERS}, D={DIM}; median of {args.repeat} "
              "runs, ms")
        print(f"{'batch':>5} {'map':<7} {'eager32':>9} {'eager16':>9} {'kern32':>9} "
              f"{'kern16':>9} {'vs e16':>8} {'GB/s':>8} {'max err':>9}")
        report.update(status="ran", device=device, peak_gbs=peak,
                      rows=bench(args.warmup, args.repeat, peak))
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
