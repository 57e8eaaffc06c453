"""Descriptions: one natural-language sentence per photo from its attribute values, by the
deterministic template (:func:`~taxonlens.knowledge.template.describe`) or by a multimodal LLM
(:func:`description_question`), and the descriptions a trainer reads (:func:`descriptions_for`).

:func:`describe_rows` appends one described row per photo as it goes (resumable, as extraction);
:func:`described_records` turns the described rows into manifest records whose ``attributes``
carry the values and the ``description``: the manifest the Finedefics trainer reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import nonmember
from pathlib import Path

from PIL import Image

from taxonlens.choices import Choice
from taxonlens.data.images import load_image
from taxonlens.data.records import Record
from taxonlens.errors import DataError, ImageError
from taxonlens.journal import fill_journal
from taxonlens.knowledge.extract import Answerer, clean_answer
from taxonlens.knowledge.rows import match_rows
from taxonlens.knowledge.template import DESCRIPTION, describe


class DescriptionMethod(Choice):
    """How a description is written: ``template`` (deterministic) or ``lmm`` (a model asked)."""

    what = nonmember("description method")
    template = "template"
    lmm = "lmm"

#: The question that asks a multimodal LLM for a description.
DESCRIPTION_QUESTION = ("The {organism} in this image has these attributes: {pairs}. Describe the {organism} in one "
                        "sentence that uses them.")
_HINT = ("run `taxonlens attributes describe MANIFEST --out described.jsonl` (after `taxonlens attributes extract`) "
         "and use the manifest it writes")


def description_question(attributes: Mapping[str, str], organism: str = "organism") -> str:
    """:data:`DESCRIPTION_QUESTION` with ``name: value`` pairs (empty values and the
    ``description`` key left out)."""
    pairs = "; ".join(f"{k}: {v}" for k, v in attributes.items() if k != DESCRIPTION and str(v).strip())
    return DESCRIPTION_QUESTION.format(organism=organism, pairs=pairs or "none known")


def describe_with_lmm(answerer: Answerer, images: Sequence[Image.Image], attribute_sets: Sequence[Mapping[str, str]],
                      organism: str = "organism", batch_size: int = 8, max_new_tokens: int = 64,
                      system: str | None = None) -> list[str]:
    """One description per image by ``answerer`` (:func:`description_question`, ``batch_size``
    per call); an empty answer is replaced by the template's sentence, so none is empty."""
    if batch_size < 1:
        raise DataError("the batch size must be at least 1")
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        sets = attribute_sets[start:start + batch_size]
        answers = answerer.generate(images[start:start + batch_size],
                                    [description_question(a, organism) for a in sets], max_new_tokens, system)
        out.extend(clean_answer(t) or describe(a, organism) for t, a in zip(answers, sets))
    return out


def describe_rows(rows: Sequence[dict], out: str | Path, method: str = "template", answerer: Answerer | None = None,
                  organism: str = "organism", batch_size: int = 8, max_new_tokens: int = 64,
                  system: str | None = None, progress: Callable[[int], None] | None = None,
                  overwrite: bool = False) -> tuple[Path, list[ImageError]]:
    """Describe every row (``{"image", "label", "attributes"}``) into the JSON-lines file ``out``:
    the row plus ``"description"``, appended as they are done; rows whose image is already in
    ``out`` are skipped when ``out`` was written with the same method, model and questions (see
    :func:`~taxonlens.journal.claim_run`; ``overwrite`` starts afresh). ``method`` ``template`` needs no photo; ``lmm`` reads each photo and asks
    ``answerer``.

    Returns:
        ``out``, and the photos that could not be read (``lmm`` only; tried again on a rerun).

    Raises:
        DataError: an unknown method, or ``lmm`` without an answerer.
    """
    DescriptionMethod(method)
    if method == "lmm" and answerer is None:
        raise DataError("descriptions by an LMM need a model (--model)")
    failures: list[ImageError] = []

    def work(batch: Sequence[dict]) -> list[dict]:
        if method == "template":
            return [{**row, DESCRIPTION: describe(row["attributes"], organism)} for row in batch]
        images, kept = [], []
        for row in batch:
            try:
                images.append(load_image(row["image"]))
                kept.append(row)
            except ImageError as e:
                failures.append(e)
        texts = describe_with_lmm(answerer, images, [row["attributes"] for row in kept], organism, batch_size,
                                  max_new_tokens, system)
        return [{**row, DESCRIPTION: text} for row, text in zip(kept, texts)]

    settings = {"method": method, "model": answerer.fingerprint() if method == "lmm" else None,
                "organism": organism, "max_new_tokens": max_new_tokens, "system": system}
    fill_journal(out, rows, lambda row: row["image"], work, batch_size, progress, settings=settings,
                 overwrite=overwrite)
    return Path(out), failures


