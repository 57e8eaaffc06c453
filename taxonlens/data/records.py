"""A :class:`Record`: one image with its taxon, the unit every reader yields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taxonlens.taxonomy import Taxonomy

SPLITS = ("train", "val", "test", "novel")


@dataclass(frozen=True)
class Record:
    """One labelled image.

    Attributes:
        image: path of the image file (absolute, or relative to the manifest's folder
            as written in the file; readers resolve it against that folder).
        path: taxon names from the first rank down to the label (may stop above the
            leaf rank for a variable-depth tree or a genus-only label); empty when unknown.
        split: ``train``, ``val``, ``test``, ``novel`` or any name the user chose.
        attributes: ground-truth or extracted attributes, name -> value.
        common_name: vernacular name, if known.
    """

    image: str
    path: tuple[str, ...] = ()
    split: str = "train"
    attributes: Mapping[str, str] = field(default_factory=dict)
    common_name: str | None = None

    @property
    def label(self) -> str | None:
        """The deepest name of the path (the class), or ``None`` if unlabelled."""
        return self.path[-1] if self.path else None

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready form, as written to a JSONL manifest."""
        out: dict[str, object] = {"image": self.image, "path": list(self.path), "split": self.split}
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.common_name:
            out["common_name"] = self.common_name
        return out


def record_leaves(records: Sequence[Record], taxonomy: Taxonomy) -> list[int]:
    """The leaf index (class) of each record's path in ``taxonomy``, names compared case-insensitively.

    Raises:
        DataError: records whose path is not a class of the taxonomy (how many, and the first).
    """
    from taxonlens.errors import DataError

    nodes = [taxonomy.try_node_of_path(r.path) for r in records]
    bad = [r for r, n in zip(records, nodes) if n is None or taxonomy.leaf_index[n] < 0]
    if bad:
        raise DataError(f"{len(bad)} photos are labelled with a path that is not a class of the taxonomy, e.g. "
                        f"{bad[0].image}: {' > '.join(bad[0].path)}")
    return [int(taxonomy.leaf_index[n]) for n in nodes]
