"""A multimodal LLM answers a hierarchical-VQA benchmark, one question per level.

Three modes (:class:`AnsweringMode`):

- ``generate``: the model writes its answer (greedy), read back by
  :func:`~taxonlens.recognize.answers.parse_answer`; an unreadable answer is wrong;
- ``score``: the log-likelihood of each option's letter given the image and the question
  (:meth:`~taxonlens.models.mllm.LMM.option_logprobs`), the best letter per level;
- ``consistent``: the same per-level letter probabilities combined with the taxonomy into
  the most probable path of offered options (:func:`~taxonlens.recognize.vqa.consistent_decode`).

A level that offers one option is answered with it without asking. Each record's answer is
appended to the output JSONL as soon as it is known (``image``, ``path`` — what
``taxonlens evaluate`` reads — plus per-level details), so an interrupted run resumes
and skips the records already answered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import nonmember
from pathlib import Path

import torch
from PIL import Image

from taxonlens.choices import Choice
from taxonlens.data.vqa import VQARecord
from taxonlens.errors import DataError
from taxonlens.journal import fill_journal
from taxonlens.models.mllm import LMM
from taxonlens.recognize.answers import SYSTEM_PROMPT, AnswerFormat, answer_options, parse_answer, question_text
from taxonlens.recognize.vqa import consistent_decode
from taxonlens.taxonomy import Taxonomy


class AnsweringMode(Choice):
    """How the model's answers are read (see the module docstring)."""

    what = nonmember("answering mode")
    generate = "generate"
    score = "score"
    consistent = "consistent"


def _questions(record: VQARecord, ranks: Sequence[str], organism: str) -> list[tuple[int, str]]:
    """``(level, question)`` of every level of ``record`` that offers more than one option."""
    return [(k, question_text(ranks[k], opts, organism)) for k, opts in enumerate(record.choices) if len(opts) > 1]


def answer_records(lmm: LMM, records: Sequence[VQARecord], load: Callable[[VQARecord], Image.Image],
                   mode: str = "score", taxonomy: Taxonomy | None = None, ranks: Sequence[str] | None = None,
                   organism: str = "organism", batch_size: int = 16, max_new_tokens: int = 8,
                   system: str | None = SYSTEM_PROMPT, answer: str = "letter") -> list[dict]:
    """Answers of ``lmm`` to every level of every record.

    Args:
        load: the image of a record.
        taxonomy: needed by ``consistent`` (the tree whose paths are allowed).
        ranks: rank names for the questions (default: the taxonomy's, else ``level1``, ...).
        batch_size: questions per model call.
        system: the system message before every question (the reference's by default; ``None``
            for none, as a model fine-tuned without one expects).
        answer: what ``score`` and ``consistent`` score: each option's ``letter`` (the reference
            protocol) or its ``name`` (for a model fine-tuned to answer names).

    Returns:
        one dict per record: ``image``, ``path`` (the chosen option at every level), ``mode``,
        and per level ``options`` and, by mode, ``raw`` answers / ``logprobs`` (the options'
        log-probabilities, normalised over the offered options); ``consistent`` adds
        ``partial`` and ``consistent_depth``.
    """
    AnsweringMode(mode)
    AnswerFormat(answer)
    if mode == "consistent" and taxonomy is None:
        raise DataError("consistent answers need the taxonomy (--taxonomy)")
    depth = max((len(r.levels) for r in records), default=0)
    ranks = list(ranks or (taxonomy.ranks if taxonomy is not None else [f"level{k + 1}" for k in range(depth)]))
    if len(ranks) < depth:
        raise DataError(f"{len(ranks)} rank names for records {depth} levels deep")
    asks = [(i, k, q) for i, r in enumerate(records) for k, q in _questions(r, ranks, organism)]
    images = {i: load(records[i]) for i in {i for i, _, _ in asks}}
    per_level: dict[tuple[int, int], object] = {}
    for start in range(0, len(asks), batch_size):
        chunk = asks[start:start + batch_size]
        imgs, questions = [images[i] for i, _, _ in chunk], [q for _, _, q in chunk]
        if mode == "generate":
            texts = lmm.generate(imgs, questions, max_new_tokens, system=system)
            per_level.update({(i, k): t for (i, k, _), t in zip(chunk, texts)})
        else:
            options = [answer_options(records[i].choices[k], answer) for i, k, _ in chunk]
            scores = lmm.option_logprobs(imgs, questions, options, system=system)
            per_level.update({(i, k): torch.log_softmax(s, dim=0) for (i, k, _), s in zip(chunk, scores)})
    return [_answer(r, i, per_level, mode, taxonomy) for i, r in enumerate(records)]


