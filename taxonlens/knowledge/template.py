"""The deterministic description template: attribute pairs -> one sentence.

The one template of the code base: synthworld describes its photos with it, and
``taxonlens attributes describe --method template`` describes extracted attributes with it.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The key under which a record's ``attributes`` carry its description.
DESCRIPTION = "description"

_PLURAL_ENDINGS = ("s", "ae")
_SINGULAR_ENDINGS = ("ss", "us", "is")


def _verb(attribute: str) -> str:
    """``are`` for a plural attribute name ("markings", "wing bars"), else ``is``; the head noun
    is the last word before ``of`` ("number of parts" -> "number")."""
    head = attribute.split(" of ")[0].split()[-1].lower() if attribute.strip() else ""
    plural = head.endswith(_PLURAL_ENDINGS) and not head.endswith(_SINGULAR_ENDINGS)
    return "are" if plural else "is"


def article(word: str) -> str:
    """``an`` before a word that starts with a vowel letter, else ``a``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def clause(attribute: str, value: str) -> str:
    """One attribute as the description states it: ``"wing bars are white"``, ``"bill shape is short"``."""
    return f"{attribute} {_verb(attribute)} {value}"


def describe(attributes: Mapping[str, str], organism: str = "organism") -> str:
    """One sentence naming every attribute with its value, in the mapping's order.

    ``{"bill shape": "short and conical", "wing bars": "white"}`` with organism ``bird`` gives
    ``"a bird whose bill shape is short and conical and wing bars are white."``. The
    ``description`` key and attributes with an empty value are left out; with none left, the
    sentence is ``"a bird."``.
    """
    pairs = [(k.strip(), str(v).strip()) for k, v in attributes.items() if k != DESCRIPTION and str(v).strip()]
    if not pairs:
        return f"{article(organism)} {organism}."
    clauses = [clause(name, value) for name, value in pairs]
    listed = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{article(organism)} {organism} whose {listed}."
