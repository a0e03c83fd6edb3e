"""One run-folder lifecycle for every command that writes a run: :class:`Run`.

A run folder (``--out``) is validated, locked, cleared or resumed, and recorded the same way whichever
command writes it (train, screen/search, pretrain, demo, eval, predict, data synth, the COCO example);
a command supplies only what is its own (its config, what it builds and fits or evaluates, its
results), as Lightning's Trainer leaves the model and the data to the user. The promises, once for all:

1. creating a :class:`Run` validates and writes nothing: ``--out`` (:func:`check_out`: not a symlink,
   writable, empty unless ``--force``/``--resume``, and ``--force`` replaces only an empty folder or a run
   whose run.json names the same ``command``), ``--out`` against the command's ``inputs``
   (:func:`check_inputs`: never one that is, contains or lies inside an input, nor the current directory
   when replacing), Lightning's accelerator/strategy/devices (:func:`check_devices`), and for ``--resume``
   the config against the run's ``config.yaml`` (:func:`check_resume_config`) and the checkpoint loaded as
   plain weights (:func:`read_checkpoint`; :meth:`Run.check_checkpoint` against the model once built); the
   command then validates its own inputs and builds;
2. entering it (``with run:``) takes ``--out`` (:class:`RunLock`: a second run into it exits 2 naming the
   PID and host holding it) and only then clears an old run for ``--force`` (:func:`prepare`), so a
   failed start leaves an old run exactly as it was; it writes ``config.yaml`` and ``run.json``
   (resumed, and the *recoveries*: a key changed on ``--resume`` after a divergence);
3. :meth:`Run.trainer` builds the Trainer with the TensorBoard logger, atomic checkpoints
   (:func:`hitdet.io.atomic_checkpoint_io`) and Lightning's banners silenced, and :meth:`Run.checkpoints`
   the checkpoint callback that follows a moved run;
4. :meth:`Run.fitting` turns SIGINT/SIGTERM into exit 130/143 and a NaN loss into exit 3, each with one
   line naming the last good checkpoint (and records a divergence in run.json for ``--resume``).

Only rank 0 writes: DDP's extra processes (:func:`is_launched_child`) skip every write here.
docs/runs.md and docs/reliability.md are the user's side of this contract.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
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
from hitdet.errors import DiskWriteError, NonFiniteLossError, UserError
from hitdet.io import read_json_or_none, write_json_atomic, write_yaml_atomic
from search_spaces.quiet import NNI_IMPORT_WARNINGS

LOCK_SUFFIX = ".lock"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
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
    # DDP: Lightning's own use of a deprecated torch function, and its advice to sync the search's per-epoch
    # scalars, which are equal on every rank already (the strategy checks α and the removals at every epoch end)
    ".*torch.distributed.nn.functional.all_gather is deprecated.*",
    r"It is recommended to use `self.log\('(num_ops|entropy|search)/.*sync_dist=True",
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


# The environment variables that give a process's rank: Lightning's launcher (LOCAL_RANK, and NODE_RANK on
# every node but the first), torchrun (RANK, GROUP_RANK = the node's), SLURM's srun (SLURM_PROCID).
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK", "GROUP_RANK", "SLURM_PROCID")


def _rank_from(name: str) -> int:
    try:
        return int(os.environ.get(name, "0") or 0)
    except ValueError:
        return 0


def is_launched_child() -> bool:
    """True in every DDP process but the first of the first node (they re-run the command; rank 0 writes).

    On one node Lightning's launcher starts the others with ``LOCAL_RANK`` > 0; on several nodes every
    process of the other nodes has ``NODE_RANK`` (Lightning's variables), ``GROUP_RANK``/``RANK``
    (torchrun) or ``SLURM_PROCID`` (srun) above 0.
    """
    return any(_rank_from(name) > 0 for name in RANK_VARIABLES)


# ---------------------------------------------------------------- validation (nothing written)


def check_out(out: Path, *, resume: bool, force: bool, resumable: bool = True, command: str | None = None,
              replace_own: bool = False) -> None:
    """``--out`` is usable: not a symlink, a folder (or absent), writable, empty unless --force/--resume.

    Every command that writes a folder checks it here (``resumable=False`` for those without
    ``--resume``: eval, predict, demo, data), before anything is read, built or written. With
    ``command``, ``--force`` replaces a non-empty folder only when its run.json says ``command`` wrote it
    (:func:`run_command`); ``replace_own``: such a folder is replaced even without ``--force`` (eval's
    results, which a re-run recomputes).
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
    if out.is_dir() and any(out.iterdir()):
        owner = run_command(out)
        own = command is None or owner == command or (owner == LEGACY_RUN and resumable)
        if not force and not (replace_own and own and owner is not None):
            hint = "use --force to replace it, --resume to continue" if resumable else "use --force to replace it"
            raise UserError(f"{out}: folder exists and is not empty ({hint})")
        if not own:
            what = ("not a hitdet run (no run.json names the command that wrote it)" if owner is None else
                    "a run of an earlier hitdet" if owner == LEGACY_RUN else f"written by hitdet {owner}")
            raise UserError(f"{out}: is {what}; --force replaces only a hitdet {command} run or an empty folder "
                            "(choose another --out, or remove the folder yourself)")


LEGACY_RUN = "<legacy>"  # run_command of a run folder written before run.json named its command


def run_command(out: Path) -> str | None:
    """The hitdet command that wrote the folder ``out``, as its run.json records it (``"train"``, ``"eval"``...).

    :data:`LEGACY_RUN` for a resumable run from before run.json named the command (run.json and
    config.yaml, no ``command``); ``"eval"``/``"predict"`` for their results from before then (a folder
    holding only the files they write); None for a folder no hitdet command claims.
    """
    data = read_run(out)
    command = data.get("command")
    if isinstance(command, str):
        return command
    if data and (out / CONFIG_FILE).is_file():
        return LEGACY_RUN
    if not (out / RUN_FILE).exists():  # results of an earlier eval or predict: only the files they write
        names = {p.name for p in out.iterdir()} if out.is_dir() else set()
        for legacy, (required, allowed) in _LEGACY_RESULTS.items():
            if required <= names <= allowed and all((out / n).is_file() for n in required):
                return legacy
    return None


# (files each wrote, files it may also have written): a lone detections.json of the user's own is no one's
_LEGACY_RESULTS = {"eval": ({"metrics.json", "detections.json"}, {"metrics.json", "detections.json"}),
                   "predict": ({"detections.json", "images.json"}, {"detections.json", "images.json", "drawn"})}


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return path.absolute()


def check_inputs(out: Path, inputs: dict[str, Any], *, replacing: bool = False) -> None:
    """Refuse an ``--out`` that is, contains, or lies inside one of the command's inputs (nothing written).

    ``inputs``: the flag or argument naming each input (``--data``, ``--weights``, ``ARCH``...) -> its path
    (None, a preset name or a missing path is skipped). ``replacing``: ``--force`` is about to clear ``out``;
    then it must not be, or contain, the current directory either.
    """
    o = _real(out)
    if replacing:
        cwd = _real(Path.cwd())
        if o == cwd or o in cwd.parents:
            where = "is" if o == cwd else "contains"
            raise UserError(f"{out}: --out {where} the current directory; --force will not replace it "
                            "(give a run folder of its own as --out)")
    for label, given in inputs.items():
        for one in given if isinstance(given, (list, tuple)) else [given]:
            if one is None or str(one) == "":
                continue
            p = Path(one)
            try:
                if not (p.exists() or p.is_symlink()):
                    continue
            except (OSError, ValueError):  # a name no file can have (a NUL byte): not an existing input
                continue
            r = _real(p)
            if r == o:
                relation = "is"
            elif o in r.parents:
                relation = "contains"
            elif r in o.parents and r.is_dir():
                relation = "lies inside"
            else:
                continue
            raise UserError(f"{out}: --out {relation} the command's input {label} {one}; "
                            "give an --out apart from its inputs")


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


def _earlier_checkpoint(last: Path) -> str:
    """What to do when ``last.ckpt`` cannot be used: the newest epoch checkpoint beside it, if any."""
    epochs = sorted(p for p in last.parent.glob("epoch*.ckpt") if p.is_file())
    if epochs:
        return f"copy {epochs[-1]} over it to resume from there, or start again with --force"
    return "start the run again with --force (or into another --out)"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint loaded as plain weights (``weights_only``: no code runs), or one line saying why not.

    A damaged (truncated) file, one that is not a checkpoint, and one whose pickle asks for more than
    tensors and plain containers (which could run code) are each refused naming the file and what to do.
    """
    import pickle
    import zipfile

    import torch

    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # mmap needs the zip format (and a file system that maps); read it plainly
            if "mmap" not in str(exc):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        asked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = f"it asks for {asked.group(1)}" if asked else "it asks for more than tensors"
        raise UserError(f"{path}: refused: not plain weights, loading it could run code ({detail}); resume only "
                        f"from checkpoints hitdet wrote: {_earlier_checkpoint(path)}") from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise UserError(f"{path}: cannot be read ({reason}): damaged or not a checkpoint; "
                        f"{_earlier_checkpoint(path)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise UserError(f"{path}: not a Lightning checkpoint (no state_dict); {_earlier_checkpoint(path)}")
    return data


def check_checkpoint_matches(path: Path, state: dict[str, Any], module: Any, what: str) -> None:
    """Refuse a checkpoint whose weights do not fit ``module`` (missing, extra or differently shaped tensors).

    ``what``: what the module was built from (the run's architecture.json), for the message.
    """
    expected = module.state_dict()
    problem = None
    for key, tensor in expected.items():
        if key not in state:
            problem = f"{key} missing from the checkpoint"
        elif hasattr(state[key], "shape") and tuple(state[key].shape) != tuple(tensor.shape):
            problem = f"{key}: {list(state[key].shape)} in the checkpoint, {list(tensor.shape)} now"
        if problem:
            break
    if problem is None:
        extra = [k for k in state if k not in expected]
        if extra:
            problem = f"{extra[0]} in the checkpoint, not in the model"
    if problem is not None:
        raise UserError(f"{path}: does not match {what} ({problem}); if that changed since the run started, "
                        "restore it, or start a new run (another --out, or --force)")


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


def check_devices(accelerator: str, devices: int | str, strategy: str, precision: str = "32-true",
                  num_nodes: int = 1) -> None:
    """Resolve Lightning's accelerator/strategy/devices/nodes now, so a bad one fails before anything is written.

    An unknown accelerator or strategy, ``gpu`` with no GPU, more devices than there are, several nodes
    without a distributed strategy: exit 2, one line.
    """
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        with quiet_lightning():
            trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, precision=precision,
                                 num_nodes=num_nodes, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        nodes = f" --num-nodes {num_nodes}" if num_nodes != 1 else ""
        raise UserError(f"--accelerator {accelerator} --strategy {strategy} --devices {devices}{nodes} "
                        f"--precision {precision}: {first}") from None
    if num_nodes > 1 and getattr(trainer.strategy, "num_nodes", 1) != num_nodes:
        raise UserError(f"--num-nodes {num_nodes}: strategy {strategy!r} runs on one node; use --strategy ddp")


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


def read_config(out: Path) -> dict[str, Any] | None:
    """A run's config.yaml through the bounded YAML reader (:func:`hitdet.config.read_yaml`); None when the
    folder has none, or none that reads as a mapping (a run from before config.yaml)."""
    from hitdet.config import read_yaml

    try:
        data = read_yaml(out / CONFIG_FILE)
    except UserError:
        return None
    return data if isinstance(data, dict) else None


def config_file(out: str | os.PathLike[str], config: Any, resume: bool) -> Any:
    """The ``--config`` a command loads: the one given, else on ``--resume`` the run's own config.yaml.

    A resumed run keeps the settings it started with; flags and ``--set`` still apply on top (and
    :func:`check_resume_config` refuses those that may not change).
    """
    path = Path(out) / CONFIG_FILE
    return path if config is None and resume and path.is_file() else config


def recorded_data(out: Path) -> Path | None:
    """The dataset folder a run was started on (run.json's ``data``), so ``--resume`` needs no ``--data``."""
    data = read_run(out).get("data")
    return Path(data) if isinstance(data, str) else None


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
    out: Path, given: dict[str, Any], *, may_change: Iterable[str] = (), recovery: Iterable[str] = (),
    canonical: Any = None,
) -> list[tuple[str, Any, Any]]:
    """Refuse a ``--resume`` whose config differs from the run's config.yaml.

    ``may_change``: keys that may always differ (``epochs``, to extend a run). ``recovery``: keys that
    may differ only after the run diverged (run.json records it; exit 3), e.g. ``lr``. Returns the
    recovery changes made (to record in run.json). Nothing is written here. ``canonical``: how the saved
    config reads today (an older run's config.yaml may use a key's alias: :func:`hitdet.config.canonical`).
    """
    import yaml

    path = out / CONFIG_FILE
    saved = read_config(out)
    if saved is None:
        return []  # a run from before config.yaml: nothing to compare
    if canonical is not None:
        saved = canonical(saved)
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

            def format_checkpoint_name(self, metrics: dict[str, Any], *args: Any, **kwargs: Any) -> str:
                # epoch001.ckpt after the first epoch: epochs are numbered from 1 wherever a user reads them
                if "epoch" in metrics:
                    metrics = {**metrics, "epoch": metrics["epoch"] + 1}
                return super().format_checkpoint_name(metrics, *args, **kwargs)

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
    num_nodes: int = 1,
    trainer_class: Any = None,
    log_every: int | None = None,
    **kwargs: Any,
) -> Any:
    """The Trainer every command uses: TensorBoard logs in ``out/tensorboard``, atomic checkpoints, no banners.

    The progress bar is :func:`hitdet.runlog.progress_bar` (stderr, epochs from 1); ``log_every``: write the
    run log ``out/log.txt`` (:class:`hitdet.runlog.RunLog`), a line every that many steps, echoed to
    stderr when there is no progress bar.
    """
    import pytorch_lightning as pl

    from hitdet.io import atomic_checkpoint_io
    from hitdet.runlog import LOG_FILE, RunLog, progress_bar

    kwargs.setdefault("logger", tensorboard_logger(out))
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("default_root_dir", str(out))
    callbacks = list(callbacks)
    if progress:
        callbacks.append(progress_bar())
    if log_every is not None:
        callbacks.append(RunLog(out / LOG_FILE, every=log_every, echo=not progress))
    with quiet_lightning():
        return (trainer_class or pl.Trainer)(
            accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes, callbacks=callbacks,
            enable_progress_bar=progress, plugins=[atomic_checkpoint_io()], **kwargs,
        )


def tensorboard_logger(out: Path) -> Any:
    """TensorBoard logs in ``out/tensorboard``; the ``epoch`` scalar Lightning adds counts from 1."""
    from pytorch_lightning.loggers import TensorBoardLogger

    class RunTensorBoardLogger(TensorBoardLogger):
        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            if "epoch" in metrics:
                metrics = {**metrics, "epoch": metrics["epoch"] + 1}
            super().log_metrics(metrics, step)

    return RunTensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False)


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
    except DiskWriteError as exc:  # an atomic write (a checkpoint) failed: the one before it is whole
        raise DiskWriteError(f"{exc}; {last_good_checkpoint(last)}") from None
    except RuntimeError as exc:
        if "Error(s) in loading state_dict" in str(exc):  # a resumed checkpoint that does not fit the model
            raise UserError(f"{last}: does not match the model it resumes ("
                            f"{str(exc).strip().splitlines()[-1].strip()[:160]}); restore the run's own files, "
                            "or start a new run (another --out, or --force)") from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------- the lifecycle object


