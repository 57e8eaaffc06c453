"""Cost of asking a multimodal LLM: option scoring against generation, questions per second."""

from __future__ import annotations

import torch

from taxonlens.bench import timed
from taxonlens.models.mllm import load_lmm
from taxonlens.recognize.answers import LETTERS, SYSTEM_PROMPT, question_text
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.checkpoint import torch_threads


def letter_questions(taxonomy: Taxonomy, n_questions: int, n_options: int = 4) -> tuple[list[str], list[list[str]]]:
    """``n_questions`` species questions of the reference protocol, each offering ``n_options``
    consecutive leaf names of ``taxonomy`` (cycling), and each question's option letters."""
    names = [taxonomy.names[int(n)] for n in taxonomy.leaves]
    questions = [question_text("species", [names[(i + j) % len(names)] for j in range(n_options)], "organism")
                 for i in range(n_questions)]
    return questions, [list(LETTERS[:n_options])] * n_questions


def bench_answering(model: str = "tiny-qwen2.5-vl", n_questions: int = 64, n_options: int = 4, batch: int = 16,
                    max_new_tokens: int = 5, threads: int | None = 1, seed: int = 0, precision: str = "fp32",
                    device: str = "cpu") -> dict[str, float | int | str]:
    """Questions per second of ``generate`` (greedy, ``max_new_tokens``, the reference protocol) and
    of letter ``score`` (one batched forward pass over question x option), on synthworld photos
    at 112 px, best of 2 after a warm-up; ``threads`` torch threads during the run (None: as set).

    ``model`` may be a ``random:NAME`` architecture (``random:qwen2.5-vl-130m``): at a real width
    the model's arithmetic, not Python, sets the ratio."""
    lmm = load_lmm(model, precision, seed, device)
    tax = random_taxonomy(max(n_questions, n_options), seed=seed)
    world = SynthWorld.create(tax, tax.n_leaves, 1, novel_fraction=0.0, size=112, seed=seed)
    images = [world.photo(i, 0).image for i in range(n_questions)]
    questions, letters = letter_questions(tax, n_questions, n_options)
    with torch_threads(threads):
        def generate() -> None:
            for i in range(0, n_questions, batch):
                lmm.generate(images[i:i + batch], questions[i:i + batch], max_new_tokens, system=SYSTEM_PROMPT)

        def score() -> None:
            lmm.option_logprobs(images, questions, letters, batch_size=batch * n_options, system=SYSTEM_PROMPT)

        _, gen_s = timed(generate, repeats=2)
        _, score_s = timed(score, repeats=2)
    return {"model": model, "parameters": sum(p.numel() for p in lmm.model.parameters()),
            "precision": str(lmm.model.dtype).removeprefix("torch."), "device": str(lmm.device),
            "questions": n_questions, "options": n_options, "threads": threads or torch.get_num_threads(),
            "generate_questions_per_s": n_questions / gen_s, "score_questions_per_s": n_questions / score_s,
            "score_over_generate": gen_s / score_s}
