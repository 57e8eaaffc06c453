"""The examples in the docstrings of the public metrics, the tree decoder and the taxonomy
loader run as written (a targeted list: ``--doctest-modules`` over the package would import all of it)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("taxonlens.evaluate.metrics", "taxonlens.recognize.decode", "taxonlens.taxonomy.loaders")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (printed above)"
