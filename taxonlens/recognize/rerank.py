"""RAR (retrieving and ranking): the encoder retrieves the top-k candidate labels of a photo,
a multimodal LLM ranks them, and the result goes through the tree-consistent decoder.

:class:`LMMReranker` turns the encoder's leaf probabilities ``[B, n_leaves]`` into reranked
ones: the LMM is asked the reference-format question at the label rank with the ``k``
candidates as lettered options, and redistributes the probability mass those ``k`` held
(the rest of the distribution is kept, so marginals, consistent paths and back-off stay
meaningful). Two ways to rank:

- ``score``: the log-likelihood of each candidate's letter; the ``k`` probabilities become
  the encoder's top-k mass times the softmax of those log-likelihoods;
- ``generate``: the LMM writes a ranked list ("C, A, B"), read back piece by piece with
  :func:`~taxonlens.recognize.answers.parse_answer` (candidates it does not mention follow
  in the encoder's order); the encoder's top-k probabilities, sorted, are reassigned in the
  LMM's order, so it changes the ranking, not the confidence profile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from enum import nonmember

import torch
from PIL import Image

from taxonlens.choices import Choice
from taxonlens.data.records import Record, record_leaves
from taxonlens.data.vqa import VQARecord
from taxonlens.errors import DataError
from taxonlens.models.mllm import LMM
from taxonlens.recognize.answers import LETTERS, SYSTEM_PROMPT, AnswerFormat, parse_answer, question_text
from taxonlens.taxonomy import Taxonomy


class RerankMethod(Choice):
    """How the LLM ranks the candidates: ``score`` (option likelihoods) or ``generate`` (a ranked list)."""

    what = nonmember("reranking method")
    score = "score"
    generate = "generate"


RANKING_INSTRUCTION = "Rank the options from most to least likely, as letters separated by commas."


class LMMReranker:
    """Reranks the encoder's top-k leaves with a multimodal LLM.

    Args:
        lmm: the ranker.
        taxonomy: the label tree; candidates are its leaves, named by their last name.
        k: candidates per photo (at most 26).
        method: ``score`` or ``generate``.
        organism: the word used in the question ("plant", "bird", ...).
        answer, system: how the ranker answers (``letter`` or the candidate's ``name``) and the
            system message it is asked with: as it was fine-tuned (``taxonlens train sft``).
    """

    def __init__(self, lmm: LMM, taxonomy: Taxonomy, k: int = 5, method: str = "score", organism: str = "organism",
                 answer: str = "letter", system: str | None = SYSTEM_PROMPT):
        AnswerFormat(answer)  # as the ranker was trained
        RerankMethod(method)
        if not 2 <= k <= len(LETTERS):
            raise DataError(f"rerank k must lie in 2..{len(LETTERS)}, got {k}")
        self.lmm, self.taxonomy, self.k, self.method, self.organism = lmm, taxonomy, k, method, organism
        self.answer, self.system = answer, system
        self.rank = taxonomy.ranks[-1]

    def questions(self, candidates: torch.Tensor) -> list[tuple[str, list[str]]]:
        """``(question, option names)`` for candidate leaves ``[B, k]``."""
        names = [[self.taxonomy.names[int(self.taxonomy.leaves[i])] for i in row] for row in candidates.tolist()]
        return [(question_text(self.rank, opts, self.organism), opts) for opts in names]

    def rerank(self, images: Sequence[Image.Image], leaf_probs: torch.Tensor) -> torch.Tensor:
        """``[B, n_leaves]`` probabilities with the top-k of each row of ``leaf_probs`` reranked."""
        k = min(self.k, leaf_probs.shape[1])
        if k < 2:
            return leaf_probs
        top_p, top_i = leaf_probs.float().topk(k, dim=1)  # encoder order, best first
        asked = self.questions(top_i)
        if self.method == "score":
            options = [list(LETTERS[:k]) if self.answer == "letter" else opts for _, opts in asked]
            scores = self.lmm.option_logprobs(images, [q for q, _ in asked], options, system=self.system)
            new = torch.stack([torch.softmax(s, dim=0) for s in scores]) * top_p.sum(dim=1, keepdim=True)
        else:
            texts = self.lmm.generate(images, [f"{q}\n{RANKING_INSTRUCTION}" for q, _ in asked],
                                      max_new_tokens=4 * k, system=self.system)
            new = torch.empty_like(top_p)
            for b, (text, (_, opts)) in enumerate(zip(texts, asked)):
                new[b, ranking_order(text, opts)] = top_p[b]
        out = leaf_probs.float().clone()
        out.scatter_(1, top_i, new)
        return out


def ranking_order(text: str, options: Sequence[str]) -> list[int]:
    """Option indices in the order a generated ranking names them (letters or names, separated by
    commas, semicolons, "then", ">" or new lines); options it does not name follow in their own order."""
    order: list[int] = []
    for piece in re.split(r"[,;\n>]|\bthen\b", text):
        index = parse_answer(piece, options).index if piece.strip() else None
        if index is not None and index not in order:
            order.append(index)
    return order + [i for i in range(len(options)) if i not in order]


def ranker_records(recognizer, records: Sequence[Record], k: int = 5, seed: int = 0, batch_size: int = 32,
                   images: Callable[[Record], Image.Image] | None = None) -> list[VQARecord]:
    """Fine-tuning data for a ranker, as RAR trains one: for each labelled photo, one question at
    the label rank whose options are the ``k`` candidates ``recognizer`` retrieves (the truth
    put in place of the last one when it is not retrieved), shuffled with ``(seed, image)``; each
    photo read by ``images`` (default: its file).
    Train it with ``taxonlens train sft`` (``--ranks`` the label rank), use it with
    ``predict --rerank``.

    Raises:
        DataError: a photo whose path is not a label of the recognizer's taxonomy.
    """
    import random

    from taxonlens.data import load_image

    load = images or (lambda r: load_image(r.image))
    tax = recognizer.taxonomy
    truths = record_leaves(records, tax)
    out: list[VQARecord] = []
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        probs = recognizer.classifier.predict_proba(recognizer.encoder.encode_images(
            torch.stack([recognizer.encoder.preprocess(load(r)) for r in batch])))
        top = probs.topk(min(k, tax.n_leaves), dim=1).indices.tolist()
        for r, truth, cands in zip(batch, truths[start:start + len(batch)], top):
            if truth not in cands:
                cands[-1] = truth
            random.Random(f"{seed}:{r.image}").shuffle(cands)
            names = tuple(tax.names[int(tax.leaves[c])] for c in cands)
            label = tax.names[int(tax.leaves[truth])]
            out.append(VQARecord(r.image, label, r.split, (label,), (names,), len(out) + 1))
    return out
