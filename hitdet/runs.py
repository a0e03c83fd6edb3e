"""One run-folder lifecycle for every training-like command (train, screen, search, pretrain).

Why one module: each command used to set up its own run folder, Trainer, logger, DDP-child check and
error handling, and each kept only some of the promises. Here they hold once for all:

1. :func:`check_out` and :func:`check_devices` validate ``--out`` (not a symlink, writable, empty
   unless ``--force``/``--resume``) and Lightning's accelerator/strategy/devices before anything is
   written; the commands validate their config and data, build their model, and only then
2. :class:`RunLock` takes ``--out`` (a second run into it exits 2 naming the PID and host holding
   it; the lock of a dead process is taken over) and :meth:`RunLock.prepare` clears an old run for
   ``--force`` -- so a failed start leaves an old run exactly as it was;
3. :func:`build_trainer` builds the Trainer with the TensorBoard logger, atomic checkpoints
   (:func:`hitdet.io.atomic_checkpoint_io`) and Lightning's start-up banners silenced;
4. :func:`fitting` turns SIGINT/SIGTERM into exit 130/143 and a NaN loss into exit 3, each with one
   line naming the last good checkpoint (and records a divergence in run.json for ``--resume``);
5. :func:`check_resume_config` refuses a ``--resume`` whose config differs from the run's, except
   the keys a command allows to change (``epochs``) and an ``lr`` recovery after a divergence.

Only rank 0 writes: DDP's extra processes (:func:`is_launched_child`) skip every write here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hitdet import io as hio
from hitdet.errors import NonFiniteLossError, UserError
from hitdet.io import read_json_or_none, write_json_atomic
from search_spaces.quiet import NNI_IMPORT_WARNINGS

LOCK_SUFFIX = ".lock"
RUN_FILE = "run.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"

# Lightning's start-up chatter and warnings that say nothing a hitdet user can act on.
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                      "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                      "pytorch_lightning.trainer.connectors.signal_connector")  # "Received SIGTERM": ours says it
_QUIET_WARNINGS = (
    ".*treespec.*",
    "Checkpoint directory .* exists and is not empty",
    ".*does not have many workers.*",
    "When using training service to spawn trials",
    NNI_IMPORT_WARNINGS,
    ".*GPU available but not used.*",
)


class RunInterrupted(UserError):
    """SIGINT (exit 130) or SIGTERM (exit 143) during a run; the message names the last good checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class _Stop(BaseException):
    """Raised by the signal handlers: a BaseException, so that Lightning tears down and re-raises it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def is_launched_child() -> bool:
    """True in the processes Lightning's DDP launcher starts (they re-run the command; rank 0 writes)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or int(os.environ.get("NODE_RANK", "0") or 0) > 0


# ---------------------------------------------------------------- validation (nothing written)


