"""Every file hitdet writes or reads from a user goes through here, so that each guarantee holds once for all.

Writes are atomic: a temporary file in the same folder, flushed and fsync'ed, then ``os.replace``d over
the target. A reader, or a run killed mid-write, sees the old file or the new one, never half of one;
a full disk (or any OSError) raises :class:`~hitdet.errors.UserError` naming the folder and leaves no
temporary file behind.

Reads are bounded: :func:`read_json` refuses files over a size limit and documents nested deeper than a
depth limit (Python's parser would otherwise raise RecursionError on ``[[[[...`` 100k deep), and
numbers with more digits than Python converts; :func:`open_image` refuses images whose header claims
more pixels than :data:`MAX_IMAGE_PIXELS` or PIL's own bomb limit (a decompression bomb) before decoding them.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from hitdet.errors import DiskWriteError, UserError

MAX_JSON_BYTES = 512 * 1024 * 1024  # annotation files of big datasets run to hundreds of MB (COCO train: 450)
MAX_JSON_DEPTH = 64  # hitdet's own files nest < 10 deep; COCO's segmentation polygons 4
MAX_IMAGE_PIXELS = 16384 * 16384  # 268 MP, PIL's bomb-error threshold; a detection image is ~1 MP


def default_mode() -> int:
    """The mode a plain ``open()`` would give a new file (``mkstemp``'s is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _disk_error(path: Path, exc: OSError) -> UserError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return DiskWriteError(f"{path.parent}: cannot write {path.name}: {reason}")


_writing = 0  # nesting depth of atomic writes in progress (main thread: where signal handlers run)
_deferred: list[int] = []  # signals that arrived mid-write, re-sent once the write is complete


def writing() -> bool:
    """True while an atomic write is in progress: a stop signal should wait for it (see :func:`defer`)."""
    return _writing > 0


def defer(signum: int) -> None:
    """Re-send ``signum`` to this process when the current atomic write ends.

    Raising in the middle of ``torch.save`` breaks its zip writer, which then raises a RuntimeError
    of its own instead of the stop; so :mod:`hitdet.runs`' handlers wait for the write to finish.
    """
    _deferred.append(signum)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    global _writing
    _writing += 1
    try:
        yield
    finally:
        _writing -= 1
        if not _writing and _deferred:
            signum = _deferred.pop(0)
            _deferred.clear()
            os.kill(os.getpid(), signum)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path next to ``path``; on a clean exit it is fsync'ed and renamed over ``path``.

    For writers that want a file name (``torch.save``, ``savefig``). On any error the temporary
    file is removed; an OSError becomes a UserError naming the folder.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _disk_error(path, exc) from None
    tmp = Path(name)
    with _uninterrupted():
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, default_mode())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _disk_error(path, exc) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return path


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_yaml_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as YAML (keys in the given order) to ``path`` atomically."""
    import yaml

    class NoAliases(yaml.SafeDumper):  # a value written twice is written out twice: config readers refuse aliases
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return write_text_atomic(path, yaml.dump(data, Dumper=NoAliases, sort_keys=False))


class _Recorded:
    """A file whose first failed write is kept: ``torch.save``'s zip writer turns it into its own RuntimeError."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int | None:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def _low_space(folder: Path, need: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < need


