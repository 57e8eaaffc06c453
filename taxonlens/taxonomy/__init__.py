"""Taxonomies: the tree (:class:`Taxonomy`) and its file formats."""

from taxonlens.taxonomy.loaders import load_taxonomy, save_taxonomy
from taxonlens.taxonomy.tree import ROOT, STANDARD_RANKS, Taxonomy, default_ranks

__all__ = ["ROOT", "STANDARD_RANKS", "Taxonomy", "default_ranks", "load_taxonomy", "save_taxonomy"]
