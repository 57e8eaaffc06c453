"""TARA alignment: token matching and the losses on hand-computed cases, the BFM targets, that the
alignment loss alone moves the LMM's own weights for every preset, and a TARA run that lowers
its alignment losses, resumes exactly and saves a plain LMM."""

import math

import pytest
import torch

from taxonlens.models.mllm import load_lmm
from taxonlens.models.presets import LMM_PRESETS
from taxonlens.train.grpo import RFTConfig, rft_examples, train_grpo
from taxonlens.train.sft import SFTConfig, sft_inputs, train_sft
from taxonlens.train.tara import (
    ALIGNMENT_FILE,
    TARAAligner,
    alignment_batch,
    alignment_targets,
    label_alignment_loss,
    label_text,
    match_tokens,
    tara_losses,
    visual_alignment_loss,
)

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


# ------------------------------------------------------------- matching and losses
def test_equal_counts_are_left_alone_and_square_grids_are_pooled_to_the_coarser():
    a, b = torch.randn(9, 3), torch.randn(9, 3)
    assert match_tokens(a, b)[0] is a and match_tokens(a, b)[1] is b
    fine = torch.arange(16.0).reshape(16, 1).repeat(1, 2)  # a 4x4 grid, row-major
    coarse = torch.randn(4, 2)
    s, t = match_tokens(coarse, fine)
    assert s is coarse
    # top-left 2x2 block of the 4x4 grid: cells 0, 1, 4, 5
    torch.testing.assert_close(t[:, 0], torch.tensor([2.5, 4.5, 10.5, 12.5]))
    s, t = match_tokens(fine, coarse)  # either side may be the finer one
    assert t is coarse and s.shape == (4, 2)


def test_token_sets_without_a_grid_are_sampled_evenly():
    latents, patches = torch.randn(8, 2), torch.arange(64.0).reshape(64, 1).repeat(1, 2)
    s, t = match_tokens(latents, patches)
    assert s is latents or torch.equal(s, latents)
    assert t[:, 0].tolist() == [0, 9, 18, 27, 36, 45, 54, 63]  # first and last included, evenly spaced


def test_alignment_losses_are_zero_when_aligned_and_two_when_opposite():
    x = torch.nn.functional.normalize(torch.randn(16, 5), dim=-1)
    assert float(visual_alignment_loss([x, x[:9]], [3 * x, x[:9]])) == pytest.approx(0, abs=1e-6)  # scale-free
    assert float(visual_alignment_loss([x], [-x])) == pytest.approx(2, abs=1e-6)
    assert float(label_alignment_loss(x[:4], x[:4])) == pytest.approx(0, abs=1e-6)
    assert float(label_alignment_loss(x[:4], -x[:4])) == pytest.approx(2, abs=1e-6)
    y = torch.nn.functional.normalize(torch.randn(4, 5), dim=-1)
    expected = 1 - torch.nn.functional.cosine_similarity(x[:4], y).mean()
    assert float(label_alignment_loss(x[:4], y)) == pytest.approx(float(expected))


def test_aligner_reads_the_middle_and_the_last_layer_by_default():
    a = TARAAligner(hidden_size=8, n_layers=4, patch_dim=5, text_dim=6)
    assert (a.visual_layer, a.label_layer) == (2, 4)
    assert a.visual[-1].out_features == 5 and a.label[-1].out_features == 6 and a.visual[0].out_features == 16
    with pytest.raises(Exception, match="the LMM has layers 1 to 4"):
        TARAAligner(8, 4, 5, 6, visual_layer=5)


