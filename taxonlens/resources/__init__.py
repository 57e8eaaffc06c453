"""Data shipped inside the package: the built-in taxonomies (MIT, see LICENSE-taxonomies) and the
DeepSpeed ZeRO configurations of the LMM trainers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUILTIN_TAXONOMIES = {
    "inat21-plantae": "inat21_plantae.json",
    "inat21-animalia": "inat21_animalia.json",
    "imagenet-animal": "imagenet_animal.json",
}


def taxonomy_file(name_or_path: str | Path) -> Path:
    """The file of a built-in taxonomy by name (``inat21-plantae``), else ``name_or_path`` itself."""
    name = str(name_or_path)
    if name in BUILTIN_TAXONOMIES:
        return Path(str(resources.files(__package__) / BUILTIN_TAXONOMIES[name]))
    return Path(name_or_path)


#: DeepSpeed configurations by name: ZeRO stage 2 and 3, batch size, clipping and precision left
#: ``auto`` for the trainer to fill in
DEEPSPEED_CONFIGS = {"zero2": "deepspeed-zero2.json", "zero3": "deepspeed-zero3.json"}


def deepspeed_file(name: str) -> Path:
    """The shipped DeepSpeed configuration ``name`` (a key of :data:`DEEPSPEED_CONFIGS`)."""
    return Path(str(resources.files(__package__) / DEEPSPEED_CONFIGS[name]))
