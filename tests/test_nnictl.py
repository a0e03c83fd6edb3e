"""``nnictl`` runs the architecture search of examples/nnictl as an HPO experiment, end to end.

Why: ``nnictl create`` cannot start NAS-type experiments with NNI 3.0, so the nnictl route is
an HPO experiment whose trial (``python -m hitdet.nni_trial``) builds and trains the sampled
detector. This starts the shipped config (paths, port and budget adapted: 2 trials, 1 epoch of
2 steps on 16 tiny synthetic images), checks what the trials reported through NNI's REST API,
and stops it, checking that no process is left and that the real ~/nni-experiments holds nothing of this experiment.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from hitdet.data import SynthSpec, write_synthetic
from hitdet.nni_trial import main as trial_main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "nnictl"
NNICTL = Path(sys.executable).parent / "nnictl"
TINY = ["--epochs", "1", "--limit-train-batches", "2", "--set", "width=0.0625", "--set", "detector.min_size=64",
        "--set", "detector.max_size=80"]
BAD_TRIAL_STATES = {"FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{path}", timeout=10) as r:
        return json.loads(r.read())


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _tree(root: int) -> dict[int, str]:
    """``root`` and its descendants, as {pid: start time} (so a reused pid is not mistaken)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        start = _start_time(pid)
        if start is not None:
            tree[pid] = start
            todo += [child for child, parent in parents.items() if parent == pid]
    return tree


def _alive(procs: dict[int, str]) -> list[int]:
    return [pid for pid, start in procs.items() if _start_time(pid) == start]


