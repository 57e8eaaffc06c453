"""``taxonlens fewshot fit`` then ``predict --classifier``: a classifier from one photo per species."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from taxonlens.cli import app
from taxonlens.synthworld import SynthWorld, random_taxonomy

runner = CliRunner()


def test_fit_then_predict_with_the_classifier(tmp_path):
    world = tmp_path / "world"
    SynthWorld.create(random_taxonomy(6, seed=4), 6, 6, novel_fraction=0.0, size=32, seed=4).write(world)
    clf = tmp_path / "clf"
    result = runner.invoke(app, ["fewshot", "fit", str(world / "manifest.jsonl"), "--model", "tiny-clip",
                                 "--precision", "fp32", "--shots", "1", "--out", str(clf)])
    assert result.exit_code == 0, result.output
    assert json.loads((clf / "fewshot.json").read_text())["photos"] == 6
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["predict", str(world / "images"), "--model", "tiny-clip", "--precision", "fp32",
                                 "--classifier", str(clf), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 36 and all(len(r["path"]) == 7 and r["error"] == "" for r in rows)
    result = runner.invoke(app, ["fewshot", "fit", str(world / "manifest.jsonl"), "--shots", "two",
                                 "--out", str(clf)])
    assert "a number of photos per species (1, 5, ...) or all" in str(result.exception)
