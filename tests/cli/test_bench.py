"""``taxonlens bench memory``: the options reach the spec, the tables print and ``--out`` holds the
result as JSON (no tiny preset checked: counting on the meta device only)."""

from __future__ import annotations

import json

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
