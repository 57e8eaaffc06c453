"""taxonlens: recognise organisms in photos across the whole tree of life, always
answering with a real, consistent path of the taxonomy."""

from taxonlens.errors import TaxonlensError
from taxonlens.taxonomy import Taxonomy, load_taxonomy

__version__ = "0.1.0"
__all__ = ["TaxonlensError", "Taxonomy", "__version__", "load_taxonomy"]
