"""Supervised LoRA fine-tuning of LMMs on hierarchical-VQA questions: the examples and their
loss, that a tiny LMM learns synthworld, exact resume after a kill, refusals, the saved
model, and a second model family."""

import json

import pytest
import torch

from taxonlens.data import Record, VQARecord
from taxonlens.data.vqa_build import build_vqa
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.models.mllm import load_lmm, lora_target_modules
from taxonlens.recognize.answers import LETTERS, SYSTEM_PROMPT, question_text
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.train import CheckpointError, SFTConfig, evaluate_sft, load_sft_checkpoint, train_sft
from taxonlens.train.loop import epoch_batches
from taxonlens.train.sft import (
    build_examples,
    check_records,
    enable_gradient_checkpointing,
    epoch_examples,
    examples_loss,
    sft_inputs,
    sft_loss,
)

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def _config(tmp_path, **kw):
    base = {"out": str(tmp_path), "epochs": 2, "batch_size": 8, "lr": 2e-3, "lora_alpha": 32,
            "lora_targets": "language+head", "questions_per_record": 2, "threads": 1}
    return SFTConfig(**(base | kw))


# ---------------------------------------------------------------- examples and loss
def test_examples_ask_the_reference_question_in_the_stored_option_order(deep, lmm):
    world, records, _ = deep
    ranks = world.taxonomy.ranks
    letters = build_examples(lmm, records, ranks)
    assert len(letters) == 12 * 7  # every rank offers a choice
    for ex in letters[:14]:
        r = records[ex.record]
        opts = r.choices[ex.level]
        assert ex.prompt == lmm.chat(question_text(ranks[ex.level], opts), SYSTEM_PROMPT)
        assert ex.target == LETTERS[opts.index(r.levels[ex.level])] + lmm.end_of_turn
    names = build_examples(lmm, records, ranks, "name", "plant", None)
    assert [n.target for n in names[:7]] == [name + lmm.end_of_turn for name in records[0].levels]
    assert "Given the plant in the image" in names[0].prompt and SYSTEM_PROMPT not in names[0].prompt
    # a level with a single option is not asked
    one = VQARecord("a.png", "x", "train", ("k", "x"), (("k",), ("y", "x")), 1)
    assert [(e.record, e.level, e.target) for e in build_examples(lmm, [one], ["kingdom", "genus"])] == [
        (0, 1, "B" + lmm.end_of_turn)]


def test_bad_records_are_refused_with_the_record_named():
    good = VQARecord("a.png", "x", "train", ("k", "x"), (("k",), ("y", "x")), 1)
    with pytest.raises(DataError, match=r"line 3, b.png\): the truth 'x' of level 2 is not among its options"):
        check_records([good, VQARecord("b.png", "x", "train", ("k", "x"), (("k",), ("y", "z")), 3)], ["a", "b"])
    with pytest.raises(DataError, match="ask no question"):
        check_records([VQARecord("a.png", "k", "train", ("k",), (("k",),), 1)], ["a"])
    with pytest.raises(DataError, match="1 rank names for records 2 levels deep"):
        check_records([good], ["kingdom"])
    with pytest.raises(DataError, match="expected a VQARecord"):
        check_records([Record("a.png", ("k", "x"))], ["a", "b"])
    with pytest.raises(DataError, match="at most 26"):
        many = tuple(f"n{i}" for i in range(27))
        check_records([VQARecord("a.png", "n0", "train", ("n0",), (many,), 1)], ["a"])