class Run:
    """The lifecycle of one run folder, as a context manager; every command that writes a run goes through one.

    ``Run(...)`` validates and writes nothing; ``with run:`` locks ``out``, clears an old run for
    ``--force`` and records the start; leaving the block releases the lock. Inside, the command uses
    :meth:`record`, :meth:`say`, :meth:`checkpoints`, :meth:`trainer` and :meth:`fitting`::

        run = Run(out, resume=resume, force=force, config=cfg.to_dict(), may_change=("epochs",),
                  accelerator="cpu")                      # checks --out, the devices, a --resume
        ...                                                # the command validates its data, builds its model
        with run:                                          # lock, --force clears, config.yaml + run.json
            run.record(data=str(data_dir))
            trainer = run.trainer(callbacks=[run.checkpoints(save_last=True)], max_epochs=cfg.epochs)
            with run.fitting():                            # signals, NaN loss, full disk: one line each
                trainer.fit(module, ...)

    Args:
        out: the run folder (``--out``).
        resume: continue the run in ``out`` from ``checkpoints/last.ckpt`` (``--resume``).
        force: replace the run in a non-empty ``out`` (``--force``), once everything validated.
        config: the resolved config of a resumable run (train, screen/search, pretrain): written to
            ``config.yaml``, and on ``--resume`` compared with it. None for commands that write results
            but never resume (eval, predict, demo, data synth): no config.yaml, no run.json.
        may_change: config keys a ``--resume`` may change (``epochs``, to extend a run).
        recovery: config keys a ``--resume`` may change only after the run diverged (``lr``); each such
            change is recorded in run.json's ``recoveries``.
        own: the names the command writes into ``out``: ``--force`` clears only those (pretrain); default
            the whole folder.
        staged: the command writes its folder under a temporary name and renames it over ``out`` at the
            end (predict, data synth): ``--force`` clears nothing first, an old ``out`` stays until then.
        accelerator, devices, strategy, precision, num_nodes: Lightning's, checked now and used by :meth:`trainer`
            (no device check when ``accelerator`` is None: commands that build no Trainer).
        command: the command writing the folder (``"train"``, ``"eval"``...): recorded in run.json, and
            ``--force`` replaces only a folder whose run.json names the same command (or an empty one).
        canonical: how the run's saved config.yaml reads today, for the ``--resume`` comparison (an older
            run's may use a key's alias; :func:`hitdet.config.canonical`).
        inputs: what the command reads, by the flag that names it (``{"--data": path, ...}``): an ``--out``
            that is, contains or lies inside one of them is refused (:func:`check_inputs`), and with
            ``--force`` one that is or contains the current directory. More may be added with
            :meth:`add_inputs` before the run is entered.
        subfolder: when ``out`` is a run of another command (a train run given to eval), write into
            ``out/subfolder`` instead (eval's, predict's own sub-folder of a run); :attr:`out` says where.
        replace_own: replace a folder this command wrote even without ``--force`` (eval's results).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        resume: bool = False,
        force: bool = False,
        config: dict[str, Any] | None = None,
        may_change: Iterable[str] = (),
        recovery: Iterable[str] = (),
        own: Iterable[str] | None = None,
        staged: bool = False,
        accelerator: str | None = None,
        devices: int | str = 1,
        strategy: str = "auto",
        precision: str = "32-true",
        num_nodes: int = 1,
        command: str | None = None,
        canonical: Any = None,
        inputs: dict[str, Any] | None = None,
        subfolder: str | None = None,
        replace_own: bool = False,
    ) -> None:
        self.out = Path(out)
        if subfolder and not resume and self.out.is_dir() and run_command(self.out) not in (None, command):
            self.out = self.out / subfolder  # another command's run: this one's results go into a sub-folder of it
        self.resume, self.force, self.config, self.staged = resume, force, config, staged
        self.command, self.inputs = command, dict(inputs or {})
        self.own = tuple(own) if own is not None else None
        self.devices = {"accelerator": accelerator, "devices": devices, "strategy": strategy, "num_nodes": num_nodes}
        self.precision = precision
        check_out(self.out, resume=resume, force=force, resumable=config is not None, command=command,
                  replace_own=replace_own)
        # --force (or replace_own: check_out let it through) clears a non-empty folder once entered
        self.replacing = not resume and self.out.is_dir() and any(self.out.iterdir())
        self._check_inputs()
        self.recoveries: list[tuple[str, Any, Any]] = []
        self._resume_state: dict[str, Any] | None = None
        if resume:
            check_resume(self.out)
            if config is not None:
                self.recoveries = check_resume_config(self.out, config, may_change=may_change, recovery=recovery,
                                                      canonical=canonical)
            if not self.child:  # readable and weights-only now, before anything is written
                self._resume_state = read_checkpoint(self.last_checkpoint)["state_dict"]
        if accelerator is not None:
            check_devices(accelerator, devices, strategy, precision, num_nodes)
        self._lock = RunLock(self.out)

    def check_checkpoint(self, module: Any, what: str = "architecture.json") -> None:
        """On ``--resume``: refuse (one line, nothing written) a checkpoint whose weights do not fit ``module``,
        the LightningModule the fit will load it into (e.g. the run's architecture.json was edited)."""
        if self._resume_state is not None:
            check_checkpoint_matches(self.last_checkpoint, self._resume_state, module, what)
            self._resume_state = None  # the fit reads the file itself

    def add_inputs(self, **inputs: Any) -> None:
        """More inputs, known only once the command resolved them (the dataset folder): checked now."""
        self.inputs.update(inputs)
        self._check_inputs()

    def _check_inputs(self) -> None:
        if not self.resume and not self.child:  # a resumed run clears nothing (and reads its own config)
            check_inputs(self.out, self.inputs, replacing=self.replacing)

    @property
    def child(self) -> bool:
        """True in DDP's extra processes: they run the command too, but rank 0 owns the folder."""
        return is_launched_child()

    @property
    def last_checkpoint(self) -> Path:
        """``OUT/checkpoints/last.ckpt``: what ``--resume`` continues from (a moved run's too)."""
        return self.out / LAST_CHECKPOINT

    def recorded(self) -> dict[str, Any]:
        """The run's run.json as it is on disk (empty when there is none)."""
        return read_run(self.out)

    def recorded_data(self) -> Path | None:
        """On ``--resume``, the dataset folder the run was started on (so ``--resume`` needs no ``--data``)."""
        return recorded_data(self.out) if self.resume else None

    # -- the lifecycle

    def __enter__(self) -> Run:
        self._resume_state = None  # the checked checkpoint's tensors: the fit reads the file itself
        self._lock.acquire()
        try:
            if not self.staged:
                prepare(self.out, resume=self.resume, force=self.replacing, own=self.own)
            if self.config is not None and not self.child:
                self._record_start()
            elif not self.staged and self.command is not None:
                update_run(self.out, command=self.command)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None and self.staged and self.command is not None and self.out.is_dir():
                update_run(self.out, command=self.command)  # renamed into place: now it is this command's
        finally:
            self._lock.release()

    def _record_start(self) -> None:
        """config.yaml (a new run's, a recovered one's, or one the folder lacks) and run.json's start fields."""
        fields: dict[str, Any] = {"resumed": self.resume}
        if self.command is not None:
            fields["command"] = self.command
        if self.recoveries:
            before = self.recorded()
            entry = {key: {"from": old, "to": new} for key, old, new in self.recoveries}
            fields["recoveries"] = [*before.get("recoveries", []), {**entry, "after": before.get("diverged")}]
            fields["diverged"] = None
        if not self.resume or self.recoveries or read_config(self.out) is None:
            write_yaml_atomic(self.out / CONFIG_FILE, self.config)
        update_run(self.out, **fields)

    def record(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json (rank 0; a None value removes the key)."""
        update_run(self.out, **fields)

    def say(self, text: str) -> None:
        """Print one line for the user, once (rank 0)."""
        if not self.child:
            print(text)

    # -- the Trainer's parts

    def checkpoints(self, **kwargs: Any) -> Any:
        """A checkpoint callback into ``OUT/checkpoints`` that follows a moved folder (:func:`checkpoint_callback`)."""
        return checkpoint_callback(self.out / "checkpoints", **kwargs)

    def trainer(self, *, callbacks: list[Any], progress: bool, log_every: int = 20, **kwargs: Any) -> Any:
        """The Trainer of this run (:func:`build_trainer`) on the devices checked at construction, writing the
        run log ``OUT/log.txt`` (a line every ``log_every`` steps and one per epoch; :mod:`hitdet.runlog`)."""
        kwargs.setdefault("precision", self.precision)
        return build_trainer(self.out, **self.devices, callbacks=callbacks, progress=progress, log_every=log_every,
                             **kwargs)

    def fitting(self) -> contextlib.AbstractContextManager[None]:
        """Around the fit: stops and a NaN loss as one line each (:func:`fitting`)."""
        return fitting(self.out)
