"""Multiple-choice questions for multimodal LLMs, one per rank, and robust reading of their answers.

:func:`question_text` writes the question of the hierarchical-VQA benchmark's reference
evaluation (LLM-Hierarchical-Consistency, also used by TARA): "Given the organism in the
image, what is its taxonomic classification at the genus level?", the options lettered
``A.``, ``B.``, ..., and "Answer with the option's letter from the given choices directly."

:func:`parse_answer` maps a free-text answer back to an option: a bare or bracketed letter,
the option's name (any case, punctuation or surrounding words), or, failing those, the
option whose name is closest (``difflib``), and says which rule matched.
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
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_answer(text: str, options: Sequence[str], closest_cutoff: float = 0.6) -> ParsedAnswer:
    """Which of ``options`` the answer ``text`` names.

    Rules, first match wins:

    1. ``letter``: the answer is a letter of an offered option, alone or as ``(B)``, ``B.``,
       ``B)``, ``Answer: B``, ``option b``, or starts with ``B.`` / ``B)``; a bare letter counts
       in upper case only, so the English word "a" is not option A;
    2. ``name``: an option's name appears in the answer as whole words, case and punctuation
       ignored; when several do, the longest (``stellaria media`` over ``stellaria``);
    3. ``closest``: the option whose name is most similar to the answer (``difflib`` ratio at
       least ``closest_cutoff``);
    4. ``none``: nothing matched (index ``None``).
    """
    letters = LETTERS[: len(options)]
    stripped = text.strip()
    m = re.fullmatch(rf"(?:(?:the\s+)?(?:answer|option)\s*(?:is)?\s*[:\-]?\s*)?[\(\[]?([{letters}])[\)\]\.:]?",
                     stripped, flags=re.IGNORECASE)
    if m and (m.group(1).isupper() or len(stripped) > 1):  # a bare lower-case "a" is a word, "(a)" a letter
        return ParsedAnswer(letters.index(m.group(1).upper()), "letter")
    m = re.match(rf"^[\(\[]?([{letters}])[\)\]\.:](\s|$)", stripped)
    if m:
        return ParsedAnswer(letters.index(m.group(1)), "letter")
    answer = f" {_normal(text)} "
    named = [(len(_normal(o)), i) for i, o in enumerate(options) if _normal(o) and f" {_normal(o)} " in answer]
    if named:
        return ParsedAnswer(max(named)[1], "name")
    scores = [difflib.SequenceMatcher(None, answer.strip(), _normal(o)).ratio() for o in options]
    best = max(range(len(options)), key=scores.__getitem__) if options else None
    if best is not None and scores[best] >= closest_cutoff:
        return ParsedAnswer(best, "closest")
    return ParsedAnswer(None, "none")
