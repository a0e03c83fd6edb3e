"""Detector weight files: hitdet's ``.pt`` (state dict + metadata) and Lightning ``.ckpt`` files.

No NNI or Lightning import here, so ``hitdet eval`` starts fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hitdet.errors import UserError
from hitdet.io import save_torch_atomic

WEIGHTS_FORMAT = "hitdet-weights"
_PREFIXES = ("_model.", "model.")


def save_weights(path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], **meta: Any) -> Path:
    """Write a detector's state dict (plus metadata: epoch, metrics) atomically."""
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    return save_torch_atomic(path, {"format": WEIGHTS_FORMAT, "state_dict": state, **meta})


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The detector state dict in a hitdet ``.pt``, a Lightning ``.ckpt`` or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read weights: {reason}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise UserError(f"{path}: not a detector state dict or checkpoint")
    for prefix in _PREFIXES:
        if data and all(k.startswith(prefix) for k in data):
            data = {k[len(prefix):]: v for k, v in data.items()}
            break
    return data


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load trained weights into a detector built from the architecture they were trained with.

    Args:
        model: the detector, e.g. ``build_detector("RUN/architecture.json")``.
        path: ``RUN/best.pt``, ``RUN/last.pt``, a Lightning ``.ckpt`` or a bare state dict file.

    Returns:
        ``model``, with the weights loaded (its train/eval mode unchanged).

    Raises:
        UserError: the file is missing or unreadable, or its tensors do not fit ``model`` (another
            architecture); the one-line message names the file.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shape)} of another shape"
                  f" (first: {(missing + unexpected + shape)[0]!r})")
        raise UserError(f"{path}: weights do not fit this architecture: {detail}")
    model.load_state_dict(state)
    return model
