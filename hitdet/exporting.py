"""Deployable detectors: TorchScript, torch.export (ExportedProgram) and ONNX files of a trained fixed detector.

Why: a shipped detector should run without this project (and without NNI): TorchScript and an
ExportedProgram need only torch (plus torchvision's ops), ONNX any ONNX runtime. Every file carries
the architecture JSON (with the categories the weights were trained on), so a deployment maps
labels 1..K back to category ids and names without other files.

What each format takes and returns:

- **TorchScript** (``torch.jit.script`` of torchvision's ``FasterRCNN``): a list of float images
  3xHxW in [0, 1], any sizes; as every scripted torchvision detector it returns a tuple
  ``(losses, detections)``, detections a list of ``{"boxes", "labels", "scores"}``. The
  architecture JSON is the extra file ``architecture.json``.
- **ExportedProgram** (``torch.export.export`` of the detector, saved with ``torch.export.save``, a
  ``.pt2`` file; the format torch recommends now that TorchScript is deprecated): one image 3xHxW
  of the fixed size given at export, in a list (``program.module()([image])``); returns a list of
  one ``{"boxes", "labels", "scores"}`` dict, N detections varying per image. The architecture
  JSON and the input size are the extra files ``architecture.json`` and ``input_size``. Two of
  torchvision's functions branch on data (``batched_nms`` on whether there are boxes,
  ``MultiScaleRoIAlign`` on ``len`` of the RoIs), which torch.export cannot capture; while
  exporting they are replaced by equivalents without the branch (:func:`export_friendly_torchvision`).
- **ONNX** (two-stage detectors only: torchvision's RetinaNet post-processing does not trace to
  a graph that gives PyTorch's detections; opset 11 or later, ``torch.onnx.export`` of the traced model): one image
  ``image`` of the fixed size 3xHxW given at export (``input_size``); outputs ``boxes``
  (Nx4 xyxy, pixels of the input image), ``labels`` (N, int64) and ``scores`` (N). N varies per
  image; the image size and the batch of one are fixed. The architecture JSON is the metadata
  property ``architecture`` (needs the ``onnx`` package, ``pip install hitdet[export]``).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import RetinaNet

from hitdet.architecture import Architecture
from hitdet.errors import UserError
from hitdet.io import atomic_path, write_atomic

FORMATS = ("torchscript", "exported-program", "onnx")
ONNX_OPSET = 17
MIN_ONNX_OPSET = 11
ONNX_INPUT = "image"
ONNX_OUTPUTS = ("boxes", "labels", "scores")
ARCHITECTURE_KEY = "architecture.json"
INPUT_SIZE_KEY = "input_size"


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


def _batched_nms_without_branch(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                                 iou_threshold: float) -> torch.Tensor:
    """torchvision's ``batched_nms`` (the coordinate trick) without its ``if boxes.numel() == 0``.

    The offset per class is (largest coordinate + 1) x class index, so boxes of different classes never
    overlap and one NMS is a per-class NMS; a zero is appended before the max so that no boxes
    give an empty keep list rather than an error. Boxes are clipped to the image (>= 0) by then.
    """
    from torchvision.ops import nms

    max_coordinate = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _multiscale_roi_align_without_len(
    x_filtered: list[torch.Tensor], boxes: list[torch.Tensor], output_size: list[int], sampling_ratio: int,
    scales: list[float] | None, mapper: Any,
) -> torch.Tensor:
    """torchvision's ``_multiscale_roi_align`` with the RoI count read as a (symbolic) size, not ``len()``."""
    from torchvision.ops import poolers, roi_align

    if scales is None or mapper is None:
        raise ValueError("scales and mapper should not be None")
    rois = poolers._convert_to_roi_format(boxes)
    if len(x_filtered) == 1:
        return roi_align(x_filtered[0], rois, output_size=output_size, spatial_scale=scales[0],
                         sampling_ratio=sampling_ratio)
    levels = mapper(boxes)
    result = x_filtered[0].new_zeros((rois.shape[0], x_filtered[0].shape[1], *output_size))
    for level, (feature, scale) in enumerate(zip(x_filtered, scales, strict=True)):
        idx = torch.where(levels == level)[0]
        pooled = roi_align(feature, rois[idx], output_size=output_size, spatial_scale=scale,
                           sampling_ratio=sampling_ratio)
        result = result.index_put((idx,), pooled.to(result.dtype))
    return result


@contextlib.contextmanager
def export_friendly_torchvision() -> Iterator[None]:
    """While exporting: torchvision's ``batched_nms`` and ``_multiscale_roi_align`` without data-dependent branches.

    Both compute what torchvision's do (the tests compare detections with the eager detector's);
    the originals are restored on exit. Eager torchvision on CPU runs NMS class by class above
    1,000 boxes and the coordinate trick below; both keep the same boxes.
    """
    from torchvision.ops import boxes as box_ops
    from torchvision.ops import poolers

    saved = box_ops.batched_nms, poolers._multiscale_roi_align
    box_ops.batched_nms, poolers._multiscale_roi_align = _batched_nms_without_branch, _multiscale_roi_align_without_len
    try:
        yield
    finally:
        box_ops.batched_nms, poolers._multiscale_roi_align = saved


def export_program(model: nn.Module, input_size: tuple[int, int]) -> torch.export.ExportedProgram:
    """``torch.export.export`` of a detector in eval mode, for one image of ``input_size`` (H, W)."""
    h, w = input_size
    example = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    with export_friendly_torchvision(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's meta registrations' deprecation notices
        return torch.export.export(model.eval(), ([example],), strict=False)


def export_exported_program(
    model: nn.Module, path: str | os.PathLike[str], input_size: tuple[int, int], arch: Architecture | None = None
) -> Path:
    """Export ``model`` with torch.export for one image of ``input_size`` (H, W) and save it (``.pt2``) atomically."""
    program = export_program(model, input_size)
    h, w = input_size
    extra = {INPUT_SIZE_KEY: f"{h}x{w}"}
    if arch is not None:
        extra[ARCHITECTURE_KEY] = json.dumps(arch.to_dict())
    return write_atomic(path, lambda f: torch.export.save(program, f, extra_files=extra))


def load_exported_program(
    path: str | os.PathLike[str],
) -> tuple[torch.export.ExportedProgram, dict[str, Any] | None, tuple[int, int] | None]:
    """A ``.pt2`` detector file: the program, and the architecture JSON (a dict) and input size (H, W) saved with
    it (None for a file ``hitdet export`` did not write)."""
    import torchvision  # noqa: F401  (registers torchvision::nms and roi_align, which the program calls)

    extra = {ARCHITECTURE_KEY: "", INPUT_SIZE_KEY: ""}
    program = torch.export.load(str(path), extra_files=extra)
    size = tuple(int(v) for v in extra[INPUT_SIZE_KEY].split("x")) if extra[INPUT_SIZE_KEY] else None
    arch = json.loads(extra[ARCHITECTURE_KEY]) if extra[ARCHITECTURE_KEY] else None
    return program, arch, size  # type: ignore[return-value]


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
