"""``--num-nodes`` and ``--devices`` reach Lightning's Trainer for train, screen, search and pretrain.

Each command runs for real up to the Trainer it builds for the fit; a stand-in for
:func:`hitdet.runs.build_trainer` records its arguments and builds the real Trainer from them, then stops the
command (one line, exit 2) before the fit. The 2-node run itself is tests/test_ddp_search.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hitdet.runs
from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from hitdet.errors import UserError
from hitdet.pretrain.synth import write_synthetic_classification
from hitdet.runs import is_launched_child

TINY_TRAIN = ["--config", "synth-cpu", "--set", "width=0.0625", "--epochs", "1", "--no-progress"]
TINY_SEARCH = ["--config", "synth-cpu", "--set", "train.width=0.0625", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nodes")
    return {"coco": write_synthetic(root / "coco", SynthSpec(num_train=4, num_val=2, seed=1)),
            "cls": write_synthetic_classification(root / "cls", num_classes=2, train_per_class=2, val_per_class=1)}


class Stop(UserError):
    pass


@pytest.mark.parametrize("command", ["train", "screen", "search", "pretrain"])
def test_num_nodes_and_devices_reach_the_trainer(
    command: str, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    seen: dict[str, Any] = {}
    real = hitdet.runs.build_trainer

    def recording(out: Path, **kwargs: Any) -> Any:
        seen.update(kwargs)
        trainer = real(out, **kwargs)
        seen["trainer"] = (trainer.num_nodes, trainer.num_devices, trainer.world_size, type(trainer.strategy).__name__)
        raise Stop("stopped before the fit")

    monkeypatch.setattr(hitdet.runs, "build_trainer", recording)
    for name in hitdet.runs.RANK_VARIABLES:  # this process is the first of the first node
        monkeypatch.delenv(name, raising=False)
    argv = {
        "train": ["train", "hit-detector", "--data", str(data["coco"]), *TINY_TRAIN],
        "screen": ["screen", "--data", str(data["coco"]), *TINY_SEARCH],
        "search": ["search", "--data", str(data["coco"]), *TINY_SEARCH],
        "pretrain": ["pretrain", "--arch", "hit-detector", "--width", "0.0625", "--data", str(data["cls"]),
                     "--config", "synth-cpu", "--epochs", "1", "--no-progress"],
    }[command]
    code = main([*argv, "--out", str(tmp_path / "run"), "--accelerator", "cpu", "--num-nodes", "2",
                 "--devices", "1"])
    assert code == 2 and "stopped before the fit" in capsys.readouterr().err
    assert seen["num_nodes"] == 2 and seen["devices"] == 1 and seen["accelerator"] == "cpu"
    # "auto" on several nodes is DDP (for screen/search the variant that allows unused candidates)
    expected = "ddp_find_unused_parameters_true" if command in ("screen", "search") else "ddp"
    assert seen["strategy"] == expected
    assert seen["trainer"] == (2, 1, 2, "DDPStrategy")


def test_default_is_one_node(data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    seen: dict[str, Any] = {}

    def recording(out: Path, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop("stopped")

    monkeypatch.setattr(hitdet.runs, "build_trainer", recording)
    assert main(["train", "hit-detector", "--data", str(data["coco"]), *TINY_TRAIN, "--out",
                 str(tmp_path / "run"), "--accelerator", "cpu"]) == 2
    assert seen["num_nodes"] == 1 and seen["strategy"] == "auto"


@pytest.mark.parametrize("value, message", [("0", "must be >= 1, got 0"), ("two", "expected a positive number")])
def test_bad_num_nodes_is_a_usage_error(value: str, message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["screen", "--out", str(tmp_path / "run"), "--num-nodes", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("env, child", [
    ({}, False), ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, False), ({"LOCAL_RANK": "1"}, True),
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, True),   # Lightning's variables, second node
    ({"RANK": "3", "LOCAL_RANK": "0", "GROUP_RANK": "1"}, True),  # torchrun, second node
    ({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}, False),  # torchrun, the first process
    ({"SLURM_PROCID": "2"}, True), ({"SLURM_PROCID": "0"}, False),  # srun
])
def test_only_the_first_process_of_the_first_node_writes(env: dict[str, str], child: bool,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in hitdet.runs.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_launched_child() is child


def test_a_one_node_strategy_on_several_nodes_is_refused(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "hit-detector", "--data", str(data["coco"]), *TINY_TRAIN, "--out", str(out),
                 "--accelerator", "cpu", "--num-nodes", "2", "--strategy", "single_device"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--num-nodes 2: strategy 'single_device' runs on one node" in err[0], err
    assert not out.exists()
