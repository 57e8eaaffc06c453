"""Closed sets of string options: decoding method, text type, answer format, index kind, ...

Each set is a :class:`Choice`, a :class:`~enum.StrEnum` defined in the library module that owns
the option. A member equals its value, so library functions keep accepting plain strings; they
validate with ``Kind(value)``, which returns the member or raises
:class:`~taxonlens.errors.ChoiceError` naming the valid values. The CLI offers exactly the
members as the option's choices.
"""

from __future__ import annotations

from enum import StrEnum, nonmember
from typing import NoReturn

from taxonlens.errors import ChoiceError


class Choice(StrEnum):
    """Base of every option set; a subclass names its option in ``what`` (a :func:`~enum.nonmember`)."""

    what = nonmember("option")

    @classmethod
    def _missing_(cls, value: object) -> NoReturn:
        raise ChoiceError(f"unknown {cls.what} {value!r}; choose one of {', '.join(cls)}")


__all__ = ["Choice"]
