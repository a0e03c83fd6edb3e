"""Deployable detectors: TorchScript and ONNX files of a trained fixed detector.

Why: a shipped detector should run without this project (and without NNI): TorchScript needs
only libtorch (plus torchvision's ops), ONNX any ONNX runtime. Both files carry the
architecture JSON (with the categories the weights were trained on), so a deployment maps
labels 1..K back to category ids and names without other files.

What each format takes and returns:

- **TorchScript** (``torch.jit.script`` of torchvision's ``FasterRCNN``): a list of float images
  3xHxW in [0, 1], any sizes; as every scripted torchvision detector it returns a tuple
  ``(losses, detections)``, detections a list of ``{"boxes", "labels", "scores"}``. The
  architecture JSON is the extra file ``architecture.json``.
- **ONNX** (two-stage detectors only: torchvision's RetinaNet post-processing does not trace to
  a graph that gives PyTorch's detections; opset 11 or later, ``torch.onnx.export`` of the traced model): one image
  ``image`` of the fixed size 3xHxW given at export (``input_size``); outputs ``boxes``
  (Nx4 xyxy, pixels of the input image), ``labels`` (N, int64) and ``scores`` (N). N varies per
  image; the image size and the batch of one are fixed. The architecture JSON is the metadata
  property ``architecture`` (needs the ``onnx`` package, ``pip install hitdet[export]``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import RetinaNet

from hitdet.architecture import Architecture
from hitdet.errors import UserError
from hitdet.io import atomic_path

FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17
MIN_ONNX_OPSET = 11
ONNX_INPUT = "image"
ONNX_OUTPUTS = ("boxes", "labels", "scores")
ARCHITECTURE_KEY = "architecture.json"


def script_detector(model: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of a detector in eval mode (torch's deprecation notice silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.jit.script(model.eval())


def export_torchscript(model: nn.Module, path: str | os.PathLike[str], arch: Architecture | None = None) -> Path:
    """Script ``model`` and save it to ``path`` atomically, with the architecture JSON as an extra file."""
    path = Path(path)
    scripted = script_detector(model)
    extra = {ARCHITECTURE_KEY: json.dumps(arch.to_dict())} if arch is not None else {}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
    return path


def load_torchscript(path: str | os.PathLike[str]) -> tuple[torch.jit.ScriptModule, dict[str, Any] | None]:
    """A TorchScript detector file and the architecture JSON (a dict) saved with it, if any."""
    extra = {ARCHITECTURE_KEY: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, (json.loads(extra[ARCHITECTURE_KEY]) if extra[ARCHITECTURE_KEY] else None)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: tuple[int, int],
    arch: Architecture | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Export ``model`` to ONNX for one image of ``input_size`` (H, W), atomically.

    torchvision's detectors trace their ONNX-specific code paths (resize, anchors, NMS) when
    exported, so the graph keeps the variable number of detections; the input size is fixed.
    """
    if isinstance(model, RetinaNet):
        raise UserError("ONNX export: only the two-stage detector (faster_rcnn) exports to ONNX with outputs equal to "
                        "PyTorch's; export the one-stage retinanet as TorchScript (--format torchscript)")
    if opset < MIN_ONNX_OPSET:
        raise UserError(f"--opset: torchvision detectors need ONNX opset {MIN_ONNX_OPSET} or later, got {opset}")
    path = Path(path)
    h, w = input_size
    example = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    model = model.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in torchvision's code
        torch.onnx.export(
            model, ([example],), str(tmp), opset_version=opset, dynamo=False,
            input_names=[ONNX_INPUT], output_names=list(ONNX_OUTPUTS), do_constant_folding=True,
        )
        if arch is not None:
            _add_onnx_metadata(tmp, {"architecture": json.dumps(arch.to_dict()), "input_size": f"{h}x{w}"})
    return path


def _add_onnx_metadata(path: Path, props: dict[str, str]) -> None:
    try:
        import onnx
    except ImportError:
        warnings.warn("onnx is not installed: the ONNX file carries no architecture metadata "
                      "(pip install hitdet[export])", UserWarning, stacklevel=3)
        return
    proto = onnx.load(str(path))
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def onnx_session(path: str | os.PathLike[str]) -> Any:
    """An onnxruntime CPU session of an exported detector (needs ``pip install hitdet[export]``)."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed (pip install hitdet[export])") from None
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_detections(session: Any, image: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
    """Run an exported detector's session on one 3xHxW image; ``{"boxes", "labels", "scores"}`` tensors."""
    array = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    outputs = session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: array.astype(np.float32)})
    return {name: torch.from_numpy(value) for name, value in zip(ONNX_OUTPUTS, outputs, strict=True)}
