"""One key per setting (aliases), --print-config without --out, "did you mean", the reachable MACs range,
and the dataset a run records (and hitdet compare's warning on mixed datasets)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from hitdet.cli import main
from hitdet.data import SynthSpec, write_synthetic
from hitdet.errors import UserError
from hitdet.searching import load_search_config

TINY_SEARCH = ["--config", "synth-cpu", "--no-progress", "--set", "train.width=0.0625", "--set", "train.batch_size=4",
               "--set", "train.steps_per_epoch=1", "--set", "train.detector.min_size=64",
               "--set", "train.detector.max_size=80", "--set", "input_size=[64, 96]", "--set", "num_rois=100",
               "--epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("cfg") / "data", SynthSpec(num_train=8, num_val=4, seed=7))


def leaf_paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out += leaf_paths(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "detector" else [f"{prefix}{k}"]
    return out


# ------------------------------------------------------------------ one key per setting


def test_aliases_set_their_key_and_are_never_printed(tmp_path: Path) -> None:
    cfg = load_search_config("search", None, ["steps_per_epoch=3", "strategy.target_macs=2G"])
    assert cfg.train.steps_per_epoch == 3 and cfg.target_macs == 2e9 and cfg.strategy.target_macs is None
    paths = leaf_paths(cfg.to_dict())
    assert "steps_per_epoch" not in paths and "strategy.target_macs" not in paths
    assert paths.count("train.steps_per_epoch") == 1 and paths.count("target_macs") == 1
    assert len(paths) == len(set(paths))
    # a run's config.yaml from before the aliases: both names in one file, the old one set
    old = cfg.to_dict()
    old["steps_per_epoch"], old["train"]["steps_per_epoch"] = 6, None
    old["strategy"]["target_macs"] = None
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    again = load_search_config("search", tmp_path / "old.yaml")
    assert again.train.steps_per_epoch == 6 and again.target_macs == 2e9
    # both names with different values in one layer: refused, naming both
    (tmp_path / "both.yaml").write_text("steps_per_epoch: 2\ntrain: {steps_per_epoch: 5}\n")
    with pytest.raises(UserError, match=r"both.yaml: steps_per_epoch: steps_per_epoch is another name of "
                                        r"train.steps_per_epoch, which this layer also sets \(5\)"):
        load_search_config("screen", tmp_path / "both.yaml")


def test_print_config_needs_no_out_and_shows_each_setting_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--print-config", "--set", "steps_per_epoch=4", "--target-macs", "3G"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    paths = leaf_paths(printed)
    assert len(paths) == len(set(paths))
    assert [p for p in paths if p.endswith("steps_per_epoch")] == ["train.steps_per_epoch"]
    assert [p for p in paths if p.endswith("target_macs")] == ["target_macs"]
    assert printed["train"]["steps_per_epoch"] == 4 and printed["target_macs"] == 3e9
    assert main(["train", "hit-detector", "--print-config", "--epochs", "3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["epochs"] == 3
    assert main(["train", "--print-config", "--config", "synth-cpu"]) == 0  # no ARCH needed either
    assert yaml.safe_load(capsys.readouterr().out)["preset_width"] == 0.125
    assert list(tmp_path.iterdir()) == []  # nothing written
    for argv in (["train", "hit-detector"], ["screen"], ["train", "--resume", "--print-config"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "the following arguments are required: --out" in err, err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ did you mean


@pytest.mark.parametrize(("argv", "message"), [
    (["screen", "--print-config", "--set", "epochs=2"], "--set epochs: unknown key (did you mean train.epochs? "),
    (["search", "--print-config", "--set", "train.lrr=0.1"], "--set train.lrr: unknown key (did you mean train.lr? "),
    (["search", "--print-config", "--set", "strategy.target_macss=3G"], "(did you mean target_macs? "),
    (["search", "--print-config", "--set", "strategy.steps_per_epoch=3"], "(did you mean train.steps_per_epoch? "),
    (["train", "hit-detector", "--print-config", "--set", "detector.min_siz=64"],
     "detector.min_siz: unknown detector setting (did you mean 'min_size'?)"),
    (["screen", "--print-config", "--set", "ops=[sep_k3, sep_k33]"], "unknown op 'sep_k33' (did you mean 'sep_k3'?)"),
    (["trian"], "invalid choice: 'trian' (did you mean 'train'? choose from"),
    (["data", "chek"], "invalid choice: 'chek' (did you mean 'check'? choose from"),
])
def test_did_you_mean(argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (an unknown command) exit from the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_unknown_key_without_a_near_one_gets_no_guess(capsys: pytest.CaptureFixture) -> None:
    assert main(["screen", "--print-config", "--set", "zzzzqq=1"]) == 2
    err = capsys.readouterr().err
    assert "--set zzzzqq: unknown key (known: detector, structure, train" in err and "did you mean" not in err
    assert "steps_per_epoch" not in err  # an alias is accepted, not listed


# ------------------------------------------------------------------ the reachable MACs range


def test_target_macs_outside_the_reachable_range_is_refused(data: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from search_spaces.costs import detector_cost
    from search_spaces.positions import detector_positions
    from search_spaces.structure import STRUCTURES
    from strategies import SubSpaces

    ops = ["sep_k3", "skip", "conv_k3", "ir_k3_e6"]
    subs = SubSpaces({c: list(ops) for c in ("backbone", "neck", "head")}).save(tmp_path / "subspaces.json")
    structure, size, rois = STRUCTURES["cpu"].scaled(0.0625), (64, 96), 100
    positions = detector_positions(structure, size, rois)
    cheap = {p.label: min(ops, key=p.macs) for p in positions}
    dear = {p.label: max(ops, key=p.macs) for p in positions}
    low, high = (detector_cost(structure, s, 5, size, rois)["total"].macs for s in (cheap, dear))
    out = tmp_path / "run"
    for target, words, bound in ((0.9 * low, "below the reachable floor", low),
                                 (1.1 * high, "above the reachable ceiling", high)):
        code = main(["search", "--data", str(data), "--out", str(out), "--sub-spaces", str(subs),
                     "--target-macs", f"{target:.0f}", *TINY_SEARCH])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"target_macs: {target / 1e9:.4g} G is {words}" in err and f"spends {bound / 1e9:.4g} G" in err, err
        assert not out.exists()


# ------------------------------------------------------------------ the dataset a run records


def test_runs_record_their_dataset_and_compare_warns_on_mixed_ones(data: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "a"
    assert main(["train", "hit-detector", "--data", str(data), "--out", str(run), "--config", "synth-cpu",
                 "--epochs", "1", "--no-progress", "--batch-size", "4", "--set", "detector.min_size=64",
                 "--set", "detector.max_size=80", "--set", "width=0.0625", "--set", "steps_per_epoch=1"]) == 0
    record = json.loads((run / "run.json").read_text())["dataset"]
    files = {f"annotations/instances_{s}.json": hashlib.sha256((data / "annotations" / f"instances_{s}.json")
                                                               .read_bytes()).hexdigest() for s in ("train", "val")}
    whole = hashlib.sha256("".join(f"{n}\0{files[n]}\n" for n in sorted(files)).encode()).hexdigest()
    assert record == {"path": str(data.resolve()), "annotations": files, "sha256": whole}

    same = tmp_path / "b"  # the same data, moved: no warning
    shutil.copytree(run, same)
    moved = json.loads((same / "run.json").read_text())
    moved["dataset"]["path"] = "/elsewhere/data"
    (same / "run.json").write_text(json.dumps(moved))
    capsys.readouterr()
    assert main(["compare", str(run), str(same)]) == 0
    assert capsys.readouterr().err == ""
    other = tmp_path / "c"  # other annotations
    shutil.copytree(run, other)
    changed = json.loads((other / "run.json").read_text())
    changed["dataset"] = {"path": "/data/coco", "annotations": {}, "sha256": "f" * 64}
    (other / "run.json").write_text(json.dumps(changed))
    assert main(["compare", str(run), str(same), str(other), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "trained on different datasets" in captured.err
    assert f"a, b on {data.resolve()} (annotations {whole[:12]}); c on /data/coco (annotations ffffffffffff)" \
        in captured.err
    rows = json.loads(captured.out)
    assert [r["dataset_sha256"] for r in rows] == [whole, whole, "f" * 64]


def test_a_screen_recorded_with_the_old_key_names_resumes(data: Path, tmp_path: Path) -> None:
    """A config.yaml written before the aliases (steps_per_epoch at the top, strategy.target_macs) resumes."""
    run = tmp_path / "screen"
    args = ["--data", str(data), "--out", str(run), "--config", "synth-cpu", "--no-progress",
            "--set", "train.width=0.0625", "--set", "train.batch_size=4", "--set", "train.detector.min_size=64",
            "--set", "train.detector.max_size=80", "--set", "strategy.arch_start_epoch=1",
            "--set", "ops=[sep_k3, skip, conv_k1]", "--set", "strategy.num_ops=2"]
    assert main(["screen", *args, "--epochs", "1", "--set", "steps_per_epoch=1"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps_per_epoch"] == 1 and "steps_per_epoch" not in saved
    old = {**saved, "train": {**saved["train"], "steps_per_epoch": None}, "steps_per_epoch": 1,
           "strategy": {**saved["strategy"], "target_macs": None}}
    (run / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert main(["screen", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert "resume: epoch 2/2, 1 steps/epoch" in (run / "log.txt").read_text()  # the old key still capped it


def test_search_summary_says_when_the_detector_misses_the_target_tolerance() -> None:
    from hitdet.commands.search import format_search_summary

    det = {"chosen": {"backbone": ["sep_k3"]}, "input_size": [64, 96], "num_rois": 100, "params": 1e6,
           "macs": 0.2689e9, "target_macs": 0.25e9, "target_tolerance": 0.05}
    text = format_search_summary(det)
    assert "target 0.25 G (+7.6 %, outside the ±5 % tolerance; see budget_decode in metadata.json)" in text
    within = format_search_summary({**det, "macs": 0.26e9})
    assert "target 0.25 G (+4.0 %)" in within and "tolerance" not in within
