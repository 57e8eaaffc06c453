"""Extraction accuracy per attribute against known values (what each synthworld photo shows:
its record's attributes; a value the photo hides is absent and not scored).

How an answer matches (:func:`values_match`): both texts are lower-cased; every character that
is not a letter or digit becomes a space (``light-blue`` = ``light blue``); American spellings
``color`` / ``gray`` become ``colour`` / ``grey``; number words up to twelve become digits
(``five`` = ``5``); the words of the attribute's own name and the filler words of
:data:`FILLERS` (articles, ``it``, ``is``, ``has``, ``image``, ``organism``, ...) are dropped.
The answer is right when the remaining word sequences are equal: ``"The body colour is pale
red."`` matches ``pale red``; ``red`` does not match ``pale red``, nor ``stripes`` ``striped``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from taxonlens.data.records import Record
from taxonlens.errors import DataError
from taxonlens.knowledge.rows import match_rows
from taxonlens.knowledge.template import DESCRIPTION

FILLERS = frozenset({"a", "an", "the", "it", "its", "it's", "is", "are", "has", "have", "with", "this", "that",
                     "in", "image", "picture", "photo", "organism", "s"})
_NUMBERS = {w: str(i) for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                             "nine", "ten", "eleven", "twelve"))}
_SPELLING = {"color": "colour", "colors": "colours", "colored": "coloured", "gray": "grey"}


def _words(text: str) -> list[str]:
    words = re.sub(r"[^0-9a-z]+", " ", text.lower()).split()
    return [_NUMBERS.get(w, _SPELLING.get(w, w)) for w in words]


def normalise_value(text: str, attribute: str = "") -> tuple[str, ...]:
    """The words of a value that :func:`values_match` compares (see the module docstring)."""
    drop = FILLERS | set(_words(attribute))
    return tuple(w for w in _words(text) if w not in drop)


def values_match(answer: str, truth: str, attribute: str = "") -> bool:
    """Whether an extracted ``answer`` states the ``truth`` of ``attribute`` (module docstring)."""
    expected = normalise_value(truth, attribute)
    return bool(expected) and normalise_value(answer, attribute) == expected


def extraction_accuracy(rows: Sequence[dict], records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Accuracy of extracted ``rows`` per attribute against the records' own ``attributes``.

    Rows are paired with records by :func:`~taxonlens.knowledge.rows.match_rows`; an attribute is
    scored on the photos whose record gives its value (the ``description`` is not an attribute).

    Returns:
        ``{attribute: {"n": photos scored, "correct": matches, "accuracy": percent}}`` in the
        order the rows name them; attributes no record gives are left out.

    Raises:
        DataError: no row's photo has a known value of any of its attributes.
    """
    counts: dict[str, list[int]] = {}
    for record, row in match_rows(records, rows):
        for name, value in row["attributes"].items():
            truth = record.attributes.get(name)
            if name == DESCRIPTION or truth is None:
                continue
            c = counts.setdefault(name, [0, 0])
            c[0] += 1
            c[1] += values_match(value, truth, name)
    if not counts:
        raise DataError("no known attribute values to score against: the records carry none of the extracted "
                        "attributes (synthworld manifests carry what each photo shows)")
    return {name: {"n": n, "correct": k, "accuracy": 100.0 * k / n} for name, (n, k) in counts.items()}
