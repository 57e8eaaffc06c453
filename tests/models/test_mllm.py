"""LMM conformance: one suite run on every preset in ``LMM_PRESETS`` (adding a model family
is adding a preset): build offline, ask in the chat format, score options, generate, save and
load, gradients reach the weights and LoRA adapters; plus clear errors without weights."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import torch
from PIL import Image

from taxonlens.errors import TaxonlensError
from taxonlens.models.mllm import LMM, LMMWeightsError, load_lmm
from taxonlens.models.presets import LMM_PRESETS

QUESTIONS = ["What is the taxonomic classification of the organism in this image at the genus level?",
             "What is its order? Choose one from the options: rosales, asterales."]
OPTIONS = [["houstonia", "stellaria media", "stellaria", "montia"], ["rosales", "asterales"]]


@pytest.fixture(scope="module", params=sorted(LMM_PRESETS))
def lmm(request) -> LMM:
    return load_lmm(request.param)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    # two sizes and aspect ratios: the processor resizes both to the model's input
    return [Image.new("RGB", (112, 112), (120, 30, 200)), Image.new("RGB", (90, 140), (10, 200, 20))]


def test_chat_prompt_holds_the_image_and_the_question(lmm, images):
    prompt = lmm.chat(QUESTIONS[0])
    assert QUESTIONS[0] in prompt
    ids = lmm.inputs(images[:1], [prompt])["input_ids"]
    where = lmm.image_positions(ids)
    assert where.shape == ids.shape and int(where.sum()) > 0  # the image became image tokens
    assert bool((ids[where] == lmm.model.config.image_token_id).all())


def test_generation_never_writes_image_placeholders_or_turn_markup(lmm, images):
    banned = lmm.non_answer_token_ids
    assert lmm.model.config.image_token_id in banned
    assert lmm.tokenizer.convert_tokens_to_ids(lmm.end_of_turn) not in banned
    batch = lmm.inputs(images * 4, [lmm.chat(q) for q in QUESTIONS * 4])
    torch.manual_seed(0)  # sampled at a high temperature from random weights: any token could come
    out = lmm.model.generate(**batch, max_new_tokens=24, do_sample=True, temperature=3.0, suppress_tokens=banned)
    assert not set(out[:, batch["input_ids"].shape[1]:].flatten().tolist()) & set(banned) - {
        lmm.tokenizer.pad_token_id}  # padding after an early end is not generated


def test_hidden_states_have_one_entry_per_layer_of_the_documented_width(lmm, images):
    batch = lmm.inputs(images[:1], [lmm.chat(QUESTIONS[0])])
    with torch.no_grad():
        states = lmm.model(**batch, output_hidden_states=True).hidden_states
    assert len(states) == lmm.n_layers + 1  # the embeddings, then the output of every layer
    assert states[-1].shape == (*batch["input_ids"].shape, lmm.hidden_size)


def test_option_logprobs_are_batch_independent_log_likelihoods(lmm, images):
    scores = lmm.option_logprobs(images, QUESTIONS, OPTIONS, batch_size=4)
    assert [s.shape for s in scores] == [torch.Size([4]), torch.Size([2])]
    # both questions in one pass (prompts of other lengths: left padding under the cache)
    for together, apart in zip(lmm.option_logprobs(images, QUESTIONS, OPTIONS, batch_size=6), scores):
        torch.testing.assert_close(together, apart, atol=2e-4, rtol=0)
    assert all(bool((s < 0).all()) and bool(torch.isfinite(s).all()) for s in scores)
    for i, opts in enumerate(OPTIONS):  # alone, in other batches and with other padding: the same numbers
        for k, opt in enumerate(opts):
            alone = lmm.option_logprobs(images[i:i + 1], QUESTIONS[i:i + 1], [[opt]])[0][0]
            torch.testing.assert_close(alone, scores[i][k], atol=2e-4, rtol=0)
    # the image matters: another image gives other scores
    other = lmm.option_logprobs(images[::-1], QUESTIONS, OPTIONS)
    assert not torch.allclose(other[0], scores[0])


def test_option_logprobs_of_a_lora_wrapped_model_are_those_of_the_model(lmm, images):
    """Fresh LoRA adapters change nothing (B starts at 0); scoring reaches the model under peft."""
    wrapped = load_lmm(lmm.name).add_lora()
    for a, b in zip(wrapped.option_logprobs(images, QUESTIONS, OPTIONS), lmm.option_logprobs(images, QUESTIONS, OPTIONS)):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


def test_option_logprob_is_the_sum_over_the_answer_tokens(lmm, images):
    """Checked against a hand-written teacher-forced forward pass."""
    prompt, answer = lmm.chat(QUESTIONS[0]), OPTIONS[0][1]
    batch = lmm.inputs(images[:1], [prompt + answer + lmm.end_of_turn])
    target = lmm.tokenizer(answer + lmm.end_of_turn, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(lmm.model(**batch).logits[0].float(), dim=-1)
    ids = batch["input_ids"][0]
    n = len(ids)
    expected = sum(float(logp[t - 1, ids[t]]) for t in range(n - len(target), n))
    assert lmm.option_logprobs(images[:1], QUESTIONS[:1], [[answer]])[0][0].item() == pytest.approx(expected, abs=1e-4)


def test_generate_answers_every_question(lmm, images):
    answers = lmm.generate(images, QUESTIONS, max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert lmm.generate(images, QUESTIONS, max_new_tokens=4) == answers  # greedy: deterministic


def test_the_processor_pads_on_the_left_also_after_a_save_and_load(lmm, images, tmp_path):
    """trl calls the processor itself and aligns its per-token outputs with left-padded prompts."""
    for model in (lmm, load_lmm(str(lmm.save(tmp_path / "m")))):
        batch = model.processor(text=[model.chat("short"), model.chat(QUESTIONS[0])], images=[[images[0]]] * 2,
                                padding=True, return_tensors="pt")
        assert int(batch["attention_mask"][0, 0]) == 0 and int(batch["attention_mask"][0, -1]) == 1


def test_save_load_round_trip(lmm, images, tmp_path):
    lmm.save(tmp_path / "m")
    again = load_lmm(str(tmp_path / "m"))
    assert again.fingerprint() == lmm.fingerprint() and again.model_type == lmm.model_type
    for a, b in zip(again.option_logprobs(images, QUESTIONS, OPTIONS), lmm.option_logprobs(images, QUESTIONS, OPTIONS)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_another_seed_gives_other_weights(lmm):
    assert load_lmm(lmm.name, seed=1).fingerprint() != lmm.fingerprint()


def test_answer_loss_reaches_language_and_vision_weights_and_lora(lmm, images):
    fresh = load_lmm(lmm.name)
    batch = fresh.inputs(images[:1], [fresh.chat(QUESTIONS[0]) + "houstonia" + fresh.end_of_turn])
    labels = batch["input_ids"].clone()
    labels[:, :-3] = -100
    fresh.model.train()
    fresh.model(**batch, labels=labels).loss.backward()
    grads = {n: p.grad for n, p in fresh.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("layers" in n and ("language_model" in n or "text_model" in n) for n in grads)
    assert any("visual" in n or "vision" in n for n in grads)  # through the image tokens
    before = fresh.fingerprint()
    fresh.add_lora(r=4)
    fresh.model(**batch, labels=labels).loss.backward()
    lora = [(n, p) for n, p in fresh.model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n, _ in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora if "lora_A" in n or "lora_B" in n)
    assert not any("visual" in n or "vision" in n for n, _ in lora)  # "language": adapters on the LM only
    assert fresh.fingerprint() != before


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("repo", ["Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen3-VL-2B-Instruct", "HuggingFaceM4/idefics2-8b"])
def test_missing_hub_model_names_the_repo_and_the_fix(offline, tmp_path, repo):
    start = time.monotonic()
    with pytest.raises(LMMWeightsError) as info:
        load_lmm(repo)
    assert time.monotonic() - start < 10
    msg = str(info.value)
    assert repo in msg and f"models--{repo.replace('/', '--')}" in msg and f"huggingface-cli download {repo}" in msg


def test_bad_folders_and_names(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LMMWeightsError, match=r"holds no config.json \(found: nothing\)"):
        load_lmm(str(tmp_path / "empty"))
    load_lmm("tiny-qwen2.5-vl").save(tmp_path / "broken")
    weights = next((tmp_path / "broken").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(LMMWeightsError, match="files could not be loaded"):
        load_lmm(str(tmp_path / "broken"))
    with pytest.raises(TaxonlensError, match="unknown multimodal LLM"):
        load_lmm("no-such-preset")
    with pytest.raises(TaxonlensError, match="unknown precision 'int8'"):
        load_lmm("tiny-idefics2", precision="int8")


def test_single_token_options_are_read_from_one_pass_of_the_prompt(lmm, images):
    """Letters: log p(letter | image, question) from the next-token distribution, equal to a
    hand-written forward pass of the prompt alone, and the same in any batch."""
    letters = ["A", "B", "C", "D"]
    assert lmm._single_tokens(lmm.chat(QUESTIONS[0]), letters) is not None
    scores = lmm.option_logprobs(images, QUESTIONS, [letters, letters[:2]])
    for i in range(2):
        batch = lmm.inputs(images[i:i + 1], [lmm.chat(QUESTIONS[i])])
        with torch.no_grad():
            logp = torch.log_softmax(lmm.model(**batch).logits[0, -1].float(), dim=-1)
        ids = [lmm.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in letters[: len(scores[i])]]
        torch.testing.assert_close(scores[i], logp[ids], atol=2e-4, rtol=0)
    mixed = lmm.option_logprobs(images, QUESTIONS, [OPTIONS[0], letters[:2]])  # one slow, one fast question
    torch.testing.assert_close(mixed[1], scores[1], atol=2e-4, rtol=0)
    assert lmm._single_tokens(lmm.chat(QUESTIONS[0]), ["houstonia", "stellaria media"]) is None
