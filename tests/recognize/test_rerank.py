"""RAR: a tiny multimodal LLM reranks the encoder's top-k leaves; only those k change, their mass
is kept, the order follows the LLM; the result decodes to consistent paths from the CLI too."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from taxonlens.cli import app
from taxonlens.data import load_image
from taxonlens.errors import DataError
from taxonlens.models.mllm import load_lmm
from taxonlens.recognize.answers import LETTERS, SYSTEM_PROMPT
from taxonlens.recognize.rerank import LMMReranker, ranking_order
from taxonlens.synthworld import SynthWorld, random_taxonomy


@pytest.fixture(scope="module")
def setup():
    tax = random_taxonomy(12, seed=5)
    images = [Image.new("RGB", (64, 64), (40 * i, 90, 200 - 30 * i)) for i in range(3)]
    probs = torch.softmax(torch.randn(3, tax.n_leaves, generator=torch.Generator().manual_seed(0)) * 2, dim=1)
    return tax, images, probs, load_lmm("tiny-qwen3-vl")


def test_score_reranking_moves_only_the_top_k_and_keeps_their_mass(setup):
    tax, images, probs, lmm = setup
    out = LMMReranker(lmm, tax, k=4).rerank(images, probs)
    top_p, top_i = probs.topk(4, dim=1)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(out.gather(1, top_i).sum(dim=1), top_p.sum(dim=1))
    rest = torch.ones_like(probs, dtype=torch.bool).scatter_(1, top_i, False)
    assert torch.equal(out[rest], probs[rest])
    questions = LMMReranker(lmm, tax, k=4).questions(top_i)
    scores = lmm.option_logprobs(images, [q for q, _ in questions], [list(LETTERS[:4])] * 3, system=SYSTEM_PROMPT)
    for b in range(3):  # the candidates are ordered as the LLM scores their letters
        assert out[b, top_i[b]].argsort(descending=True).tolist() == scores[b].argsort(descending=True).tolist()
        assert questions[b][1] == [tax.names[int(tax.leaves[i])] for i in top_i[b].tolist()]


def test_generate_reranking_reassigns_the_encoder_s_probabilities(setup):
    tax, images, probs, lmm = setup
    out = LMMReranker(lmm, tax, k=3, method="generate").rerank(images, probs)
    top_p, top_i = probs.topk(3, dim=1)
    for b in range(3):
        assert sorted(out[b, top_i[b]].tolist()) == sorted(top_p[b].tolist())


@pytest.mark.parametrize(("text", "order"), [
    ("C, A, B", [2, 0, 1]), ("B > C", [1, 2, 0]), ("stellaria then houstonia", [0, 2, 1]),
    ("nothing useful", [0, 1, 2]), ("A, A, C", [0, 2, 1]),
])
def test_ranking_order(text, order):
    assert ranking_order(text, ["stellaria", "montia", "houstonia"]) == order


def test_bad_settings(setup):
    tax, _, _, lmm = setup
    with pytest.raises(DataError, match="unknown reranking method"):
        LMMReranker(lmm, tax, method="vote")
    with pytest.raises(DataError, match="rerank k must lie in 2..26"):
        LMMReranker(lmm, tax, k=1)
    with pytest.raises(DataError, match="unknown answer format"):
        LMMReranker(lmm, tax, answer="number")


def test_predict_with_rerank_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    world = SynthWorld.create(random_taxonomy(6, seed=2), 6, 1, novel_fraction=0.0, size=64, seed=2)
    world.write(tmp_path / "w")
    out = tmp_path / "p.jsonl"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "w" / "images"), "--model", "tiny-clip",
                                      "--taxonomy", str(next((tmp_path / "w").glob("taxonomy.*"))),
                                      "--rerank", "tiny-idefics2", "--rerank-k", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    leaf_paths = {tuple(p) for p in world.taxonomy.leaf_paths()}
    assert len(rows) == 6 and all(tuple(r["path"]) in leaf_paths for r in rows)  # JSON lines: paths as lists


def test_ranker_records_offer_the_retrieved_candidates_with_the_truth(tmp_path):
    from taxonlens.data import read_manifest
    from taxonlens.predict import build_recognizer
    from taxonlens.recognize.rerank import ranker_records

    world = SynthWorld.create(random_taxonomy(9, seed=4), 9, 2, novel_fraction=0.0, size=64, seed=4)
    world.write(tmp_path / "w")
    records = read_manifest(tmp_path / "w" / "manifest.jsonl")
    rec = build_recognizer("tiny-clip", world.taxonomy, precision="fp32", cache_dir=tmp_path / "cache")
    made = ranker_records(rec, records, k=4)
    assert made == ranker_records(rec, records, k=4)  # deterministic
    leaves = {p[-1] for p in world.taxonomy.leaf_paths()}
    probs = rec.classifier.predict_proba(rec.encoder.encode_images(
        torch.stack([rec.encoder.preprocess(load_image(r.image)) for r in records])))
    for r, q, p in zip(records, made, probs):
        (options,) = q.choices
        assert q.levels == (r.path[-1],) and r.path[-1] in options and len(set(options)) == 4
        assert set(options) <= leaves
        top = {world.taxonomy.names[int(world.taxonomy.leaves[i])] for i in p.topk(4).indices.tolist()}
        assert len(set(options) & top) >= 3  # the retrieved candidates, the truth in place of the last if missing


def test_ranker_data_fine_tune_and_rerank_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    world = SynthWorld.create(random_taxonomy(6, seed=2), 6, 2, novel_fraction=0.0, size=64, seed=2)
    world.write(tmp_path / "w")
    taxonomy = str(next((tmp_path / "w").glob("taxonomy.*")))
    data = tmp_path / "ranker.jsonl"
    result = runner.invoke(app, ["vqa", "ranker-data", str(tmp_path / "w" / "manifest.jsonl"), "--out", str(data),
                                 "--model", "tiny-clip", "--taxonomy", taxonomy, "--k", "3", "--split", "train"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "sft", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                                 "--answer", "name", "--no-system", "--lora-targets", "language+head",
                                 "--ranks", "species", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["predict", str(tmp_path / "w" / "images"), "--model", "tiny-clip", "--taxonomy",
                                 taxonomy, "--rerank", str(tmp_path / "run" / "model"), "--rerank-k", "3",
                                 "--rerank-answer", "name", "--no-rerank-system", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 12
