"""What the ROS 1 and ROS 2 image players share: loading frames and summarising a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SUFFIXES = (".jpg", ".jpeg", ".png")


def player_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help="image folders, published one after the other")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="frames are resized to this")
    parser.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8",
                        help="sensor_msgs/Image encoding")
    parser.add_argument("--compressed", action="store_true",
                        help="publish JPEG sensor_msgs/CompressedImage on image/compressed "
                             "instead")
    parser.add_argument("--linger", type=float, default=3.0,
                        help="seconds to keep listening after the last frame")
    parser.add_argument("--wait-subscriber", type=float, default=60.0,
                        help="seconds to wait for the node to subscribe")
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    return parser


def load_frames(folders: list[Path], size: tuple[int, int]) -> list[np.ndarray]:
    """Every image of the folders, in order, as RGB (upright, as vpr-edge loads files)
    resized to ``size`` (H, W)."""
    from PIL import Image

    from vpr_edge.images import load_image

    files = [p for folder in folders for p in sorted(folder.iterdir())
             if p.suffix.lower() in SUFFIXES]
    height, width = size
    return [np.asarray(Image.fromarray(load_image(p)).resize((width, height), Image.BILINEAR))
            for p in files]


class Recorder:
    """Published frames and received loop closures, matched by stamp."""

    def __init__(self) -> None:
        self.published: list[dict] = []
        self.loops: list[dict] = []
        self._by_stamp: dict[int, int] = {}

    def sent(self, index: int, stamp: float, monotonic: float) -> None:
        self._by_stamp[round(stamp * 1e6)] = index
        self.published.append({"index": index, "stamp": stamp, "sent": monotonic})

    def loop(self, query_stamp: float, match_stamp: float, score: float, received: float,
             **extra) -> None:
        q = self._by_stamp.get(round(query_stamp * 1e6))
        m = self._by_stamp.get(round(match_stamp * 1e6))
        self.loops.append({"query": q, "match": m, "score": score, **extra,
                           "latency_ms": None if q is None
                           else (received - self.published[q]["sent"]) * 1e3})

    def write(self, path: Path, *, rate: float, achieved: float, size) -> dict:
        latencies = [x["latency_ms"] for x in self.loops if x["latency_ms"] is not None]
        result = {"frames": len(self.published), "rate_hz": rate, "achieved_rate_hz": achieved,
                  "size": list(size), "loops": self.loops,
                  "latency_ms_p50": float(np.median(latencies)) if latencies else None,
                  "latency_ms_p95": float(np.percentile(latencies, 95)) if latencies else None}
        path.write_text(json.dumps(result, indent=2))
        print(f"published {result['frames']} frames at {achieved:.1f} Hz; "
              f"{len(self.loops)} loop closures; latency p50 {result['latency_ms_p50']} ms")
        return result


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()
