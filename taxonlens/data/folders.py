"""Image folders as datasets: ``root/<class folder>/<image>`` or nested rank folders.

A class folder's name gives the taxon in one of three ways:

- iNat21 style, ``08351_Plantae_Tracheophyta_Magnoliopsida_Gentianales_Rubiaceae_Houstonia_purpurea``:
  a numeric id, then kingdom .. genus and the epithet (the species is "genus epithet");
- nested folders, ``root/Plantae/Tracheophyta/.../Houstonia purpurea/img.jpg``: each folder a rank;
- a plain name (``Houstonia purpurea``), looked up as a leaf in a taxonomy.
"""

from __future__ import annotations

import re
from pathlib import Path

from taxonlens.data.images import IMAGE_SUFFIXES
from taxonlens.data.records import Record
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.taxonomy import Taxonomy

_INAT_FOLDER = re.compile(r"^\d+_([^_]+(?:_[^_]+){6,})$")


def parse_inat_folder(name: str) -> tuple[str, ...] | None:
    """The 7-rank path encoded in an iNat21 folder name, or ``None`` if it is not one.

    >>> parse_inat_folder("08351_Plantae_Tracheophyta_Magnoliopsida_Gentianales_Rubiaceae_Houstonia_purpurea")[-1]
    'Houstonia purpurea'
    """
    m = _INAT_FOLDER.match(name)
    if not m:
        return None
    parts = m.group(1).split("_")
    genus, epithet = parts[5], " ".join(parts[6:])
    return (*parts[:6], f"{genus} {epithet}")


def read_image_folder(root: str | Path, taxonomy: Taxonomy | None = None, split: str = "train") -> list[Record]:
    """Records for every image file under ``root`` (sorted by path).

    Args:
        root: the folder; each image's folders below ``root`` name its taxon.
        taxonomy: resolves plain class-folder names, and checks every path is in it.
        split: the split given to every record.

    Raises:
        DataError: ``root`` is missing, holds no images, or a folder name is not a known taxon.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    cache: dict[Path, tuple[str, ...]] = {}
    records = []
    for f in files:
        folder = f.parent
        if folder not in cache:
            cache[folder] = _path_of_folder(folder.relative_to(root).parts, taxonomy, folder)
        records.append(Record(image=str(f), path=cache[folder], split=split))
    return records


def _path_of_folder(parts: tuple[str, ...], taxonomy: Taxonomy | None, folder: Path) -> tuple[str, ...]:
    if not parts:
        return ()  # images directly in root carry no label
    inat = parse_inat_folder(parts[-1])
    names = inat if inat is not None else parts
    try:
        if len(names) == 1 and taxonomy is not None:
            return taxonomy.path_names(taxonomy.find(names[0]))
        if taxonomy is not None:
            taxonomy.node_of_path(names)
    except TaxonlensError as e:
        raise DataError(f"{folder}: {e}") from None
    return tuple(names)
