"""``hitdet bench``: the shape of its table and JSON (never its speed), the size it prices, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hitdet.arch_cost import architecture_cost
from hitdet.bench import resized_size, summarize
from hitdet.builder import build_detector
from hitdet.cli import main
from tests.helpers import tiny_arch


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    return tiny_arch(width=0.125, size=48).save(folder / "architecture.json")


def test_summarize_median_and_throughput() -> None:
    s = summarize([0.030, 0.010, 0.020, 0.040, 0.100], batch=4)
    assert s["latency_ms"]["median"] == pytest.approx(30.0)
    assert s["latency_ms"]["min"] == pytest.approx(10.0) and s["latency_ms"]["max"] == pytest.approx(100.0)
    assert s["latency_ms"]["p90"] == pytest.approx(40.0 + 0.6 * 60.0)  # between the 4th and 5th of 5 sorted
    assert s["images_per_s"] == pytest.approx(4 / 0.030)
    assert s["latency_per_image_ms"] == pytest.approx(7.5)


@pytest.mark.parametrize("size", [(48, 96), (30, 50), (100, 40)])
def test_resized_size_is_what_the_detector_transform_makes(size: tuple[int, int]) -> None:
    arch = tiny_arch(width=0.125, size=48)
    model = build_detector(arch).eval()
    batch, _ = model.transform([torch.rand(3, *size)])
    assert tuple(batch.tensors.shape[-2:]) == resized_size(arch.settings, size)


def test_cli_bench_prints_one_table_and_writes_json(arch_file: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["bench", str(arch_file), "--input-size", "40x60", "--batch", "3", "--runs", "3", "--warmup", "1",
            "--accelerator", "cpu", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    record = json.loads((arch_file.parent / "bench.json").read_text())
    assert out[-1] == f"wrote {arch_file.parent / 'bench.json'}"
    assert out[1].split() == ["batch", "median", "ms", "p90", "ms", "ms/image", "images/s"]
    rows = [line.split() for line in out[3:-1]]
    assert [int(r[0]) for r in rows] == [1, 3]
    assert [r["batch"] for r in record["results"]] == [1, 3]
    for row, r in zip(rows, record["results"], strict=True):
        assert r["runs"] == 3
        lat = r["latency_ms"]
        assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000.0 / lat["median"])
        assert float(row[1]) == pytest.approx(lat["median"], abs=0.006)  # the table shows the JSON's numbers
    arch = tiny_arch(width=0.125, size=48)
    net = resized_size(arch.settings, (40, 60))
    assert record["input_size"] == [40, 60] and record["network_input_size"] == list(net)
    assert record["macs"] == architecture_cost(arch, net)[0]["total"].macs
    assert record["device"] == "cpu" and record["cpu_threads"] == 1 and record["warmup"] == 1
    assert record["format"] == "hitdet-bench" and record["weights"] is None and record["precision"] == "32-true"
    assert f"network {net[0]}x{net[1]}" in out[0]
    # its own file is replaced on a second run, without --force
    assert main([*argv[:-4], "--runs", "1", "--batch", "1"]) == 0
    record = json.loads((arch_file.parent / "bench.json").read_text())
    assert [r["batch"] for r in record["results"]] == [1] and record["results"][0]["runs"] == 1


def test_cli_bench_with_weights_of_another_architecture_is_refused(
    arch_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from hitdet.weights.detector import save_weights

    other = build_detector(tiny_arch(width=0.25, size=48))
    save_weights(tmp_path / "w.pt", other.state_dict())
    out = tmp_path / "b.json"
    assert main(["bench", str(arch_file), "--weights", str(tmp_path / "w.pt"), "--out", str(out), "--runs", "1"]) == 2
    assert "weights do not fit this architecture" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--batch", "0"], "--batch: must be >= 1, got 0"),
    (["--runs", "0"], "--runs: must be >= 1, got 0"),
    (["--warmup", "-1"], "--warmup: must be >= 0, got -1"),
    (["--threads", "0"], "--threads: must be >= 1, got 0"),
    (["--input-size", "0x5"], "sizes must be positive"),
])
def test_cli_bench_bad_numbers(
    arch_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    out = tmp_path / "b.json"
    try:
        code = main(["bench", str(arch_file), "--out", str(out), *flags])
    except SystemExit as exc:  # argparse's own errors (the size's type check)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not out.exists()


def test_cli_bench_does_not_replace_another_file(
    arch_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "notes.json"
    out.write_text('{"mine": 1}')
    assert main(["bench", str(arch_file), "--out", str(out), "--runs", "1"]) == 2
    assert "not a bench result" in capsys.readouterr().err and out.read_text() == '{"mine": 1}'



def _train_run(run: Path, ap: float) -> Path:
    run.mkdir(parents=True)
    tiny_arch(width=0.125, size=48).save(run / "architecture.json")
    best = {"epoch": 1, "AP": ap, "AP50": 2 * ap}
    (run / "metrics.json").write_text(json.dumps({"best": best, "last": best, "history": [best]}))
    return run


def test_compare_shows_the_latency_bench_wrote_and_warns_on_other_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    measured = _train_run(tmp_path / "measured", 0.2)
    other = _train_run(tmp_path / "other", 0.3)
    unmeasured = _train_run(tmp_path / "unmeasured", 0.1)
    assert main(["bench", str(measured / "architecture.json"), "--runs", "2", "--warmup", "0", "--batch", "1",
                 "--accelerator", "cpu", "--threads", "1"]) == 0
    median = json.loads((measured / "bench.json").read_text())["results"][0]["latency_ms"]["median"]
    (other / "bench.json").write_text(json.dumps({
        "format": "hitdet-bench", "device": "cuda", "device_name": "NVIDIA H100", "cpu_threads": 16,
        "results": [{"batch": 1, "latency_ms": {"median": 3.25}}, {"batch": 8, "latency_ms": {"median": 9.0}}]}))
    capsys.readouterr()
    assert main(["compare", str(measured), str(other), str(unmeasured), "--json"]) == 0
    captured = capsys.readouterr()
    rows = {r["name"]: r for r in json.loads(captured.out)}
    assert rows["measured"]["latency_ms"] == pytest.approx(median) and rows["other"]["latency_ms"] == 3.25
    assert rows["unmeasured"]["latency_ms"] is None and rows["unmeasured"]["latency_on"] is None
    assert rows["other"]["latency_on"] == "cuda (NVIDIA H100)"
    assert "measured on different devices" in captured.err and "other on cuda (NVIDIA H100)" in captured.err
    assert main(["compare", str(measured), str(unmeasured)]) == 0
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0].split()[:8] == ["run", "params", "(M)", "MACs", "(G)", "AP", "AP50", "ms"]
    assert table[1].split()[5] == f"{median:.1f}" and table[2].split()[5] == "-"
    assert "different devices" not in captured.err and "measured on cpu (" in table[-1]


def test_cli_bench_mixed_precision_is_recorded(arch_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", str(arch_file), "--out", str(out), "--runs", "1", "--warmup", "0", "--batch", "1",
                 "--accelerator", "cpu", "--precision", "bf16-mixed", "--input-size", "40x60"]) == 0
    assert "bf16-mixed" in capsys.readouterr().out.splitlines()[0]
    record = json.loads(out.read_text())
    assert record["precision"] == "bf16-mixed" and [r["batch"] for r in record["results"]] == [1]