def save_torch_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (weights files, Lightning checkpoints).

    A full disk is one line like every other write here: torch's zip writer reports a failed or short
    write as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``, which becomes the
    OSError underneath it (ENOSPC when the folder has no space left).
    """
    import torch

    path = Path(path)

    def save(f: IO[bytes]) -> None:
        recorded = _Recorded(f)
        try:
            torch.save(obj, recorded)  # type: ignore[arg-type]
        except RuntimeError as exc:
            if recorded.error is not None:
                raise recorded.error from None
            text = str(exc)
            if not any(s in text for s in ("unexpected pos", "PytorchStreamWriter", "inline_container")):
                raise
            if _low_space(path.parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
            raise OSError(errno.EIO, f"write failed ({text.strip().splitlines()[0][:120]})") from None

    return write_atomic(path, save)


def check_creatable(path: str | os.PathLike[str]) -> None:
    """Refuse (one line, nothing written) a ``path`` that cannot be created: its nearest existing ancestor
    must be a folder this process can write in (a real probe: ``os.access`` says yes to root on a read-only
    mount). For outputs that are written late, after minutes of work or a costly conversion."""
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{parent}: is a file, not a folder (cannot create {path} in it)")
    try:
        with tempfile.TemporaryFile(dir=parent, prefix=".hitdet-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"{parent}: folder is not writable ({exc.strerror or exc})") from None


# ---------------------------------------------------------------- bounded reads


def _too_deep(data: Any, max_depth: int) -> bool:
    """True when ``data`` nests lists/objects deeper than ``max_depth`` (an explicit stack, no recursion)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > max_depth:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _bracket_depth(raw: bytes, chunk: int = 1 << 24) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text, counting brackets inside strings too (vectorised, chunked).

    Exact for texts whose strings hold no brackets (nearly every file); otherwise a hint only, which
    :func:`parse_json` confirms on the parsed data.
    """
    import numpy as np

    lut = np.zeros(256, dtype=np.int8)
    lut[[0x5B, 0x7B]], lut[[0x5D, 0x7D]] = 1, -1  # [ {  and  ] }
    depth, deepest = 0, 0
    for start in range(0, len(raw), chunk):
        step = lut[np.frombuffer(raw, dtype=np.uint8, count=min(chunk, len(raw) - start), offset=start)]
        running = np.cumsum(step, dtype=np.int32) + depth
        if not len(running):
            continue
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def parse_json(text: str | bytes, source: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON ``text``; every failure is a UserError naming ``source`` (and the line where known)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if isinstance(text, bytes):
        head = text[:4]
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) >= 2 and b"\x00" in head):
            # UTF-16/32 (what json.loads would guess from the NULs): RFC 8259 requires UTF-8, and so does hitdet
            raise UserError(f"{source}: cannot read: UTF-16 or UTF-32 text; JSON must be UTF-8 "
                            "(convert it, e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        data = json.loads(text.decode("utf-8-sig") if isinstance(text, bytes) else text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise UserError(f"{source}: JSON nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{source}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # an integer over Python's digit limit
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{source}: invalid JSON: {first}") from None
    if _bracket_depth(raw) > max_depth and _too_deep(data, max_depth):
        raise UserError(f"{source}: JSON nested deeper than {max_depth} levels")
    return data


def read_json(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    what: str = "file",
    error: type[UserError] = UserError,
) -> Any:
    """Read a JSON file within the size and depth limits; errors (``error``) name the file.

    ``what`` names the file's role in the not-found message ("annotation file", "detections file").
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise error(f"{path}: is a folder, expected a JSON {what}")
        if size > max_bytes:
            raise error(f"{path}: {size} bytes, over the {max_bytes}-byte limit for a JSON {what}")
        text = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return parse_json(text, str(path), max_depth)
    except UserError as exc:
        raise error(str(exc)) from None


def read_json_or_none(path: str | os.PathLike[str]) -> Any:
    """A JSON file hitdet wrote itself (run.json, metrics.json), or None when missing or unreadable."""
    try:
        return read_json(path)
    except UserError:
        return None


def open_image(path: str | os.PathLike[str], record: str = "", max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Open an image lazily (header only) after checking its size; the caller decodes (``load``).

    A header claiming more than ``max_pixels`` pixels raises UserError before any decoding, and so
    does a file PIL cannot identify; ``record`` (e.g. "image id 7") goes into the message.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    where = f" ({record})" if record else ""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except FileNotFoundError:
        raise UserError(f"{path}: image file not found{where}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's own limit is lower
        raise UserError(f"{path}: image too large{where}: {str(exc).split(' could be')[0].rstrip(', ')}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{path}: cannot decode image{where}: {exc}") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise UserError(f"{path}: image too large{where}: {w}x{h} pixels, over the {max_pixels}-pixel limit")
    return img


_CHECKPOINT_IO: type | None = None


def atomic_checkpoint_io() -> Any:
    """A Lightning CheckpointIO plugin whose ``.ckpt`` files are written like every other file here.

    Lightning's own writes the target file in place: a run killed mid-save leaves a truncated
    ``last.ckpt``, and ``--resume`` then has nothing to continue from.
    """
    global _CHECKPOINT_IO
    if _CHECKPOINT_IO is None:
        from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

        class AtomicCheckpointIO(TorchCheckpointIO):
            def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
                if storage_options is not None:
                    raise TypeError(f"{type(self).__name__} takes no storage_options")
                save_torch_atomic(path, checkpoint)

        _CHECKPOINT_IO = AtomicCheckpointIO
    return _CHECKPOINT_IO()
