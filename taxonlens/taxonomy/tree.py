"""The :class:`Taxonomy`: an immutable tree of taxa with integer node ids.

Node 0 is a nameless root at depth 0; every real taxon has a depth from 1 (the
first rank, e.g. kingdom) to ``max_depth``. A node is identified by its whole
path, so homonyms (the same name under different parents) are distinct nodes.

*Leaves* are the taxa that were listed as classes: the last name of each input
path, in input order, indexed ``0 .. n_leaves - 1``. They are normally tree
leaves, but a listed path may end at a node that other paths pass through (a
genus-only label beside species of that genus, as in BioCLIP's TreeOfLife);
marginals stay correct because a leaf's row of :meth:`leaf_ancestor_matrix`
holds the leaf itself and its ancestors.

Everything structural is precomputed as numpy arrays in one vectorised pass,
so a 450,000-leaf tree builds in seconds and queries are array lookups.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Sequence
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from taxonlens.errors import AmbiguousTaxonError, TaxonNotFoundError, TaxonomyError

STANDARD_RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
ROOT = 0


def default_ranks(max_depth: int) -> tuple[str, ...]:
    """Rank names for a tree of ``max_depth`` levels: the 7 Linnaean ranks, else level1..levelD."""
    if max_depth == len(STANDARD_RANKS):
        return STANDARD_RANKS
    return tuple(f"level{k}" for k in range(1, max_depth + 1))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class Taxonomy:
    """An immutable taxonomy. Build it with :meth:`from_paths` or a loader in
    :mod:`taxonlens.taxonomy.loaders`.

    Attributes:
        ranks: rank names for depths 1..max_depth.
        names: name of every node (``names[0] == ""`` for the root).
        parent: int32 ``[n_nodes]``, parent id of each node (-1 for the root).
        depth: int16 ``[n_nodes]``, 0 for the root, 1 for the first rank.
        leaves: int32 ``[n_leaves]``, node id of each leaf (class) in input order.
    """

    def __init__(self, names: Sequence[str], parent: np.ndarray, leaves: np.ndarray, ranks: Sequence[str]):
        parent = np.asarray(parent, dtype=np.int32)
        n = len(parent)
        if len(names) != n or n == 0 or parent[0] != -1:
            raise TaxonomyError("internal: names/parent arrays disagree or node 0 is not the root")
        self.names: tuple[str, ...] = tuple(names)
        self.parent = _frozen(parent)
        depth = self._depths(parent)
        self.depth = _frozen(depth)
        self.max_depth = int(depth.max())
        if len(ranks) < self.max_depth:
            raise TaxonomyError(f"{len(ranks)} rank names given for a tree {self.max_depth} levels deep")
        self.ranks: tuple[str, ...] = tuple(ranks[: self.max_depth])
        self.leaves = _frozen(np.asarray(leaves, dtype=np.int32))
        leaf_index = np.full(n, -1, dtype=np.int32)
        leaf_index[self.leaves] = np.arange(len(self.leaves), dtype=np.int32)
        self.leaf_index = _frozen(leaf_index)

    @staticmethod
    def _depths(parent: np.ndarray) -> np.ndarray:
        """Depth of every node, one vectorised step per level (0 for the root)."""
        depth = np.zeros(len(parent), dtype=np.int16)
        frontier = np.flatnonzero(parent == ROOT)
        level = 1
        while frontier.size:
            depth[frontier] = level
            frontier = np.flatnonzero(np.isin(parent, frontier))
            level += 1
        return depth

    # ------------------------------------------------------------------ build
    @classmethod
    def from_paths(
        cls,
        paths: Iterable[Sequence[str]],
        ranks: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        allow_homonyms: bool = False,
    ) -> Taxonomy:
        """Build a taxonomy from name paths (first rank first, leaf last).

        Args:
            paths: one path per class; identical repeated paths are merged.
            ranks: rank names for depths 1..D (default: Linnaean for D = 7, else level1..levelD).
            sources: optional location of each path ("file.csv:12") used in error messages.
            allow_homonyms: accept a name at one rank with different parents inside
                the same top-level taxon (by default an error: within a kingdom a name
                has one parent, so a change of parent is almost always a typo).

        Raises:
            TaxonomyError: an empty path or name, or a name whose parent changes.
        """
        names: list[str] = [""]
        parent: list[int] = [-1]
        node_of: dict[tuple[int, str], int] = {}
        first_seen: dict[tuple[int, int, str], tuple[int, int]] = {}  # (top, depth, name) -> (parent, path no.)
        leaves: list[int] = []
        is_leaf: set[int] = set()

        def where(i: int) -> str:  # formatted only on error: sources may be computed lazily
            return sources[i] if sources is not None else f"path {i + 1}"

        for i, path in enumerate(paths):
            if len(path) == 0:
                raise TaxonomyError(f"{where(i)}: empty path")
            node = ROOT
            top = -1
            for d, name in enumerate(path, start=1):
                if not isinstance(name, str) or not name.strip():
                    raise TaxonomyError(f"{where(i)}: empty name at level {d} in path {list(path)!r}")
                key = (node, name)
                child = node_of.get(key)
                if child is None:
                    if not allow_homonyms and d > 1:
                        seen = first_seen.get((top, d, name))
                        if seen is not None and seen[0] != node:
                            old_parent, old_i = seen
                            raise TaxonomyError(
                                f"{where(i)}: {name!r} at level {d} has parent {names[node]!r} here but "
                                f"{names[old_parent]!r} at {where(old_i)}; fix the path, or pass "
                                "allow_homonyms=True (--allow-homonyms) if these are distinct taxa"
                            )
                        first_seen.setdefault((top, d, name), (node, i))
                    child = len(names)
                    names.append(name)
                    parent.append(node)
                    node_of[key] = child
                if d == 1:
                    top = child
                node = child
            if node not in is_leaf:
                is_leaf.add(node)
                leaves.append(node)
        if not leaves:
            raise TaxonomyError("no paths given: a taxonomy needs at least one class")
        parent_arr = np.asarray(parent, dtype=np.int32)
        depth = int(cls._depths(parent_arr).max())
        return cls(names, parent_arr, np.asarray(leaves), ranks if ranks is not None else default_ranks(depth))

    # ---------------------------------------------------------------- sizes
    def __len__(self) -> int:
        """Number of nodes including the root."""
        return len(self.parent)

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    def __repr__(self) -> str:
        return f"Taxonomy({self.n_leaves} leaves, {len(self) - 1} taxa, ranks={list(self.ranks)})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Taxonomy)
            and self.ranks == other.ranks
            and self.leaf_paths() == other.leaf_paths()
        )

    __hash__ = None  # type: ignore[assignment]

    @cached_property
    def fingerprint(self) -> str:
        """A 16-hex-digit digest of the ranks and the leaf paths in leaf order: equal taxonomies
        (``==``) have equal fingerprints, so files made with one can be checked against another."""
        digest = hashlib.sha256("\x1e".join(self.ranks).encode())
        for path in self.leaf_paths():
            digest.update(("\x1d" + "\x1f".join(path)).encode())
        return digest.hexdigest()[:16]

    # ----------------------------------------------------------- structure
    @cached_property
    def ancestor_table(self) -> np.ndarray:
        """int32 ``[n_nodes, max_depth]``: column d holds the ancestor at depth d + 1
        (the node itself at its own depth), -1 below the node's depth."""
        table = np.full((len(self), self.max_depth), -1, dtype=np.int32)
        order = np.argsort(self.depth, kind="stable")
        bounds = np.searchsorted(self.depth[order], np.arange(1, self.max_depth + 2))
        for d in range(1, self.max_depth + 1):
            nodes = order[bounds[d - 1] : bounds[d]]
            table[nodes] = table[self.parent[nodes]]
            table[nodes, d - 1] = nodes
        return _frozen(table)

    @cached_property
    def _preorder(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, tin, size): nodes in depth-first preorder, each node's position in it,
        and its subtree size, so a subtree is the slice ``order[tin : tin + size]``."""
        table = self.ancestor_table
        order = np.lexsort(table.T[::-1])  # padding -1 sorts a node before its descendants
        tin = np.empty(len(self), dtype=np.int64)
        tin[order] = np.arange(len(self))
        valid = table[table >= 0]
        size = np.bincount(valid, minlength=len(self)).astype(np.int64)
        size[ROOT] = len(self)
        return _frozen(order), _frozen(tin), _frozen(size)

    @cached_property
    def _children(self) -> tuple[np.ndarray, np.ndarray]:
        kids = np.argsort(self.parent[1:], kind="stable").astype(np.int32) + 1
        ptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.parent[1:], minlength=len(self)), out=ptr[1:])
        return _frozen(kids), _frozen(ptr)

    def children(self, node: int) -> np.ndarray:
        """Ids of the children of ``node`` (in insertion order)."""
        kids, ptr = self._children
        return kids[ptr[node] : ptr[node + 1]]

    def is_leaf_node(self, node: int) -> bool:
        """Whether ``node`` has no children in the tree."""
        _, ptr = self._children
        return bool(ptr[node] == ptr[node + 1])

    def path(self, node: int) -> tuple[int, ...]:
        """Node ids from depth 1 down to ``node`` (empty for the root)."""
        return tuple(int(x) for x in self.ancestor_table[node, : self.depth[node]])

    def path_names(self, node: int) -> tuple[str, ...]:
        """Names from depth 1 down to ``node``."""
        return tuple(self.names[x] for x in self.path(node))

    def ancestors(self, node: int) -> tuple[int, ...]:
        """Proper ancestors of ``node``, nearest first, excluding the root."""
        return self.path(node)[:-1][::-1]

    def leaf_paths(self) -> list[tuple[str, ...]]:
        """The name path of every leaf, in leaf order."""
        return [self.path_names(int(leaf)) for leaf in self.leaves]

    @cached_property
    def leaf_ranges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(leaf_order, lo, hi)``: leaf indices in depth-first order ``[n_leaves]``, and for
        every node ``[n_nodes]`` the slice ``leaf_order[lo:hi]`` holding the leaves under it.

        A node's marginal is then ``cumsum(p[:, leaf_order])[:, hi] - ...[:, lo]``: two
        gathers per node after one cumulative sum, whatever the tree's size."""
        order, tin, size = self._preorder
        is_leaf = self.leaf_index[order] >= 0
        leaf_order = self.leaf_index[order][is_leaf].astype(np.int64)
        before = np.concatenate([[0], np.cumsum(is_leaf)])  # leaves strictly before each preorder slot
        lo = before[tin]
        hi = before[tin + size]
        return _frozen(leaf_order), _frozen(lo), _frozen(hi)

    def leaves_under(self, node: int) -> np.ndarray:
        """Leaf indices (not node ids) of the leaves in the subtree of ``node``, sorted."""
        leaf_order, lo, hi = self.leaf_ranges
        return np.sort(leaf_order[lo[node] : hi[node]])

    def rank_depth(self, rank: str | int) -> int:
        """Depth (1-based) of a rank given by name or depth; raises on unknown ranks."""
        if isinstance(rank, (int, np.integer)):
            if not 1 <= rank <= self.max_depth:
                raise TaxonNotFoundError(f"depth {rank} is outside 1..{self.max_depth}")
            return int(rank)
        key = rank.strip().lower()
        for d, r in enumerate(self.ranks, start=1):
            if r.lower() == key:
                return d
        raise TaxonNotFoundError(f"unknown rank {rank!r}; this taxonomy's ranks are {list(self.ranks)}")

    def nodes_at_rank(self, rank: str | int) -> np.ndarray:
        """Ids of all nodes at a rank (name or depth), in id order."""
        return np.flatnonzero(self.depth == self.rank_depth(rank)).astype(np.int32)

    # -------------------------------------------------------------- relations
    def lca(self, a: int | np.ndarray, b: int | np.ndarray) -> int | np.ndarray:
        """Lowest common ancestor of ``a`` and ``b`` (ids or equal-shape id arrays);
        0 (the root) when they share no ancestor."""
        table = self.ancestor_table
        ta, tb = table[np.asarray(a)], table[np.asarray(b)]
        shared = np.cumprod((ta == tb) & (ta >= 0), axis=-1).sum(axis=-1)
        col = np.maximum(shared - 1, 0)
        out = np.where(shared > 0, np.take_along_axis(ta, col[..., None], axis=-1)[..., 0], ROOT)
        return int(out) if np.ndim(out) == 0 else out

    def distance(self, a: int | np.ndarray, b: int | np.ndarray) -> int | np.ndarray:
        """Number of tree edges between ``a`` and ``b`` (through their LCA)."""
        lca = self.lca(a, b)
        out = self.depth[np.asarray(a)].astype(np.int64) + self.depth[np.asarray(b)] - 2 * self.depth[lca]
        return int(out) if np.ndim(out) == 0 else out

    @cached_property
    def _leaf_ancestor_csr(self) -> sp.csr_matrix:
        leaf_rows = self.ancestor_table[self.leaves]
        cols = leaf_rows[leaf_rows >= 0]
        indptr = np.zeros(self.n_leaves + 1, dtype=np.int64)
        np.cumsum(self.depth[self.leaves], out=indptr[1:])
        data = np.ones(len(cols), dtype=np.float32)
        m = sp.csr_matrix((data, cols, indptr), shape=(self.n_leaves, len(self)))
        m.data.setflags(write=False)
        return m

    def leaf_ancestor_matrix(self) -> sp.csr_matrix:
        """float32 CSR ``[n_leaves, n_nodes]``: 1 where a node is the leaf or one of its
        ancestors (root excluded). ``leaf_probs [B, n_leaves] @ M`` gives every node's
        marginal probability in one sparse product."""
        return self._leaf_ancestor_csr

    # ---------------------------------------------------------------- lookup
    @cached_property
    def _name_index(self) -> dict[tuple[int, str], list[int]]:
        index: dict[tuple[int, str], list[int]] = {}
        for node in range(1, len(self)):
            index.setdefault((int(self.depth[node]), self.names[node].casefold()), []).append(node)
        return index

    @cached_property
    def _path_index(self) -> dict[tuple[int, str], int]:
        return {(int(self.parent[n]), self.names[n].casefold()): n for n in range(1, len(self))}

    def find(self, name: str, rank: str | int | None = None, parent: str | int | None = None) -> int:
        """Node id of the taxon called ``name`` (case-insensitive).

        Args:
            name: the taxon's name.
            rank: its rank (name or depth); if omitted every rank is searched.
            parent: to pick one of several homonyms: the parent's node id or name.

        Raises:
            TaxonNotFoundError: no such taxon (the message suggests close names).
            AmbiguousTaxonError: several taxa match; the message lists their paths.
        """
        depths = [self.rank_depth(rank)] if rank is not None else range(1, self.max_depth + 1)
        key = name.strip().casefold()
        hits = [n for d in depths for n in self._name_index.get((d, key), [])]
        if parent is not None and hits:
            if isinstance(parent, (int, np.integer)):
                hits = [n for n in hits if self.parent[n] == parent]
            else:
                hits = [n for n in hits if self.names[self.parent[n]].casefold() == parent.strip().casefold()]
        where = f" at rank {self.ranks[depths[0] - 1]!r}" if rank is not None else ""
        if not hits:
            pool = sorted({self.names[n] for (d, _), ns in self._name_index.items() if d in depths for n in ns})
            close = difflib.get_close_matches(name, pool, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise TaxonNotFoundError(f"no taxon named {name!r}{where}{' under ' + repr(parent) if parent is not None else ''}{hint}")
        if len(hits) > 1:
            listed = "; ".join(" > ".join(self.path_names(n)) for n in hits[:10])
            raise AmbiguousTaxonError(
                f"{name!r}{where} names {len(hits)} taxa: {listed}; give the parent to choose one", hits
            )
        return hits[0]

    def node_of_path(self, names: Sequence[str]) -> int:
        """Node id of a name path from depth 1 (case-insensitive); raises if any step is missing."""
        node = ROOT
        for d, name in enumerate(names, start=1):
            child = self._path_index.get((node, str(name).strip().casefold()))
            if child is None:
                raise TaxonNotFoundError(
                    f"path {' > '.join(names)} leaves the taxonomy at level {d}: no {name!r} under "
                    f"{self.names[node] or 'the root'!r}"
                )
            node = child
        return node

    def try_node_of_path(self, names: Sequence[str]) -> int | None:
        """Like :meth:`node_of_path`, but ``None`` when the path is not in the taxonomy."""
        try:
            return self.node_of_path(names)
        except TaxonNotFoundError:
            return None

    # --------------------------------------------------------------- derive
    def subset(self, leaf_indices: Iterable[int]) -> Taxonomy:
        """A new taxonomy holding only the given leaves (by leaf index) and their ancestors."""
        return Taxonomy.from_paths(
            [self.path_names(int(self.leaves[i])) for i in leaf_indices], ranks=self.ranks, allow_homonyms=True
        )

    def summary(self) -> dict[str, object]:
        """Counts per rank and leaf depths, for ``taxonlens taxonomy info``."""
        per_rank = {r: int((self.depth == d).sum()) for d, r in enumerate(self.ranks, start=1)}
        leaf_depths = np.bincount(self.depth[self.leaves], minlength=self.max_depth + 1)
        return {
            "leaves": self.n_leaves,
            "taxa": len(self) - 1,
            "ranks": list(self.ranks),
            "taxa_per_rank": per_rank,
            "leaf_depths": {int(d): int(c) for d, c in enumerate(leaf_depths) if c},
        }
