"""taxonlens: recognise organisms in photos across the whole tree of life, always
answering with a real, consistent path of the taxonomy.

The names a notebook needs are attributes of the package, each imported from its module
on first use (so ``import taxonlens`` is fast and does not import torch)::

    import taxonlens
    tax = taxonlens.load_taxonomy("imagenet-animal")
    recognizer = taxonlens.build_recognizer("bioclip", taxonomy=tax)
"""

from __future__ import annotations

from taxonlens.errors import TaxonlensError
from taxonlens.exports import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "Taxonomy": "taxonlens.taxonomy",
    "load_taxonomy": "taxonlens.taxonomy",
    "load_encoder": "taxonlens.models.encoders",
    "load_lmm": "taxonlens.models.mllm",
    "TreeDecoder": "taxonlens.recognize.decode",
    "Recognizer": "taxonlens.predict",
    "build_recognizer": "taxonlens.predict",
    "predict_files": "taxonlens.predict",
    "SynthWorld": "taxonlens.synthworld",
    "evaluate_files": "taxonlens.evaluate",
}

__all__ = [  # the names of _LAZY, and two defined here
    "Recognizer",
    "SynthWorld",
    "TaxonlensError",
    "Taxonomy",
    "TreeDecoder",
    "__version__",
    "build_recognizer",
    "evaluate_files",
    "load_encoder",
    "load_lmm",
    "load_taxonomy",
    "predict_files",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
