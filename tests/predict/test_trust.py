"""Predictions to trust: back-off without holes in a one-kingdom tree, per-rank precision targets
and reliability diagrams, thresholds files tied to their recognizer, pybioclip's shape, the
round trip into ``evaluate``, few-shot classifiers and per-rank scores."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from taxonlens.data import load_image, read_manifest
from taxonlens.errors import DataError
from taxonlens.evaluate import evaluate_files
from taxonlens.index.fewshot import fit_fewshot, load_fewshot
from taxonlens.models.encoders import load_encoder
from taxonlens.predict import (
    build_recognizer,
    calibrate_thresholds,
    expand_inputs,
    predict_files,
    read_thresholds,
    write_thresholds,
)
from taxonlens.predict.thresholds import reliability_plot_path
from taxonlens.resources import taxonomy_file
from taxonlens.synthworld import SynthWorld
from taxonlens.taxonomy import load_taxonomy


def _reject_constants(name: str) -> None:
    raise AssertionError(f"not standard JSON: {name}")


@pytest.fixture(scope="module")
def plants(tmp_path_factory) -> Path:
    """The issue's world: 20 species of the shipped iNat21 plant tree (one kingdom), 10 photos each."""
    out = tmp_path_factory.mktemp("w200")
    tree = load_taxonomy(taxonomy_file("inat21-plantae"))
    SynthWorld.create(tree, 20, 10, novel_fraction=0.15, size=64, seed=0).write(out)
    return out


@pytest.fixture(scope="module")
def plant_recognizer(plants, tmp_path_factory):
    return build_recognizer("tiny-clip", plants / "taxonomy.json", precision="fp32",
                            cache_dir=tmp_path_factory.mktemp("labels"))


def test_back_off_has_no_holes_in_a_one_kingdom_tree(plants, plant_recognizer, tmp_path):
    calibration = calibrate_thresholds(plant_recognizer, plants / "manifest.jsonl", precision=0.8)
    assert calibration.thresholds["kingdom"] == 0.0  # one kingdom: every photo's confidence there is 1
    th = write_thresholds(calibration, plant_recognizer, tmp_path / "th.json")
    doc = json.loads(th.read_text(), parse_constant=_reject_constants)
    assert doc["never_trusted"] == [r for r, t in doc["thresholds"].items() if t is None]
    out = tmp_path / "kb.jsonl"
    plant_recognizer.decoder.thresholds = read_thresholds(th, plant_recognizer)
    try:
        predict_files(plant_recognizer, expand_inputs([plants / "images"]), out)
    finally:
        plant_recognizer.decoder.thresholds = {}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 200 and all(r["rank_reached"] for r in rows)  # at least the root rank, always
    confidences = [r[f"confidence_{k}"] for r in rows for k in plant_recognizer.taxonomy.ranks]
    assert all(0.0 <= c <= 1.0 for c in confidences)


def test_per_rank_targets_and_the_reliability_diagram(plants, plant_recognizer, tmp_path):
    calibration = calibrate_thresholds(plant_recognizer, plants / "manifest.jsonl", precision=0.6,
                                       precision_at={"genus": 0.9, "species": 0.95})
    assert calibration.targets == {**{r: 0.6 for r in plant_recognizer.taxonomy.ranks}, "genus": 0.9, "species": 0.95}
    rel = calibration.reliability["species"]
    assert len(rel["bin_edges"]) == 11 and sum(rel["count"]) == calibration.n_photos
    val = [r for r in read_manifest(plants / "manifest.jsonl") if r.split == "val"]
    probs = plant_recognizer.leaf_probs([load_image(r.image) for r in val])
    preds = plant_recognizer.decoder.decode(probs)
    right = [p.path[-1] == r.path[-1] for p, r in zip(preds, val)]
    conf = [p.confidence["species"] for p in preds]
    for k, lo, hi in zip(rel["count"], rel["bin_edges"], rel["bin_edges"][1:]):
        inside = [i for i, c in enumerate(conf) if lo <= c < hi or (hi == 1.0 and c == 1.0)]
        assert k == len(inside)
    seen = [a for a in rel["accuracy"] if a is not None]
    assert math.isclose(sum(a * k for a, k in zip(rel["accuracy"], rel["count"]) if a is not None),
                        sum(right), abs_tol=1e-4) and seen
    th = write_thresholds(calibration, plant_recognizer, tmp_path / "t.json")
    assert reliability_plot_path(th).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="no rank tribe"):
        calibrate_thresholds(plant_recognizer, plants / "manifest.jsonl", precision_at={"tribe": 0.9})
    with pytest.raises(DataError, match=r"must lie in \(0, 1\]"):
        calibrate_thresholds(plant_recognizer, plants / "manifest.jsonl", precision=1.5)


