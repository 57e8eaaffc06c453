"""The demo runs end to end on a small world, and its figures come from the real evaluator."""

import csv
import json

import pytest

from taxonlens.data import load_image, read_manifest
from taxonlens.demo import DECODERS, TEXT_ARMS, DemoSettings, demo_model, run_demo
from taxonlens.errors import DataError


def test_demo_small_world(tmp_path):
    calls = []
    settings = DemoSettings(out=str(tmp_path), species=10, images_per_species=6, size=32, epochs=1, batch_size=8)
    results = run_demo(settings, progress=lambda d, n: (calls.append((d, n)), lambda i: None)[1])
    assert set(results["arms"]) == set(TEXT_ARMS)
    for arm in results["arms"].values():
        for split in ("test", "novel"):
            assert set(arm[split]) == set(DECODERS)
            assert arm[split]["consistent path"]["valid_path_pct"] == 100.0  # the decoder only answers real paths
            assert arm[split]["tree fusion"]["valid_path_pct"] == 100.0
            assert 0.0 <= arm[split]["flat per-rank argmax"]["valid_path_pct"] <= 100.0
            backoff = arm[split]["consistent + back-off"]
            assert abs(sum(backoff["reported_ranks"].values()) - 100.0) < 1e-6
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world"]["species"] == 10 and report["arms"]["taxonomic"]["test"] == results["arms"]["taxonomic"]["test"]
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64" in html and "novel species" in html
    assert ("writing synthworld", 60) in calls
    # predictions.csv: the photo files through `predict` give the same back-off answers as in memory
    with open(results["predictions"], newline="") as f:
        rows = {r["file_name"]: r for r in csv.DictReader(f)}
    split_of = {r.image: r.split for r in read_manifest(tmp_path / "world" / "manifest.jsonl")}
    assert sorted(rows) == sorted(f for f, s in split_of.items() if s in ("test", "novel"))
    assert all(r["error"] == "" and r["path"].count(" > ") == 6 for r in rows.values())
    for split in ("test", "novel"):
        reached = [r["rank_reached"] or "none" for f, r in rows.items() if split_of[f] == split]
        from_files = {k: 100.0 * reached.count(k) / len(reached) for k in set(reached)}
        assert from_files == pytest.approx(results["arms"]["taxonomic"][split]["consistent + back-off"]["reported_ranks"])
    # the model `taxonlens serve` serves without --model is the one that wrote predictions.csv
    served = demo_model(tmp_path)
    recognizer = served.options.build(cache_dir=served.cache_dir)
    recognizer.decoder.thresholds = served.thresholds
    some = sorted(rows)[:4]
    for name, p in zip(some, recognizer.predict([load_image(f) for f in some], top_k=1)):
        assert " > ".join(p.path) == rows[name]["path"] and (p.rank_reached or "") == rows[name]["rank_reached"]
    with pytest.raises(DataError, match="run `taxonlens demo` first"):
        demo_model(tmp_path / "elsewhere")
    # a second run resumes: photos and trained models are kept, the figures are the same
    again = run_demo(settings)
    assert again["arms"]["taxonomic"]["test"] == results["arms"]["taxonomic"]["test"]