def test_label_alignment_reads_the_first_answer_tokens_state_at_its_layer(deep, lmm):
    """The label state is the one at the true answer's first token: changing that token changes
    the label loss (the state before it, the last prompt token's, would not see it), changing the
    tokens after it does not, and neither touches the visual loss."""
    w, records, photos = deep
    examples = rft_examples(lmm, records, w.taxonomy.ranks, RFTConfig(levels_per_record=1))[:2]
    images = [photos(records[ex.record]) for ex in examples]
    batch, image_mask, answer_at = alignment_batch(lmm, images, examples)
    labels = sft_inputs(lmm, images, examples)[1]
    assert answer_at.tolist() == [int(torch.nonzero(row != -100)[0]) for row in labels]
    torch.manual_seed(0)
    patches, texts = [torch.randn(16, 8) for _ in examples], torch.randn(2, 6)
    aligner = TARAAligner(lmm.hidden_size, lmm.n_layers, 8, 6, label_layer=1)
    rows = torch.arange(2)

    def losses(ids):
        with torch.no_grad():
            out = lmm.model(**{**batch, "input_ids": ids}, output_hidden_states=True)
            visual, label = aligner(out.hidden_states, image_mask, answer_at, patches, texts)
            read = aligner.label(out.hidden_states[1][rows, answer_at].float())  # layer 1 as configured
        assert float(label) == pytest.approx(float(label_alignment_loss(read, texts)))
        return float(visual), float(label)

    ids = batch["input_ids"]
    base = losses(ids)
    first = ids.clone()
    first[rows, answer_at] = (ids[rows, answer_at] + 7) % lmm.tokenizer.vocab_size
    after = ids.clone()
    after[rows, answer_at + 1] = (ids[rows, answer_at + 1] + 7) % lmm.tokenizer.vocab_size
    changed = losses(first)
    assert changed[0] == base[0] and changed[1] != pytest.approx(base[1], abs=1e-6)
    assert losses(after) == base


# ------------------------------------------------------------------- targets
def test_bfm_targets_are_patch_grids_and_taxonomic_label_captions(deep, lmm):
    w, records, photos = deep
    examples = rft_examples(lmm, records, w.taxonomy.ranks, RFTConfig(levels_per_record=2))
    r, ex = records[examples[0].record], examples[0]
    assert label_text(r, 2) == f"a photo of {' '.join(r.levels[:3])}."
    targets = alignment_targets("tiny-clip", examples, records, photos)
    assert set(targets.patches) == {ex.record for ex in examples}
    assert all(p.shape == (64, 128) for p in targets.patches.values())  # tiny-clip: 64 px / 8 px patches, width 128
    assert targets.labels.shape == (len(examples), 128)
    # two examples asking the same record at different ranks get different label embeddings
    same = [j for j, e in enumerate(examples) if e.record == ex.record]
    assert len(same) == 2
    assert examples[same[0]].level != examples[same[1]].level
    assert not torch.allclose(targets.labels[same[0]], targets.labels[same[1]])


@pytest.mark.parametrize("preset", sorted(LMM_PRESETS))
def test_alignment_loss_alone_moves_the_lmm_weights(deep, preset):
    """The teacher-forced pass gives the alignment gradient to the LMM itself (LoRA here), not
    only to the projectors, for every preset."""
    w, records, photos = deep
    lmm = load_lmm(preset).add_lora(4, 8, 0.0, "language")
    examples = rft_examples(lmm, records, w.taxonomy.ranks, RFTConfig(levels_per_record=1))[:3]
    images = [photos(records[ex.record]) for ex in examples]
    batch, image_mask, answer_at = alignment_batch(lmm, images, examples)
    ids = batch["input_ids"]
    for row, ex in enumerate(examples):  # the answer's first token
        first = lmm.tokenizer(ex.target, add_special_tokens=False)["input_ids"][0]
        assert int(ids[row, answer_at[row]]) == first and bool(image_mask[row].any())
    targets = alignment_targets("tiny-clip", examples, records, photos)
    aligner = TARAAligner(lmm.hidden_size, lmm.n_layers, targets.patch_dim, targets.text_dim)
    lora = {n: p for n, p in lmm.model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in lora.items()}
    optimizer = torch.optim.SGD(list(lora.values()) + list(aligner.parameters()), lr=1.0)
    for _ in range(2):  # LoRA's B starts at zero: the second step moves A too
        visual, label = tara_losses(lmm, lmm.model, aligner, images, examples,
                                    [targets.patches[ex.record] for ex in examples], targets.labels[:3])
        assert 0 < float(visual) < 2 and 0 < float(label) < 2
        optimizer.zero_grad()
        (visual + label).backward()
        optimizer.step()
    moved = [n for n in lora if not torch.equal(before[n], lora[n].detach())]
    assert any("lora_B" in n for n in moved) and any("lora_A" in n for n in moved)
    assert not any("vision" in n or "visual." in n for n in lora)  # only the language model was adapted


