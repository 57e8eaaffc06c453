"""Build hierarchical-VQA question sets (the benchmark's format, :class:`VQARecord`)
from labelled records and a taxonomy.

Every record becomes one question per level of its path: the true taxon and up to
``n_options - 1`` distractors, all lower-cased as in the real benchmark. Three ways
to choose distractors:

- ``random``: at each level, other taxa of the same rank, uniformly at random.
- ``similar``: at each level, the taxa of the same rank most similar to the true one.
- ``path``: ``n_options - 1`` other whole paths; each level offers the names on the
  chosen paths, so a consistent decoder
  (:func:`taxonlens.recognize.vqa.consistent_decode`) cannot rule any of them out.

Names are compared in lower case: a distractor never repeats the truth's or another
option's name (homonyms at one rank count once). A level whose rank has fewer other
names than ``n_options - 1`` offers all of them (the iNat21 benchmark offers only
'plantae' at kingdom). Records may end at any depth (variable-depth taxonomies): a
record's questions stop at its own last level.

Determinism: everything random for a record is drawn from a generator seeded by
``(seed, record.image)`` alone, so a record gets the same question set whatever the
other records and their order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import nonmember

import numpy as np

from taxonlens.choices import Choice
from taxonlens.data.records import Record
from taxonlens.data.vqa import VQARecord
from taxonlens.data.vqa_options import consistent_path_count
from taxonlens.errors import DataError, TaxonNotFoundError
from taxonlens.taxonomy import Taxonomy


class DistractorMode(Choice):
    """How the wrong options are drawn (see :func:`build_vqa`)."""

    what = nonmember("mode")
    random = "random"
    similar = "similar"
    path = "path"

SimilarityFn = Callable[[int, np.ndarray], np.ndarray]
Similarity = SimilarityFn | Mapping[str | int, np.ndarray]


def _record_rng(seed: int, image: str) -> np.random.Generator:
    """The generator of one record: seeded by a hash of ``(seed, image)`` (stable across runs)."""
    digest = hashlib.blake2b(f"{seed}\0{image}".encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass(frozen=True)
class _Rank:
    """The taxa of one depth: ``nodes`` ``[n]`` in :meth:`Taxonomy.nodes_at_rank` order, their
    lower-case ``names`` ``[n]``, and ``distinct``, each name once (first occurrence first)."""

    nodes: np.ndarray
    names: list[str]
    distinct: list[str]
    position: dict[str, int]  # name -> index in ``distinct``


def _similarity_fn(similarity: Similarity, taxonomy: Taxonomy) -> SimilarityFn:
    """A callable ``(true_node, candidates [n]) -> [n]`` similarities from either accepted form.

    A mapping gives per rank (name or depth) an embedding matrix ``[n_taxa_at_rank, D]`` in
    :meth:`Taxonomy.nodes_at_rank` order; its rows are L2-normalised here, so the similarity
    is the cosine. Only the ranks where a choice is made need a matrix.
    """
    if callable(similarity):
        return similarity
    if not isinstance(similarity, Mapping):
        raise DataError(f"similarity must be a callable or a dict rank -> embeddings, got {type(similarity).__name__}")
    unit: dict[int, np.ndarray] = {}
    at_rank: dict[int, np.ndarray] = {}
    for key, matrix in similarity.items():
        try:
            d = taxonomy.rank_depth(key)
        except TaxonNotFoundError as e:
            raise DataError(f"similarity: {e}") from None
        m = np.asarray(matrix, dtype=np.float64)
        at_rank[d] = taxonomy.nodes_at_rank(d)
        n = len(at_rank[d])
        if m.ndim != 2 or m.shape[0] != n:
            raise DataError(
                f"similarity: the embeddings of rank {taxonomy.ranks[d - 1]!r} must be [{n}, D] "
                f"(one row per taxon of that rank), got shape {m.shape}"
            )
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        if not np.isfinite(m).all() or (norms == 0).any():
            raise DataError(
                f"similarity: the embeddings of rank {taxonomy.ranks[d - 1]!r} hold a zero or non-finite row"
            )
        unit[d] = m / norms

    def cosine(true_node: int, candidates: np.ndarray) -> np.ndarray:
        d = int(taxonomy.depth[true_node])
        if d not in unit:
            raise DataError(f"similarity has no embeddings for rank {taxonomy.ranks[d - 1]!r}")
        rows, ids = unit[d], at_rank[d]  # ids ascend: nodes_at_rank is in id order
        return rows[np.searchsorted(ids, candidates)] @ rows[np.searchsorted(ids, true_node)]

    return cosine


def _by_similarity(sims: np.ndarray) -> Iterator[int]:
    """Positions of ``sims`` from most to least similar (ties: lower position first), sorting
    only as far as the consumer reads: the top ``k`` (ties included) for growing ``k``."""
    n, k, done = len(sims), 16, 0
    while done < n:
        if k < n:
            kth = np.partition(sims, n - k)[n - k]  # the k-th largest
            top = np.flatnonzero(sims >= kth)
        else:
            top = np.arange(n)
        order = top[np.argsort(-sims[top], kind="stable")]  # a prefix of the full order
        yield from order[done:].tolist()
        done, k = len(order), 4 * k


def _random_order(rng: np.random.Generator, n: int, want: int) -> Iterator[int]:
    """All of ``0..n-1`` in random order, drawing only ``want`` (doubled if needed) at first."""
    first = rng.choice(n, size=min(n, max(want, 1) * 2), replace=False)
    yield from first.tolist()
    if len(first) < n:
        rest = np.setdiff1d(np.arange(n), first)
        yield from rest[rng.permutation(len(rest))].tolist()


class _Builder:
    def __init__(self, taxonomy: Taxonomy, n_options: int, mode: str, seed: int, similarity: SimilarityFn | None):
        self.taxonomy, self.n_options, self.mode, self.seed, self.similarity = (
            taxonomy, n_options, mode, seed, similarity
        )
        self._ranks: dict[int, _Rank] = {}

    def rank(self, depth: int) -> _Rank:
        if depth not in self._ranks:
            nodes = self.taxonomy.nodes_at_rank(depth)
            names = [self.taxonomy.names[n].lower() for n in nodes]
            distinct = list(dict.fromkeys(names))
            self._ranks[depth] = _Rank(nodes, names, distinct, {x: i for i, x in enumerate(distinct)})
        return self._ranks[depth]

    def sims(self, true_node: int, candidates: np.ndarray) -> np.ndarray:
        assert self.similarity is not None
        s = np.asarray(self.similarity(true_node, candidates), dtype=np.float64)
        if s.shape != (len(candidates),) or np.isnan(s).any():
            raise DataError(
                f"similarity returned shape {s.shape} (NaN: {bool(np.isnan(s).any())}) for "
                f"{len(candidates)} candidate taxa; expected one number per candidate, no NaN"
            )
        return s

    def level_distractors(self, node: int, rng: np.random.Generator) -> list[str]:
        """Up to ``n_options - 1`` other names of the rank of ``node`` (modes random and similar)."""
        r = self.rank(int(self.taxonomy.depth[node]))
        truth, want = self.taxonomy.names[node].lower(), self.n_options - 1
        pos = r.position[truth]
        if len(r.distinct) - 1 <= want:
            return r.distinct[:pos] + r.distinct[pos + 1 :]
        if self.mode == "random":
            picks = rng.choice(len(r.distinct) - 1, size=want, replace=False)
            return [r.distinct[i + (i >= pos)] for i in picks.tolist()]
        out: list[str] = []
        for i in _by_similarity(self.sims(node, r.nodes)):
            name = r.names[i]
            if name != truth and name not in out:
                out.append(name)
                if len(out) == want:
                    break
        return out

    def path_choices(
        self, record: Record, node: int, levels: tuple[str, ...], rng: np.random.Generator
    ) -> list[list[str]]:
        """Mode ``path``: the names per level of the truth's path and of up to ``n_options - 1``
        other paths to taxa of the same depth, each accepted only if it adds exactly one
        consistent path (so the count is 1 + the number accepted, whatever the homonyms)."""
        r = self.rank(len(levels))
        if self.similarity is not None:
            order = _by_similarity(self.sims(node, r.nodes))
        else:
            order = _random_order(rng, len(r.nodes), self.n_options)
        paths = [levels]
        for i in order:
            other = int(r.nodes[i])
            if other == node:
                continue
            trial = [*paths, tuple(x.lower() for x in self.taxonomy.path_names(other))]
            choices = [list(dict.fromkeys(p[k] for p in trial)) for k in range(len(levels))]
            question = VQARecord(record.image, "", record.split, levels, tuple(map(tuple, choices)), 0)
            if consistent_path_count(question, self.taxonomy) == len(trial):
                paths = trial
                if len(paths) == self.n_options:
                    break
        return [list(dict.fromkeys(p[k] for p in paths)) for k in range(len(levels))]

    def build(self, record: Record, line: int) -> VQARecord:
        if not record.path:
            raise DataError(f"record {record.image!r} has no taxon path")
        try:
            node = self.taxonomy.node_of_path(record.path)
        except TaxonNotFoundError as e:
            raise DataError(f"record {record.image!r}: {e}") from None
        nodes = self.taxonomy.path(node)
        levels = tuple(self.taxonomy.names[n].lower() for n in nodes)
        rng = _record_rng(self.seed, record.image)
        if self.mode == "path":
            offered = self.path_choices(record, node, levels, rng)
        else:
            offered = [[truth, *self.level_distractors(n, rng)] for truth, n in zip(levels, nodes)]
        choices = tuple(tuple(opts[i] for i in rng.permutation(len(opts)).tolist()) for opts in offered)
        return VQARecord(record.image, self.taxonomy.names[node], record.split, levels, choices, line)


def build_vqa(
    records: Iterable[Record],
    taxonomy: Taxonomy,
    n_options: int = 4,
    mode: str = "random",
    seed: int = 0,
    similarity: Similarity | None = None,
) -> list[VQARecord]:
    """One hierarchical-VQA question set per record.

    Args:
        records: labelled records; ``record.path`` must be a path of ``taxonomy``
            (case-insensitive), ending at any depth.
        taxonomy: where the distractors come from.
        n_options: options per level, the truth included (fewer where the rank has fewer names).
        mode: ``random``, ``similar`` or ``path`` (see the module docstring).
        seed: with each record's image, seeds its distractors and option order.
        similarity: needed by ``similar``, optional for ``path`` (most similar taxa at the
            record's last rank instead of random ones). Either a callable
            ``(true_node, candidate_nodes [n]) -> [n]`` similarities (higher = more similar;
            ``candidate_nodes`` are all taxa of the true taxon's rank, in
            :meth:`Taxonomy.nodes_at_rank` order), or a dict rank (name or depth) -> embedding
            matrix ``[n_taxa_at_rank, D]`` in that order, compared by cosine similarity. Ties
            go to the taxon earlier in that order.

    Returns:
        ``[len(records)]`` records, ``line`` numbered from 1 in input order: ``label`` is the
        record's last taxon as the taxonomy writes it, ``levels`` its path in lower case,
        ``choices[k]`` the truth and the distractors of level ``k`` in lower case, shuffled.

        In mode ``path``, ``choices`` spell exactly ``1 + m`` consistent paths, where
        ``m <= n_options - 1`` other taxa of the record's depth were found whose paths each
        add one (``m = n_options - 1`` unless that rank is too small). The chosen paths
        usually share their upper names (all plants share 'plantae'), and a level offers
        each shared name once: there it has fewer than ``n_options`` options.

    Raises:
        DataError: ``n_options < 2``, an unknown mode, a missing or malformed similarity,
            a record without a path or whose path is not in the taxonomy.
    """
    if isinstance(n_options, bool) or not isinstance(n_options, int) or n_options < 2:
        raise DataError(f"n_options must be an integer >= 2 (the truth and a distractor), got {n_options!r}")
    DistractorMode(mode)
    if mode == "similar" and similarity is None:
        raise DataError("mode 'similar' needs a similarity (a callable or a dict rank -> embeddings)")
    if mode == "random" and similarity is not None:
        raise DataError("mode 'random' uses no similarity; use mode 'similar' or 'path' to pass one")
    fn = _similarity_fn(similarity, taxonomy) if similarity is not None else None
    builder = _Builder(taxonomy, n_options, mode, seed, fn)
    return [builder.build(record, i) for i, record in enumerate(records, start=1)]
