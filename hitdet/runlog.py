"""What a run says while it trains: ``RUN/log.txt`` and the progress bar (every Trainer of :mod:`hitdet.runs`).

The run log (:class:`RunLog`, a Lightning callback) writes plain text lines, one every N training steps
and one per epoch, to ``RUN/log.txt`` -- appended to on ``--resume`` -- and, when there is no progress
bar (``--no-progress``), to stderr as well::

    2026-12-05 23:10:01 start: epoch 1/12, 100 steps/epoch, 1 device(s), a line every 20 steps
    2026-12-05 23:10:09 epoch 1/12 step 20/100 | loss 1.553 loss_classifier 0.4102 ... | lr 0.02 | 9.8 img/s
        | eta 0:04:51 | max_rss 1.21G                                        (one line in the file)
    2026-12-05 23:10:41 epoch 1/12 done in 0:00:40 | val AP 0.0123 AP50 0.0401 ... | mean loss 1.402 ...
    2026-12-05 23:18:12 end: 12 epoch(s) in 0:08:11, 12 of 12 done

Epochs are numbered from 1 everywhere a user reads them (bars, log, checkpoint names, JSON, plots,
TensorBoard's ``epoch`` scalar); step N of an epoch is its N-th batch. Memory is the peak GPU memory
allocated by PyTorch (``gpu_mem``) on a GPU, the process's peak resident memory (``max_rss``) on a CPU.

The progress bar (:func:`progress_bar`) is Lightning's tqdm bar on stderr (stdout is left to results),
``Epoch 1/12``, and shows each metric once under a readable name (``loss``, ``val/AP``, ``MACs/uniform``).
Only rank 0 writes.
"""

from __future__ import annotations

import datetime
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

LOG_FILE = "log.txt"

# Bar labels for metrics logged under a prefix or an opaque name.
_BAR_NAMES = {"search/macs_ratio": "MACs/uniform"}


def _short(name: str) -> str:
    """``train/loss_classifier`` -> ``loss_classifier``; ``train/top1_step`` -> ``top1``; ``val/AP`` kept."""
    name = _BAR_NAMES.get(name, name)
    for prefix in ("train/", "search/"):
        name = name.removeprefix(prefix)
    return name.removesuffix("_step")