def _answer(record: VQARecord, i: int, per_level: dict, mode: str, taxonomy: Taxonomy | None) -> dict:
    row: dict = {"image": record.image, "mode": mode, "options": [list(c) for c in record.choices]}
    if mode == "generate":
        raw = [per_level.get((i, k)) for k in range(len(record.choices))]
        picks = [0 if raw[k] is None else parse_answer(raw[k], opts).index for k, opts in enumerate(record.choices)]
        row["path"] = [opts[p] if p is not None else "" for opts, p in zip(record.choices, picks)]
        row["raw"] = raw
        return row
    logprobs = [per_level.get((i, k)) for k in range(len(record.choices))]
    row["logprobs"] = [None if lp is None else lp.tolist() for lp in logprobs]
    if mode == "score":
        row["path"] = [opts[int(lp.argmax())] if lp is not None else opts[0]
                       for opts, lp in zip(record.choices, logprobs)]
        return row
    answer = consistent_decode(record, taxonomy, [None if lp is None else lp.numpy() for lp in logprobs])
    row["path"] = list(answer.path)
    row["partial"], row["consistent_depth"] = answer.partial, answer.consistent_depth
    return row


def _rounded(row: dict) -> dict:
    """``row`` with its log-probabilities rounded to 5 decimals (the answers file stays small)."""
    if "logprobs" not in row:
        return row
    return {**row, "logprobs": [None if lp is None else [round(x, 5) for x in lp] for lp in row["logprobs"]]}


def answer_benchmark(lmm: LMM, records: Sequence[VQARecord], out: str | Path, image_root: str | Path | None = None,
                     mode: str = "score", taxonomy: Taxonomy | None = None, organism: str = "organism",
                     chunk: int = 16, progress: Callable[[int], None] | None = None, overwrite: bool = False,
                     **kwargs) -> Path:
    """Answer every record into the JSONL file ``out`` (log-probabilities rounded to 5 decimals),
    ``chunk`` records at a time, through :func:`~taxonlens.journal.fill_journal`: records whose
    image is already in ``out`` are skipped (resume; a line cut by a crash is dropped first) when
    ``out`` was written by the same model with the same mode, taxonomy and question options (see
    :func:`~taxonlens.journal.claim_run`; ``overwrite`` starts afresh). ``kwargs`` go to
    :func:`answer_records`.
    Images are read with the safe loader from ``image_root / record.image`` (or the path as written).

    Raises:
        DataError: an image that cannot be read (named, with the reason).
    """
    from taxonlens.data import load_image
    from taxonlens.errors import ImageError

    root = Path(image_root) if image_root is not None else None

    def load(record: VQARecord) -> Image.Image:
        try:
            return load_image(root / record.image if root is not None else record.image)
        except ImageError as e:
            raise DataError(f"benchmark line {record.line}: {e}; pass --images DIR if the paths are relative "
                            "to another folder") from None

    def work(batch: Sequence[VQARecord]) -> list[dict]:
        return [_rounded(row) for row in answer_records(lmm, batch, load, mode, taxonomy, organism=organism, **kwargs)]

    settings = {"model": lmm.fingerprint(), "mode": mode, "organism": organism,
                "taxonomy": taxonomy.fingerprint if taxonomy is not None else None,
                **{k: v for k, v in kwargs.items() if k != "batch_size"}}  # batching changes no answer
    return fill_journal(out, records, lambda r: r.image, work, chunk, progress, settings=settings,
                        overwrite=overwrite)


def scored_levels(records: Sequence[VQARecord]) -> list[int]:
    """The 0-based levels a benchmark's answers are scored on: those that offer a choice in at
    least one record."""
    return [k for k in range(max(len(r.levels) for r in records))
            if any(len(r.choices[k]) > 1 for r in records if k < len(r.choices))]


def consistency_report(records: Sequence[VQARecord], rows: Sequence[dict], taxonomy: Taxonomy) -> dict[str, dict]:
    """Figures (percent) of the answers ``rows`` and of the image-blind control (consistent
    decoding with uniform option probabilities), on all records and on the leakage-free ones
    (more than one consistent path among their options), scored on the levels that offer a
    choice somewhere: ``{"all" | "leakage_free": {"answers" | "blind_control": {hca, acc_leaf,
    por, s_por, tor, valid_path_pct}, "n": count}}``. The gain of consistent decoding that is
    the image's, not the benchmark's, is the leakage-free answers over their blind control.

    Raises:
        DataError: rows that do not answer the records (by image).
    """
    from taxonlens.data.vqa_options import consistent_path_count
    from taxonlens.evaluate.metrics import hierarchical_report
    from taxonlens.recognize.vqa import blind_decode

    by_image = {r["image"]: r["path"] for r in rows}
    missing = [r.image for r in records if r.image not in by_image]
    if missing:
        raise DataError(f"{len(missing)} records have no answer, e.g. {missing[0]}")
    levels = scored_levels(records)
    free = [consistent_path_count(r, taxonomy) > 1 for r in records]
    out: dict[str, dict] = {}
    for subset, keep in (("all", [True] * len(records)), ("leakage_free", free)):
        chosen = [r for r, k in zip(records, keep) if k]
        out[subset] = {"n": len(chosen)}
        if not chosen:
            continue
        truths = [r.levels for r in chosen]
        for name, preds in (("answers", [by_image[r.image] for r in chosen]),
                            ("blind_control", [blind_decode(r, taxonomy).path for r in chosen])):
            rep = hierarchical_report(truths, preds, levels, taxonomy)
            out[subset][name] = {"hca": rep.hca, "acc_leaf": rep.acc_leaf, "por": rep.por, "s_por": rep.s_por,
                                 "tor": rep.tor, "valid_path_pct": rep.valid_path_pct}
    return out