def check_out(out: Path, *, resume: bool, force: bool, resumable: bool = True) -> None:
    """``--out`` is usable: not a symlink, a folder (or absent), writable, empty unless --force/--resume.

    Every command that writes a folder checks it here (``resumable=False`` for those without
    ``--resume``: eval, predict, demo, data), before anything is read, built or written.
    """
    if out.is_symlink():
        raise UserError(f"{out}: is a symbolic link; give the real folder (or a new one) as --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if is_launched_child():
        return  # rank 0 checked and prepared the folder; the other ranks must not touch it
    existing = out if out.exists() else _existing_parent(out)
    try:  # a real probe: os.access says yes to root on a read-only mount
        with tempfile.TemporaryFile(dir=existing, prefix=".hitdet-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"{existing}: folder is not writable ({exc.strerror or exc})") from None
    if resume:
        return
    if out.is_dir() and any(out.iterdir()) and not force:
        hint = "use --force to replace it, --resume to continue" if resumable else "use --force to replace it"
        raise UserError(f"{out}: folder exists and is not empty ({hint})")


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_resume(out: Path) -> Path:
    """The checkpoint ``--resume`` continues from: always ``OUT/checkpoints/last.ckpt`` (a moved run's too)."""
    last = out / LAST_CHECKPOINT
    if not last.is_file():
        raise UserError(f"{last}: no checkpoint to resume from")
    return last


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's banners ("GPU available", "TPU available", tips) and known-noise warnings off."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def check_devices(accelerator: str, devices: int | str, strategy: str, precision: str = "32-true") -> None:
    """Resolve Lightning's accelerator/strategy/devices now, so a bad one fails before anything is written.

    An unknown accelerator or strategy, ``gpu`` with no GPU, more devices than there are: exit 2, one line.
    """
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        with quiet_lightning():
            pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, precision=precision, logger=False,
                       enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--accelerator {accelerator} --strategy {strategy} --devices {devices} "
                        f"--precision {precision}: {first}") from None


# ---------------------------------------------------------------- the lock, and preparing the folder


class RunLock:
    """An exclusive claim on ``--out``: the file ``.NAME.lock`` next to it holds ``PID HOST``.

    Next to the folder rather than in it, so that ``--force`` can clear the folder under the lock and a
    failed start leaves the folder as it was. A lock whose PID is dead on this host is taken over.
    DDP's extra ranks take no lock (rank 0 holds it for them).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out.absolute().parent / f".{out.absolute().name}{LOCK_SUFFIX}"
        self.held = False

    def _owner(self) -> tuple[int, str] | None:
        try:
            pid, host = self.path.read_text().split(maxsplit=1)
            return int(pid), host.strip()
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        if is_launched_child():
            return self
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and not _stale(*owner):
                    raise UserError(f"{self.out}: in use by another run (PID {owner[0]} on {owner[1]}; "
                                    f"lock file {self.path})") from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # a dead process's (or unreadable) lock: take it over
                continue
            except OSError as exc:
                raise UserError(f"{self.path.parent}: cannot write the run lock: {exc.strerror or exc}") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise UserError(f"{self.out}: cannot take the run lock {self.path}")

    def release(self) -> None:
        if self.held:
            if self._owner() == (os.getpid(), socket.gethostname()):
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _stale(pid: int, host: str) -> bool:
    """True when the lock's process is gone (only decidable on this host; another host's lock holds)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def prepare(out: Path, *, resume: bool, force: bool, own: Iterable[str] | None = None) -> None:
    """Make ``out`` ready to write; with ``force`` (not resume) clear the old run first.

    Call it only after everything validated and the lock is held. ``own``: the names a command
    writes, to clear only those (pretrain); default: the whole folder. No-op on DDP's extra ranks.
    """
    if is_launched_child():
        return
    if force and not resume and out.is_dir() and any(out.iterdir()):
        if own is None:
            shutil.rmtree(out)
        else:
            for name in own:
                p = out / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the run folder: {exc.strerror or exc}") from None


def read_run(out: Path) -> dict[str, Any]:
    """The run's run.json (empty when missing or unreadable)."""
    data = read_json_or_none(out / RUN_FILE)
    return data if isinstance(data, dict) else {}


def update_run(out: Path, **fields: Any) -> None:
    """Merge ``fields`` into run.json (atomically; rank 0 only). A None value removes the key."""
    if is_launched_child():
        return
    data = read_run(out)
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    write_json_atomic(out / RUN_FILE, data)


# ---------------------------------------------------------------- resume


