"""A 2-process (gloo) ``hitdet`` screen or search that reports what every rank saw and did.

Run by tests/test_ddp_search.py as a script, because Lightning's DDP launcher starts the other
rank by re-running this very command. With ``PROBE_NUM_NODES=2 PROBE_DEVICES=1`` it is one of two
"nodes" of one process each: the test starts it twice, with ``NODE_RANK`` 0 and 1 and the same
``MASTER_ADDR``/``MASTER_PORT`` (Lightning's cluster environment), as two machines would.
Each rank writes ``TRACE/rank{r}.pt``:

- ``alpha``: after every training step, the α of every searched position, the removed-op
  masks (screening changes them at epoch ends) and the image ids of the step's two batches;
- ``sample`` / ``kept``: what that rank's own copy of the strategy exports;
- ``epochs``: at the start of every epoch, which candidates (of those with weights) still have live weights (a weak
  reference per parameter, after a garbage collection) next to which are still active, and every weight;
- ``writes``: every file or folder that rank created, wrote, renamed or removed under OUT,
  caught by a Python audit hook (``open`` for writing, ``os.mkdir``, ``os.rename`` ...).

With ``KILL_EPOCH=E`` in the environment every rank SIGKILLs itself after the first step of
epoch E (a pre-empted job); ``--resume`` then continues the run as ``hitdet ... --resume`` does.

usage: ddp_search_probe.py MODE DATA OUT TRACE [--resume] [--set=KEY=VALUE ...]
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import weakref
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.mkdir": 0, "os.rename": 1, "os.remove": 0, "os.rmdir": 0, "shutil.rmtree": 0, "os.symlink": 1,
               "os.truncate": 0, "shutil.copyfile": 1, "shutil.move": 1}


def watch_writes(root: Path) -> list[tuple[str, str]]:
    """Record (event, path) for every change a process makes under ``root`` from now on."""
    root_text = str(root.resolve())
    seen: list[tuple[str, str]] = []

    def under_root(path: Any) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        text = os.path.abspath(os.fsdecode(path))
        return text if text == root_text or text.startswith(root_text + os.sep) else None

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
            found = under_root(path) if writing else None
        elif event in PATH_EVENTS:
            found = under_root(args[PATH_EVENTS[event]])
        else:
            return
        if found is not None:
            seen.append((event, found))

    sys.addaudithook(hook)
    return seen


def main() -> None:
    mode, data, out, trace = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    resume = "--resume" in sys.argv[5:]
    overrides = [arg.removeprefix("--set=") for arg in sys.argv[5:] if arg != "--resume"]
    kill_epoch = int(os.environ.get("KILL_EPOCH", "-1"))
    writes = watch_writes(out)

    import torch
    from pytorch_lightning import Callback

    from hitdet.searching import load_search_config, run_search
    from strategies.export import export_result

    class AlphaTrace(Callback):
        """α (and the removed-op masks) of every searched position after every training step."""

        def __init__(self) -> None:
            self.steps: list[dict[str, Any]] = []
            self.epochs: list[dict[str, Any]] = []
            self.weights: dict[tuple[str, str], list[Any]] = {}
            self.module: Any = None
            self.rank = -1

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.module, self.rank = pl_module, trainer.global_rank
            # a weak reference to every candidate's weights: does anything still hold removed ones?
            self.weights = {(label, str(name)): [weakref.ref(p) for p in m.parameters()]
                            for label, g in pl_module.layers.items() for name, m in g[0].candidate_modules()}

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            gc.collect()
            ddp = trainer.strategy.model
            self.epochs.append({
                "epoch": trainer.current_epoch,
                "alive": sorted(f"{label}:{name}" for (label, name), refs in self.weights.items()
                                if any(r() is not None for r in refs)),
                "active": sorted(f"{label}:{name}" for label, g in pl_module.layers.items()
                                 for name, m in g[0].candidate_modules() if any(True for _ in m.parameters())),
                "wrapper": type(ddp).__name__,
                # every weight, flattened: DDP keeps the ranks' weights equal (all-reduced gradients)
                "weights": torch.cat([p.detach().flatten().cpu() for p in pl_module.parameters()]),
            })

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
            self.steps.append({
                "step": trainer.global_step,
                "images": {half: [int(t["image_id"]) for t in batch[half][1]] for half in ("train", "val")},
                "alpha": {label: g[0]._arch_alpha.detach().clone() for label, g in pl_module.layers.items()},
                "active": {label: g[0].active_mask.clone() for label, g in pl_module.layers.items()},
            })
            if trainer.current_epoch == kill_epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    trace_cb = AlphaTrace()
    cfg = load_search_config(mode, out / "config.yaml" if resume else "synth-cpu", overrides)
    # PROBE_NUM_NODES/PROBE_DEVICES: several "nodes" on this machine, each started by the test with NODE_RANK
    nodes, devices = int(os.environ.get("PROBE_NUM_NODES", "1")), int(os.environ.get("PROBE_DEVICES", "2"))
    run_search(mode, out, cfg, None if resume else data, resume=resume, accelerator="cpu", devices=devices,
               num_nodes=nodes, strategy="ddp", progress=False, callbacks=[trace_cb])
    result = export_result(trace_cb.module)
    kept = {c: list(ops) for c, ops in result.sub_spaces.kept.items()} if result.sub_spaces is not None else None
    trace.mkdir(parents=True, exist_ok=True)
    torch.save({"alpha": trace_cb.steps, "epochs": trace_cb.epochs, "sample": result.sample, "kept": kept,
                "writes": list(writes), "world_size": trace_cb.module.trainer.world_size,
                "num_nodes": trace_cb.module.trainer.num_nodes, "node_rank": trace_cb.module.trainer.node_rank},
               trace / f"rank{trace_cb.rank}.pt")


if __name__ == "__main__":
    main()
