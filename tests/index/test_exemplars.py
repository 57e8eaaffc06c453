"""Image-exemplar memories: built from labelled photos with an encoder, they classify a stored
photo as its own class, refuse another encoder, and drive `predict --memory` from the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from taxonlens.cli import app
from taxonlens.data import load_image, read_manifest
from taxonlens.errors import DataError
from taxonlens.index.exemplars import MemoryClassifier, build_exemplar_memory
from taxonlens.models.encoders import load_encoder
from taxonlens.predict import build_recognizer
from taxonlens.synthworld import SynthWorld, random_taxonomy


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w")
    SynthWorld.create(random_taxonomy(10, seed=7), 10, 4, novel_fraction=0.0, size=64, seed=7).write(out)
    return out


def test_memory_classifies_its_own_exemplars_and_sums_to_one(world, tmp_path):
    records = [r for r in read_manifest(world / "manifest.jsonl")]
    encoder = load_encoder("tiny-clip")
    memory = build_exemplar_memory(records, encoder, tmp_path / "mem", per_class=2)
    assert len(memory) == 20 and sorted(set(memory.labels.tolist())) == list(range(10))
    rec = build_recognizer("tiny-clip", memory=tmp_path / "mem", precision="fp32")
    clf, tax = MemoryClassifier.load(tmp_path / "mem", encoder, k=3)
    assert tax == rec.taxonomy
    feats = encoder.encode_images(torch.stack([encoder.preprocess(load_image(r.image)) for r in records]))
    probs = clf.predict_proba(feats)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(records)))
    assert int((probs > 0).sum(dim=1).max()) <= 3  # only the k retrieved classes
    scores, _ = memory.search(feats.numpy(), 1)
    exact = scores[:, 0] > 0.9999  # photos stored in the memory find themselves
    assert exact.sum() == 20
    paths = rec.predict([load_image(r.image) for r in records], top_k=1)
    for r, p, is_stored in zip(records, paths, exact):
        if is_stored:
            assert [n.lower() for n in p.path] == [n.lower() for n in r.path]


def test_another_encoder_is_refused(world, tmp_path):
    records = read_manifest(world / "manifest.jsonl")
    build_exemplar_memory(records, "tiny-clip", tmp_path / "mem", per_class=1)
    with pytest.raises(DataError, match="built with encoder .tiny-clip. at another precision or with other weights"):
        MemoryClassifier.load(tmp_path / "mem", load_encoder("tiny-clip", seed=1))
    with pytest.raises(DataError, match="not an exemplar memory"):
        MemoryClassifier.load(tmp_path, load_encoder("tiny-clip"))


def test_index_build_then_predict_with_the_memory(world, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["index", "build", str(world / "manifest.jsonl"), "--out", str(tmp_path / "mem"),
                                 "--model", "tiny-clip", "--kind", "hnsw", "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "exemplars of" in result.output
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["predict", str(world / "images"), "--model", "tiny-clip", "--memory",
                                 str(tmp_path / "mem"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40 and all(len(r["path"]) == 7 for r in rows)  # JSONL holds the path as a list
