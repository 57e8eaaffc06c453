"""The public API: ``import taxonlens`` is light, and its names resolve on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import taxonlens

API = ("load_taxonomy", "Taxonomy", "load_encoder", "load_lmm", "build_recognizer", "Recognizer", "predict_files",
       "TreeDecoder", "SynthWorld", "evaluate_files")


def test_import_taxonlens_does_not_import_torch() -> None:
    code = "import sys, taxonlens; print(sorted(m for m in ('torch', 'numpy', 'taxonlens.taxonomy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", API)
def test_public_names_resolve_and_are_listed(name: str) -> None:
    value = getattr(taxonlens, name)
    assert value.__name__ == name and value.__module__.startswith("taxonlens.")
    assert name in taxonlens.__all__ and name in dir(taxonlens)


def test_unknown_name_is_an_attribute_error() -> None:
    assert sorted(taxonlens.__all__) == sorted({*API, "TaxonlensError", "__version__"})
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        taxonlens.nope  # noqa: B018


def test_load_taxonomy_takes_a_builtin_name() -> None:
    tax = taxonlens.load_taxonomy("imagenet-animal")
    assert isinstance(tax, taxonlens.Taxonomy) and tax.n_leaves == 397
