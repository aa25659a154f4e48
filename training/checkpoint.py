"""Self-describing checkpoints: config + weights + preprocessing + provenance in one file.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "vpr-edge-checkpoint", "format_version": 1,
     "config": ModelConfig.to_dict(), "preprocessing": {...}, "state_dict": {...},
     "weights_sha256": "...", "provenance": {...}, "training_state": {...} or None}

:func:`load_model` rebuilds the model from the file alone. Files are read with
``torch.load(weights_only=True)`` (no arbitrary code runs) and written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vpr_edge import __version__
from vpr_edge.atomic_file import atomic_write
from vpr_edge.errors import INSTALL_NEWER, InvalidInputError, ModelFormatError

from .config import ModelConfig
from .model import VPRModel, build_model

CHECKPOINT_FORMAT = "vpr-edge-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("format", "format_version", "config", "state_dict", "weights_sha256")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    weights_sha256: str
    preprocessing: dict[str, Any]
    provenance: dict[str, Any]
    training_state: dict[str, Any] | None

    def build(self) -> VPRModel:
        """The model, weights loaded, in eval mode (no pretrained download needed)."""
        config = self.config.replace(
            backbone=dataclasses.replace(self.config.backbone, pretrained=False))
        model = build_model(config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            raise ModelFormatError(
                f"{self.path}: weights do not fit the architecture its config describes "
                f"({_state_dict_problem(exc)}); the file is damaged or was edited"
            ) from exc
        model.config = self.config
        return model.eval()


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over key names, shapes and float32 bytes of every tensor, in sorted key order.

    Independent of device, of dtype (weights are hashed as float32) and of dict order, so
    export can recompute it to tie an ONNX file to its checkpoint.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        digest.update(key.encode("utf-8"))
        digest.update(repr(tuple(tensor.shape)).encode("ascii"))
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=False, timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_checkpoint(path: str | os.PathLike, model: VPRModel, *,
                    provenance: dict[str, Any] | None = None,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (config, weights, preprocessing, provenance) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "preprocessing": model.config.to_dict()["preprocess"],
        "state_dict": state,
        "weights_sha256": weights_sha256(state),
        "provenance": {
            "package_version": __version__,
            "torch_version": str(torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            **(provenance or {}),
        },
        "training_state": training_state,
    }
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint; every problem is a :class:`ModelFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged pickle can raise almost anything (KeyError, ...)
        text = str(exc)
        if "not an allowed global" in text:  # (torch's advice: load it unsafely)
            why = ("it holds Python objects besides tensors and plain data, which vpr-edge "
                   "does not unpickle (a vpr-edge checkpoint never does)")
        elif text.startswith("Weights only load failed"):
            why = "not a PyTorch file, or a damaged one"
        else:
            why = (f"{type(exc).__name__}: "
                   f"{text.splitlines()[0] if text else 'truncated or damaged'}")
        raise ModelFormatError(
            f"{path}: not a readable vpr-edge checkpoint ({why}); if it is a copy, copy it "
            "again (a truncated file reads so), else make one with `vpr-train init` or "
            "`vpr-train fit`"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelFormatError(
            f"{path}: not a vpr-edge checkpoint (no format '{CHECKPOINT_FORMAT}'); a plain "
            "state_dict or another project's file cannot be used: make one with "
            "`vpr-train init` or `vpr-train fit`"
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ModelFormatError(
            f"{path}: checkpoint format version {version!r} is newer than this vpr-edge reads "
            f"({CHECKPOINT_VERSION}); {INSTALL_NEWER}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelFormatError(f"{path}: checkpoint lacks {', '.join(missing)}; it is damaged")
    try:
        config = ModelConfig.from_dict(data["config"])
    except (InvalidInputError, ModelFormatError) as exc:  # the config's own, without the file
        raise ModelFormatError(f"{path}: {exc}") from exc
    state = data["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFormatError(f"{path}: checkpoint state_dict is not a dict of tensors")
    stated = data["weights_sha256"]
    if stated != weights_sha256(state):
        raise ModelFormatError(
            f"{path}: weights do not match the checksum stored with them: the file is damaged"
        )
    return Checkpoint(
        path=path,
        config=config,
        state_dict=state,
        weights_sha256=stated,
        preprocessing=data.get("preprocessing") or config.to_dict()["preprocess"],
        provenance=dict(data.get("provenance") or {}),
        training_state=data.get("training_state"),
    )


def _state_dict_problem(exc: RuntimeError, limit: int = 400) -> str:
    """torch's load_state_dict error in one line: which keys are missing or unexpected and
    which shapes differ (its first line says only that loading failed)."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    text = "; ".join(lines) or str(exc).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_model(path: str | os.PathLike) -> VPRModel:
    """Rebuild the model stored in a checkpoint (eval mode), from the file alone."""
    return load_checkpoint(path).build()