def test_thresholds_refuse_another_recognizer(plants, plant_recognizer, tmp_path):
    calibration = calibrate_thresholds(plant_recognizer, plants / "manifest.jsonl", precision=0.8)
    th = write_thresholds(calibration, plant_recognizer, tmp_path / "t.json")
    greedy = build_recognizer("tiny-clip", plants / "taxonomy.json", precision="fp32", method="greedy")
    with pytest.raises(DataError, match="calibrated with another method"):
        read_thresholds(th, greedy)
    other = build_recognizer("tiny-clip-rn", plants / "taxonomy.json", precision="fp32")
    with pytest.raises(DataError, match="calibrated with another model"):
        read_thresholds(th, other)
    hand = tmp_path / "hand.json"
    hand.write_text('{"species": 0.5, "genus": null}')
    assert read_thresholds(hand, other) == {"species": 0.5, "genus": math.inf}  # hand-written: not checked
    hand.write_text('["species"]')
    with pytest.raises(DataError, match="expected the JSON written by `taxonlens calibrate`"):
        read_thresholds(hand)


def test_pybioclip_format_has_its_exact_shape(plants, plant_recognizer, tmp_path):
    files = expand_inputs([plants / "images"])[:3] + [str(tmp_path / "broken.png")]
    Path(files[-1]).write_bytes(b"not a png")
    out, failures = predict_files(plant_recognizer, files, tmp_path / "p.csv", top_k=3, output_format="pybioclip")
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file_name", "kingdom", "phylum", "class", "order", "family", "genus",
                             "species_epithet", "species", "common_name", "score"]
    assert len(rows) == 9 and len(failures) == 1  # k rows per readable photo, none for the broken one
    for photo in files[:3]:
        mine = [r for r in rows if r["file_name"] == photo]
        assert len(mine) == 3 and float(mine[0]["score"]) >= float(mine[1]["score"]) >= float(mine[2]["score"])
        assert len({r["species"] for r in mine}) == 3


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_evaluate_reads_what_predict_writes(plants, plant_recognizer, tmp_path, suffix):
    out, _ = predict_files(plant_recognizer, expand_inputs([plants / "images"]), tmp_path / f"p{suffix}")
    report = evaluate_files(plants / "manifest.jsonl", out)
    assert report.missing == () and report.extra == ()
    rows = read_manifest(plants / "manifest.jsonl")
    probs = plant_recognizer.leaf_probs([load_image(r.image) for r in rows])
    right = sum(p.path == tuple(r.path) for p, r in zip(plant_recognizer.decoder.decode(probs), rows))
    assert math.isclose(report.metrics.hca, 100 * right / len(rows), abs_tol=1e-6)


def test_a_few_shot_classifier_predicts_from_its_folder(plants, tmp_path):
    records = [r for r in read_manifest(plants / "manifest.jsonl") if r.split == "train"]
    encoder = load_encoder("tiny-clip", precision="fp32")
    folder = fit_fewshot(records, encoder, tmp_path / "clf", shots=1, method="linear", seed=3)
    _clf, tax, fingerprint = load_fewshot(folder, encoder)
    assert tax.n_leaves == len({tuple(r.path) for r in records}) and len(fingerprint) == 16
    meta = json.loads((folder / "fewshot.json").read_text())
    assert meta["photos"] == tax.n_leaves and meta["shots"] == 1  # one photo per class
    rec = build_recognizer("tiny-clip", precision="fp32", classifier=folder)
    assert rec.labels == {"classifier": fingerprint}
    out, _ = predict_files(rec, [r.image for r in records[:5]], tmp_path / "p.jsonl")
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert all(tax.try_node_of_path(p) is not None for p in paths)
    with pytest.raises(DataError, match="was built with encoder .* at another precision or with other weights"):
        load_fewshot(folder, load_encoder("tiny-clip-rn", precision="fp32"))
    with pytest.raises(DataError, match="not a few-shot classifier"):
        load_fewshot(tmp_path, encoder)


@pytest.mark.parametrize("combine", ["fuse", "leaves"])
def test_per_rank_scores_combine_into_leaf_probabilities(plants, combine, tmp_path):
    rec = build_recognizer("tiny-clip", plants / "taxonomy.json", precision="fp32", scores="per-rank",
                           combine=combine, cache_dir=tmp_path)
    images = [load_image(f) for f in expand_inputs([plants / "images"])[:6]]
    probs = rec.leaf_probs(images)
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(images)), atol=1e-5)
    features = rec.encoder.encode_images(torch.stack([rec.encoder.preprocess(i) for i in images]))
    per_rank = {r: c.predict_proba(features) for r, c in rec.classifier.per_rank.items()}
    if combine == "fuse":  # the most probable leaf is the tree-fusion path
        fused = rec.decoder.fuse({r: p.log() for r, p in per_rank.items()})
        assert torch.equal(probs.argmax(dim=1), fused)
    else:  # each rank keeps a 1/R share of its own scores in its marginals
        marg, _nodes = rec.decoder.rank_marginals(probs, "genus")
        assert torch.all(marg >= per_rank["genus"] / len(per_rank) - 1e-6)
    assert rec.labels["scores"] == "per-rank" and rec.labels["combine"] == combine
