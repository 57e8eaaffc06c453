"""The rows ``predict`` writes: ours (one per photo) and pybioclip's (``top_k`` per photo).

Our row (:func:`prediction_row`) carries pybioclip's columns (``file_name``, one per rank,
``species_epithet``, ``common_name``, ``score``) for the answer, so notebooks written for
pybioclip keep working, then ours: ``path``, ``confidence_<rank>``, ``rank_reached`` and
``reached_path`` (back-off), ``alternatives`` and ``error``. Paths are lists of names from the
first rank down; a CSV file, which holds only text, writes them as ``"a > b > c"``
(:func:`flat_row`).

``--format pybioclip`` (:func:`pybioclip_rows`) writes pybioclip's own shape: the answer and its
alternatives, one row each, with exactly its columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import nonmember

from taxonlens.choices import Choice
from taxonlens.data.treeoflife import bioclip_name
from taxonlens.recognize.decode import Prediction
from taxonlens.tables import PATH_SEPARATOR
from taxonlens.taxonomy import Taxonomy


class RowFormat(Choice):
    """The rows ``predict`` writes: ours (``taxonlens``, one per photo) or ``pybioclip``'s."""

    what = nonmember("output format")
    taxonlens = "taxonlens"
    pybioclip = "pybioclip"


def _rank_columns(ranks: Sequence[str], path: Sequence[str]) -> dict[str, str]:
    """pybioclip's name columns of a path: one per rank (``""`` below the path's end and for an
    unnamed rank), with ``species_epithet`` before ``species`` when the last rank is species."""
    row: dict[str, str] = {}
    for d, r in enumerate(ranks):
        name = bioclip_name(path[d]) if d < len(path) else ""
        if r == "species" and d == len(ranks) - 1:
            genus = row.get(ranks[d - 1], "") if d else ""
            row["species_epithet"] = name[len(genus) + 1:] if genus and name.startswith(genus + " ") else name
        row[r] = name
    return row


def prediction_row(taxonomy: Taxonomy, file_name: str, prediction: Prediction | None, error: str | None = None,
                   common_names: dict[int, str] | None = None) -> dict:
    """The row of one photo: pybioclip's columns, then ours (see the module docstring);
    ``prediction`` is ``None`` for an unreadable file. ``score`` is the confidence of the
    answer's last taxon."""
    ranks = taxonomy.ranks
    path = list(prediction.path) if prediction else []
    node = taxonomy.node_of_path(path) if path else -1
    row: dict = {"file_name": file_name, **_rank_columns(ranks, path),
                 "common_name": (common_names or {}).get(node, ""),
                 "score": prediction.confidence[ranks[len(path) - 1]] if prediction else None,
                 "path": path}
    for r in ranks:
        row[f"confidence_{r}"] = prediction.confidence.get(r) if prediction else None
    row["rank_reached"] = (prediction.rank_reached or "") if prediction else ""
    row["reached_path"] = list(prediction.reached_path) if prediction else []
    row["alternatives"] = [_alternative(taxonomy, p, s, common_names) for p, s in prediction.alternatives
                           ] if prediction else []
    row["error"] = error or ""
    return row


def _alternative(taxonomy: Taxonomy, path: Sequence[str], score: float, common_names: dict[int, str] | None) -> dict:
    """``{"path", "score"}`` of an alternative answer, with its ``common_name`` where the labels have one."""
    common = (common_names or {}).get(taxonomy.node_of_path(path), "") if common_names else ""
    return {"path": list(path), "score": round(float(score), 6), **({"common_name": common} if common else {})}


def flat_row(row: dict) -> dict:
    """``row`` for a CSV file: paths as ``"a > b > c"``, alternatives as JSON text of such paths."""
    return {**row, "path": PATH_SEPARATOR.join(row["path"]), "reached_path": PATH_SEPARATOR.join(row["reached_path"]),
            "alternatives": json.dumps([{**a, "path": PATH_SEPARATOR.join(a["path"])} for a in row["alternatives"]],
                                       ensure_ascii=False)}


def pybioclip_columns(ranks: Sequence[str]) -> list[str]:
    """pybioclip's columns for a taxonomy's ranks."""
    return ["file_name", *_rank_columns(ranks, ()), "common_name", "score"]


def pybioclip_rows(row: dict, ranks: Sequence[str]) -> list[dict]:
    """pybioclip's rows of one of our rows: the answer, then each alternative (nothing for an
    unreadable photo, as pybioclip skips it)."""
    if row["error"]:
        return []
    answers = [(row["path"], row["score"], row["common_name"])]
    answers += [(a["path"], a["score"], a.get("common_name", "")) for a in row["alternatives"]]
    return [{"file_name": row["file_name"], **_rank_columns(ranks, path), "common_name": common, "score": score}
            for path, score, common in answers]