def _mentioning(*needles: str) -> list[str]:
    """Command lines of running processes that contain any of ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(n in cmd for n in needles) and _start_time(int(entry.name)) is not None:
                found.append(f"{entry.name}: {cmd[:200]}")
    return found


def _trial_logs(exp_dir: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(exp_dir.rglob("trial.stderr")))


def test_conftest_home_is_temporary() -> None:
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir).resolve()
    home = Path(os.environ["HOME"]).resolve()
    assert home != real_home and home.is_relative_to(Path(tempfile.gettempdir()).resolve())


def test_trial_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert trial_main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--params", "{}"]) == 2
    err = capsys.readouterr().err
    assert "missing: dataset folder not found" in err and err.count("\n") == 1
    data = write_synthetic(tmp_path / "data", SynthSpec(num_train=1, num_val=1))
    space = json.loads((EXAMPLES / "arch_search_space.json").read_text())
    sample = {label: spec["_value"][0] for label, spec in space.items()}
    for params, message in [
        ({**sample, "head/b0": "conv_k9"}, "head/b0: unknown op 'conv_k9'"),
        ({**sample, "backbone/s1_b9": "skip"}, "'backbone/s1_b9' is not a searched position"),
        ({k: v for k, v in sample.items() if k != "neck/out1"}, "no op for 1 position(s), first 'neck/out1'"),
    ]:
        code = trial_main(["--data", str(data), "--out", str(tmp_path / "out"), "--params", json.dumps(params)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    # Outside NNI and without --params there is nothing to train.
    assert trial_main(["--data", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "no parameters" in capsys.readouterr().err


@pytest.mark.skipif(not NNICTL.is_file(), reason="nnictl is not installed next to this Python")
def test_nnictl_arch_search_two_trials(tmp_path: Path) -> None:
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    real_manifest = real_home / "nni-experiments" / ".experiment"  # other users' runs may change it meanwhile
    home, exp_root = tmp_path / "home", tmp_path / "nni-experiments"
    home.mkdir()
    data = write_synthetic(tmp_path / "data", SynthSpec(num_train=16, num_val=8, seed=1))

    # The shipped config, with this Python, absolute paths, the tiny data and a 2-trial budget.
    config = yaml.safe_load((EXAMPLES / "arch_search.yml").read_text())
    command = config["trialCommand"]
    assert " python -m hitdet.nni_trial " in f" {command} "
    command = f" {command} ".replace(" python ", f" {shlex.quote(sys.executable)} ", 1).strip()
    config.update(
        searchSpaceFile=str(EXAMPLES / config["searchSpaceFile"]),
        trialCodeDirectory=str((EXAMPLES / config["trialCodeDirectory"]).resolve()),
        trialCommand=f"{command} --data {shlex.quote(str(data))} {shlex.join(TINY)}",
        trialConcurrency=1,
        maxTrialNumber=2,
        maxExperimentDuration="10m",
        experimentWorkingDirectory=str(exp_root),
    )
    config_file = tmp_path / "arch_search.yml"
    config_file.write_text(yaml.safe_dump(config))
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # trials import hitdet
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1", "NNI_EXPERIMENT_DIR": str(exp_root),
           "PYTHONPATH": pythonpath}
    port = _free_port()

    exp_id, procs, stopped = None, {}, None
    try:
        created = subprocess.run([str(NNICTL), "create", "--config", str(config_file), "--port", str(port)],
                                 env=env, capture_output=True, text=True, timeout=120)
        manifest = home / "nni-experiments" / ".experiment"
        experiments = json.loads(manifest.read_text()) if manifest.is_file() else {}
        assert created.returncode == 0 and len(experiments) == 1, created.stdout + created.stderr
        (exp_id, record), = experiments.items()
        procs = _tree(record["pid"])

        deadline, jobs = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            status = _get(port, "check-status")
            assert status["status"] != "ERROR", status
            jobs = _get(port, "trial-jobs")
            procs.update(_tree(record["pid"]))  # the dispatcher and trials, for the check after stop
            bad = [j for j in jobs if j["status"] in BAD_TRIAL_STATES]
            assert not bad, f"{bad}\n{_trial_logs(exp_root / exp_id)}"
            if len(jobs) == 2 and all(j["status"] == "SUCCEEDED" for j in jobs):
                break
            time.sleep(1)
        assert [j["status"] for j in jobs] == ["SUCCEEDED"] * 2, jobs
        assert len(procs) >= 3, procs  # the manager, the dispatcher (tuner) and trials were seen: checked below

        metrics = _get(port, "metric-data")
        for job in jobs:
            mine = [m for m in metrics if m["trialJobId"] == job["trialJobId"]]
            final = [json.loads(json.loads(m["data"])) for m in mine if m["type"] == "FINAL"]
            periodical = sorted(m["sequence"] for m in mine if m["type"] == "PERIODICAL")
            assert len(final) == 1 and periodical == [0], mine  # one intermediate result per epoch (1 epoch)
            value = final[0]["default"] if isinstance(final[0], dict) else final[0]
            assert isinstance(value, float) and 0.0 <= value <= 1.0, final
            assert final[0]["AP50"] >= 0.0
            params = json.loads(job["hyperParameters"][0])["parameters"]
            trial_dir = Path(job["logPath"])
            arch = json.loads((trial_dir / "hitdet" / "architecture.json").read_text())
            assert arch["metadata"]["nni"]["trial"] == job["trialJobId"]
            assert arch["head"]["blocks"][0] == params["head/b0"]  # the trial trained what the tuner sampled
        assert trial_dir.is_relative_to(exp_root / exp_id)
    finally:
        if exp_id is not None:
            stopped = subprocess.run([str(NNICTL), "stop", exp_id], env=env, capture_output=True, text=True,
                                     timeout=60)
        deadline = time.monotonic() + 20
        while _alive(procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _alive(procs)
        for pid in left:  # only the processes this test started; then fail
            os.kill(pid, 9)
    assert stopped is not None and stopped.returncode == 0, stopped
    assert not left, f"processes left after nnictl stop: {left}"
    assert not _mentioning(f"--experiment-id {exp_id}", str(tmp_path)), "experiment processes still running"
    assert not (real_home / "nni-experiments" / exp_id).exists()
    # Only what this test owns: its experiment is in its own manifest and nowhere in the real one.
    assert exp_id in json.loads(manifest.read_text())
    assert not real_manifest.is_file() or exp_id not in real_manifest.read_text()


def test_hparam_trial_screens_searches_retrains(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The search-hyper-parameter trial, outside NNI: μ reaches screening, λ and the arch lr the search."""
    from hitdet.nni_hparam_trial import main as hparam_main

    data = write_synthetic(tmp_path / "data", SynthSpec(num_train=8, num_val=4, seed=3))
    out = tmp_path / "trial"
    common = ["--config", str(EXAMPLES / "search_config.yml"), "--data", str(data), "--out", str(out),
              "--search-epochs", "1", "--set", "strategy.arch_start_epoch=0", "--set", "train.width=0.0625",
              "--set", "train.detector.min_size=64", "--set", "train.detector.max_size=80",
              "--retrain-set", "detector.min_size=64", "--retrain-set", "detector.max_size=80", *TINY[:4]]
    assert hparam_main([*common, "--params", '{"mu": 0.5, "bogus_rate": 1}']) == 2
    err = capsys.readouterr().err
    assert "strategy.bogus_rate: unknown key" in err and err.count("\n") == 1 and not out.exists()

    params = {"mu": 0.5, "penalty_lambda": 0.02, "arc_learning_rate": 0.003}
    assert hparam_main([*common, "--params", json.dumps(params)]) == 0
    screen = yaml.safe_load((out / "screen" / "config.yaml").read_text())["strategy"]
    search = yaml.safe_load((out / "search" / "config.yaml").read_text())
    assert screen["mu"] == 0.5 and screen["arc_learning_rate"] == 0.003
    assert search["strategy"]["penalty_lambda"] == 0.02
    assert search["sub_spaces"] == str(out / "screen" / "subspaces.json")  # the search ran on the screened ops
    kept = json.loads((out / "screen" / "subspaces.json").read_text())["components"]
    arch = json.loads((out / "search" / "architecture.json").read_text())
    assert set(arch["head"]["blocks"]) <= set(kept["head"]["ops"]) and len(kept["head"]["ops"]) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1] and 0.0 <= metrics["final"]["default"] <= 1.0
    assert metrics["final"]["macs_exact"] > 0