def test_loss_is_the_cross_entropy_of_the_answer_tokens_only(deep, lmm):
    world, records, photos = deep
    examples = build_examples(lmm, records, world.taxonomy.ranks)[5:8] + build_examples(
        lmm, records[:1], world.taxonomy.ranks, "name")[6:]  # letters and a long species name
    images = [photos(records[ex.record]) for ex in examples]
    batch, labels = sft_inputs(lmm, images, examples)
    targets = [lmm.tokenizer(ex.target, add_special_tokens=False)["input_ids"] for ex in examples]
    assert [row[row != -100].tolist() for row in labels] == targets  # the answer and end of turn, nothing else
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths.tolist() != [batch["input_ids"].shape[1]] * 4  # padded, on the right:
    assert all(bool(batch["attention_mask"][r, :n].all()) for r, n in enumerate(lengths.tolist()))
    with torch.no_grad():
        loss = sft_loss(lmm.model, batch, labels)
        logp = torch.log_softmax(lmm.model(**batch).logits.float(), dim=-1)
    by_hand = [-logp[r, t - 1, batch["input_ids"][r, t]] for r in range(4) for t in range(labels.shape[1])
               if labels[r, t] != -100]
    assert loss.item() == pytest.approx(float(torch.stack(by_hand).mean()), abs=1e-5)
    # the validation loss: the same token mean, whatever the batches
    by_record = {ex.record: img for ex, img in zip(examples, images)}
    assert examples_loss(lmm, examples, by_record.__getitem__, batch_size=3) == pytest.approx(loss.item(), abs=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(deep):
    """One training step of tiny-qwen2.5-vl with LoRA, with and without recomputed activations: the
    forward pass keeps far fewer tensors for the backward pass, and the loss and every adapter's
    gradient are the same to float32 rounding."""
    world, records, photos = deep

    def step(checkpointing: bool):
        lmm = load_lmm("tiny-qwen2.5-vl")
        if checkpointing:
            enable_gradient_checkpointing(lmm.model)
        torch.manual_seed(0)
        lmm.add_lora(8, 16, 0.0, "language+head")
        lmm.model.train()
        examples = build_examples(lmm, records[:2], world.taxonomy.ranks, "name", system=None)[:4]
        batch, labels = sft_inputs(lmm, [photos(records[ex.record]) for ex in examples], examples)
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
            loss = sft_loss(lmm.model, batch, labels)
        loss.backward()
        grads = {n: p.grad for n, p in lmm.model.named_parameters() if p.requires_grad}
        return float(loss), grads, sum(kept)

    plain, checkpointed = step(False), step(True)
    assert checkpointed[2] < plain[2] / 2
    assert checkpointed[0] == pytest.approx(plain[0], abs=1e-6)
    assert checkpointed[1].keys() == plain[1].keys() and len(plain[1]) > 0
    for name, grad in plain[1].items():
        torch.testing.assert_close(checkpointed[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_evaluation_scores_the_options_in_the_trained_format(deep, lmm):
    """Letters after the system prompt: the benchmark's score mode (answer_records); names
    without it: the same option scoring on the names. Both checked question by question."""
    world, records, photos = deep
    ranks, sample = world.taxonomy.ranks, records[:3]
    for answer, system in (("letter", True), ("name", False)):
        got = evaluate_sft(lmm, sample, photos, ranks, answer, system, batch_size=2)
        hits = {}
        for r in sample:
            for k, opts in enumerate(r.choices):
                options = list(LETTERS[:len(opts)]) if answer == "letter" else list(opts)
                scores = lmm.option_logprobs([photos(r)], [question_text(ranks[k], opts)], [options],
                                             system=SYSTEM_PROMPT if system else None)[0]
                hits.setdefault(ranks[k], []).append(int(scores.argmax()) == opts.index(r.levels[k]))
        assert got["n"] == 21 and got["chance"] == pytest.approx(100 * (18 / 2 + 3 / 4) / 21)
        assert got["level_acc"] == pytest.approx({rank: 100 * sum(h) / len(h) for rank, h in hits.items()})
        assert got["acc"] == pytest.approx(100 * sum(sum(h) for h in hits.values()) / 21)


def test_epoch_plan_covers_every_question_and_draws_levels_per_epoch(deep, lmm):
    world, records, _ = deep
    batches = epoch_batches(10, 4, seed=0, epoch=0, drop_last=False)
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(i for b in batches for i in b) == list(range(10))
    assert epoch_batches(10, 4, 0, 1, drop_last=False) != batches and epoch_batches(10, 4, 0, 0, drop_last=False) == batches
    examples = build_examples(lmm, records, world.taxonomy.ranks)
    assert epoch_examples(examples, 0, 0, 3) == list(range(84))
    first, second = epoch_examples(examples, 2, 0, 0), epoch_examples(examples, 2, 0, 1)
    assert len(first) == len(second) == 24 and first != second and first == epoch_examples(examples, 2, 0, 0)
    assert sorted({examples[j].record for j in first}) == list(range(12))


def test_config_rejects_bad_settings():
    for kw, msg in [({"answer": "text"}, "unknown answer"), ({"lora_targets": "("}, "neither one of"), ({"lora_targets": ""}, "neither"),
                    ({"lora_r": 0}, "rank >= 1"), ({"lr": 0}, "lr > 0"), ({"warmup": 1.0}, "warmup < 1"),
                    ({"questions_per_record": -1}, "questions_per_record"), ({"threads": 0}, "threads"),
                    ({"organism": " "}, "organism"), ({"max_grad_norm": -1}, "max_grad_norm"),
                    ({"patience": -1}, "patience")]:
        with pytest.raises(TaxonlensError, match=msg):
            SFTConfig(**kw)


# ------------------------------------------------------------------------ learning
@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """4 species of one genus x 8 photos: one 4-option species question per photo (32), answered
    by name without the system prompt; 30 epochs of 8 steps at batch 4 (about 8 s on one thread).

    Measured (training questions, seeds 0 / 1 / 2): 25% before, 84 / 97 / 94% after, the loss
    from 6.6 to 0.07 / 0.04 / 0.07. Letters are much slower for a random-weight model (the answer
    depends on where the species is listed): 62 / 53 / 56% after 40 epochs without the system
    prompt, and still chance (28%) with it."""
    world = SynthWorld.create(random_taxonomy(4, seed=0), 4, 8, novel_fraction=0, size=32, seed=0, nuisance=0.2)
    records, photos = build_vqa(world.records(None), world.taxonomy, 4, "random", seed=0), world.image_source()
    ranks = world.taxonomy.ranks
    config = SFTConfig(out=str(tmp_path_factory.mktemp("learned")), epochs=LEARN_EPOCHS, batch_size=4, lr=2e-3,
                       lora_alpha=32, lora_targets="language+head", answer="name", system=False, eval_every=LEARN_EPOCHS,
                       threads=1)
    before = evaluate_sft(load_lmm(config.model), records, photos, ranks, "name", False)
    result = train_sft(config, records, photos, ranks, val_records=records)
    return result, before, records, photos, ranks


def test_training_learns_the_questions(learned):
    result, before, *_ = learned
    losses = [m["train_loss"] for m in result.metrics]
    after = result.metrics[-1]["val"]
    assert "val" not in result.metrics[0] and list(after["level_acc"]) == ["species"]  # evaluated after the last epoch only
    assert before["chance"] == after["chance"] == 25.0 and before["acc"] <= 40
    assert losses[0] > 5 and max(losses[-3:]) < 0.3
    assert after["acc"] >= LEARN_FLOOR


def test_saved_model_answers_like_the_trained_one(learned):
    result, _, records, photos, ranks = learned
    loaded = load_lmm(str(result.model_dir))
    assert loaded.fingerprint() == result.model.fingerprint()
    assert "peft" not in type(loaded.model).__module__  # merged: a plain transformers model
    lora = load_sft_checkpoint(result.checkpoint.parent)  # the unmerged adapters of the checkpoint
    assert type(lora.model).__name__ == "PeftModel"
    sample = records[:6]
    images = [photos(r) for r in sample]
    questions = [question_text(ranks[-1], r.choices[-1]) for r in sample]
    options = [list(r.choices[-1]) for r in sample]
    expected = lora.option_logprobs(images, questions, options)
    for model in (loaded, result.model):
        for got, want in zip(model.option_logprobs(images, questions, options), expected):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    val = result.metrics[-1]["val"]
    assert evaluate_sft(loaded, records, photos, ranks, "name", False) == {k: v for k, v in val.items() if k != "loss"}
    assert val["loss"] > 0


# -------------------------------------------------------------------------- resume
def _adapters(result):
    return torch.load(result.checkpoint, weights_only=True)["model"]


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, deep):
    """Letters after the system prompt, LoRA dropout and 2 levels drawn per record and epoch:
    24 questions, 3 steps per epoch at batch 8."""
    world, records, photos = deep
    ranks = world.taxonomy.ranks
    val = records[:2]
    settings = {"lora_dropout": 0.1}
    straight = train_sft(_config(tmp_path / "straight", **settings), records, photos, ranks, val)
    assert straight.steps == 6 and [m["questions"] for m in straight.metrics] == [24, 24]

    class Killed(Exception):
        pass

    def kill_at(step):
        def progress(log):
            assert log.total_steps == 6 and log.loss > 0
            if log.step == step:
                raise Killed

        return progress

    # killed in the first step of epoch 2: resumes from the epoch-1 checkpoint
    with pytest.raises(Killed):
        train_sft(_config(tmp_path / "epoch", **settings), records, photos, ranks, val, progress=kill_at(4))
    with pytest.raises(CheckpointError, match="exists"):
        train_sft(_config(tmp_path / "epoch", **settings), records, photos, ranks, val)
    resumed = train_sft(_config(tmp_path / "epoch", **settings), records, photos, ranks, val, resume=True)
    assert resumed.steps == 6 and resumed.model.fingerprint() == straight.model.fingerprint()
    for name, tensor in _adapters(straight).items():
        torch.testing.assert_close(_adapters(resumed)[name], tensor, rtol=0, atol=1e-6)

    # killed mid-epoch, after the step-4 checkpoint; the thread count may change on resume
    with pytest.raises(Killed):
        train_sft(_config(tmp_path / "mid", checkpoint_every=2, **settings), records, photos, ranks, val,
                  progress=kill_at(5))
    saved = torch.load(tmp_path / "mid" / "checkpoint.pt", weights_only=True)
    assert saved["loop"] == {"step": 4, "epoch": 1, "batch": 1}  # the step-4 checkpoint, one batch into epoch 2
    assert all("lora_" in name for name in saved["model"])  # adapters only, not the frozen base
    resumed = train_sft(_config(tmp_path / "mid", checkpoint_every=2, threads=2, **settings), records, photos,
                        ranks, val, resume=True)
    # two threads split the sums of a matmul otherwise than one: the same weights up to rounding, not bit-exact
    for name, tensor in _adapters(straight).items():
        torch.testing.assert_close(_adapters(resumed)[name], tensor, rtol=0, atol=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "mid" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["train_loss"] for r in rows] == pytest.approx([m["train_loss"] for m in straight.metrics], abs=1e-6)
    assert rows[1]["val"] == straight.metrics[1]["val"] and rows[1]["val"]["n"] == 14


def test_resume_refuses_other_settings_data_or_base_model(tmp_path, deep):
    world, records, photos = deep
    ranks = world.taxonomy.ranks
    base = tmp_path / "base"
    load_lmm("tiny-qwen2.5-vl").save(base)
    config = _config(tmp_path / "run", model=str(base), epochs=1, questions_per_record=1, batch_size=12)
    train_sft(config, records, photos, ranks)
    with pytest.raises(CheckpointError, match="exists: resume that run"):
        train_sft(config, records, photos, ranks)
    with pytest.raises(CheckpointError, match=r"lr: 0.002 -> 0.001"):
        train_sft(_config(tmp_path / "run", model=str(base), epochs=1, questions_per_record=1, batch_size=12,
                          lr=1e-3), records, photos, ranks, resume=True)
    with pytest.raises(CheckpointError, match="other data"):
        train_sft(config, records[:-1], photos, ranks, resume=True)
    with pytest.raises(CheckpointError, match="other data"):  # the questions are asked with other rank names
        train_sft(config, records, photos, None, resume=True)
    # settings that do not change the weights may differ; a finished run just returns
    done = train_sft(_config(tmp_path / "run", model=str(base), epochs=1, questions_per_record=1, batch_size=12,
                             threads=2, eval_every=3), records, photos, ranks, resume=True)
    assert done.steps == 1 and len(done.metrics) == 1
    load_lmm("tiny-qwen2.5-vl", seed=1).save(base)  # the base model's weights change under the run
    with pytest.raises(CheckpointError, match="other base model"):
        train_sft(config, records, photos, ranks, resume=True)
    with pytest.raises(CheckpointError, match="other base model"):
        load_sft_checkpoint(tmp_path / "run")


def test_unreadable_images_name_the_record(tmp_path, deep):
    world, records, _ = deep
    root = tmp_path / "world"
    world.write(root)
    (root / records[3].image).write_bytes(b"")
    with pytest.raises(DataError, match=rf"training record \(line 4\): .*{records[3].image}: empty file"):
        train_sft(_config(tmp_path / "run", epochs=1, batch_size=2), records[3:4], root, world.taxonomy.ranks)


def test_lora_targets_resolve_to_module_names(tmp_path, deep, lmm):
    language = lora_target_modules(lmm.model, "language+head")
    assert language[-1] == "lm_head" and len(language) == 2 * 7 + 1  # 2 layers x 7 projections, the output layer
    everything = lora_target_modules(lmm.model, "all-linear+head")
    assert set(language) < set(everything) and any("visual" in n for n in everything)
    assert "language_model" in lora_target_modules(lmm.model, "language")  # the layers' pattern
    assert lora_target_modules(lmm.model, "q_proj$") == "q_proj$"  # a regular expression, as it is
    world, records, photos = deep
    with pytest.raises(TaxonlensError, match="do not fit tiny-qwen2.5-vl"):
        train_sft(_config(tmp_path, lora_targets=r".*\.no_such_layer"), records, photos, world.taxonomy.ranks)
    with pytest.raises(DataError, match="image folder .* does not exist"):
        train_sft(_config(tmp_path), records, tmp_path / "nowhere", world.taxonomy.ranks)
    with pytest.raises(DataError, match="no training records"):
        train_sft(_config(tmp_path), [], photos)


# ------------------------------------------------------------------ another family
def test_idefics2_trains_on_names_without_the_system_prompt(tmp_path, deep):
    world, records, photos = deep
    ranks = world.taxonomy.ranks
    config = _config(tmp_path, model="tiny-idefics2", answer="name", system=False, epochs=2, batch_size=6)
    result = train_sft(config, records, photos, ranks, records[:4])
    losses = [m["train_loss"] for m in result.metrics]
    assert result.steps == 8 and losses[1] < losses[0]
    assert set(result.metrics[1]["val"]["level_acc"]) == set(ranks) and result.metrics[1]["val"]["n"] == 28
    loaded = load_lmm(str(result.model_dir))
    assert loaded.model_type == "idefics2" and loaded.fingerprint() == result.model.fingerprint()


LEARN_EPOCHS = 30
LEARN_FLOOR = 50.0  # twice chance
