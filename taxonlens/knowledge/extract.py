"""Extraction: the value of every attribute in every photo, by asking a multimodal LLM one short
question per attribute (:func:`attribute_question`), all questions batched.

:func:`extract_records` runs over a manifest's records and appends one JSON line per photo to
its output as soon as the photo's answers are known, so an interrupted run resumes and skips the
photos already done (the output is the per-photo cache); unreadable photos are reported and
tried again on the next run.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

from taxonlens.data.images import load_image
from taxonlens.data.records import Record
from taxonlens.errors import DataError, ImageError
from taxonlens.journal import fill_journal

#: The question asked per attribute and photo.
EXTRACTION_QUESTION = "What is the {attribute} of the {organism} in this image? Answer in a few words."
_ANSWER_PREFIX = re.compile(r"^\s*(?:answer|a)\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’«»"


class Answerer(Protocol):
    """What answers questions about photos: :class:`~taxonlens.models.mllm.LMM` or a stand-in."""

    def generate(self, images: Sequence[Image.Image], questions: Sequence[str], max_new_tokens: int = 16,
                 system: str | None = None) -> list[str]:
        """One answer per (image, question) pair."""
        ...

    def fingerprint(self) -> str:
        """What identifies the answerer's weights (a resumed output must come from the same)."""
        ...


def attribute_question(attribute: str, organism: str = "organism") -> str:
    """The question of :data:`EXTRACTION_QUESTION` for one attribute."""
    return EXTRACTION_QUESTION.format(attribute=attribute, organism=organism)


def clean_answer(text: str) -> str:
    """An answer's value: its first non-blank line without control characters, undecodable bytes
    (U+FFFD), an ``Answer:`` prefix, surrounding quotes and final period, with single spaces
    (``""`` for an empty answer)."""
    text = "".join(c for c in text if c in "\n\t" or (unicodedata.category(c)[0] != "C" and c != "\ufffd"))
    line = next((x for x in text.splitlines() if x.strip()), "")
    line = _ANSWER_PREFIX.sub("", line).strip().strip(_QUOTES).strip().rstrip(".").strip().strip(_QUOTES)
    return " ".join(line.split())


def extract_attributes(answerer: Answerer, images: Sequence[Image.Image], attributes: Sequence[str],
                       organism: str = "organism", batch_size: int = 32, max_new_tokens: int = 16,
                       system: str | None = None) -> list[dict[str, str]]:
    """The value of every attribute in every image: ``len(images) x len(attributes)`` questions,
    ``batch_size`` per call of ``answerer.generate``, answers read by :func:`clean_answer`.

    Returns:
        one ``{attribute: value}`` per image, attributes in the given order.
    """
    if batch_size < 1:
        raise DataError("the batch size must be at least 1")
    asks = [(i, a) for i in range(len(images)) for a in attributes]
    values: list[dict[str, str]] = [{} for _ in images]
    for start in range(0, len(asks), batch_size):
        chunk = asks[start:start + batch_size]
        answers = answerer.generate([images[i] for i, _ in chunk], [attribute_question(a, organism) for _, a in chunk],
                                    max_new_tokens, system)
        for (i, a), answer in zip(chunk, answers):
            values[i][a] = clean_answer(answer)
    return values


def attribute_row(record: Record, values: Mapping[str, str]) -> dict:
    """The output line of one photo: ``{"image", "label", "attributes"}``."""
    return {"image": record.image, "label": record.label, "attributes": dict(values)}


def extract_records(answerer: Answerer, records: Sequence[Record], attributes: Sequence[str], out: str | Path,
                    organism: str = "organism", batch_size: int = 32, max_new_tokens: int = 16,
                    system: str | None = None, progress: Callable[[int], None] | None = None,
                    overwrite: bool = False) -> tuple[Path, list[ImageError]]:
    """Extract ``attributes`` of every record's photo into the JSON-lines file ``out`` (one
    :func:`attribute_row` per photo, appended as the photos are done; photos already in ``out``
    are skipped, when ``out`` was written with the same answerer, attributes and questions, see
    :func:`~taxonlens.journal.claim_run`; ``overwrite`` starts afresh). Photos are asked about
    ``max(1, batch_size // len(attributes))`` at a time.

    Returns:
        ``out``, and the photos that could not be read (not written; tried again on a rerun).

    Raises:
        DataError: no attributes, or ``out`` written with other attributes or another answerer.
    """
    if not attributes:
        raise DataError("no attributes to extract")
    settings = {"model": answerer.fingerprint(), "attributes": list(attributes), "organism": organism,
                "max_new_tokens": max_new_tokens, "system": system}
    failures: list[ImageError] = []

    def work(batch: Sequence[Record]) -> list[dict]:
        images, kept = [], []
        for r in batch:
            try:
                images.append(load_image(r.image))
                kept.append(r)
            except ImageError as e:
                failures.append(e)
        values = extract_attributes(answerer, images, attributes, organism, batch_size, max_new_tokens, system)
        return [attribute_row(r, v) for r, v in zip(kept, values)]

    fill_journal(out, records, lambda r: r.image, work, max(1, batch_size // len(attributes)), progress,
                 settings=settings, overwrite=overwrite)
    return Path(out), failures
