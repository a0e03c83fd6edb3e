"""Several processes: a 2-process gloo screen and search keep α identical on every rank at every step,
and a screen frees the removed ops' weights on every rank; a screen over 2 nodes of 1 process each
(two processes started separately, as on two machines) does the same.

tests/ddp_search_probe.py runs the search exactly as ``hitdet screen/search --strategy ddp
--devices 2`` does (``run_search``) and saves, per rank, α after every step, the batches seen,
what that rank exports, and every write it made under the run folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hitdet.data import SynthSpec, write_synthetic
from strategies import SubSpaces
from strategies.distributed import rank_disagreement

PROBE = Path(__file__).resolve().parent / "ddp_search_probe.py"
COMMON = ["--set=train.epochs=3", "--set=train.width=0.0625", "--set=train.batch_size=2", "--set=steps_per_epoch=2",
          "--set=train.detector.min_size=64", "--set=train.detector.max_size=80", "--set=strategy.arch_start_epoch=1",
          "--set=strategy.arc_learning_rate=0.05"]
SEARCH = ["--set=strategy.penalty_lambda=0.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("ddp") / "data", SynthSpec(num_train=16, num_val=4, seed=3))


def run_probe(mode: str, data: Path, tmp: Path, *args: str, killed: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """The probe on OUT = TMP/run, tracing into a fresh TMP/trace*; ``killed``: SIGKILL in epoch 1."""
    out, home = tmp / "run", tmp / "home"
    trace = tmp / f"trace{len(list(tmp.glob('trace*')))}"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(home),
           "NNI_EXPERIMENT_DIR": str(home / "nni-experiments"), **({"KILL_EPOCH": "1"} if killed else {})}
    settings = [] if "--resume" in args else COMMON
    proc = subprocess.run([sys.executable, str(PROBE), mode, str(data), str(out), str(trace), *settings, *args],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=240)
    if killed:
        assert proc.returncode == -signal.SIGKILL, f"not killed (exit {proc.returncode}): {proc.stderr[-3000:]}"
        return out, []
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    ranks = [torch.load(trace / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    return out, ranks


@pytest.fixture(scope="module")
def search_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """An uninterrupted 2-process search: (its sub-spaces file, the run folder, the ranks' traces)."""
    tmp = tmp_path_factory.mktemp("search")
    sub = SubSpaces({"backbone": ["sep_k3", "conv_k1", "skip"], "neck": ["sep_k3", "conv_k3"],
                     "head": ["conv_k1", "conv_k3", "sep_k3"]}).save(tmp / "subspaces.json")
    out, ranks = run_probe("search", data, tmp, *SEARCH, f"--set=sub_spaces={sub}")
    return sub, out, ranks


def check_same_alpha_every_step(ranks: list[dict[str, Any]]) -> None:
    a, b = ranks[0]["alpha"], ranks[1]["alpha"]
    assert len(a) == len(b) == 3 * 2  # 3 epochs of 2 steps, on both ranks
    # the ranks trained on different images (DistributedSampler): equal α is not a given
    assert all(set(sa["images"]["val"]).isdisjoint(sb["images"]["val"]) for sa, sb in zip(a, b, strict=True))
    for sa, sb in zip(a, b, strict=True):
        assert sa["step"] == sb["step"]
        for label, alpha in sa["alpha"].items():
            assert torch.equal(alpha, sb["alpha"][label]), f"step {sa['step']}: α of {label} differs between ranks"
            assert torch.equal(sa["active"][label], sb["active"][label]), f"step {sa['step']}: {label} removals"
    # the architecture steps (epochs 1-2) moved α away from where epoch 0 left it
    moved = max(float((a[-1]["alpha"][k] - a[1]["alpha"][k]).abs().max()) for k in a[1]["alpha"])
    assert moved > 1e-3
    assert all(torch.equal(a[0]["alpha"][k], a[1]["alpha"][k]) for k in a[0]["alpha"])  # no α step in epoch 0


def check_only_rank0_writes(out: Path, ranks: list[dict[str, Any]], outputs: list[str]) -> None:
    assert ranks[1]["writes"] == [], f"rank 1 wrote into the run: {ranks[1]['writes'][:5]}"
    written = {Path(path).relative_to(out).as_posix() for event, path in ranks[0]["writes"]}
    for name in [*outputs, "checkpoints/last.ckpt", "config.yaml"]:
        assert name in written and (out / name).is_file(), name
    assert len(list((out / "nni").iterdir())) == 1  # one NNI experiment folder: rank 0's


def test_ddp_screen_same_alpha_and_removals_on_every_rank(data: Path, tmp_path: Path) -> None:
    """A 2-process screen with the recomputing mixed op: α and removals equal, removed weights freed."""
    pool = "--set=ops=[sep_k3, skip, conv_k1, conv_k3]"
    # the recomputing mixed op (the paper recipe's): its candidates' weights are inputs of its autograd
    # function, so DDP sees them as used and all-reduces their gradients like any other
    out, ranks = run_probe("screen", data, tmp_path, "--set=strategy.num_ops=2", pool,
                           "--set=strategy.mixed_op=recompute")
    check_same_alpha_every_step(ranks)
    first, last = ranks[0]["alpha"][0]["active"], ranks[0]["alpha"][-1]["active"]
    assert all(int(m.sum()) == 4 for m in first.values()) and any(int(m.sum()) < 4 for m in last.values())
    assert ranks[0]["kept"] == ranks[1]["kept"]
    # the removed ops' weights are gone on both ranks: DDP was re-wrapped around the pruned supernet
    for rank in ranks:
        epochs = rank["epochs"]
        assert [e["epoch"] for e in epochs] == [0, 1, 2] and {e["wrapper"] for e in epochs} == {
            "DistributedDataParallel"}
        assert len(epochs[-1]["active"]) < len(epochs[0]["active"])  # epoch 1's end removed ops
    for e0, e1 in zip(ranks[0]["epochs"], ranks[1]["epochs"], strict=True):  # the same weights on both ranks
        assert torch.equal(e0["weights"], e1["weights"]), f"epoch {e0['epoch']}: weights differ between ranks"
    assert not torch.equal(ranks[0]["epochs"][0]["weights"][:100], ranks[0]["epochs"][1]["weights"][:100])
    for rank in ranks:
        for e in rank["epochs"]:
            assert e["alive"] == e["active"], f"epoch {e['epoch']}: removed ops still alive " + str(
                sorted(set(e["alive"]) - set(e["active"]))[:4])
    assert all(len(ops) == 2 for ops in ranks[0]["kept"].values())
    saved = json.loads((out / "subspaces.json").read_text())["components"]
    assert {c: v["ops"] for c, v in saved.items()} == ranks[0]["kept"]
    check_only_rank0_writes(out, ranks, ["subspaces.json", "sample.json", "metadata.json"])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_screen_same_alpha_and_removals_on_every_node(data: Path, tmp_path: Path) -> None:
    """2 nodes x 1 process, started as two machines would start them: the same command on each with
    Lightning's MASTER_ADDR/MASTER_PORT and its own NODE_RANK (gloo over localhost)."""
    out, home, trace = tmp_path / "run", tmp_path / "home", tmp_path / "trace"
    home.mkdir()
    port = free_port()
    settings = [*COMMON, "--set=strategy.num_ops=2", "--set=ops=[sep_k3, skip, conv_k1, conv_k3]",
                "--set=strategy.mixed_op=recompute"]
    procs = []
    for node in (0, 1):
        env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "GROUP_RANK")}
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(home),
                "NNI_EXPERIMENT_DIR": str(home / f"nni-experiments{node}"), "PROBE_NUM_NODES": "2",
                "PROBE_DEVICES": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node)}
        procs.append(subprocess.Popen([sys.executable, str(PROBE), "screen", str(data), str(out), str(trace),
                                       *settings], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for node, (p, (stdout, stderr)) in enumerate(zip(procs, results, strict=True)):
        assert p.returncode == 0, f"node {node}: {stdout[-2000:]}\n{stderr[-4000:]}"
    ranks = [torch.load(trace / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [(r["world_size"], r["num_nodes"], r["node_rank"]) for r in ranks] == [(2, 2, 0), (2, 2, 1)]
    check_same_alpha_every_step(ranks)
    last = ranks[0]["alpha"][-1]["active"]
    assert any(int(m.sum()) < 4 for m in last.values())  # the screen removed ops ...
    assert ranks[0]["kept"] == ranks[1]["kept"]  # ... the same ones on both nodes
    for e0, e1 in zip(ranks[0]["epochs"], ranks[1]["epochs"], strict=True):
        assert torch.equal(e0["weights"], e1["weights"]), f"epoch {e0['epoch']}: weights differ between nodes"
    saved = json.loads((out / "subspaces.json").read_text())["components"]
    assert {c: v["ops"] for c, v in saved.items()} == ranks[0]["kept"]
    check_only_rank0_writes(out, ranks, ["subspaces.json", "sample.json", "metadata.json"])


def test_ddp_search_same_alpha_and_architecture_on_every_rank(search_run: tuple[Path, Path, list]) -> None:
    _, out, ranks = search_run
    check_same_alpha_every_step(ranks)
    assert ranks[0]["sample"] == ranks[1]["sample"]
    arch = json.loads((out / "architecture.json").read_text())
    assert json.loads((out / "sample.json").read_text()) == ranks[0]["sample"]
    assert arch["metadata"]["alpha_probabilities"] == json.loads((out / "metadata.json").read_text())[
        "alpha_probabilities"]
    check_only_rank0_writes(out, ranks, ["architecture.json", "sample.json", "metadata.json"])


def test_ddp_search_resumed_after_sigkill_matches_uninterrupted(search_run: tuple[Path, Path, list], data: Path,
                                                                tmp_path: Path) -> None:
    """Both ranks killed mid-epoch, then resumed on 2 processes: every step as in the uninterrupted run.

    Needs the α Adam state restored onto the right α in every process, and every rank's own
    random number generators (RoI sampling) restored.
    """
    sub, ref_out, ref = search_run
    out, _ = run_probe("search", data, tmp_path, *SEARCH, f"--set=sub_spaces={sub}", killed=True)
    out, ranks = run_probe("search", data, tmp_path, "--resume")
    steps = {s["step"]: s["alpha"] for s in ref[0]["alpha"]}
    resumed = ranks[0]["alpha"]
    assert [s["step"] for s in resumed] == [s["step"] for s in ref[0]["alpha"][2:]]  # epochs 1-2, again
    for rank in ranks:
        for s in rank["alpha"]:
            for label, alpha in s["alpha"].items():
                assert torch.equal(alpha, steps[s["step"]][label]), f"step {s['step']}: α of {label}"
    assert ranks[0]["sample"] == ranks[1]["sample"] == ref[0]["sample"]
    arch, arch_ref = (json.loads((o / "architecture.json").read_text()) for o in (out, ref_out))
    arch.pop("name"), arch_ref.pop("name")
    assert arch == arch_ref
    assert ranks[1]["writes"] == []


def test_rank_disagreement_names_the_label_and_ranks() -> None:
    names = {"backbone/s1_b0": ["a", "b"], "neck/out1": ["a", "b", "c"]}
    state = torch.tensor([0.1, 0.2, 1, 1, 0.3, 0.4, 0.5, 1, 0, 1], dtype=torch.float64)
    assert rank_disagreement(torch.stack([state, state.clone(), state.clone()]), names) is None
    drifted = state.clone()
    drifted[5] += 1e-12
    where = rank_disagreement(torch.stack([state, state, drifted]), names)
    assert where is not None and where.startswith("neck/out1 alpha: rank 0 has [0.3, 0.4, 0.5], rank 2 has")
    removed = state.clone()
    removed[8] = 1
    where = rank_disagreement(torch.stack([state, removed]), names)
    assert where == "neck/out1 removed ops: rank 0 has [1.0, 0.0, 1.0], rank 1 has [1.0, 1.0, 1.0]"
