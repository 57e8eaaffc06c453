"""Multiple-choice questions for multimodal LLMs, one per rank, and robust reading of their answers.

:func:`question_text` writes the question of the hierarchical-VQA benchmark's reference
evaluation (LLM-Hierarchical-Consistency, also used by TARA): "Given the organism in the
image, what is its taxonomic classification at the genus level?", the options lettered
``A.``, ``B.``, ..., and "Answer with the option's letter from the given choices directly."

:func:`parse_answer` maps a free-text answer back to an option for evaluation: a bare or
bracketed letter, the option's name (any case, punctuation or surrounding words; an answer that
names several options is ambiguous and reads as none), or, failing those, the option whose name
is closest (``difflib``), and says which rule matched. :func:`exact_option` is the strict reading
a reward needs: the answer is one option's letter or exactly one option's name, nothing else.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Sequence
from enum import nonmember
from typing import NamedTuple

from taxonlens.choices import Choice

SYSTEM_PROMPT = ("You are an expert in hierarchical image classification. Given an image, classify it at its "
                 "current hierarchy level by selecting the most appropriate option from the provided choices "
                 "(labeled with letters). Respond with only the corresponding letter.")
LETTERS = string.ascii_uppercase


class AnswerFormat(Choice):
    """How an answer names its option: by the option's ``letter`` (as the reference question asks) or
    by its ``name`` (the option's text)."""

    what = nonmember("answer format")
    letter = "letter"
    name = "name"


#: the answer formats, as a tuple
ANSWERS = tuple(AnswerFormat)


def answer_options(options: Sequence[str], answer: str) -> list[str]:
    """What an answer in format ``answer`` (one of :data:`ANSWERS`) says for each of ``options``:
    their letters or their names."""
    return list(LETTERS[: len(options)]) if AnswerFormat(answer) == AnswerFormat.letter else list(options)


def question_text(rank: str, options: Sequence[str], organism: str = "organism") -> str:
    """The question at ``rank`` with lettered ``options`` (at most 26)."""
    if not 1 <= len(options) <= len(LETTERS):
        raise ValueError(f"a question offers 1 to {len(LETTERS)} options, got {len(options)}")
    lines = [f"Given the {organism} in the image, what is its taxonomic classification at the {rank} level?"]
    lines += [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    lines.append("Answer with the option's letter from the given choices directly.")
    return "\n".join(lines)


class ParsedAnswer(NamedTuple):
    """The option an answer names: its index (``None`` if none could be read) and the rule that matched
    (``letter``, ``name``, ``closest`` or ``none``)."""

    index: int | None
    rule: str


def _normal(text: str) -> str:
    """``text`` in lower case, punctuation as spaces, runs of whitespace as one space, stripped."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _letter(text: str, options: Sequence[str]) -> tuple[int, str] | None:
    """The option ``text`` names by its letter, and the text after a leading ``B.`` / ``B)``
    (empty for the other letter forms); ``None`` if it is no letter form (:func:`parse_answer`'s
    rule 1)."""
    letters = LETTERS[: len(options)]
    stripped = text.strip()
    m = re.fullmatch(rf"(?:(?:the\s+)?(?:answer|option)\s*(?:is)?\s*[:\-]?\s*)?[\(\[]?([{letters}])[\)\]\.:]?",
                     stripped, flags=re.IGNORECASE)
    if m and (m.group(1).isupper() or len(stripped) > 1):  # a bare lower-case "a" is a word, "(a)" a letter
        return letters.index(m.group(1).upper()), ""
    m = re.match(rf"^[\(\[]?([{letters}])[\)\]\.:](\s|$)", stripped)
    if m:
        return letters.index(m.group(1)), stripped[m.end():]
    return None


def _named(answer: str, options: Sequence[str]) -> list[int]:
    """Indices of the options whose names appear in ``answer`` (normalised) as whole words, longest
    name first; an occurrence inside a longer named option's occurrence does not count (the
    ``stellaria`` of ``stellaria media``)."""
    rest, named = answer, []
    for i in sorted(range(len(options)), key=lambda i: -len(_normal(options[i]))):
        name = _normal(options[i])
        whole = rf"(?<!\S){re.escape(name)}(?!\S)"
        if name and re.search(whole, rest):
            named.append(i)
            rest = re.sub(whole, "|", rest)
    return named


def exact_option(text: str, options: Sequence[str]) -> int | None:
    """The option ``text`` names exactly, else ``None``: a letter form of :func:`parse_answer`'s
    rule 1 (``B``, ``(B)``, ``Answer: B``, ...; ``B. <name>`` only when the name is option B's),
    or the whole answer equal to exactly one option's name, with case, punctuation and
    whitespace ignored. An answer that lists several options, adds words ("it is ...") or
    misspells the name names none: this is the reading a 0/1 reward takes."""
    letter = _letter(text, options)
    if letter is not None:
        index, rest = letter
        return index if not _normal(rest) or _normal(rest) == _normal(options[index]) else None
    equal = [i for i, o in enumerate(options) if _normal(o) and _normal(o) == _normal(text)]
    return equal[0] if len(equal) == 1 else None


def parse_answer(text: str, options: Sequence[str], closest_cutoff: float = 0.6) -> ParsedAnswer:
    """Which of ``options`` the answer ``text`` names.

    Rules, first match wins:

    1. ``letter``: the answer is a letter of an offered option, alone or as ``(B)``, ``B.``,
       ``B)``, ``Answer: B``, ``option b``, or starts with ``B.`` / ``B)``; a bare letter counts
       in upper case only, so the English word "a" is not option A;
    2. ``name``: exactly one option's name appears in the answer as whole words, case and
       punctuation ignored; a name inside a longer named one does not count (``stellaria
       media`` names that option, not ``stellaria`` too). An answer that names several options
       ("pinus or acer") is ambiguous: ``none``, without trying rule 3;
    3. ``closest``: the option whose name is most similar to the answer (``difflib`` ratio at
       least ``closest_cutoff``);
    4. ``none``: nothing matched (index ``None``).
    """
    letter = _letter(text, options)
    if letter is not None:
        return ParsedAnswer(letter[0], "letter")
    answer = _normal(text)
    named = _named(answer, options)
    if named:
        return ParsedAnswer(named[0], "name") if len(named) == 1 else ParsedAnswer(None, "none")
    scores = [difflib.SequenceMatcher(None, answer, _normal(o)).ratio() for o in options]
    best = max(range(len(options)), key=scores.__getitem__) if options else None
    if best is not None and scores[best] >= closest_cutoff:
        return ParsedAnswer(best, "closest")
    return ParsedAnswer(None, "none")
