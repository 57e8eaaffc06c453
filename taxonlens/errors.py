"""Errors that taxonlens raises for bad input.

Every error a user can cause derives from :class:`TaxonlensError`; its message
says what was wrong and what to do. The CLI prints these messages without a
traceback and exits with status 2.
"""

from __future__ import annotations


class TaxonlensError(Exception):
    """Base class of every error caused by input (files, names, options)."""


class TaxonomyError(TaxonlensError, ValueError):
    """A taxonomy file or path is malformed (empty name, conflicting paths, ...)."""


class TaxonNotFoundError(TaxonlensError, KeyError):
    """A taxon name or path is not in the taxonomy."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class AmbiguousTaxonError(TaxonlensError, LookupError):
    """A name matches several taxa (homonyms); the caller must give the parent."""

    def __init__(self, message: str, candidates: list[int]):
        super().__init__(message)
        self.candidates = candidates


class DataError(TaxonlensError, ValueError):
    """A manifest, benchmark or prediction file is malformed."""


class ChoiceError(DataError):
    """An option is not one of its valid values (see :class:`taxonlens.choices.Choice`)."""


class ImageError(TaxonlensError, OSError):
    """One image could not be read (corrupt, truncated, too large, not an image)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple:  # pickled whole (from a loader worker), not from its message
        return type(self), (self.path, self.reason)
