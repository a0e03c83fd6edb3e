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
import importlib
import sys

from hitdet.errors import UserError
from search_spaces.quiet import ignore_nni_import_warnings

# Subcommand modules, in the order `hitdet --help` lists them.
COMMAND_MODULES = [
    "hitdet.commands.demo",
    "hitdet.commands.info",
    "hitdet.commands.data",
    "hitdet.commands.search",
    "hitdet.commands.train",
    "hitdet.commands.eval",
    "hitdet.commands.pretrain",
    "hitdet.commands.plot",
    "hitdet.commands.compare",
    "hitdet.commands.predict",
    "hitdet.commands.export",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors already exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from hitdet import __version__

    parser = _Parser(prog="hitdet", description="Hit-Detector: trinity architecture search for object detection.")
    parser.add_argument("--version", action="version", version=f"hitdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    ignore_nni_import_warnings()
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except UserError as exc:
        kind = "" if exc.exit_code in (130, 143) else "error: "  # hitdet.runs.RunInterrupted: a stop, not an error
        print(f"hitdet {args.command}: {kind}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"hitdet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
