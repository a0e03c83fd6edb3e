"""Options every training-like command shares (train, screen, search, pretrain)."""

from __future__ import annotations

import argparse
from typing import Any

from hitdet.errors import UserError
from hitdet.training.config import PRECISIONS


def add_config_options(p: argparse.ArgumentParser, *, out: str, config: str, example: str, section: str = "") -> None:
    """--out, --config, --set and --epochs of a command that writes a run, with one wording everywhere.

    ``out``/``config``: what the run folder holds and which recipes there are; ``example``: a ``--set``
    example; ``section``: where ``epochs`` lives in the config ("train." for screen/search).
    """
    p.add_argument("--out", help=f"run folder ({out}); required, except with --print-config")
    p.add_argument("--config", help=f"YAML config file or recipe name: {config}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config key (repeatable), e.g. --set {example}")
    p.add_argument("--epochs", type=int, help=f"shortcut for --set {section}epochs=N")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--resume, --force and the Lightning device options, with one wording everywhere."""
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from checkpoints/last.ckpt")
    p.add_argument("--force", action="store_true", help="replace the run in a non-empty OUT")
    p.add_argument("--accelerator", default="auto",
                   help="Lightning accelerator: auto (default: a GPU if there is one), cpu, gpu")
    p.add_argument("--devices", default="1", help="devices per node (default 1); >1 with --strategy ddp")
    p.add_argument("--num-nodes", type=parse_num_nodes, default=1, metavar="N",
                   help="machines the run spans (default 1); start the same command on each, with Lightning's "
                   "MASTER_ADDR, MASTER_PORT and NODE_RANK set (or under torchrun/srun; docs/scaling.md)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default auto; ddp on several "
                   "nodes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (stderr): the run log's lines "
                   "(OUT/log.txt) go to stderr instead")
    p.add_argument("--precision", choices=PRECISIONS, help="Lightning precision (default 32-true; bf16-mixed or "
                   "16-mixed on GPUs); shortcut for the config key precision")
    p.add_argument("--num-workers", type=int, help="data-loading worker processes; shortcut for the config key "
                   "num_workers")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (recipe, file, --set and flags, checked) as YAML and exit; "
                   "writes nothing")


def config_source(args: argparse.Namespace) -> Any:
    """The ``--config`` to load: the one given, else on ``--resume`` the run's own config.yaml.

    ``--out`` is required, except for ``--print-config`` without ``--resume`` (which writes nothing).
    """
    from hitdet.runs import config_file

    if args.out is None:
        if args.print_config and not args.resume:
            return args.config
        raise UserError("the following arguments are required: --out" + (" (the run to resume)" if args.resume
                                                                          else ""))
    return config_file(args.out, args.config, args.resume)


def print_config(config: dict[str, Any]) -> int:
    """``--print-config``: the config as the run would record it in config.yaml; exit code 0."""
    import yaml

    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def run_flags(args: argparse.Namespace, section: str = "") -> dict[str, tuple[str, Any]]:
    """The config keys ``--precision`` and ``--num-workers`` set (``section``: "train." for the search).

    As ``hitdet.config.load``'s ``flags``: an error in one names the flag, not a ``--set``.
    """
    return {"--precision": (f"{section}precision", args.precision),
            "--num-workers": (f"{section}num_workers", args.num_workers)}


def parse_num_nodes(text: str) -> int:
    """``--num-nodes``: a positive count (argparse's type: a bad one is a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of nodes, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_devices(text: str) -> int | str:
    """``--devices``: a positive count, or a Lightning device string such as "auto" or "0,1"."""
    try:
        value = int(text)
    except ValueError:
        return text
    if value < 1:
        raise UserError(f"--devices must be >= 1, got {value}")
    return value
