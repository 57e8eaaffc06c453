"""knowledge: the attribute knowledge of Finedefics — which attributes tell the species of a
super-category apart, their values in each photo, and one description per photo.

Pipeline (``taxonlens attributes mine | extract | describe``):

1. mining (:mod:`~taxonlens.knowledge.mining`): attribute names from a multimodal LLM, a user
   file or synthworld's factors;
2. extraction (:mod:`~taxonlens.knowledge.extract`): one short question per attribute and photo;
   :mod:`~taxonlens.knowledge.accuracy` scores the answers against known values (synthworld);
3. description (:mod:`~taxonlens.knowledge.descriptions`): a sentence per photo from its values,
   by the template (:mod:`~taxonlens.knowledge.template`) or an LLM.

File formats:

- mined attributes, JSON: ``{"super_category": str, "attributes": [str, ...], "source": "lmm" |
  "file" | "synthworld"}``;
- extracted attributes, JSON lines, one per photo: ``{"image": str, "label": str | null,
  "attributes": {name: value}}``; ``image`` is the record's image path as
  :func:`~taxonlens.data.read_manifest` gives it (resolved against the manifest's folder),
  ``label`` its leaf name;
- described attributes, JSON lines, one per photo: the same plus ``"description": str``;
- the described manifest (``X.manifest.jsonl`` beside a described ``X.jsonl``): the described
  photos' manifest records, whose ``attributes`` carry the values and ``description``. This is
  what the Finedefics trainer reads, through :func:`descriptions_for`.

Extracted and described files are appended one line per photo as the work goes; a rerun skips
the photos already in the file and drops a last line cut by a crash, so it completes the same
file an uninterrupted run writes.
"""

from taxonlens.knowledge.accuracy import extraction_accuracy, normalise_value, values_match
from taxonlens.knowledge.descriptions import (
    describe_manifest,
    describe_rows,
    describe_with_lmm,
    described_records,
    description_question,
    descriptions_for,
    record_rows,
)
from taxonlens.knowledge.extract import Answerer, attribute_question, clean_answer, extract_attributes, extract_records
from taxonlens.knowledge.mining import (
    MinedAttributes,
    attributes_from_file,
    example_images,
    mine_with_lmm,
    mining_question,
    parse_attribute_list,
)
from taxonlens.knowledge.rows import match_rows, read_attribute_rows
from taxonlens.knowledge.template import DESCRIPTION, describe

__all__ = [
    "DESCRIPTION",
    "Answerer",
    "MinedAttributes",
    "attribute_question",
    "attributes_from_file",
    "clean_answer",
    "describe",
    "describe_manifest",
    "describe_rows",
    "describe_with_lmm",
    "described_records",
    "description_question",
    "descriptions_for",
    "example_images",
    "extract_attributes",
    "extract_records",
    "extraction_accuracy",
    "match_rows",
    "mine_with_lmm",
    "mining_question",
    "normalise_value",
    "parse_attribute_list",
    "read_attribute_rows",
    "record_rows",
    "values_match",
]