def _logged(key: str) -> bool:
    """The step values a log line shows: ``train/*`` and the search's ``search/*`` (its weight loss is
    ``train/loss``; expected MACs are shown relative to uniform α)."""
    if key.endswith("_epoch"):
        return False
    if key.startswith("search/"):
        return key not in ("search/loss_weight", "search/macs_expected")
    return key.startswith("train/")


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return v  # NaN and inf are shown as such


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (days as hours)."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def bar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The progress bar's items, each once under a readable name (``train/loss`` -> ``loss``).

    A short name that two metrics would share keeps the first; ``v_num`` (the logger's version) is left out.
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key == "v_num" or key.endswith("_epoch"):
            continue
        name = _short(key)
        if name not in out:
            out[name] = value
    return out


def _images(batch: Any) -> int:
    """Images in a batch: ``(images, targets)``, an image tensor, or the search's ``{"train": ..., "val": ...}``."""
    import torch

    if isinstance(batch, dict):
        return sum(_images(v) for v in batch.values())
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if isinstance(first, torch.Tensor):
            return int(first.shape[0]) if first.dim() == 4 else len(batch)
        if isinstance(first, (list, tuple)):
            return len(first)
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    return 0


def _memory(pl_module: Any) -> str:
    import torch

    device = getattr(pl_module, "device", None)
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        return f"gpu_mem {torch.cuda.max_memory_allocated(device) / 2**30:.2f}G"
    return f"max_rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}G"  # KiB on Linux


def _lr(trainer: Any) -> float | None:
    for opt in getattr(trainer, "optimizers", None) or []:
        for group in getattr(opt, "param_groups", []):
            return float(group["lr"])
    return None


def _callback() -> type:
    from pytorch_lightning.callbacks import Callback

    return Callback


class RunLog(_callback()):  # type: ignore[misc]
    """The run log: a line every ``every`` training steps and one per epoch, into ``path`` (and stderr when ``echo``).

    Losses are the means over the steps since the previous line (those logged as ``train/*`` and the
    search's ``search/loss_*``), the lr that of the first optimiser's first group, images/s over the
    same steps (all devices), the ETA from the mean step time and validation time so far.
    """

    def __init__(self, path: str | Path, every: int = 20, echo: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.every = max(1, int(every))
        self.echo = echo
        self._sums: dict[str, Any] = {}
        self._count = 0
        self._images = 0
        self._window_start = 0.0
        self._step_seconds = 0.0
        self._steps_timed = 0
        self._last = 0.0
        self._epoch_start = 0.0
        self._val_seconds: list[float] = []
        self._val_start: float | None = None
        self._fit_start = 0.0
        self._epoch_sums: dict[str, Any] = {}
        self._epoch_count = 0
        self._epochs_run = 0

    # -- output

    def write(self, trainer: Any, text: str) -> None:
        if not trainer.is_global_zero:
            return
        line = f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')} {text}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            pass  # the log must never stop a run; the checkpoints are what matter
        if self.echo:
            print(line, file=sys.stderr, flush=True)

    # -- counts

    @staticmethod
    def _epochs(trainer: Any) -> str:
        return str(trainer.max_epochs) if trainer.max_epochs and trainer.max_epochs > 0 else "?"

    @staticmethod
    def _batches(trainer: Any) -> int | None:
        n = trainer.num_training_batches
        return int(n) if isinstance(n, (int, float)) and math.isfinite(n) and n > 0 else None

    def _losses(self, sums: dict[str, Any], count: int) -> str:
        parts: dict[str, str] = {}
        for key, total in sorted(sums.items(), key=lambda kv: kv[0] != "train/loss"):  # the total first
            value = _number(total / max(count, 1))
            if value is not None:
                parts.setdefault(_short(key), f"{_short(key)} {_fmt(value)}")
        return " ".join(parts.values())

    # -- hooks

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._fit_start = time.monotonic()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        batches = self._batches(trainer)
        what = "resume" if trainer.current_epoch > 0 or trainer.global_step > 0 else "start"
        world = int(getattr(trainer, "world_size", 1) or 1)
        self.write(trainer, f"{what}: epoch {trainer.current_epoch + 1}/{self._epochs(trainer)}, "
                            f"{batches if batches is not None else '?'} steps/epoch, {world} device(s), "
                            f"a line every {self.every} steps")

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        now = time.monotonic()
        self._epoch_start = self._last = self._window_start = now
        self._sums, self._count, self._images = {}, 0, 0
        self._epoch_sums, self._epoch_count = {}, 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        self._step_seconds += now - self._last
        self._steps_timed += 1
        self._last = now
        self._images += _images(batch) * int(getattr(trainer, "world_size", 1) or 1)
        self._count += 1
        self._epoch_count += 1
        for key, value in trainer.callback_metrics.items():
            if _logged(key):
                v = value.detach() if hasattr(value, "detach") else value
                self._sums[key] = self._sums.get(key, 0) + v
                self._epoch_sums[key] = self._epoch_sums.get(key, 0) + v
        if (batch_idx + 1) % self.every:
            return
        batches = self._batches(trainer)
        seconds = max(now - self._window_start, 1e-9)
        parts = [f"epoch {trainer.current_epoch + 1}/{self._epochs(trainer)} "
                 f"step {batch_idx + 1}/{batches if batches is not None else '?'}"]
        losses = self._losses(self._sums, self._count)
        if losses:
            parts.append(losses)
        lr = _lr(trainer)
        if lr is not None:
            parts.append(f"lr {lr:.4g}")
        parts.append(f"{self._images / seconds:.3g} img/s")
        eta = self._eta(trainer, batch_idx)
        if eta is not None:
            parts.append(f"eta {format_duration(eta)}")
        parts.append(_memory(pl_module))
        self.write(trainer, " | ".join(parts))
        self._sums, self._count, self._images, self._window_start = {}, 0, 0, now

    def _eta(self, trainer: Any, batch_idx: int) -> float | None:
        batches = self._batches(trainer)
        if batches is None or not trainer.max_epochs or trainer.max_epochs < 1 or not self._steps_timed:
            return None
        left_epochs = trainer.max_epochs - trainer.current_epoch - 1
        steps_left = max(batches - batch_idx - 1, 0) + left_epochs * batches
        val = (sum(self._val_seconds) / len(self._val_seconds)) if self._val_seconds else 0.0
        return steps_left * self._step_seconds / self._steps_timed + (left_epochs + 1) * val

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._val_start = time.monotonic()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._val_start is not None:
            self._val_seconds.append(time.monotonic() - self._val_start)
            self._val_start = None

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # After the epoch's validation: Lightning runs it before the epoch-end hooks.
        self._epochs_run += 1
        parts = [f"epoch {trainer.current_epoch + 1}/{self._epochs(trainer)} done in "
                 f"{format_duration(time.monotonic() - self._epoch_start)}"]
        val = {k.removeprefix("val/"): _number(v) for k, v in trainer.callback_metrics.items()
               if k.startswith("val/") and not k.startswith("val/AR")}  # COCO's recalls: metrics.json has them
        if val:
            parts.append("val " + " ".join(f"{k} {_fmt(v)}" for k, v in val.items() if v is not None))
        losses = self._losses(self._epoch_sums, self._epoch_count)
        if losses:
            parts.append("mean " + losses)
        self.write(trainer, " | ".join(parts))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.write(trainer, f"end: {self._epochs_run} epoch(s) in {format_duration(time.monotonic() - self._fit_start)}"
                            f", {trainer.current_epoch} of {self._epochs(trainer)} done")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        import signal

        signum = getattr(exception, "signum", None)  # hitdet.runs' stop on SIGINT/SIGTERM
        if type(exception).__name__ == "SIGTERMException":  # Lightning's own handler saw the signal first
            signum = signal.SIGTERM
        if isinstance(signum, int) or isinstance(exception, KeyboardInterrupt):
            self.write(trainer, f"stopped: interrupted by {signal.Signals(signum or signal.SIGINT).name}")
            return
        text = str(exception).strip().splitlines()[0] if str(exception).strip() else ""
        self.write(trainer, f"stopped: {type(exception).__name__}{': ' + text if text else ''}")


def _bar_class() -> type:
    from pytorch_lightning.callbacks import TQDMProgressBar
    from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

    class RunProgressBar(TQDMProgressBar):
        """Lightning's bar on stderr, ``Epoch 1/12``, each metric once under a readable name."""

        def _tqdm(self, **kwargs: Any) -> Any:
            return Tqdm(disable=self.is_disabled, dynamic_ncols=True, file=sys.stderr, bar_format=self.BAR_FORMAT,
                        **kwargs)

        def init_sanity_tqdm(self) -> Any:
            return self._tqdm(desc=self.sanity_check_description, position=2 * self.process_position, leave=False)

        def init_train_tqdm(self) -> Any:
            return self._tqdm(desc=self.train_description, position=2 * self.process_position, leave=True,
                              smoothing=0)

        def init_predict_tqdm(self) -> Any:
            return self._tqdm(desc=self.predict_description, position=2 * self.process_position, leave=True,
                              smoothing=0)

        def init_validation_tqdm(self) -> Any:
            has_main_bar = self.trainer.state.fn != "validate"
            return self._tqdm(desc=self.validation_description, position=2 * self.process_position + has_main_bar,
                              leave=not has_main_bar)

        def init_test_tqdm(self) -> Any:
            return self._tqdm(desc="Testing", position=2 * self.process_position, leave=True)

        def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
            super().on_train_epoch_start(trainer, *args)
            epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            self.train_progress_bar.set_description(
                f"Epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else ""))

        def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
            return bar_metrics(super().get_metrics(trainer, pl_module))

    return RunProgressBar


_RUN_PROGRESS_BAR: type | None = None


def progress_bar() -> Any:
    """A new :class:`RunProgressBar` (Lightning's tqdm bar on stderr, 1-based epochs, labelled metrics)."""
    global _RUN_PROGRESS_BAR
    if _RUN_PROGRESS_BAR is None:
        _RUN_PROGRESS_BAR = _bar_class()
    return _RUN_PROGRESS_BAR()
