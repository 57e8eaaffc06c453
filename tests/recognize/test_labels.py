"""Label embeddings: prompt averaging, the on-disk cache and its key, and resuming an
interrupted embedding run."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from taxonlens.models.encoders import load_encoder
from taxonlens.recognize import labels
from taxonlens.recognize.labels import embed_prompts, label_embeddings, taxon_prompts
from taxonlens.taxonomy import Taxonomy

PROMPTS = [[f"a photo of taxon {i}."] for i in range(10)]


class Counting:
    """An encoder wrapper that counts ``encode_texts`` calls and texts, and can fail on a given call."""

    def __init__(self, encoder, fail_on_call: int | None = None):
        self.inner, self.fail_on_call = encoder, fail_on_call
        self.calls = self.texts = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated interruption")
        self.texts += len(texts)
        return self.inner.encode_texts(texts)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-clip")


def test_embed_prompts_is_the_normalised_mean_of_unit_prompt_embeddings(encoder):
    groups = [["a photo of a rose.", "a drawing of a rose."], ["a photo of a fox."], ["a", "b", "c"]]
    emb = embed_prompts(encoder, groups)
    assert emb.shape == (3, encoder.embed_dim) and emb.dtype == torch.float32
    for group, row in zip(groups, emb):
        each = torch.nn.functional.normalize(torch.stack([encoder.encode_texts([p])[0] for p in group]), dim=1)
        mean = each.mean(dim=0)
        torch.testing.assert_close(row, mean / mean.norm(), atol=1e-5, rtol=0)
    torch.testing.assert_close(embed_prompts(encoder, [["a photo of a fox."]])[0], encoder.encode_texts(["a photo of a fox."])[0])
    assert embed_prompts(encoder, []).shape == (0, encoder.embed_dim)


def test_second_call_hits_the_cache(encoder, tmp_path):
    counting = Counting(encoder)
    first = label_embeddings(counting, PROMPTS, tmp_path)
    assert counting.texts == len(PROMPTS) and first.shape == (len(PROMPTS), encoder.embed_dim)
    assert [p.suffix for p in tmp_path.iterdir()] == [".npy"]  # only the final file: no partial or marker left
    seen = []
    again = label_embeddings(counting, PROMPTS, tmp_path, progress=seen.append)
    assert counting.texts == len(PROMPTS)  # nothing embedded the second time
    assert torch.equal(again, first) and seen == [len(PROMPTS)]
    torch.testing.assert_close(first, embed_prompts(encoder, PROMPTS))


def test_key_changes_with_prompts_and_weights(tmp_path):
    enc = load_encoder("tiny-clip")
    counting = Counting(enc)
    base = label_embeddings(counting, PROMPTS, tmp_path)
    other = label_embeddings(counting, PROMPTS[:-1] + [["a photo of another taxon."]], tmp_path)
    assert counting.texts == 2 * len(PROMPTS) and len(list(tmp_path.glob("*.npy"))) == 2
    assert torch.equal(other[:-1], base[:-1]) and not torch.equal(other[-1], base[-1])
    label_embeddings(counting, [p + ["a drawing of it."] for p in PROMPTS], tmp_path)  # templates change the key
    assert len(list(tmp_path.glob("*.npy"))) == 3
    with torch.no_grad():
        enc.model.text_projection.mul_(-1)  # new weights, new fingerprint: the cache must not answer
    flipped = label_embeddings(counting, PROMPTS, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 4
    torch.testing.assert_close(flipped, -base)


def test_interrupted_run_resumes_where_it_stopped(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(labels, "CHUNK", 4)
    clean = label_embeddings(encoder, PROMPTS, tmp_path / "clean")
    broken = Counting(encoder, fail_on_call=2)  # the first chunk (4 labels) is written, the second fails
    with pytest.raises(RuntimeError, match="simulated"):
        label_embeddings(broken, PROMPTS, tmp_path / "resumed")
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "resumed").iterdir()) == ["done", "partial.npy"]
    assert next((tmp_path / "resumed").glob("*.done")).read_text() == "4"
    resumed, seen = Counting(encoder), []
    out = label_embeddings(resumed, PROMPTS, tmp_path / "resumed", progress=seen.append)
    assert resumed.texts == len(PROMPTS) - 4 and seen == [4, 4, 2]  # already done, then the two chunks left
    assert torch.equal(out, clean)
    assert [p.suffix for p in (tmp_path / "resumed").iterdir()] == [".npy"]
    # chunking does not change the result
    monkeypatch.setattr(labels, "CHUNK", 2048)
    torch.testing.assert_close(out, label_embeddings(encoder, PROMPTS, tmp_path / "unchunked"), atol=1e-5, rtol=0)


def test_run_stopped_before_its_first_chunk_starts_over(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(labels, "CHUNK", 4)
    with pytest.raises(RuntimeError, match="simulated"):
        label_embeddings(Counting(encoder, fail_on_call=1), PROMPTS, tmp_path)
    assert [p.name.split(".", 1)[1] for p in tmp_path.iterdir()] == ["partial.npy"]  # no chunk marked done
    again = Counting(encoder)
    out = label_embeddings(again, PROMPTS, tmp_path)
    assert again.texts == len(PROMPTS)
    torch.testing.assert_close(out, embed_prompts(encoder, PROMPTS), atol=1e-5, rtol=0)


def test_unwritable_cache_folder_embeds_without_caching(encoder, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    counting = Counting(encoder)
    out = label_embeddings(counting, PROMPTS, tmp_path / "file" / "labels")
    assert counting.texts == len(PROMPTS)
    torch.testing.assert_close(out, embed_prompts(encoder, PROMPTS))


def test_default_cache_folder_follows_the_environment(encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path))
    assert labels.default_cache_dir() == tmp_path
    label_embeddings(encoder, PROMPTS[:2])
    assert len(list((tmp_path / "labels").glob("*.npy"))) == 1


def test_taxon_prompts_follow_the_paths():
    tax = Taxonomy.from_paths([("Plantae", "Rosa", "Rosa canina"), ("Animalia", "Vulpes", "Vulpes vulpes")])
    genus = tax.nodes_at_rank(tax.ranks[1])
    assert taxon_prompts(tax, tax.leaves) == [["a photo of Plantae Rosa canina."], ["a photo of Animalia Vulpes vulpes."]]
    assert taxon_prompts(tax, genus, "scientific") == [["a photo of Rosa."], ["a photo of Vulpes."]]
    common = {int(tax.leaves[1]): "red fox"}
    assert taxon_prompts(tax, tax.leaves, "common", common_names=common)[1] == ["a photo of red fox."]
    assert len(taxon_prompts(tax, tax.leaves, "scientific", "openai")[0]) == 80