def record_rows(records: Sequence[Record]) -> list[dict]:
    """Rows (``{"image", "label", "attributes"}``) of records that carry attribute values
    themselves (synthworld's: what each photo shows), their own ``description`` left out.

    Raises:
        DataError: a record without attribute values (extract them first).
    """
    bare = [r for r in records if not any(k != DESCRIPTION for k in r.attributes)]
    if bare:
        raise DataError(f"{len(bare)} of {len(records)} photos carry no attribute values, e.g. {bare[0].image}; run "
                        "`taxonlens attributes extract` and describe its output (--extracted)")
    return [{"image": r.image, "label": r.label,
             "attributes": {k: v for k, v in r.attributes.items() if k != DESCRIPTION}} for r in records]


def described_records(records: Sequence[Record], rows: Sequence[dict]) -> list[Record]:
    """The records that have a described row (paired by :func:`~taxonlens.knowledge.rows.match_rows`),
    their ``attributes`` replaced by the row's values plus its ``description``."""
    return [Record(r.image, r.path, r.split, {**row["attributes"], DESCRIPTION: row[DESCRIPTION]}, r.common_name)
            for r, row in match_rows(records, rows) if DESCRIPTION in row]


def descriptions_for(source: Sequence[Record] | str | Path) -> dict[str, str]:
    """``{image: description}`` of records, or of a manifest file (as
    :func:`~taxonlens.data.read_manifest` reads it), for the Finedefics trainer.

    Raises:
        DataError: no records, or records without a description (how many and the first),
            with how to make them (``taxonlens attributes describe``).
    """
    if isinstance(source, (str, Path)):
        from taxonlens.data.manifests import read_manifest

        name, records = str(source), read_manifest(source)
    else:
        name, records = "the records", list(source)
    if not records:
        raise DataError(f"{name}: no records to describe")
    missing = [r for r in records if not str(r.attributes.get(DESCRIPTION, "")).strip()]
    if missing:
        raise DataError(f"{name}: {len(missing)} of {len(records)} photos have no attribute description, e.g. "
                        f"{missing[0].image}; {_HINT}")
    return {r.image: r.attributes[DESCRIPTION] for r in records}


def described_manifest_path(out: str | Path) -> Path:
    """Where :func:`describe_manifest` writes its manifest by default: ``X.jsonl`` -> ``X.manifest.jsonl``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.manifest.jsonl")


def describe_manifest(records: Sequence[Record], out: str | Path, extracted: str | Path | None = None,
                      method: str = "template", answerer: Answerer | None = None, organism: str = "organism",
                      manifest_out: str | Path | None = None, batch_size: int = 8, max_new_tokens: int = 64,
                      system: str | None = None, progress: Callable[[int, int], None] | None = None,
                      overwrite: bool = False) -> tuple[Path, Path, list[ImageError]]:
    """``taxonlens attributes describe``: describe the records' photos into ``out`` (described
    JSON lines, resumable) and write the manifest the trainer reads (:func:`described_records`).

    Args:
        records: the manifest's records (those to describe).
        extracted: the extracted attributes file of these photos; ``None``: the records' own
            attribute values (synthworld's: what each photo shows).
        manifest_out: the manifest to write (default :func:`described_manifest_path` of ``out``).
        progress: called with (photos done, photos to describe) as the work goes.
        overwrite: start ``out`` afresh instead of resuming it (see :func:`describe_rows`).

    Returns:
        the described file, the manifest, and the photos that could not be read.

    Raises:
        DataError: records without values (and no ``extracted``), or an extracted file that
            names none of the records' photos.
    """
    from taxonlens.data.manifests import write_manifest
    from taxonlens.knowledge.rows import read_attribute_rows

    if extracted is None:
        rows = record_rows(records)
    else:
        rows = [row for _, row in match_rows(records, read_attribute_rows(extracted))]
        if not rows:
            raise DataError(f"{extracted}: none of its photos is a photo of the manifest; was it extracted from it?")
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(rows))

    out, failures = describe_rows(rows, out, method, answerer, organism, batch_size, max_new_tokens, system,
                                  advance, overwrite)
    described = described_records(records, read_attribute_rows(out, described=True))
    manifest = write_manifest(described, manifest_out or described_manifest_path(out))
    return out, manifest, failures
