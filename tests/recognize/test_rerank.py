"""RAR: a tiny multimodal LLM reranks the encoder's top-k leaves; only those k change, their mass
is kept, the order follows the LLM; the result decodes to consistent paths from the CLI too."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from taxonlens.cli import app
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
    leaf_paths = {" > ".join(p) for p in world.taxonomy.leaf_paths()}
    assert len(rows) == 6 and all(r["path"] in leaf_paths for r in rows)
