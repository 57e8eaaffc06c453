"""``taxonlens bench memory``: the options reach the spec, the tables print and ``--out`` holds the
result as JSON (no tiny preset checked: counting on the meta device only); the training benchmarks'
``--device`` and ``--precision`` reach their spec, and ``bench tara``'s ``--quick`` and sizes (the runner
replaced: nothing trains)."""

from __future__ import annotations

import importlib
import json

import pytest
from typer.testing import CliRunner

from taxonlens.cli import app


def test_bench_memory_prints_the_fit_table_and_writes_json(tmp_path):
    out = tmp_path / "memory.json"
    result = CliRunner().invoke(app, ["bench", "memory", "--models", "qwen3-vl-2b", "--batch", "2", "--text-tokens",
                                      "256", "--gpus", "4", "--no-check-presets", "--out", str(out)],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "qwen3-vl-2b" in result.output and "fit per GPU size" in result.output and "activation formula" not in result.output
    data = json.loads(out.read_text())
    assert data["spec"]["models"] == ["qwen3-vl-2b"] and data["spec"]["check_presets"] == []
    assert (data["spec"]["batch_size"], data["spec"]["text_tokens"], data["spec"]["gpus"]) == (2, 256, 4)
    assert [p["model"] for p in data["parameters"]] == ["qwen3-vl-2b"] and data["rows"]


def test_bench_memory_refuses_an_unknown_model(tmp_path):
    result = CliRunner().invoke(app, ["bench", "memory", "--models", "gpt-5", "--no-check-presets"])
    assert result.exit_code != 0 and "unknown models" in (result.output + str(result.exception))


class _Ran(Exception):
    """Raised by a fake benchmark runner in place of the run: carries the spec it was given."""


def _fake_runner(spec, *args, **kwargs):
    raise _Ran(spec)


@pytest.mark.parametrize("command, module, runner", [
    ("vqa", "taxonlens.bench.vqa", "bench_vqa_evidence"),
    ("rar", "taxonlens.bench.rar", "bench_rar_evidence"),
    ("tara", "taxonlens.bench.tara", "bench_tara_evidence"),
    ("finedefics", "taxonlens.bench.finedefics", "bench_finedefics_evidence"),
    ("fewshot", "taxonlens.bench.fewshot", "bench_fewshot"),
    ("detections", "taxonlens.bench.detections", "bench_detections"),
])
def test_training_benches_take_device_and_precision(command, module, runner, monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.import_module(module), runner, _fake_runner)
    extra = ["--out", str(tmp_path / "out")] if command == "finedefics" else []
    ran = CliRunner().invoke(app, ["bench", command, "--device", "cuda", "--precision", "bf16", *extra])
    assert isinstance(ran.exception, _Ran), ran.output
    spec = ran.exception.args[0]
    assert (spec.device, spec.precision) == ("cuda", "bf16")
    assert spec.train_settings == {"threads": spec.threads, "device": "cuda", "precision": "bf16"}
    default = CliRunner().invoke(app, ["bench", command, *extra]).exception.args[0]
    assert (default.device, default.precision) == ("cpu", "fp32")


def test_bench_rar_sizes(monkeypatch, tmp_path):
    from taxonlens.bench import rar
    from taxonlens.train.pretrain import PretrainSpec

    monkeypatch.setattr(rar, "bench_rar_evidence", _fake_runner)
    full = CliRunner().invoke(app, ["bench", "rar"]).exception.args[0]
    assert full == rar.RarSpec() and len(full.seeds) >= 5 and full.records_per_split >= 300
    ran = CliRunner().invoke(app, ["bench", "rar", "--quick", "--seeds", "3", "--k", "2", "--k", "4",
                                   "--start-folder", str(tmp_path), "--ranker-lists", "50", "--ranker-epochs", "9"])
    spec = ran.exception.args[0]
    assert spec.start == PretrainSpec.quick() and spec.seeds == (0, 1, 2) and spec.ks == (2, 4)
    assert (spec.ranker_lists, spec.ranker_epochs) == (50, 9)
    refused = CliRunner().invoke(app, ["bench", "rar", "--ranker-lists", "0"])
    assert refused.exit_code == 2 and "--ranker-lists" in refused.output
    assert spec.start_folder == str(tmp_path) and spec.splits == ("seen", "novel")


def test_bench_finedefics_cost_refuses_another_device(tmp_path):
    ran = CliRunner().invoke(app, ["bench", "finedefics", "--cost", "--device", "cuda", "--out", str(tmp_path)])
    assert ran.exit_code != 0 and "--cost measures the CPU" in str(ran.exception)


def test_bench_tara_quick_and_sizes_reach_the_spec(monkeypatch, tmp_path):
    from taxonlens.bench.tara import TARASpec

    monkeypatch.setattr(importlib.import_module("taxonlens.bench.tara"), "bench_tara_evidence", _fake_runner)
    ran = CliRunner().invoke(app, ["bench", "tara", "--quick", "--seeds", "3", "--records-per-split", "7",
                                   "--start-folder", str(tmp_path)])
    spec = ran.exception.args[0]
    assert spec.start == TARASpec.quick().start and spec.seeds == (0, 1, 2) and spec.records_per_split == 7
    assert spec.start_folder == str(tmp_path) and spec.epochs == TARASpec.quick().epochs
    full = CliRunner().invoke(app, ["bench", "tara", "--epochs", "3"]).exception.args[0]
    assert full.start == TARASpec().start and full.seeds == TARASpec().seeds and full.epochs == 3
