"""BioCLIP's TreeOfLife label files, as pybioclip reads them, and the label sets built from them.

A label file pair holds N labels:

- ``txt_emb_species.npy``: float32 ``[D, N]``, one unit text embedding per column;
- ``txt_emb_species.json``: N entries ``[[kingdom, phylum, class, order, family, genus,
  epithet], common_name]``, with empty strings for missing ranks.

:func:`read_treeoflife` turns them into a :class:`LabelSet`: a :class:`Taxonomy` whose
leaves are the distinct lineages, and the embeddings with the leaf of each column.
A label with empty trailing ranks ends at its deepest named rank (a genus-only label
beside species of the genus); an empty rank between named ones becomes the taxon
``"(unnamed RANK)"`` under its parent, so lineages group exactly as pybioclip groups
them (by the whole prefix of names), and :func:`bioclip_name` turns it back into
pybioclip's empty string. The species name is ``"Genus epithet"``, as pybioclip writes it.

pybioclip pairs each model with a label repository (:data:`TOL_REPOS`); :func:`hub_treeoflife`
reads it from the local Hugging Face cache.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from taxonlens.errors import DataError
from taxonlens.taxonomy import Taxonomy
from taxonlens.taxonomy.tree import STANDARD_RANKS

EMBEDDINGS_FILE = "embeddings/txt_emb_species.npy"
NAMES_FILE = "embeddings/txt_emb_species.json"
#: the TreeOfLife label repository (a Hugging Face dataset) pybioclip uses with each model
TOL_REPOS = {
    "hf-hub:imageomics/bioclip": "imageomics/TreeOfLife-10M",
    "hf-hub:imageomics/bioclip-2": "imageomics/TreeOfLife-200M",
}
_UNNAMED = "(unnamed {})"


def unnamed(rank: str) -> str:
    """The name given to an empty rank between named ones."""
    return _UNNAMED.format(rank)


def bioclip_name(name: str) -> str:
    """A taxon name as pybioclip writes it: ``""`` for an :func:`unnamed` rank."""
    return "" if name.startswith("(unnamed ") and name.endswith(")") else name


@dataclass
class LabelSet:
    """Labels with precomputed text embeddings, over a taxonomy.

    Attributes:
        taxonomy: its leaves are the distinct labels (lineages).
        embeddings: float32 ``[N, D]`` unit vectors, one per label column.
        column_leaf: int64 ``[N]``, the leaf index of each column (two columns of one
            lineage share a leaf; their probabilities add up).
        common_names: node id -> common name (the first non-empty one of its columns).
    """

    taxonomy: Taxonomy
    embeddings: torch.Tensor
    column_leaf: np.ndarray
    common_names: dict[int, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A 16-hex-digit digest of the embeddings (every row's first values and a sample of
        whole rows: cheap on 450,000 labels) and the column-to-leaf map."""
        emb = self.embeddings.float().numpy()
        digest = hashlib.sha256(np.ascontiguousarray(emb[:, :8]).tobytes())
        digest.update(np.ascontiguousarray(emb[:: max(1, len(emb) // 1024)]).tobytes())
        digest.update(np.ascontiguousarray(self.column_leaf, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def subset(self, leaf_indices: Sequence[int] | np.ndarray) -> LabelSet:
        """The labels of the given leaves only (and their columns), over the pruned taxonomy."""
        keep_leaves = np.unique(np.asarray(leaf_indices, dtype=np.int64))
        if len(keep_leaves) == 0:
            raise DataError("the subset holds no label")
        tax = self.taxonomy
        sub = tax.subset(keep_leaves)
        old_to_new = np.full(tax.n_leaves, -1, dtype=np.int64)
        old_to_new[keep_leaves] = [sub.leaf_index[sub.node_of_path(tax.path_names(int(tax.leaves[i])))]
                                   for i in keep_leaves]
        cols = np.flatnonzero(old_to_new[self.column_leaf] >= 0)
        common = {}
        for node, name in self.common_names.items():
            found = sub.try_node_of_path(tax.path_names(node))
            if found is not None:
                common[found] = name
        return LabelSet(sub, self.embeddings[torch.from_numpy(cols)], old_to_new[self.column_leaf[cols]], common)


def lineage_paths(entries: Sequence, where: str, ranks: Sequence[str] = STANDARD_RANKS) -> list[tuple[str, ...]]:
    """Name paths of TreeOfLife JSON entries (see the module docstring).

    Raises:
        DataError: an entry of another shape, or one with no name at all.
    """
    paths = []
    for i, entry in enumerate(entries):
        try:
            names, _common = entry
            names = [str(n or "").strip() for n in names]
        except (TypeError, ValueError):
            raise DataError(f"{where}: entry {i} is {str(entry)[:80]!r}, expected [[kingdom, ..., genus, epithet], "
                            "common_name]") from None
        if len(names) != len(ranks):
            raise DataError(f"{where}: entry {i} has {len(names)} rank names, expected {len(ranks)} "
                            f"({', '.join(ranks)})")
        if names[-1] and names[-2]:
            names[-1] = f"{names[-2]} {names[-1]}"
        depth = max((d + 1 for d, n in enumerate(names) if n), default=0)
        if depth == 0:
            raise DataError(f"{where}: entry {i} names no rank at all")
        paths.append(tuple(n or unnamed(ranks[d]) for d, n in enumerate(names[:depth])))
    return paths


def read_treeoflife(names_file: str | Path, embeddings_file: str | Path | None = None) -> LabelSet:
    """Read a TreeOfLife label pair (``txt_emb_species.json`` and the ``.npy`` beside it).

    Raises:
        DataError: a missing or malformed file, or files that disagree on the number of labels.
    """
    names_file = Path(names_file)
    embeddings_file = Path(embeddings_file) if embeddings_file else names_file.with_suffix(".npy")
    for f in (names_file, embeddings_file):
        if not f.is_file():
            raise DataError(f"TreeOfLife label file {f} does not exist (need {Path(NAMES_FILE).name} and "
                            f"{Path(EMBEDDINGS_FILE).name} side by side)")
    try:
        entries = json.loads(names_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{names_file}: not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise DataError(f"{names_file}: expected a JSON list of [[kingdom, ..., epithet], common_name] entries")
    try:
        emb = np.load(embeddings_file, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise DataError(f"{embeddings_file}: not a NumPy array file ({e})") from None
    if emb.ndim != 2 or emb.shape[1] != len(entries):
        raise DataError(f"{embeddings_file} has shape {emb.shape}, expected [D, {len(entries)}] "
                        f"(one column per entry of {names_file.name})")
    paths = lineage_paths(entries, str(names_file))
    taxonomy = Taxonomy.from_paths(paths, allow_homonyms=True)
    column_leaf = taxonomy.leaf_index[[taxonomy.node_of_path(p) for p in paths]].astype(np.int64)
    common: dict[int, str] = {}
    for (_, name), leaf in zip(entries, column_leaf):
        if name:
            common.setdefault(int(taxonomy.leaves[leaf]), str(name))
    embeddings = torch.from_numpy(np.ascontiguousarray(emb.T, dtype=np.float32))
    return LabelSet(taxonomy, embeddings, column_leaf, common)


def write_treeoflife(folder: str | Path, paths: Sequence[Sequence[str]], embeddings: np.ndarray,
                     common_names: Sequence[str] | None = None) -> Path:
    """Write a TreeOfLife label pair under ``folder/embeddings/`` (the layout of the hub
    repository): ``paths`` are 7-name lineages whose species is ``"Genus epithet"`` (or an
    epithet alone), ``""`` for missing ranks; ``embeddings`` float32 ``[N, D]``. Returns the
    ``.json`` file."""
    folder = Path(folder)
    (folder / "embeddings").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, p in enumerate(paths):
        names = [bioclip_name(n) for n in p] + [""] * (len(STANDARD_RANKS) - len(p))
        if names[-1].startswith(names[-2] + " ") and names[-2]:
            names[-1] = names[-1][len(names[-2]) + 1:]
        entries.append([names, common_names[i] if common_names else ""])
    names_file = folder / NAMES_FILE
    names_file.write_text(json.dumps(entries), encoding="utf-8")
    np.save(folder / EMBEDDINGS_FILE, np.ascontiguousarray(np.asarray(embeddings, np.float32).T))
    return names_file


def hub_treeoflife(model: str) -> LabelSet:
    """The TreeOfLife labels pybioclip uses with ``model`` (``bioclip``, ``bioclip-2`` or their
    ``hf-hub:`` names), from the local Hugging Face cache.

    Raises:
        DataError: a model without TreeOfLife labels.
        HubFileError: the label files are not cached (the message says how to get them).
    """
    from taxonlens.models.hub import hub_file
    from taxonlens.models.presets import ENCODER_ALIASES

    target = ENCODER_ALIASES.get(model, model)
    repo = TOL_REPOS.get(target)
    if repo is None:
        raise DataError(f"model {model!r} has no TreeOfLife label set (those of {', '.join(TOL_REPOS)}); "
                        "give --taxonomy FILE or --labels FILE to classify against your own labels")
    return read_treeoflife(hub_file(repo, NAMES_FILE, "dataset"), hub_file(repo, EMBEDDINGS_FILE, "dataset"))


def subset_leaves(taxonomy: Taxonomy, spec: str) -> np.ndarray:
    """Leaf indices under the taxa named by ``spec``: ``RANK=NAME[,NAME...]`` or a CSV file
    whose first column is headed by a rank name (pybioclip's ``--subset``). Names compare
    case-insensitively; for ``species`` the full binomial is expected.

    Raises:
        DataError: an unknown rank, or names that are not taxa of that rank (all are listed).
    """
    path = Path(spec)
    if "=" in spec and not path.is_file():
        rank, _, values = spec.partition("=")
        names = [v.strip() for v in values.split(",") if v.strip()]
    elif path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
        if not rows:
            raise DataError(f"{path}: empty subset file; its first column needs a rank header and taxon names")
        rank, names = rows[0][0], [r[0].strip() for r in rows[1:] if r[0].strip()]
    else:
        raise DataError(f"subset {spec!r}: give RANK=NAME[,NAME...] or an existing CSV file")
    return named_leaves(taxonomy, rank, names, spec)


def named_leaves(taxonomy: Taxonomy, rank: str, names: Sequence[str], spec: str) -> np.ndarray:
    """Leaf indices under the taxa of ``rank`` called ``names`` (case-insensitive), sorted;
    ``spec`` is what the user wrote, for the errors.

    Raises:
        DataError: an unknown rank, no names, or names that are not taxa of that rank (all are listed).
    """
    rank = rank.strip().lower()
    if rank not in taxonomy.ranks:
        raise DataError(f"subset rank {rank!r} is not one of {', '.join(taxonomy.ranks)}")
    if not names:
        raise DataError(f"subset {spec!r} names no {rank}")
    nodes = taxonomy.nodes_at_rank(rank)
    by_name: dict[str, list[int]] = {}
    for n in nodes:
        by_name.setdefault(taxonomy.names[n].lower(), []).append(int(n))
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise DataError(f"unknown {rank} in the subset: {', '.join(unknown[:20])}"
                        f"{' ...' if len(unknown) > 20 else ''}; only taxa of the label set may be used")
    picked = [node for n in names for node in by_name[n.lower()]]
    return np.unique(np.concatenate([taxonomy.leaves_under(n) for n in picked]))