# ----------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def warm(deep, tmp_path_factory):
    """A tiny SFT warm start (names, no system prompt), saved as a model folder."""
    w, records, photos = deep
    out = tmp_path_factory.mktemp("sft")
    config = SFTConfig(out=out, epochs=3, batch_size=4, lr=2e-3, lora_alpha=32, lora_targets="language+head",
                       answer="name", system=False, eval_every=0, threads=1)
    return train_sft(config, records, photos, w.taxonomy.ranks).model_dir


def _tara(out, warm, **kw):
    base = {"model": str(warm), "out": str(out), "tara": True, "epochs": 1, "questions_per_step": 3,
            "levels_per_record": 1, "checkpoint_every": 2, "threads": 1, "max_new_tokens": 8}
    return RFTConfig(**(base | kw))


def test_tara_run_lowers_the_label_loss_and_saves_a_plain_lmm(deep, warm, tmp_path):
    w, records, photos = deep
    result = train_grpo(_tara(tmp_path, warm, lr=3e-4), records, photos, w.taxonomy.ranks)
    assert result.steps == 4  # 12 questions, 3 per step
    label = [row["tara/label_loss"] for row in result.metrics]
    assert len(label) == 4 and all(0 <= v <= 2 for v in label)
    assert label[-1] < label[0]
    assert all(math.isfinite(row["tara/visual_loss"]) and "reward" in row for row in result.metrics)
    assert (tmp_path / "checkpoint-4" / ALIGNMENT_FILE).is_file()
    loaded = load_lmm(str(result.model_dir))
    names = {n for n, _ in loaded.model.named_parameters()}
    assert not any("lora" in n for n in names) and not any("visual.0" in n or "label.0" in n for n in names)
    image = photos(records[0])
    torch.testing.assert_close(loaded.option_logprobs([image], ["q"], [["a b", "c"]])[0],
                               result.model.option_logprobs([image], ["q"], [["a b", "c"]])[0])


def test_an_interrupted_tara_run_resumes_to_the_same_weights(deep, warm, tmp_path):
    w, records, photos = deep
    full = train_grpo(_tara(tmp_path / "full", warm), records, photos, w.taxonomy.ranks)

    def stop(log):
        if log.step == 3:  # after the checkpoint of step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_grpo(_tara(tmp_path / "cut", warm), records, photos, w.taxonomy.ranks, progress=stop)
    with pytest.raises(Exception, match="resume it"):
        train_grpo(_tara(tmp_path / "cut", warm), records, photos, w.taxonomy.ranks)
    with pytest.raises(Exception, match="different run"):
        train_grpo(_tara(tmp_path / "cut", warm, beta=0.1), records, photos, w.taxonomy.ranks, resume=True)
    resumed = train_grpo(_tara(tmp_path / "cut", warm), records, photos, w.taxonomy.ranks, resume=True)
    assert resumed.steps == full.steps == 4
    assert [r["step"] for r in resumed.metrics] == [1, 2, 3, 4]
    for (name, a), (_, b) in zip(full.model.model.state_dict().items(), resumed.model.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert [r["reward"] for r in resumed.metrics] == [r["reward"] for r in full.metrics]
