"""No-thinking GRPO on hierarchical-VQA questions: the reward, k-shot selection, the questions trl
is given (rendered exactly as the SFT prompts), the settings it refuses, and a plain run."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from taxonlens.data import VQARecord
from taxonlens.errors import TaxonlensError
from taxonlens.models.mllm import LMM, load_lmm
from taxonlens.train import CheckpointError
from taxonlens.train.grpo import RFTConfig, answer_reward, rft_dataset, rft_examples, shots_per_species, train_grpo
from taxonlens.train.sft import SFTConfig, build_examples, train_sft

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


def test_reward_is_one_exactly_when_the_completion_names_the_truth_and_nothing_else(deep, lmm):
    w, records, _ = deep
    examples = rft_examples(lmm, records, w.taxonomy.ranks, RFTConfig(levels_per_record=0))
    reward = answer_reward(examples, records)
    ex = max((e for e in examples if len(records[e.record].choices[e.level]) == 4),
             key=lambda e: records[e.record].levels[e.level] == max(records[e.record].choices[e.level], key=len))
    options, truth = records[ex.record].choices[ex.level], records[ex.record].levels[ex.level]
    assert truth == max(options, key=len)  # listing every option would name the truth as the longest name
    j, t = examples.index(ex), options.index(truth)
    wrong = options[(t + 1) % 4]
    texts = {truth: 1.0, f" {truth.upper()}. ": 1.0, "ABCD"[t]: 1.0, f"({'ABCD'[t]})": 1.0,
             f"{'ABCD'[t]}. {truth}": 1.0, wrong: 0.0, "no idea": 0.0, "": 0.0,
             " ".join(options): 0.0, ", ".join(reversed(options)): 0.0,  # listing the options
             truth[:-1] + "x": 0.0, truth + "s": 0.0,  # near misses
             f"It is {truth}.": 0.0, f"{'ABCD'[t]}. {wrong}": 0.0, f"{'ABCD'[t]} or {'ABCD'[(t + 1) % 4]}": 0.0}
    completions = [[{"role": "assistant", "content": text}] for text in texts]
    assert dict(zip(texts, reward(completions, [j] * len(texts)))) == texts
    assert reward([truth, wrong], [j, j]) == [1.0, 0.0]  # plain-text completions too


def test_shots_keep_k_records_per_species_in_order():
    recs = [VQARecord(f"{i}.png", f"s{i % 3}", "train", ("k", f"s{i % 3}"), (("k",), ("s0", "s1", "s2")), i)
            for i in range(12)]
    one = shots_per_species(recs, 1, seed=0)
    assert sorted(r.levels[-1] for r in one) == ["s0", "s1", "s2"]
    two = shots_per_species(recs, 2, seed=0)
    assert len(two) == 6 and [r.line for r in two] == sorted(r.line for r in two)
    assert shots_per_species(recs, 2, seed=0) == two and shots_per_species(recs, 2, seed=1) != two
    assert len(shots_per_species(recs, 10)) == 12
    with pytest.raises(TaxonlensError, match="shots must be >= 1"):
        shots_per_species(recs, 0)


def test_trl_renders_each_question_as_the_sft_prompt_at_one_random_rank(deep, lmm):
    w, records, photos = deep
    config = RFTConfig(levels_per_record=1, seed=3)
    examples = rft_examples(lmm, records, w.taxonomy.ranks, config)
    assert sorted(ex.record for ex in examples) == list(range(12))  # one level per record
    assert len({ex.level for ex in examples}) > 2  # drawn at random, not always the same rank
    assert rft_examples(lmm, records, w.taxonomy.ranks, config) == examples
    assert rft_examples(lmm, records, w.taxonomy.ranks, RFTConfig(levels_per_record=1, seed=3, epochs=3))[:12] == examples
    data = rft_dataset(examples, records, w.taxonomy.ranks, photos, config)
    assert data.column_names == ["prompt", "image", "row"] and data["row"] == list(range(12))
    for row, ex in zip(data, examples):  # trl applies the processor's chat template to the messages
        assert lmm.processor.apply_chat_template(row["prompt"], add_generation_prompt=True) == ex.prompt


def test_every_epoch_asks_each_record_at_a_new_random_rank(deep, lmm):
    w, records, _ = deep
    examples = rft_examples(lmm, records, w.taxonomy.ranks, RFTConfig(levels_per_record=1, seed=3, epochs=3))
    assert len(examples) == 36
    epochs = [examples[12 * e:12 * (e + 1)] for e in range(3)]
    assert all(sorted(ex.record for ex in epoch) == list(range(12)) for epoch in epochs)  # each record once per epoch
    levels = {r: [next(ex.level for ex in epoch if ex.record == r) for epoch in epochs] for r in range(12)}
    assert sum(len(set(v)) > 1 for v in levels.values()) >= 8  # most records are asked at other ranks later


@pytest.mark.parametrize(("change", "message"), [
    ({"lora_targets": "language+head"}, "cannot adapt the output layer"),
    ({"generations": 1}, "at least 2 answers"),
    ({"lr": 0}, "lr 0"),
    ({"answer": "essay"}, "unknown answer"),
    ({"tara": True, "visual_weight": 0, "label_weight": 0}, "positive visual or label weight"),
])
def test_bad_settings_are_refused(change, message):
    with pytest.raises(TaxonlensError, match=message):
        RFTConfig(**change)


def test_plain_grpo_run_logs_rewards_keeps_out_tara_and_refuses_to_overwrite(deep, tmp_path):
    w, records, photos = deep
    seen = []
    config = RFTConfig(out=tmp_path, epochs=2, questions_per_step=12, generations=2, threads=1, max_new_tokens=4,
                       lr=1e-3)
    result = train_grpo(config, records, photos, w.taxonomy.ranks, progress=seen.append)
    # 2 epochs of 12 questions (each record at a rank drawn per epoch), one trl pass of 2 steps
    assert result.steps == 2 and [(log.epoch, log.step) for log in seen] == [(1, 1), (2, 2)]
    assert seen[-1].total_steps == 2 and [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-2"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == result.metrics and all(0 <= r["reward"] <= 1 and "kl" in r for r in rows)
    assert not any(k.startswith("tara/") for k in rows[0])
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["beta"] == config.beta and len(saved["data"]) == 16 and saved["base model"]
    with pytest.raises(CheckpointError, match="resume it"):
        train_grpo(config, records, photos, w.taxonomy.ranks)
    # a random model names no option: every group has zero advantage, and GRPO leaves it as it was
    assert all(r["reward"] == 0 and r["grad_norm"] == 0 for r in rows)
    base = load_lmm("tiny-qwen2.5-vl").model.state_dict()
    assert all(torch.equal(p, base[n]) for n, p in result.model.model.state_dict().items())


def test_full_fine_tuning_needs_a_saved_reference_and_then_trains_every_weight(deep, tmp_path):
    w, records, photos = deep
    with pytest.raises(TaxonlensError, match="save it to a folder first"):
        train_grpo(RFTConfig(out=tmp_path / "x", lora_r=0, threads=1), records, photos, w.taxonomy.ranks)
    base = load_lmm("tiny-qwen2.5-vl").save(tmp_path / "base")
    config = RFTConfig(model=str(base), out=tmp_path / "full", lora_r=0, epochs=1, questions_per_step=6, threads=1,
                       max_new_tokens=4)
    result = train_grpo(config, records, photos, w.taxonomy.ranks)
    assert result.steps == 2 and not any("lora" in n for n, _ in result.model.model.named_parameters())
    assert load_lmm(str(result.model_dir)).fingerprint() == result.model.fingerprint()


def _colour_kingdoms(n_train: int = 64, n_test: int = 32) -> tuple[list[VQARecord], dict[str, Image.Image]]:
    """A small task: 32 px photos of two kingdoms told apart by their colour (reddish animals,
    greenish plants, each pixel with noise of sd 60), asked "what is its kingdom?" with both
    names offered in a random order; every second photo is an animal."""
    rng, order = np.random.default_rng(0), np.random.default_rng(1)
    colour = {"animalia": (190, 60, 50), "plantae": (60, 170, 60)}
    records, photos = [], {}
    for i in range(n_train + n_test):
        name = ("plantae", "animalia")[i % 2]
        pixels = np.array(colour[name])[None, None] + rng.normal(0, 60, (32, 32, 3))
        photos[f"{i}.png"] = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        options = ("animalia", "plantae")[:: 1 if order.random() < 0.5 else -1]
        records.append(VQARecord(f"{i}.png", name, "train" if i < n_train else "test", (name,), (options,), i + 1))
    return records, photos


def _held_out_accuracy(lmm: LMM, records: list[VQARecord], photos: dict[str, Image.Image], temperature: float,
                       samples: int = 8) -> float:
    """The share of answers sampled at ``temperature`` that are exactly the true option: GRPO's
    reward, on photos it never saw."""
    examples = build_examples(lmm, records, ["kingdom"], "name", system=None)
    batch = lmm.inputs([photos[records[e.record].image] for e in examples], [e.prompt for e in examples])
    torch.manual_seed(0)
    with torch.inference_mode():
        out = lmm.model.generate(**batch, max_new_tokens=4, do_sample=True, temperature=temperature, top_k=0,
                                 num_return_sequences=samples, suppress_tokens=lmm.non_answer_token_ids)
    texts = lmm.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return float(np.mean(answer_reward(examples, records)(texts, [j for j in range(len(examples)) for _ in range(samples)])))


def test_grpo_learns_a_small_task_from_a_warm_start(tmp_path):
    """A short SFT warm start answers in the format but often wrong; three GRPO epochs raise both
    the reward on the training photos (its first 8 steps against its last 8: measured 0.66 ->
    0.84) and the accuracy on held-out ones (0.58 -> 0.82)."""
    records, photos = _colour_kingdoms()
    train, test = [r for r in records if r.split == "train"], [r for r in records if r.split == "test"]
    load = lambda r: photos[r.image]
    question = {"answer": "name", "system": False, "threads": 1, "seed": 0}
    warm = train_sft(SFTConfig(model="tiny-qwen2.5-vl", out=tmp_path / "warm", epochs=2, batch_size=4, lr=2e-3,
                               lora_targets="language+head", eval_every=0, **question), train, load, ["kingdom"])
    before = _held_out_accuracy(warm.model, test, photos, temperature=0.5)
    result = train_grpo(RFTConfig(model=str(warm.model_dir), out=tmp_path / "grpo", epochs=3, lr=1e-4, lora_r=0,
                                  questions_per_step=4, generations=4, temperature=0.5, beta=0.0, max_new_tokens=4,
                                  **question), train, load, ["kingdom"])
    rewards = np.array([m["reward"] for m in result.metrics])  # per step: 4 questions x 4 answers
    after = _held_out_accuracy(result.model, test, photos, temperature=0.5)
    assert len(rewards) == 48 and rewards[-8:].mean() > rewards[:8].mean() + 0.1, rewards
    assert after > before + 0.15, (before, after)
