"""Taxonomy look-ups for ``/v1/taxa``: prefix search over the names of every rank, and one
taxon's path and children."""

from __future__ import annotations

import bisect
from functools import cached_property

from taxonlens.errors import TaxonNotFoundError
from taxonlens.taxonomy import Taxonomy


class TaxonIndex:
    """Names of ``taxonomy`` sorted for prefix search (case-insensitive)."""

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy

    @cached_property
    def _sorted(self) -> tuple[list[str], list[int]]:
        tax = self.taxonomy
        pairs = sorted((tax.names[n].casefold(), int(tax.depth[n]), tax.path_names(n), n) for n in range(1, len(tax)))
        return [p[0] for p in pairs], [p[3] for p in pairs]

    @cached_property
    def _name_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in self._sorted[0]:
            counts[name] = counts.get(name, 0) + 1
        return counts

    def search(self, query: str, limit: int = 20) -> list[dict]:
        """Up to ``limit`` taxa whose name starts with ``query`` (case-insensitive), sorted by
        name, rank and path; each with its path, so homonyms are told apart by their parents
        (``homonym`` is true when another taxon has the same name)."""
        keys, nodes = self._sorted
        key = query.strip().casefold()
        if not key:
            return []
        start = bisect.bisect_left(keys, key)
        out = []
        for i in range(start, min(len(keys), start + limit)):
            if not keys[i].startswith(key):
                break
            out.append(self.summary(nodes[i]) | {"homonym": self._name_counts[keys[i]] > 1})
        return out

    def summary(self, node: int) -> dict:
        """``{id, name, rank, path, parent, leaves}`` of a taxon (``path``: names from the first rank)."""
        tax = self.taxonomy
        parent = int(tax.parent[node])
        return {"id": node, "name": tax.names[node], "rank": tax.ranks[tax.depth[node] - 1],
                "path": list(tax.path_names(node)), "parent": tax.names[parent] if parent > 0 else None,
                "leaves": len(tax.leaves_under(node))}

    def taxon(self, node: int) -> dict:
        """A taxon's :meth:`summary` with its ``lineage`` (``{id, name, rank}`` from the first rank)
        and its ``children`` (their summaries without paths).

        Raises:
            TaxonNotFoundError: no taxon has that id.
        """
        tax = self.taxonomy
        if not 1 <= node < len(tax):
            raise TaxonNotFoundError(f"no taxon with id {node}; ids run from 1 to {len(tax) - 1}")
        lineage = [{"id": n, "name": tax.names[n], "rank": tax.ranks[tax.depth[n] - 1]} for n in tax.path(node)]
        children = [{k: v for k, v in self.summary(int(c)).items() if k != "path"} for c in tax.children(node)]
        return self.summary(node) | {"lineage": lineage, "children": children}