def config_differences(saved: Any, given: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    """Every dotted key of ``saved`` whose value differs in ``given``: (key, saved, given).

    Keys only in ``given`` are not differences: a run folder written by an older hitdet records
    fewer keys (e.g. only the strategy settings it changed), and those it lacks had their defaults.
    """
    if isinstance(saved, dict) and isinstance(given, dict):
        found = []
        for key in saved:  # a key the run's file does not have is one an older hitdet did not write
            found += config_differences(saved[key], given.get(key), f"{where}.{key}" if where else str(key))
        return found
    return [] if saved == given else [(where, saved, given)]


def check_resume_config(
    out: Path, given: dict[str, Any], *, may_change: Iterable[str] = (), recovery: Iterable[str] = ()
) -> list[tuple[str, Any, Any]]:
    """Refuse a ``--resume`` whose config differs from the run's config.yaml.

    ``may_change``: keys that may always differ (``epochs``, to extend a run). ``recovery``: keys that
    may differ only after the run diverged (run.json records it; exit 3), e.g. ``lr``. Returns the
    recovery changes made (to record in run.json). Nothing is written here.
    """
    import yaml

    path = out / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # a run from before config.yaml: nothing to compare
    if not isinstance(saved, dict):
        return []
    given = yaml.safe_load(yaml.safe_dump(given))  # the same types as the saved file
    allowed = set(may_change)
    diverged = "diverged" in read_run(out)
    changes = []
    for key, old, new in config_differences(saved, given):
        if key in allowed:
            continue
        if key in recovery and diverged:
            changes.append((key, old, new))
            continue
        can = f"{' and '.join(sorted(allowed)) or 'nothing'} may change"
        if recovery:
            can += f"; {' and '.join(recovery)} after a divergence"
        raise UserError(f"--resume: the config differs from the run's ({key}: the run has {old!r}, got {new!r}); "
                        f"pass --config {path} ({can})")
    return changes


# ---------------------------------------------------------------- the Trainer and the fit


_RUN_CHECKPOINT: type | None = None


def checkpoint_callback(dirpath: Path, **kwargs: Any) -> Any:
    """A ModelCheckpoint that belongs to its run folder, wherever that folder has been moved or copied.

    Lightning's own, resumed from a moved run, forgets its best/last paths (and keeps pointing
    ``best_model_path`` at the old folder) and saves ``last-v1.ckpt`` next to ``last.ckpt``. This one
    maps the paths in the checkpoint's state onto its own folder and never adds a version suffix.
    """
    global _RUN_CHECKPOINT
    if _RUN_CHECKPOINT is None:
        from pytorch_lightning.callbacks import ModelCheckpoint

        class RunCheckpoint(ModelCheckpoint):
            def load_state_dict(self, state_dict: dict[str, Any]) -> None:
                old, new = state_dict.get("dirpath"), self.dirpath
                if old and new and old != new:
                    def moved(p: Any) -> Any:
                        return str(Path(new) / Path(p).name) if isinstance(p, str) and p.startswith(old) else p

                    state_dict = dict(state_dict, dirpath=new)
                    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                        state_dict[key] = moved(state_dict.get(key, ""))
                    if isinstance(state_dict.get("best_k_models"), dict):
                        state_dict["best_k_models"] = {moved(k): v for k, v in state_dict["best_k_models"].items()}
                super().load_state_dict(state_dict)

        # Lightning keys a callback's state in a checkpoint by its class name: keep ModelCheckpoint's, so
        # that runs checkpointed before (and after) this class resume with their callback state.
        RunCheckpoint.__qualname__ = RunCheckpoint.__name__ = "ModelCheckpoint"
        _RUN_CHECKPOINT = RunCheckpoint
    kwargs.setdefault("enable_version_counter", False)
    return _RUN_CHECKPOINT(dirpath=dirpath, **kwargs)


def build_trainer(
    out: Path,
    *,
    accelerator: str,
    devices: int | str,
    strategy: str,
    callbacks: list[Any],
    progress: bool,
    trainer_class: Any = None,
    **kwargs: Any,
) -> Any:
    """The Trainer every command uses: TensorBoard logs in ``out/tensorboard``, atomic checkpoints, no banners."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from hitdet.io import atomic_checkpoint_io

    kwargs.setdefault("logger", TensorBoardLogger(save_dir=str(out), name="tensorboard", version="",
                                                  default_hp_metric=False))
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("default_root_dir", str(out))
    with quiet_lightning():
        return (trainer_class or pl.Trainer)(
            accelerator=accelerator, devices=devices, strategy=strategy, callbacks=callbacks,
            enable_progress_bar=progress, plugins=[atomic_checkpoint_io()], **kwargs,
        )


def last_good_checkpoint(last: Path) -> str:
    """Where a stopped run can resume from, for the one-line error."""
    return f"last good checkpoint: {last} (continue with --resume)" if last.is_file() else "no checkpoint was saved yet"


@contextlib.contextmanager
def fitting(out: Path) -> Iterator[None]:
    """Around ``trainer.fit``: quiet Lightning, SIGINT -> exit 130, SIGTERM -> exit 143, NaN loss -> exit 3.

    Each as one line naming the last good checkpoint (``out/checkpoints/last.ckpt``). A divergence is
    recorded in run.json, which lets ``--resume`` change ``lr`` once to recover.
    """
    last = out / LAST_CHECKPOINT
    main = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        if hio.writing():  # never in the middle of a checkpoint: it is re-sent once the file is whole
            hio.defer(signum)
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
        raise _Stop(signum)

    if main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, stop)
    try:
        with quiet_lightning():
            yield
    except _Stop as exc:
        name = signal.Signals(exc.signum).name
        raise RunInterrupted(f"interrupted by {name}; {last_good_checkpoint(last)}", exc.signum) from None
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted by SIGINT; {last_good_checkpoint(last)}", signal.SIGINT) from None
    except NonFiniteLossError as exc:
        if not is_launched_child() and out.is_dir():
            update_run(out, diverged={"message": str(exc), "checkpoint": str(last) if last.is_file() else None})
        raise NonFiniteLossError(f"{exc}; {last_good_checkpoint(last)}") from None
    except SystemExit as exc:  # Lightning's SIGTERMException, when its own handler saw the signal first
        if type(exc).__name__ == "SIGTERMException":
            raise RunInterrupted(f"interrupted by SIGTERM; {last_good_checkpoint(last)}", signal.SIGTERM) from None
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise UserError(f"{out}: cannot write: {exc.strerror}; {last_good_checkpoint(last)}") from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
