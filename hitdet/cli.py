"""The ``hitdet`` command line: one module per subcommand under :mod:`hitdet.commands`.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code or None).
User errors (:class:`hitdet.errors.UserError`, missing files) print one line on stderr and
exit with code 2 (a NaN or infinite training loss, :class:`hitdet.errors.NonFiniteLossError`: one
line, exit code 3; SIGINT/SIGTERM during a run, :class:`hitdet.runs.RunInterrupted`: one line, 130/143);
anything else is an internal error: traceback and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from hitdet.errors import UserError
from search_spaces.quiet import ignore_nni_import_warnings

# Subcommand modules, in the order `hitdet --help` lists them.
COMMAND_MODULES = [
    "hitdet.commands.demo",
    "hitdet.commands.pipeline",
    "hitdet.commands.info",
    "hitdet.commands.data",
    "hitdet.commands.search",
    "hitdet.commands.train",
    "hitdet.commands.eval",
    "hitdet.commands.bench",
    "hitdet.commands.pretrain",
    "hitdet.commands.convert_weights",
    "hitdet.commands.plot",
    "hitdet.commands.compare",
    "hitdet.commands.predict",
    "hitdet.commands.export",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors already exit 2
        self.exit(2, f"{self.prog}: error: {one_line(suggest_choice(message))}\n")


def suggest_choice(message: str) -> str:
    """argparse's "invalid choice: 'trian' (choose from ...)" with the closest choice named first (difflib)."""
    from hitdet.config import suggest

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not found:
        return message
    choices = re.findall(r"'([^']*)'", found.group(2))
    near = suggest(found.group(1), choices)
    if near is None:
        return message
    return (f"{message[: found.start()]}invalid choice: {found.group(1)!r} (did you mean {near!r}? "
            f"choose from {found.group(2)})")


def one_line(text: object) -> str:
    """``text`` on one line: a newline or carriage return inside it (a path may hold one) written as ``\\n``."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


_OWN_MODULES = ("hitdet", "search_spaces", "strategies", "examples", "benchmarks")


def _issued_by_hitdet() -> bool:
    """Whether the warning being shown was issued by hitdet's own code (whatever its stacklevel points at)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith("warnings.py"):
        frame = frame.f_back  # warnings.py's frames; the C warn() has none: the next one called warn()
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name.split(".")[0] in _OWN_MODULES


@contextlib.contextmanager
def hitdet_warnings(command: str) -> Iterator[None]:
    """hitdet's own warnings as one line, ``hitdet COMMAND: warning: ...``: not under the library file and line
    that ``stacklevel`` points at (``pytorch_lightning/trainer/call.py:177:`` for a warning from a hook)."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if _issued_by_hitdet():
            print(f"hitdet {command}: warning: {one_line(message)}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def build_parser() -> argparse.ArgumentParser:
    from hitdet import __version__

    parser = _Parser(prog="hitdet", description="Hit-Detector: trinity architecture search for object detection.")
    parser.add_argument("--version", action="version", version=f"hitdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command ``args`` were parsed for: ``hitdet demo``'s, ``hitdet data synth``'s."""
    for dest in ("command", "data_command"):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or getattr(args, dest, None) is None:
            break
        parser = subs[0].choices[getattr(args, dest)]
    return parser


def main(argv: list[str] | None = None) -> int:
    ignore_nni_import_warnings()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse's parse_args names the top-level parser ("hitdet: error:"); name the command's own
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    # "data synth": the name argparse's own errors give a data action, so that both kinds of error read alike
    command = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
    try:
        with hitdet_warnings(command):
            code = args.func(args)
    except UserError as exc:
        kind = "" if exc.exit_code in (130, 143) else "error: "  # hitdet.runs.RunInterrupted: a stop, not an error
        print(f"hitdet {command}: {kind}{one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"hitdet {command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk (or quota, a read-only mount) in a write no command wrapped: one line
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hitdet {command}: error: {one_line(where)}cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
