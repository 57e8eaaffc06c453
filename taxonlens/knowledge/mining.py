"""Mining: the discriminative attribute names of a super-category ("bill shape", "wing colour", ...
for birds), from a multimodal LLM's answers, a user's file, or synthworld's own factors
(:func:`taxonlens.synthworld.synthworld_attributes`).

:func:`parse_attribute_list` reads the lists LLMs write (numbered, bulleted, comma-separated,
quoted, JSON, with explanations, preambles and repeats); :func:`mine_with_lmm` asks the question
of :func:`mining_question` about a few example photos and keeps the names most answers give. The
result is a :class:`MinedAttributes`, saved as JSON (see :mod:`taxonlens.knowledge`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from taxonlens.data.images import load_image
from taxonlens.data.records import Record
from taxonlens.errors import DataError, ImageError, TaxonlensError
from taxonlens.knowledge.extract import Answerer
from taxonlens.textio import read_text

SOURCES = ("lmm", "file", "synthworld")
#: Longest attribute name kept from an LLM's answer, in words (longer lines are prose).
MAX_NAME_WORDS = 6
_NUMBERED = re.compile(r"^(\s*)(?:\(?\d{1,3}\s*[.):\]]|\d{1,3}\s+-)\s*(.+)$")
_BULLETED = re.compile(r"^(\s*)[-*•·–—+▪◦]\s*(.+)$")
_MARKUP = re.compile(r"[*_`#]+")
_QUOTES = "\"'“”‘’«»"
_EXPLANATION = re.compile(r"\s*(?::|\s[-–—]\s|\(|\bsuch as\b|\be\.g\.|\bi\.e\.).*$", re.IGNORECASE)
_NAME = re.compile(r"^[^\W\d_][\w '&/-]*$")
_FILLERS = frozenset({"sure", "certainly", "of course", "okay", "ok", "yes", "no", "none", "n/a", "attributes",
                      "answer"})


@dataclass(frozen=True)
class MinedAttributes:
    """Attribute names of a super-category and where they came from (one of :data:`SOURCES`)."""

    super_category: str
    attributes: tuple[str, ...]
    source: str

    def to_dict(self) -> dict[str, object]:
        """The JSON form: ``{"super_category", "attributes", "source"}``."""
        return {"super_category": self.super_category, "attributes": list(self.attributes), "source": self.source}

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> MinedAttributes:
        """Read a file written by :meth:`save` (``taxonlens attributes mine``).

        Raises:
            DataError: a missing file, or not the mined-attributes JSON object.
        """
        try:
            data = json.loads(read_text(path, "mined attributes"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg}); expected the file `taxonlens attributes mine` "
                            "writes") from None
        names = data.get("attributes") if isinstance(data, dict) else None
        if (not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names)
                or data.get("source") not in SOURCES or not isinstance(data.get("super_category"), str)):
            raise DataError(f"{path}: expected {{\"super_category\": str, \"attributes\": [str, ...], \"source\": "
                            f"{' | '.join(SOURCES)}}} as `taxonlens attributes mine` writes")
        return cls(data["super_category"], tuple(n.strip() for n in names), data["source"])


def _name_key(name: str) -> str:
    """How two names are compared for repeats: lower case, American spellings made British."""
    return re.sub(r"\bcolor", "colour", re.sub(r"\bgray\b", "grey", name.lower()))


def clean_name(text: str) -> str | None:
    """An attribute name from one item of a list, or ``None`` when the item is not one.

    Markdown emphasis, quotes, an explanation (after ``:``, `` - ``, ``(``, "such as", "e.g.")
    and end punctuation are removed; the name is lower-cased with single spaces. Items that are
    not names (no leading letter, odd characters, more than :data:`MAX_NAME_WORDS` words, a
    filler such as "sure") give ``None``.
    """
    text = _MARKUP.sub("", text).strip().strip(_QUOTES).strip()
    text = _EXPLANATION.sub("", text).strip().strip(_QUOTES).rstrip(".,;!").strip().strip(_QUOTES).strip()
    name = " ".join(text.lower().split())
    if not name or not _NAME.match(name) or len(name.split()) > MAX_NAME_WORDS or name in _FILLERS:
        return None
    return name


def _json_list(text: str) -> list[str] | None:
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        items = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return [str(x) for x in items if isinstance(x, (str, int, float))] if isinstance(items, list) else None


def _split_inline(line: str) -> list[str]:
    """Items of a line that is not a list item: a comma / semicolon list (``and`` / ``or`` before
    the last item), after a ``header:`` if there is one; a sentence ending in ``.`` or ``!`` of
    three words or more, or a header ending in ``:``, gives none."""
    line = _MARKUP.sub("", line).strip()
    if line.endswith(":"):
        return []
    _, colon, tail = line.partition(":")
    body = tail if colon and re.search(r"[,;]", tail) else line
    parts = [p for p in re.split(r"[,;]", body) if p.strip()]
    if len(parts) > 1:
        last = re.split(r"^\s*(?:and|or)\s+|\s+(?:and|or)\s+", parts[-1])
        return parts[:-1] + [p for p in last if p.strip()]
    if re.search(r"[.!?]\s*$", line) and len(line.split()) >= 3:
        return []
    return [line]


def _list_items(lines: Sequence[str], pattern: re.Pattern) -> list[str]:
    """The text of the lines that ``pattern`` marks as list items, at the outermost indentation
    (sub-items, such as example values under a name, are left out)."""
    matches = [m for m in map(pattern.match, lines) if m]
    outer = min((len(m.group(1).expandtabs(4)) for m in matches), default=0)
    return [m.group(2) for m in matches if len(m.group(1).expandtabs(4)) == outer]


def parse_attribute_list(text: str) -> list[str]:
    """Attribute names in an LLM's answer, in order, each once (compared case-insensitively,
    "color" = "colour").

    Reads, in this order of preference: a JSON list anywhere in the text; else the list items
    numbered items (lines starting ``1.``, ``1)``, ``(1)``, ``1 -``) or, with none, bulleted items
    (``-``, ``*``, ``•``, ...), at the outermost indentation, ignoring every other line (preambles,
    sub-items, closing remarks); else each line as a comma / semicolon list or a single name.
    Every item goes through :func:`clean_name`.
    """
    items = _json_list(text)
    if items is None:
        lines = text.splitlines()
        items = _list_items(lines, _NUMBERED) or _list_items(lines, _BULLETED)
        items = items or [item for line in lines for item in _split_inline(line)]
    names: dict[str, str] = {}
    for item in items:
        name = clean_name(item)
        if name is not None:
            names.setdefault(_name_key(name), name)
    return list(names.values())


def mining_question(super_category: str, n_attributes: int = 10) -> str:
    """The question that asks for attribute names (the Finedefics mining prompt, photo attached)."""
    return (f"List {n_attributes} visual attributes that best tell different species of {super_category} apart "
            "in photos, such as the shape, colour or pattern of a body part. Answer with a numbered list of "
            "short attribute names only.")


def mine_with_lmm(answerer: Answerer, super_category: str, images: Sequence[Image.Image] = (),
                  n_attributes: int = 10, max_new_tokens: int = 160, system: str | None = None) -> MinedAttributes:
    """Ask :func:`mining_question` about each example photo (one batched call) and keep the
    ``n_attributes`` names most answers give (ties: first named first).

    Args:
        answerer: a multimodal LLM (:class:`~taxonlens.models.mllm.LMM` or anything with its ``generate``).
        images: example photos of the super-category; none: one blank grey picture (the
            question is about the category, not about a photo).

    Raises:
        TaxonlensError: no answer named an attribute (the first answer is quoted).
    """
    if n_attributes < 1:
        raise DataError("the number of attributes to mine must be at least 1")
    images = list(images) or [Image.new("RGB", (224, 224), (128, 128, 128))]
    question = mining_question(super_category, n_attributes)
    answers = answerer.generate(images, [question] * len(images), max_new_tokens, system)
    votes: dict[str, list] = {}  # key -> [votes, first position, name]
    position = 0
    for answer in answers:
        for name in parse_attribute_list(answer):
            entry = votes.setdefault(_name_key(name), [0, position, name])
            entry[0] += 1
            position += 1
    if not votes:
        raise TaxonlensError(f"the model named no attribute of {super_category} (first answer: {answers[0][:200]!r}); "
                             "give the attribute names in a file instead")
    ranked = sorted(votes.values(), key=lambda e: (-e[0], e[1]))
    return MinedAttributes(super_category, tuple(e[2] for e in ranked[:n_attributes]), "lmm")


def example_images(records: Sequence[Record], n_images: int) -> list[Image.Image]:
    """Up to ``n_images`` readable photos of different labels (the first photo of each of the
    first labels, in record order); unreadable photos are skipped."""
    images, seen = [], set()
    for r in records:
        if len(images) == n_images:
            break
        if r.label in seen:
            continue
        try:
            images.append(load_image(r.image))
        except ImageError:
            continue
        seen.add(r.label)
    return images


def attributes_from_file(path: str | Path, super_category: str) -> MinedAttributes:
    """Attribute names a user wrote: a JSON list of strings (``.json``), or plain text with one
    name per line (blank lines and ``#`` comments skipped). Names are kept as written, trimmed.

    Raises:
        DataError: a missing file, malformed JSON, no names, or a name listed twice.
    """
    text = read_text(path, "attribute names")
    if Path(path).suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg}); expected a list of attribute names") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: expected a JSON list of attribute names (strings)")
    else:
        names = [line for line in text.splitlines() if not line.strip().startswith("#")]
    names = [" ".join(n.split()) for n in names if n.strip()]
    if not names:
        raise DataError(f"{path}: no attribute names (one per line, or a JSON list)")
    seen: set[str] = set()
    twice = [n for n in names if _name_key(n) in seen or seen.add(_name_key(n))]
    if twice:
        raise DataError(f"{path}: attribute names listed twice: {', '.join(twice[:10])}")
    return MinedAttributes(super_category, tuple(names), "file")

